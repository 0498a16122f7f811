"""v7's driver side of large device folios (7.0 lib/test_hmm.c, issue 15): the
``folio_split`` callback (``dmirror_devmem_folio_split``) called from the split of a
device-private large folio, and, from the mirror, hand-written interleavings of large
device folios in the device page table."""

from __future__ import annotations

from typing import Any

from pagerace.core.machine import folio as fo
from pagerace.core.machine import pmd as pm
from pagerace.core.machine.layout import PTE_DEVICE_PRIVATE, PTE_TYPE_MASK
from pagerace.harness.runner import build_model
from pagerace.workloads import parse_workload
from strategies import Stepper

N = 8  # HPAGE_PMD_NR of these geometries (ptes_per_table)


def _v7(faults: tuple[str, ...] = (), mirrors: int = 1) -> tuple[Any, list[Any]]:
    table = {
        "name": "thp-mirror",
        "geometry": {"sys_frames": 48, "dev_frames": 24, "pages_per_mm": 16, "ptes_per_table": 8},
        "dmirror": [{"device": 0, "mm": 0}] * mirrors,
        "mm": [{"id": 0, "thp": [{"start": 0, "end": 8}], "populate": [{"start": 8, "end": 16}]}],
        "actor": [{"kind": "cpu", "count": 3, "range": [8, 16]}],
    }
    m = build_model(parse_workload(table, "t"), "v7", (), 0, faults=faults)
    m.kernel.actors = m.actors
    return m.kernel, m.actors


def _mirror_of(k: Any, pfn: int) -> int:
    return int(k.words.load(k.lay.DPAGE_MIRROR + pfn)) - 1


def _device_thp(k: Any, a: Any) -> int:
    """The THP of [0, 8) migrated whole to device 0 by the device-level driver (a large
    device folio behind a device-private PMD), its backing page naming mirror 0."""
    dev = k.devices[0]
    assert Stepper(dev.migrate_to_device(k, a, 0, 0, N)).finish(k) == 0
    pmd = pm.pmdp_get(k, 0, 0)
    assert pmd & PTE_TYPE_MASK == PTE_DEVICE_PRIVATE
    head = pmd >> 16
    assert fo.folio_order(k, head) == 3 and k.is_device_private(head)
    k.words.store(k.lay.DPAGE_MIRROR + head, 1)  # rpage->zone_device_data = dmirror 0
    return head


def test_split_of_a_device_private_folio_calls_the_driver_callback() -> None:
    """A partial migration back to system memory splits the huge device-private PMD and
    then the PTE-mapped device folio (migrate_vma_split_folio → __folio_split →
    zone_device_private_split_cb → dmirror_devmem_folio_split): every new folio's
    backing page names the head's mirror, the pages migrated back are freed (their
    word cleared by dmirror_devmem_free), the others stay on the device."""
    k, (a, *_rest) = _v7()
    head = _device_thp(k, a)
    assert [_mirror_of(k, head + j) for j in range(N)] == [0] + [-1] * (N - 1)
    dev = k.devices[0]
    assert Stepper(dev.migrate_to_system(k, a, 0, 2, 4)).finish(k) == 0
    assert [fo.folio_order(k, head + j) for j in range(N)] == [0] * N
    mirrors = [_mirror_of(k, head + j) for j in range(N)]
    assert mirrors == [0, 0, -1, -1, 0, 0, 0, 0]
    for v in (0, 1, 4, 5, 6, 7):
        pte = k.pte_read(0, v)
        assert pte & PTE_TYPE_MASK == PTE_DEVICE_PRIVATE and pte >> 16 == head + v
    for v in (2, 3):
        assert not k.is_zone_device(k.pte_read(0, v) >> 16)


def test_a_fault_on_a_split_tail_finds_the_mirror_through_the_callback() -> None:
    """After the split, a CPU fault on a former tail (dmirror_devmem_fault:
    rpage = folio_zone_device_data(page_folio(page)); dmirror = rpage->zone_device_data)
    migrates the page back on behalf of the mirror the callback handed it."""
    k, (a, b, _c) = _v7()
    head = _device_thp(k, a)
    dev = k.devices[0]
    assert Stepper(dev.migrate_to_system(k, a, 0, 0, 1)).finish(k) == 0
    seen: list[int] = []
    orig = dev.alloc_and_copy_to_ram

    def spy(k: Any, a: Any, m: Any, erase_mirror: int = -1) -> Any:
        seen.append(erase_mirror)
        return (yield from orig(k, a, m, erase_mirror))

    dev.alloc_and_copy_to_ram = spy  # type: ignore[method-assign]
    page = head + 5
    assert Stepper(dev.migrate_to_ram(k, b, 0, 5, page, locked=False)).finish(k) == 0
    assert seen == [0]
    assert not k.is_zone_device(k.pte_read(0, 5) >> 16)

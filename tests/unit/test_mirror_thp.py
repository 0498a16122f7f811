"""v7's driver side of large device folios (7.0 lib/test_hmm.c, issue 15): the
``folio_split`` callback (``dmirror_devmem_folio_split``) called from the split of a
device-private large folio, and, from the mirror, hand-written interleavings of large
device folios in the device page table."""

from __future__ import annotations

from typing import Any

import pytest
from pagerace.core.lib import test_hmm as tl
from pagerace.core.machine import folio as fo
from pagerace.core.machine import pmd as pm
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.layout import (
    DC_REF,
    DM_FLAGS,
    DM_MUTEX,
    DPT_BACKING,
    DPT_PFN_SHIFT,
    DPT_TAG_WRITE,
    PTE_DEVICE_PRIVATE,
    PTE_TYPE_MASK,
    PG_allocated,
)
from pagerace.core.oracles.folio import check_collected
from pagerace.harness.runner import build_model, run_deterministic
from pagerace.workloads import load_workload, parse_workload
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


# -- the mirror's device page table for large device folios (7.0
#    dmirror_migrate_finalize_and_map: one entry per 4K page) ----------------------------
def _mirror_thp(k: Any, a: Any) -> int:
    """HMM_DMIRROR_MIGRATE_TO_DEV of the THP [0, 8) through mirror 0
    (MIGRATE_VMA_SELECT_COMPOUND): returns the large device folio's head."""
    assert Stepper(tl.dmirror_migrate_to_device(k, a, 0, 0, N)).finish(k) == 0
    pmd = pm.pmdp_get(k, 0, 0)
    assert pmd & PTE_TYPE_MASK == PTE_DEVICE_PRIVATE
    head = pmd >> 16
    assert fo.folio_order(k, head) == 3
    return int(head)


def test_mirror_maps_each_page_of_a_large_device_folio() -> None:
    k, (a, b, _c) = _v7()
    before = [k.shadow(0, v) for v in range(N)]
    head = _mirror_thp(k, a)
    for v in range(N):
        entry, _gen = tl.dpt_load(k, 0, v)
        assert (entry >> DPT_PFN_SHIFT) - 1 == head + v  # folio_page(rfolio, i)
        assert entry & (DPT_BACKING | DPT_TAG_WRITE) == DPT_BACKING | DPT_TAG_WRITE
        assert k.data(head + v) == before[v]
    assert _mirror_of(k, head) == 0
    # HMM_DMIRROR_READ through the large folio: no fault, every page from its entry
    assert Stepper(tl.dmirror_rw(k, b, 0, 0, N, False)).finish(k) == 0
    assert "dmirror_faults" not in k.events


def test_device_read_through_a_large_folio_interleaved_with_its_partial_migration() -> None:
    """A device read holds dmirror->mutex page by page while the mirror migrates two
    pages of the large folio back: the split's notifier (split_huge_pmd: CLEAR) waits on
    the mutex, so the read finishes on the folio it started on, then the entries are
    gone and the pages it did not migrate stay on the device, each with the mirror."""
    k, (a, b, _c) = _v7()
    head = _mirror_thp(k, a)
    rd = Stepper(tl.dmirror_rw(k, b, 0, 0, N, False))
    rd.run_until(lambda: k.words.load(tl.dm_word(k, 0, DM_MUTEX)) != 0)
    mig = Stepper(tl.dmirror_migrate_to_system(k, a, 0, 2, 4))
    mig.run_until(lambda: mig.blocked_on(k) is not None)  # the notifier on the mutex
    assert fo.folio_order(k, head) == 3  # not split yet
    assert rd.finish(k) == 0
    assert mig.finish(k) == 0
    assert [fo.folio_order(k, head + j) for j in range(N)] == [0] * N
    assert all(tl.dpt_load(k, 0, v)[0] == 0 for v in range(N))
    assert [_mirror_of(k, head + j) for j in range(N)] == [0, 0, -1, -1, 0, 0, 0, 0]


def test_fail_alloc_flag_takes_the_small_page_path() -> None:
    """HMM_DMIRROR_FLAGS = FAIL_ALLOC before a compound migration: the large allocation
    fails (the flag clears itself) and each page gets an order-0 device page, each
    mapped in the device page table by its own entry."""
    k, (a, *_rest) = _v7()
    assert Stepper(tl.op_dmirror_flags(k, a, 0, tl.HMM_DMIRROR_FLAG_FAIL_ALLOC)).finish(k) == 0
    assert Stepper(tl.dmirror_migrate_to_device(k, a, 0, 0, N)).finish(k) == 0
    assert k.words.load(tl.dm_word(k, 0, DM_FLAGS)) == 0
    assert k.events.get("dmirror_fail_alloc_flag") == 1
    pfns = []
    for v in range(N):
        entry, _gen = tl.dpt_load(k, 0, v)
        pfn = (entry >> DPT_PFN_SHIFT) - 1
        assert k.is_device_private(pfn) and fo.folio_order(k, fo.page_folio(k, pfn)) == 0
        pte = k.pte_read(0, v)
        assert pte & PTE_TYPE_MASK == PTE_DEVICE_PRIVATE and pte >> 16 == pfn
        pfns.append(pfn)
    assert len(set(pfns)) == N


# -- the collected-count oracle (core/oracles/folio.py check_collected) -----------------
def test_collected_count_oracle_fires_on_a_miscounting_unmap() -> None:
    """Proof: with ``unmap_counts_pages`` the unmap hands the driver 8 for one compound
    entry; the oracle names it at the end of migrate_vma_setup."""
    k, (a, *_rest) = _v7(faults=("unmap_counts_pages",))
    with pytest.raises(InvariantViolation) as ei:
        Stepper(k.devices[0].migrate_to_device(k, a, 0, 0, N)).finish(k)
    f = ei.value.failure
    assert f.kind == FailureKind.DRIVER_CONTRACT
    assert "cpages = 8" in f.message and "1 collected entries (8 pages" in f.message


def test_collected_count_oracle_is_silent_on_compound_and_split_collections() -> None:
    """Without the fault: a whole THP (one compound entry), the mirror's compound
    collection, and a partial range (split, one entry per page) all agree."""
    k, (a, *_rest) = _v7()
    head = _device_thp(k, a)  # compound to the device: checked once
    assert Stepper(k.devices[0].migrate_to_system(k, a, 0, 3, 6)).finish(k) == 0
    assert fo.folio_order(k, head) == 0
    k2, (a2, *_r2) = _v7()
    _mirror_thp(k2, a2)


def test_collected_count_oracle_checks_spans_against_folios() -> None:
    """The span half, on hand-made arrays: an entry naming a large folio without
    COMPOUND, a span past npages, and a page counted twice inside a span each fire."""
    k, (a, *_rest) = _v7()
    head = _device_thp(k, a)
    mp = (head << 6) | 1 | 2  # migrate_pfn(head) | MIGRATE
    comp = mp | (1 << 4)
    ok = [comp] + [0] * (N - 1)
    check_collected(k, a, ok, N, 1, "t")
    for src, npages, what in (
        ([mp] + [0] * (N - 1), N, "span of 1"),
        ([comp] + [0] * (N - 1), N - 1, "past the"),
        ([comp, mp] + [0] * (N - 2), N, "inside it"),
    ):
        with pytest.raises(InvariantViolation) as ei:
            check_collected(k, a, src, npages, 1, "t")
        assert ei.value.failure.kind == FailureKind.DRIVER_CONTRACT
        assert what in ei.value.failure.message


def test_a_large_device_folio_holds_one_pagemap_reference_per_page() -> None:
    """With device chunks (a release actor in the workload): the large allocation takes
    1 << order pagemap references (zone_device_page_init → percpu_ref_tryget_many), and
    dmirror_devmem_free of the large folio gives back as many (percpu_ref_put_many):
    the reference memunmap_pages waits on is balanced after a round trip."""
    table = {
        "name": "thp-chunks",
        "geometry": {"sys_frames": 48, "dev_frames": 24, "pages_per_mm": 16, "ptes_per_table": 8},
        "dmirror": [{"device": 0, "mm": 0}],
        "mm": [{"id": 0, "thp": [{"start": 0, "end": 8}]}],
        "actor": [{"kind": "release", "ops": 1}, {"kind": "cpu", "range": [8, 16]}],
    }
    m = build_model(parse_workload(table, "t"), "v7", (), 0)
    k, a = m.kernel, m.actors[0]
    k.actors = m.actors
    assert k.geo.chunks
    ref = tl.devmem_word(k, 0, DC_REF)
    base = k.words.load(ref)
    head = _mirror_thp(k, a)
    assert k.words.load(ref) == base + N
    assert [_mirror_of(k, head + j) for j in range(N)] == [0] + [-1] * (N - 1)
    assert Stepper(tl.dmirror_migrate_to_system(k, a, 0, 0, N)).finish(k) == 0
    assert not k.test_flag(head, PG_allocated)
    assert k.words.load(ref) == base
    assert k.devices[0].freed == N


def test_without_the_callback_a_former_tail_names_no_mirror() -> None:
    """The contrast for the callback tests above: a driver without ``folio_split``
    (zone_device_private_split_cb's other branch) leaves the former tails naming no
    mirror, and the fault on one of them erases no mirror's entries."""
    k, (a, b, _c) = _v7()
    head = _device_thp(k, a)
    dev = k.devices[0]
    dev.folio_split = None  # type: ignore[assignment,method-assign]
    assert Stepper(dev.migrate_to_system(k, a, 0, 0, 1)).finish(k) == 0
    assert [_mirror_of(k, head + j) for j in range(1, N)] == [-1] * (N - 1)
    seen: list[int] = []
    orig = dev.alloc_and_copy_to_ram

    def spy(k: Any, a: Any, m: Any, erase_mirror: int = -1) -> Any:
        seen.append(erase_mirror)
        return (yield from orig(k, a, m, erase_mirror))

    dev.alloc_and_copy_to_ram = spy  # type: ignore[method-assign]
    assert Stepper(dev.migrate_to_ram(k, b, 0, 5, head + 5, locked=False)).finish(k) == 0
    assert seen == [-1]


def test_collected_count_oracle_fires_in_a_thp_workload_and_is_silent_without() -> None:
    w = load_workload("thp-mirror-migrate")
    r = run_deterministic(w, variant="v7", seed=0, faults=["unmap_counts_pages"])
    assert r.result.failure is not None
    assert r.result.failure.kind == FailureKind.DRIVER_CONTRACT
    assert "migrate_vma_setup" in r.result.failure.sites
    clean = run_deterministic(w, variant="v7", seed=0)
    assert clean.result.failure is None

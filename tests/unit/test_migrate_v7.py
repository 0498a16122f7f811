"""The compound migrate paths of v7 (core/mm/migrate_device.py ``*_v7``; issue 15 stage
3b), driven by hand with a minimal driver: a PMD-mapped THP to a large device folio and
back, a compound hole populated by a huge PMD, a THP refused by the driver (split of the
unmapped folio), a PTE-mapped large folio split during collect, the CPU waiting on the
PMD migration entry, and the KASAN check of a write past the src array."""

from __future__ import annotations

import pytest
from pagerace.core.machine import folio as fo
from pagerace.core.machine import pmd as pm
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.kernel import Block
from pagerace.core.machine.layout import (
    PMD_TABLE,
    PTE_DEVICE_PRIVATE,
    PTE_MIGRATION,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    PTE_WRITE,
    PG_lru,
    mapping_encode,
)
from pagerace.core.mm import huge_memory as hm
from pagerace.core.mm import migrate_device as md
from strategies import Stepper, map_thp, run_unblocked, thp_geometry, thp_kernel

GEO = thp_geometry(dev_frames=32)
N = GEO.hpage_pmd_nr
TO_DEV = md.MIGRATE_VMA_SELECT_SYSTEM | md.MIGRATE_VMA_SELECT_COMPOUND
TO_RAM = md.MIGRATE_VMA_SELECT_DEVICE_PRIVATE | md.MIGRATE_VMA_SELECT_COMPOUND


def _kernel():
    return thp_kernel(GEO)


def _thp(k, a, idx: int = 1) -> int:
    """A PMD-mapped THP on the LRU at PMD ``idx`` of mm 0, content and shadow agreeing."""
    return map_thp(k, a, idx=idx, flags=PG_lru)


def _driver(k, a, m: md.MigrateVma, zone: int, large: bool = True) -> None:
    """A minimal alloc-and-copy: a large folio for a compound entry (when ``large``),
    else a small page per entry; the content copied page by page."""
    i = 0
    while i < m.npages:
        s = m.src[i]
        if not s & md.MIGRATE_PFN_MIGRATE:
            i += 1
            continue
        spage = md.migrate_pfn_to_page(s)
        if s & md.MIGRATE_PFN_COMPOUND and large:
            d = fo.folio_alloc(k, a, zone, 3, "t:dalloc")
            assert d >= 0
            assert k.trylock_page(a, d, "t:dlock")
            for j in range(N):
                k.set_data(d + j, k.data(spage + j) if spage >= 0 else 0)
            m.dst[i] = md.migrate_pfn(d) | md.MIGRATE_PFN_COMPOUND
            i += N
            continue
        nr = N if s & md.MIGRATE_PFN_COMPOUND else 1
        for j in range(nr):
            d = k.alloc_page(a, zone, "t:dalloc")
            assert k.trylock_page(a, d, "t:dlock")
            k.set_data(d, k.data(spage + j) if spage >= 0 else 0)
            m.dst[i + j] = md.migrate_pfn(d)
        i += 1


def _migrate(k, a, vma, start: int, end: int, flags: int, zone: int, large: bool = True):
    m = md.MigrateVma(0, vma, start, end, flags, pgmap_owner=0)
    assert run_unblocked(md.migrate_vma_setup(k, a, m)) == 0
    _driver(k, a, m, zone, large)
    run_unblocked(md.migrate_vma_pages(k, a, m))
    run_unblocked(md.migrate_vma_finalize(k, a, m))
    return m


def test_thp_to_device_and_back() -> None:
    k, (a, b, _), vma = _kernel()
    head = _thp(k, a)
    m = _migrate(k, a, vma, 8, 16, TO_DEV, zone=1)
    assert m.src[0] & md.MIGRATE_PFN_COMPOUND and m.src[0] & md.MIGRATE_PFN_MIGRATE
    assert all(m.src[j] == 0 for j in range(1, N))
    pmd = pm.pmdp_get(k, 0, 1)
    assert pmd & PTE_TYPE_MASK == PTE_DEVICE_PRIVATE and pmd & PTE_WRITE
    dev = pm.pmd_pfn(pmd)
    assert k.is_device_private(dev) and fo.folio_order(k, dev) == 3
    assert fo.folio_entire_mapcount(k, dev) == 1 and fo.folio_ref_count(k, dev) == 1
    assert [k.data(dev + j) for j in range(N)] == [1000 + j for j in range(N)]
    assert not k.flags(head) & 0x100  # the source THP was freed (PG_allocated clear)
    assert not a.held
    # and back to system RAM, by the device-private PMD
    m2 = _migrate(k, a, vma, 8, 16, TO_RAM, zone=0)
    assert m2.src[0] & md.MIGRATE_PFN_COMPOUND
    pmd = pm.pmdp_get(k, 0, 1)
    assert pmd & PTE_TYPE_MASK == PTE_PRESENT
    new = pm.pmd_pfn(pmd)
    assert [k.data(new + j) for j in range(N)] == [1000 + j for j in range(N)]
    assert pm.hw_translate(k, b, 0, 13, write=True) == new + 5
    assert k.s.zones[1, 0] == GEO.dev_frames  # the device folio went back
    assert not a.held


def test_compound_hole_becomes_a_huge_pmd() -> None:
    k, (a, _, _), vma = _kernel()
    pm.set_pmd_at(k, 0, 2, 0)  # no PTE table: a PMD hole
    m = _migrate(k, a, vma, 16, 24, TO_DEV, zone=1)
    assert m.src[0] & md.MIGRATE_PFN_MIGRATE
    pmd = pm.pmdp_get(k, 0, 2)
    assert pmd & PTE_TYPE_MASK == PTE_DEVICE_PRIVATE
    dev = pm.pmd_pfn(pmd)
    assert fo.folio_entire_mapcount(k, dev) == 1
    assert int(k.s.mapping[dev]) == mapping_encode(0, 16)


def test_compound_hole_with_small_destinations() -> None:
    """The driver gives order-0 pages for a compound hole: HPAGE_PMD_NR small
    insertions; the missing PTE table is allocated first."""
    k, (a, _, _), vma = _kernel()
    pm.set_pmd_at(k, 0, 2, 0)
    m = _migrate(k, a, vma, 16, 24, TO_DEV, zone=1, large=False)
    assert pm.pmdp_get(k, 0, 2) == PMD_TABLE
    for j in range(N):
        assert k.pte_read(0, 16 + j) & PTE_TYPE_MASK == PTE_DEVICE_PRIVATE
        assert m.src[j] & md.MIGRATE_PFN_MIGRATE


def test_driver_refuses_the_thp() -> None:
    """Small destinations for a compound source: migrate_vma_split_unmapped_folio takes
    a reference, splits the PMD migration entry with freeze (whose put_page balances
    it) and splits the unmapped folio; each page then migrates on its own."""
    k, (a, _, _), vma = _kernel()
    head = _thp(k, a)
    m = _migrate(k, a, vma, 8, 16, TO_DEV, zone=1, large=False)
    assert pm.pmdp_get(k, 0, 1) == PMD_TABLE
    for j in range(N):
        assert m.src[j] & md.MIGRATE_PFN_MIGRATE and not m.src[j] & md.MIGRATE_PFN_COMPOUND
        assert md.migrate_pfn_to_page(m.src[j]) == head + j
        pte = k.pte_read(0, 8 + j)
        assert pte & PTE_TYPE_MASK == PTE_DEVICE_PRIVATE and k.data(pte >> 16) == 1000 + j
        assert not k.flags(head + j) & 0x100  # every source page freed
    assert k.s.zones[0, 0] == GEO.sys_frames and not a.held


def test_pte_mapped_thp_is_split_during_collect() -> None:
    k, (a, _, _), vma = _kernel()
    head = _thp(k, a)
    run_unblocked(hm.split_huge_pmd(k, a, 0, vma, 8))
    m = _migrate(k, a, vma, 8, 16, TO_DEV, zone=1)
    for j in range(N):
        assert m.src[j] & md.MIGRATE_PFN_MIGRATE and not m.src[j] & md.MIGRATE_PFN_COMPOUND
        pte = k.pte_read(0, 8 + j)
        assert pte & PTE_TYPE_MASK == PTE_DEVICE_PRIVATE
        assert k.data(pte >> 16) == 1000 + j
    assert not any(k.flags(head + j) & 0x100 for j in range(N))  # all freed
    assert not a.held


def test_cpu_waits_on_the_pmd_migration_entry() -> None:
    """While the THP is collected (PMD migration entry, folio locked), a CPU's walk
    traps and pmd_migration_entry_wait sleeps until finalize unlocks the folio."""
    k, (a, b, _), vma = _kernel()
    head = _thp(k, a)
    m = md.MigrateVma(0, vma, 8, 16, TO_DEV, pgmap_owner=0)
    assert run_unblocked(md.migrate_vma_setup(k, a, m)) == 0
    assert pm.pmdp_get(k, 0, 1) & PTE_TYPE_MASK == PTE_MIGRATION
    assert pm.hw_translate(k, b, 0, 9, write=False) == -1
    w = Stepper(hm.pmd_migration_entry_wait(k, b, 0, 1))
    req = w.step()
    assert isinstance(req, Block) and req.target == head
    _driver(k, a, m, 1)
    run_unblocked(md.migrate_vma_pages(k, a, m))
    run_unblocked(md.migrate_vma_finalize(k, a, m))
    w.step()
    assert w.done
    assert pm.pmdp_get(k, 0, 1) & PTE_TYPE_MASK == PTE_DEVICE_PRIVATE


def test_src_array_overrun_is_a_kernel_failure() -> None:
    """A collect that writes past the driver's arrays is reported as KASAN would, a
    kernel failure naming the index, never an internal error."""
    k, (a, _, _), vma = _kernel()
    m = md.MigrateVma(0, vma, 8, 16, TO_DEV, pgmap_owner=0)
    m.npages = 7
    with pytest.raises(InvariantViolation) as info:
        md.migrate_vma_collect_skip_v7(k, a, m, 0, 2)
    f = info.value.failure
    assert f.kind is FailureKind.BUG_ON and "src[8]" in f.message and "KASAN" in f.message


def test_a_v7_run_builds_the_thp_tables_and_v6_does_not() -> None:
    from pagerace.harness.runner import run_deterministic
    from pagerace.workloads import load_workload

    w = load_workload("migrate")
    r7 = run_deterministic(w, variant="v7", seed=1)
    r6 = run_deterministic(w, variant="v6", seed=1)
    assert r7.kernel.geo.thp and not r6.kernel.geo.thp
    assert r7.kernel.s.pmd.size and not r6.kernel.s.pmd.size
    assert str(r7.result.outcome) == str(r6.result.outcome) == "clean"
    assert not w.geometry.thp  # the workload itself is unchanged


def test_thp_key_of_a_workload() -> None:
    """[[mm]] thp: PMD-mapped THPs in the initial picture (needs thp: v7 only); a
    range off a PMD boundary is bad input."""
    from pagerace.core.machine.errors import InvalidWorkload
    from pagerace.core.oracles.invariants import check_all
    from pagerace.harness.runner import build_model
    from pagerace.workloads._schema import parse_workload

    table = {
        "name": "t", "geometry": {"sys_frames": 32, "dev_frames": 16, "pages_per_mm": 16,
                                  "ptes_per_table": 8},
        "mm": [{"id": 0, "thp": [{"start": 8, "end": 16}], "populate": [{"start": 0, "end": 2}]}],
        "actor": [{"kind": "cpu", "count": 1, "range": [0, 2]}],
    }
    w = parse_workload(table, "t")
    assert "thp" in w.needs and w.geometry.thp
    m = build_model(w, "v7", (), 0)
    m.kernel.actors = m.actors
    head = pm.pmd_pfn(pm.pmdp_get(m.kernel, 0, 1))
    assert head % N == 0 and fo.folio_entire_mapcount(m.kernel, head) == 1
    assert pm.hw_translate(m.kernel, m.actors[0], 0, 12, write=True) == head + 4
    check_all(m.kernel)
    bad = dict(table, mm=[{"id": 0, "thp": [{"start": 4, "end": 12}]}])
    with pytest.raises(InvalidWorkload, match="PMD boundary"):
        parse_workload(bad, "t")


def test_thp_workload_with_a_failing_large_allocation() -> None:
    """The device's large allocation fails (fail_alloc): 7.0's dmirror falls back to an
    order-0 device page per 4K page, so the compound source is split
    (migrate_vma_split_unmapped_folio) and migrates page by page; every run stays clean."""
    from pagerace.harness.runner import run_deterministic
    from pagerace.workloads._schema import parse_workload

    table = {
        "name": "t", "geometry": {"sys_frames": 32, "dev_frames": 16, "pages_per_mm": 16,
                                  "ptes_per_table": 8},
        "mm": [{"id": 0, "thp": [{"start": 0, "end": 16}]}],
        "device": [{"id": 0, "fail_alloc": 1}],
        "actor": [{"kind": "driver", "range": [0, 8], "ops": 2}],
    }
    w = parse_workload(table, "t")
    r = run_deterministic(w, variant="v7", seed=0)
    assert str(r.result.outcome) == "clean", r.result.failure
    assert r.kernel.outcomes.get(("to_device", "large_alloc_failed"), 0) >= 1
    assert r.kernel.events.get("thp_split_pmd", 0) >= 1


def test_finding_012_replays() -> None:
    """docs/findings/012: the shrunk artifact reproduces the NULL dereference of
    dmirror_device_evict_chunk's unchecked large folio_alloc."""
    from pathlib import Path

    from pagerace.harness.artifacts import load_artifact, replay

    p = Path(__file__).resolve().parents[2] / "docs/findings/012-thp-evict-pressure.shrunk.json"
    rec, ok, _msg = replay(load_artifact(p))
    assert ok
    f = rec.result.failure
    assert f is not None and f.kind is FailureKind.BUG_ON
    assert "dmirror_device_evict_chunk" in f.message

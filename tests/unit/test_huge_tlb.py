"""v7's stale-TLB check of huge TLB entries (issue 15, ``thpmove``): a CPU that hits a
2M translation whose PMD was split, zapped, moved or made a migration entry without
``flush_pmd_tlb_range`` reports ``stale_tlb`` (core/oracles/world.py
``htlb_hit_check``), proven by the test-only fault ``no_pmd_tlb_flush``; silent while
the PMD lock is held (the change is in progress) and on the unmodified paths."""

from __future__ import annotations

from typing import Any

import pytest
from pagerace.core.faults import FAULTS
from pagerace.core.machine import pmd as pm
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.layout import (
    PMD_TABLE,
    PTE_DIRTY,
    PTE_PRESENT,
    PTE_YOUNG,
    pte_encode,
)
from pagerace.core.mm import huge_memory as hm
from pagerace.core.mm import memory as mem
from pagerace.core.mm.mremap import op_mremap
from pagerace.core.mm.vma import op_munmap
from pagerace.core.world import install_mm
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload
from strategies import Stepper, run_unblocked, thp, thp_geometry

GEO = thp_geometry()
N = GEO.hpage_pmd_nr
BASE = 8  # the THP is PMD 1: pages 8..15; the VMA is [0, 16)


def _thp(faults: tuple[str, ...] = ()) -> tuple[Any, list[Any], int, int]:
    """A PMD-mapped THP at PMD 1 of mm 0 with the mm oracles installed; CPU ``b`` (actor
    1) has read it, so its huge TLB holds the translation."""
    k, acts, vma, head = thp(GEO, faults=faults, vma_end=16)
    install_mm(k)
    assert run_unblocked(mem.cpu_access(k, acts[1], 0, BASE + 2, True)) == mem.ACCESS_OK
    assert pm.htlb_lookup(k, acts[1], 0, 1) >= 0
    return k, acts, vma, head


def _stale(k: Any, b: Any, vpn: int, write: bool = False) -> InvariantViolation:
    with pytest.raises(InvariantViolation) as e:
        run_unblocked(mem.cpu_access(k, b, 0, vpn, write))
    assert e.value.failure.kind == FailureKind.STALE_TLB
    assert "stale huge TLB entry" in str(e.value)
    return e.value


@pytest.mark.parametrize("faults", [(), ("no_pmd_tlb_flush",)])
def test_split_without_flush_is_caught(faults: tuple[str, ...]) -> None:
    """__split_huge_pmd_locked → pmdp_invalidate flushes the huge translation: after the
    split the CPU walks the new PTE table. Without the flush it keeps hitting the 2M
    entry of a PMD that is now a table: stale_tlb."""
    k, (a, b, _), vma, _head = _thp(faults)
    run_unblocked(hm.split_huge_pmd(k, a, 0, vma, BASE))
    assert pm.pmdp_get(k, 0, 1) == PMD_TABLE
    if faults:
        _stale(k, b, BASE + 5)
    else:
        assert run_unblocked(mem.cpu_access(k, b, 0, BASE + 5, True)) == mem.ACCESS_OK
        assert pm.htlb_lookup(k, b, 0, 1) < 0 and k.tlb_lookup(b, 0, BASE + 5) >= 0


@pytest.mark.parametrize("faults", [(), ("no_pmd_tlb_flush",)])
def test_zap_without_flush_is_caught(faults: tuple[str, ...]) -> None:
    """munmap → zap_huge_pmd clears the PMD and flushes before the PMD lock is dropped;
    without the flush a read of the unmapped range still reaches the freed folio."""
    k, (a, b, _), _vma, head = _thp(faults)
    assert run_unblocked(op_munmap(k, a, 0, BASE, BASE + N)) == 0
    assert pm.pmd_none(pm.pmdp_get(k, 0, 1))
    if faults:
        err = _stale(k, b, BASE + 1)
        assert "none" in str(err) and head + 1 in err.failure.pages
    else:
        assert run_unblocked(mem.cpu_access(k, b, 0, BASE + 1, False)) == mem.ACCESS_SIGSEGV


@pytest.mark.parametrize("faults", [(), ("no_pmd_tlb_flush",)])
def test_move_huge_pmd_without_flush_is_caught(faults: tuple[str, ...]) -> None:
    """mremap → move_huge_pmd: flush_pmd_tlb_range of the old address. Without it a
    store at the old address still lands in the moved folio."""
    k, (a, b, _), _vma, _head = _thp(faults)
    assert run_unblocked(op_mremap(k, a, 0, BASE, N, 24)) == 0
    assert k.events["move_huge_pmd"] == 1
    if faults:
        _stale(k, b, BASE + 3, write=True)
    else:
        assert run_unblocked(mem.cpu_access(k, b, 0, BASE + 3, True)) == mem.ACCESS_SIGSEGV


def test_a_hit_while_the_pmd_lock_is_held_is_in_progress() -> None:
    """The split holds the PMD lock from pmdp_invalidate (a preemption point follows) to
    pmd_populate: a hit through the not yet flushed translation in that window is a
    change in progress (the fault skips the flush, so the entry survives), not a stale
    hit; once the lock is dropped the same hit is reported."""
    k, (a, b, _), vma, _head = _thp(("no_pmd_tlb_flush",))
    ptl = pm.pmd_lockptr(k, 0, 1)
    s = Stepper(hm.split_huge_pmd(k, a, 0, vma, BASE))
    s.run_until(lambda: k.words.load(pm.pmd_w(k, 0, 1)) & pm.PMD_INVALID)
    assert k.words.load(ptl) != 0
    assert run_unblocked(mem.cpu_access(k, b, 0, BASE + 4, False)) == mem.ACCESS_OK
    s.finish(k)
    _stale(k, b, BASE + 4)


def test_a_write_through_a_read_only_huge_entry_after_wrprotect() -> None:
    """A writable 2M entry whose PMD became read-only (the hand-written write-protect
    with no flush, as a missing flush_pmd_tlb_range after pmdp_set_wrprotect would
    leave it) is stale for a store, not for a load."""
    k, (_a, b, _), _vma, head = _thp()
    pm.set_pmd_at(k, 0, 1, pte_encode(PTE_PRESENT, head, PTE_DIRTY | PTE_YOUNG))
    assert run_unblocked(mem.cpu_access(k, b, 0, BASE, False)) == mem.ACCESS_OK
    _stale(k, b, BASE, write=True)


# (workload, fault, seeds to try): each fault fires stale_tlb on a v7 workload within
# the seeds, and the same seed is clean without it.
WORKLOAD_CASES = [
    ("thp-fault-vs-split", "no_pmd_tlb_flush", 10),
    ("migrate_remap_fault", "no_pmd_tlb_flush", 10),
    ("thp-remap-table-vs-collect", "move_pmd_no_flush", 40),
]


@pytest.mark.parametrize(("workload", "fault", "seeds"), WORKLOAD_CASES, ids=lambda x: str(x))
def test_the_faults_fire_on_v7_workloads_and_the_unbroken_run_is_clean(
    workload: str, fault: str, seeds: int
) -> None:
    assert FAULTS[fault].oracle is FailureKind.STALE_TLB
    w = load_workload(workload)
    found = None
    for seed in range(seeds):
        r = run_deterministic(w, variant="v7", seed=seed, faults=[fault])
        if r.result.failure is not None and r.result.failure.kind is FailureKind.STALE_TLB:
            found = seed
            assert r.result.failure.sites
            break
    assert found is not None, f"{fault} on {workload}: stale_tlb not seen in {seeds} seeds"
    clean = run_deterministic(w, variant="v7", seed=found)
    assert str(clean.result.outcome) == "clean", clean.result.failure

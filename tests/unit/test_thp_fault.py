"""v7's THP fault (issue 15, ``thpgup``): ``create_huge_pmd`` →
``do_huge_pmd_anonymous_page`` / ``__do_huge_pmd_anonymous_page`` (core/mm/huge_memory.py)
from ``handle_pmd_fault_v7`` for a none PMD of a ``VM_HUGEPAGE`` VMA: hand-written runs
and interleavings, judged by the folio oracles (check_pmds, check_counts)."""

from __future__ import annotations

from typing import Any

from pagerace.core.machine import folio as fo
from pagerace.core.machine import pmd as pm
from pagerace.core.machine.kernel import Block
from pagerace.core.machine.layout import (
    MMF_UNSTABLE,
    PTE_DIRTY,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    PTE_WRITE,
    PTE_YOUNG,
    VM_ANON,
    VM_HUGEPAGE,
    VM_READ,
    VM_WRITE,
    PG_allocated,
    PG_anon_exclusive,
    PG_lru,
    pte_encode,
)
from pagerace.core.mm import huge_memory as hm
from pagerace.core.mm import memory as mem
from pagerace.core.oracles.folio import check_pmds
from pagerace.core.oracles.invariants import check_counts
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload
from strategies import Stepper, run_unblocked, thp_geometry, thp_kernel

GEO = thp_geometry(dev_frames=8, mms=2, mm_flags=True)
N = GEO.hpage_pmd_nr
BASE = 8  # PMD 1: pages 8..15


def _mm(flags: int = VM_READ | VM_WRITE | VM_ANON | VM_HUGEPAGE, start: int = 0,
        end: int = GEO.pages_per_mm) -> tuple[Any, list[Any], int]:
    k, acts, vma = thp_kernel(GEO, vma_start=start, vma_end=end, vma_flags=flags)
    for idx in range(GEO.pages_per_mm // N):
        pm.set_pmd_at(k, 0, idx, 0)  # a fresh mm: every PMD none
    return k, acts, vma


def test_write_fault_maps_a_zeroed_exclusive_thp() -> None:
    k, (a, _b, _c), _vma = _mm()
    assert run_unblocked(mem.cpu_access(k, a, 0, BASE + 3, True)) == mem.ACCESS_OK
    pmd = pm.pmdp_get(k, 0, 1)
    head = pm.pmd_pfn(pmd)
    assert pmd == pte_encode(PTE_PRESENT, head, PTE_WRITE | PTE_DIRTY | PTE_YOUNG)
    assert head % N == 0 and fo.folio_order(k, head) == 3
    assert k.test_flag(head, PG_anon_exclusive)
    assert fo.folio_entire_mapcount(k, head) == 1 and fo.folio_large_mapcount(k, head) == 1
    assert k.events["thp_fault_alloc"] == 1
    assert k.data(head + 3) == k.shadow(0, BASE + 3) != 0  # the store after the fault
    for i in (0, 5, 7):  # the rest of the folio is zeroed: the loads read 0
        assert k.data(head + i) == 0
        assert run_unblocked(mem.cpu_access(k, a, 0, BASE + i, False)) == mem.ACCESS_OK
    check_pmds(k)
    check_counts(k)


def test_read_fault_maps_a_thp_too_no_huge_zero_folio() -> None:
    """use_zero_page off: a read fault allocates the THP (writable: the VMA is)."""
    k, (a, _b, _c), _vma = _mm()
    assert run_unblocked(mem.cpu_access(k, a, 0, BASE, False)) == mem.ACCESS_OK
    assert pm.pmdp_get(k, 0, 1) & PTE_WRITE
    assert k.events["thp_fault_alloc"] == 1


def test_not_eligible_without_vm_hugepage_or_a_whole_pmd() -> None:
    """No VM_HUGEPAGE, or a VMA that does not cover the aligned range: the PTE level."""
    for flags, start in ((VM_READ | VM_WRITE | VM_ANON, 0),
                         (VM_READ | VM_WRITE | VM_ANON | VM_HUGEPAGE, BASE + 1)):
        k, (a, _b, _c), _vma = _mm(flags, start)
        assert run_unblocked(mem.cpu_access(k, a, 0, BASE + 3, True)) == mem.ACCESS_OK
        assert pm.pmd_is_table(pm.pmdp_get(k, 0, 1))
        assert k.pte_read(0, BASE + 3) & PTE_TYPE_MASK == PTE_PRESENT
        assert "thp_fault_alloc" not in k.events
        check_counts(k)


def _fragment(k: Any, a: Any) -> list[int]:
    """Hold one page of every aligned run of system RAM (no order-3 folio fits any
    more); the held pages count as extra references for check_counts."""
    got = []
    while True:
        p = k.alloc_page(a, 0, "t:fill")
        if p < 0:
            break
        got.append(p)
    held = [p for p in got if p % N == N - 1]
    for p in got:
        if p not in held:
            k.put_page(a, p, "t:free")
    base = k.extra_refs

    def extra() -> Any:
        out = base().copy()
        out[held] += 1
        return out

    k.extra_refs = extra
    return held


def test_no_aligned_run_falls_back_to_a_small_page() -> None:
    """vma_alloc_anon_folio_pmd fails (no free aligned run): VM_FAULT_FALLBACK, and the
    fault maps a small page at the PTE level."""
    k, (a, b, _c), _vma = _mm()
    _fragment(k, b)
    ret = run_unblocked(hm.do_huge_pmd_anonymous_page(
        k, a, 0, 0, BASE, True, mem.check_stable_address_space))
    assert ret == hm.VM_FAULT_FALLBACK and k.events["thp_fault_fallback"] == 1
    assert run_unblocked(mem.cpu_access(k, a, 0, BASE + 2, True)) == mem.ACCESS_OK
    assert pm.pmd_is_table(pm.pmdp_get(k, 0, 1))
    pfn = k.pte_read(0, BASE + 2) >> PTE_PFN_SHIFT
    assert not fo.folio_test_large(k, pfn) and k.events["thp_fault_fallback"] == 2
    check_counts(k)


def test_two_faults_race_for_the_pmd_the_second_releases_its_folio() -> None:
    """Both allocate; the first maps under the PMD lock; the second's pmd_none re-check
    fails: folio_put of its folio, return 0, the access retries through the PMD."""
    k, (a, b, _c), _vma = _mm()
    sa = Stepper(mem.cpu_access(k, a, 0, BASE + 1, True))
    sb = Stepper(mem.cpu_access(k, b, 0, BASE + 6, True))
    while "alloc_zone0_order3" not in k.events or k.events["alloc_zone0_order3"] < 2:
        sa.step()
        sb.step()
    while not sa.done:
        assert not isinstance(sa.step(), Block)
    while not sb.done:
        assert not isinstance(sb.step(), Block)
    assert sa.value == sb.value == mem.ACCESS_OK
    assert k.events["thp_fault_raced"] == 1 and k.events["thp_fault_alloc"] == 1
    head = pm.pmd_pfn(pm.pmdp_get(k, 0, 1))
    assert k.data(head + 1) == k.shadow(0, BASE + 1) and k.data(head + 6) == k.shadow(0, BASE + 6)
    check_counts(k)
    check_pmds(k)


def test_small_fault_that_loses_the_pmd_to_a_thp_retries() -> None:
    """A fault whose THP allocation fails (the one aligned run is taken) falls back;
    when it takes the PMD lock to install a PTE table the other fault's huge PMD is
    there: pte_offset_map_lock finds no table, the access retries through the PMD."""
    k, (a, b, _c), _vma = _mm()
    sa = Stepper(mem.cpu_access(k, a, 0, BASE + 1, True))
    while k.events.get("alloc_zone0_order3", 0) < 1:
        sa.step()
    k.faults = frozenset({"alloc_fail_sys"})  # b's large allocation fails
    sb = Stepper(mem.cpu_access(k, b, 0, BASE + 4, False))
    while k.events.get("thp_fault_fallback", 0) < 1:
        sb.step()
    k.faults = frozenset()  # (b's small page is allocated only after the PMD lock)
    while not sa.done:
        assert not isinstance(sa.step(), Block)
    while not sb.done:
        assert not isinstance(sb.step(), Block)
    assert sb.value == mem.ACCESS_OK and k.events["pte_alloc_raced_huge"] == 1
    assert k.pte_read(0, BASE + 4) == 0  # no PTE under the huge PMD
    check_counts(k)
    check_pmds(k)


def test_oom_reaped_mm_gets_sigbus_and_the_fault_proves_the_check() -> None:
    """check_stable_address_space under the PMD lock: SIGBUS, the folio released.
    The test-only fault no_stable_check maps the zeroed THP instead."""
    k, (a, _b, _c), _vma = _mm()
    k.words.store(k.lay.MM_FLAGS + 0, MMF_UNSTABLE)
    assert run_unblocked(mem.cpu_access(k, a, 0, BASE, True)) == mem.ACCESS_SIGBUS
    assert pm.pmd_none(pm.pmdp_get(k, 0, 1)) and k.events["unstable_sigbus"] == 1
    check_counts(k)
    k, (a, _b, _c), _vma = _mm()
    k.words.store(k.lay.MM_FLAGS + 0, MMF_UNSTABLE)
    k.faults = frozenset({"no_stable_check"})
    assert run_unblocked(mem.cpu_access(k, a, 0, BASE, True)) == mem.ACCESS_OK
    assert pm.pmd_trans_huge(pm.pmdp_get(k, 0, 1))


def test_hugepage_workload_starts_with_none_pmds_and_faults_thps() -> None:
    """A workload with a VM_HUGEPAGE VMA starts with none PMDs where nothing is mapped
    (setup.none_pmds); without one every PMD stays a table (existing runs unchanged)."""
    w = load_workload("anon_write_child")
    r = run_deterministic(w, variant="v7", seed=0)
    assert "thp_fault_alloc" not in r.kernel.events
    w = load_workload("anon_write_child_thp_fault")
    r = run_deterministic(w, variant="v7", seed=0)
    assert str(r.result.outcome) == "clean", r.result.failure
    assert r.kernel.events["thp_fault_alloc"] >= 1


def test_a_new_thp_is_not_held_in_the_lru_batch() -> None:
    """folio_add_lru_vma of a PMD-sized folio: !folio_may_be_lru_cached moves the batch
    to the LRU at once, so no batch reference is left on the THP; a zap frees it whole
    (with the reference held in the batch, an order-0 put of the head at the drain
    would free the head alone and leak the tails)."""
    k, (a, _b, _c), _vma = _mm()
    assert run_unblocked(mem.cpu_access(k, a, 0, BASE, True)) == mem.ACCESS_OK
    head = pm.pmd_pfn(pm.pmdp_get(k, 0, 1))
    assert fo.folio_ref_count(k, head) == 1 and k.flags(head) & PG_lru
    assert k.lru_batch_count(a.cpu) == 0
    run_unblocked(hm.zap_huge_pmd(k, a, 0, 1, "t:zap", lambda v: k.set_shadow(0, v, 0)))
    assert k.events["free_zone0_large"] == 1
    assert not any(k.flags(head + i) & PG_allocated for i in range(N))
    check_counts(k)


def test_finding_018_replays() -> None:
    """docs/findings/018: the shrunk artifact reproduces the reference migrate_vma_split_folio
    takes on the fault page's new folio after MADV_DONTNEED freed it."""
    from pathlib import Path

    from pagerace.core.machine.errors import FailureKind
    from pagerace.harness.artifacts import load_artifact, replay

    p = Path(__file__).resolve().parents[2] / "docs/findings/018-thp-fault-vs-collect.shrunk.json"
    rec, ok, _msg = replay(load_artifact(p))
    assert ok
    f = rec.result.failure
    assert f is not None and f.kind is FailureKind.USE_AFTER_FREE
    assert "migrate_vma_split_folio:new_fault_get" in f.message

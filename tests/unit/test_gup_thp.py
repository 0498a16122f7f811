"""v7's GUP through a huge PMD (issue 15, ``thpgup``): hand-written runs and
interleavings of 7.0's ``gup_fast_pmd_leaf`` and ``follow_pmd_mask`` /
``follow_huge_pmd`` (core/mm/gup.py), the pins of large folios (one reference and one
``_pincount`` each: try_grab_folio / gup_put_folio), and what the pin does to fork,
the PMD share of a migration and the refcount oracles (check_counts with
thp_expected_refs, check_pmds)."""

from __future__ import annotations

from typing import Any

import pytest
from pagerace.core.machine import folio as fo
from pagerace.core.machine import pmd as pm
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.kernel import Block
from pagerace.core.machine.layout import (
    PTE_DIRTY,
    PTE_MIGRATION,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    PTE_WRITE,
    PTE_YOUNG,
    PG_anon_exclusive,
    pte_encode,
)
from pagerace.core.mm import gup
from pagerace.core.mm import huge_memory as hm
from pagerace.core.mm import memory as mem
from pagerace.core.mm.fork import op_fork
from pagerace.core.oracles.folio import check_pmds
from pagerace.core.oracles.invariants import check_counts
from strategies import THP_BITS, Stepper, run_unblocked, thp, thp_geometry

GEO = thp_geometry(mms=2)
N = GEO.hpage_pmd_nr
BASE = 8  # the THP is PMD 1: pages 8..15


def _thp(kind: int = PTE_PRESENT, bits: int = THP_BITS):
    """A PMD-mapped anonymous THP at PMD 1 of mm 0, content and shadow agreeing; PG_anon
    on every page."""
    return thp(GEO, kind=kind, bits=bits, anon_every_page=True)


def _pin(k: Any, a: Any, vpn: int, mode: int, write: bool = True) -> Any:
    return run_unblocked(gup.pin_user_page(k, a, 0, vpn, mode, write))


@pytest.mark.parametrize("mode", [gup.MODE_PIN, gup.MODE_PIN_FAST])
def test_pin_through_a_huge_pmd_counts_pincount_and_one_reference(mode: int) -> None:
    k, (a, _b, _c), _vma, head = _thp()
    rec = _pin(k, a, BASE + 3, mode)
    assert rec.pfn == head + 3 and rec.pin
    assert fo.folio_ref_count(k, head) == 2 and fo.folio_pincount(k, head) == 1
    assert fo.folio_maybe_dma_pinned(k, head)
    assert k.words.load(k.fw(head + 3, 3)) == 0  # no F_PIN on the page: _pincount only
    assert k.events["gup_fast_pmd_pinned" if mode else "gup_pmd_pinned"] == 1
    check_counts(k)
    check_pmds(k)
    gup.unpin_user_page(k, a, rec, dirty=True)
    assert fo.folio_ref_count(k, head) == 1 and fo.folio_pincount(k, head) == 0
    assert not fo.folio_maybe_dma_pinned(k, head)
    check_counts(k)


@pytest.mark.parametrize("mode", [gup.MODE_GET, gup.MODE_GET_FAST])
def test_get_through_a_huge_pmd_takes_a_reference_and_no_pin(mode: int) -> None:
    k, (a, _b, _c), _vma, head = _thp(bits=PTE_WRITE)  # old and clean
    rec = _pin(k, a, BASE + 5, mode, write=True)
    assert rec.pfn == head + 5 and not rec.pin
    assert fo.folio_ref_count(k, head) == 2 and not fo.folio_maybe_dma_pinned(k, head)
    if mode == gup.MODE_GET:  # FOLL_TOUCH: touch_pmd marks the PMD young and dirty
        assert pm.pmdp_get(k, 0, 1) == pte_encode(PTE_PRESENT, head, PTE_WRITE | PTE_YOUNG | PTE_DIRTY)
    gup.unpin_user_page(k, a, rec, dirty=False)
    assert fo.folio_ref_count(k, head) == 1
    check_counts(k)


def test_pincount_oracle_sees_a_pin_that_was_not_counted() -> None:
    """check_counts (thp_expected_refs) expects one reference per _pincount: a
    reference without its _pincount (or the reverse) is a refcount mismatch."""
    k, (a, _b, _c), _vma, head = _thp()
    rec = _pin(k, a, BASE, gup.MODE_PIN)
    fo.folio_pincount_add(k, head, -1)
    with pytest.raises(InvariantViolation) as exc:
        check_counts(k)
    assert exc.value.failure.kind in (FailureKind.LEAK, FailureKind.REFCOUNT_MISMATCH)
    fo.folio_pincount_add(k, head, 1)
    check_counts(k)
    gup.unpin_user_page(k, a, rec, dirty=False)
    with pytest.raises(InvariantViolation) as exc2:  # a second unpin: _pincount negative
        gup.unpin_user_page(k, a, rec, dirty=False)
    assert exc2.value.failure.kind is FailureKind.REFCOUNT_UNDERFLOW


def test_pin_of_a_pte_mapped_page_of_a_large_folio_is_the_folios() -> None:
    """After a PMD split the page is PTE-mapped; the pin still goes to the folio (head
    reference, _pincount), fast and slow alike."""
    k, (a, b, _c), vma, head = _thp()
    run_unblocked(hm.split_huge_pmd(k, a, 0, vma, BASE))
    r1 = _pin(k, a, BASE + 2, gup.MODE_PIN)
    r2 = _pin(k, b, BASE + 6, gup.MODE_PIN_FAST)
    assert (r1.pfn, r2.pfn) == (head + 2, head + 6)
    assert k.events["gup_fast_pinned"] == 1 and k.events["gup_pinned"] == 1
    assert fo.folio_pincount(k, head) == 2 and fo.folio_ref_count(k, head) == N + 2
    check_counts(k)
    gup.unpin_user_page(k, a, r1, dirty=False)
    gup.unpin_user_page(k, b, r2, dirty=False)
    assert fo.folio_pincount(k, head) == 0 and fo.folio_ref_count(k, head) == N
    check_counts(k)


def test_fast_pin_backs_off_when_the_pmd_is_split_after_the_grab() -> None:
    """gup_fast_pmd_leaf: the grab, then a split of the PMD (another CPU), then the
    re-check sees another PMD: the pin is dropped and the slow path pins the page
    through its PTE."""
    k, (a, b, _c), vma, head = _thp()
    s = Stepper(gup.pin_user_page(k, a, 0, BASE + 1, gup.MODE_PIN_FAST, True))
    s.step()  # the lockless PMD read; before the grab
    s.step()  # grabbed: one reference and one _pincount
    assert fo.folio_pincount(k, head) == 1
    run_unblocked(hm.split_huge_pmd(k, b, 0, vma, BASE))
    while not s.done:
        assert not isinstance(s.step(), Block)
    assert k.events["gup_fast_pmd_backoff_changed"] == 1
    assert s.value.pfn == head + 1 and k.events["gup_pinned"] == 1
    assert fo.folio_pincount(k, head) == 1
    check_counts(k)
    check_pmds(k)


def _pin_after_zap_and_refault(faults: frozenset[str]) -> Any:
    """A fast pin grabs the folio of a huge PMD; before its re-check the THP is zapped
    and the address refaulted (a new small page)."""
    k, (a, b, _c), _vma, head = _thp()
    k.faults = faults
    s = Stepper(gup.pin_user_page(k, a, 0, BASE + 1, gup.MODE_PIN_FAST, True))
    s.step()
    s.step()
    run_unblocked(hm.zap_huge_pmd(k, b, 0, 1, "t:zap", lambda v: k.set_shadow(0, v, 0)))
    assert run_unblocked(mem.cpu_access(k, b, 0, BASE + 1, True)) == mem.ACCESS_OK
    while not s.done:
        assert not isinstance(s.step(), Block)
    return k, s.value, head


def test_pmd_recheck_is_needed_the_pin_oracle_proves_it() -> None:
    """Without the PMD re-check (test-only fault gup_fast_no_recheck) the pin is handed
    a page the address no longer maps: check_pin fires (pin_coherency); with it the pin
    backs off and the slow path pins the new page."""
    k, rec, head = _pin_after_zap_and_refault(frozenset())
    assert k.events["gup_fast_pmd_backoff_changed"] == 1
    assert rec.pfn == k.pte_read(0, BASE + 1) >> PTE_PFN_SHIFT != head + 1
    with pytest.raises(InvariantViolation) as exc:
        _pin_after_zap_and_refault(frozenset({"gup_fast_no_recheck"}))
    assert exc.value.failure.kind is FailureKind.PIN_COHERENCY


def test_pin_of_a_shared_readonly_pmd_unshares_first() -> None:
    """After fork the PMD is read-only and the head not anon-exclusive: the fast pin
    backs off (gup_must_unshare), the slow one faults to unshare (do_huge_pmd_wp_page:
    the folio is shared, split and copy the page) and pins the parent's own copy."""
    k, (a, f, _c), _vma, head = _thp()
    assert run_unblocked(op_fork(k, f, 0, 1)) == 0
    rec = _pin(k, a, BASE + 4, gup.MODE_PIN_FAST, write=False)
    assert k.events["gup_fast_pmd_backoff_unshare"] == 1
    assert k.events["thp_wp_fallback"] == 1 and k.events["wp_copy"] == 1
    pte = k.pte_read(0, BASE + 4)
    assert rec.pfn == pte >> PTE_PFN_SHIFT != head + 4
    assert k.test_flag(rec.pfn, PG_anon_exclusive)
    assert k.data(rec.pfn) == 1004
    check_counts(k)
    check_pmds(k)


def test_slow_pin_waits_on_a_pmd_migration_entry_and_retries() -> None:
    """follow_pmd_mask: a PMD migration entry is no_page_table; the fault waits for the
    folio's unlock (pmd_migration_entry_wait) and the retry pins through the restored
    huge PMD."""
    k, (a, m, _c), _vma, head = _thp()
    fo.folio_remove_rmap_pmd(k, head, 0)  # try_to_migrate replaced the mapping
    present = pm.pmdp_get(k, 0, 1)
    pm.set_pmd_at(k, 0, 1, pte_encode(PTE_MIGRATION, head, PTE_WRITE))
    run_unblocked(k.lock_page(m, head, "t:migrate"))
    s = Stepper(gup.pin_user_page(k, a, 0, BASE + 2, gup.MODE_PIN_FAST, True))
    for _ in range(50):
        if isinstance(s.step(), Block):
            break
    assert isinstance(s.last, Block) and fo.folio_pincount(k, head) == 0
    pm.set_pmd_at(k, 0, 1, present)  # remove_migration_pmd
    fo.folio_add_rmap_pmd(k, head, 0)
    k.unlock_page(m, head, "t:migrate")
    while not s.done:
        assert not isinstance(s.step(), Block)
    assert s.value.pfn == head + 2 and fo.folio_pincount(k, head) == 1
    assert k.events["gup_faultin"] >= 1 and k.events["gup_pmd_pinned"] == 1
    check_counts(k)


def test_pin_refuses_the_pmd_share_and_fork_copies_for_the_child() -> None:
    """The pinned THP: the PMD share of a migration (folio_try_share_anon_rmap_pmd)
    fails with -EBUSY and copy_huge_pmd's dup fails too: the parent's PMD is split and
    every page copied for the child; the pinned pages stay the parent's."""
    k, (a, f, _c), _vma, head = _thp()
    rec = _pin(k, a, BASE + 3, gup.MODE_PIN_FAST)
    assert hm.folio_try_share_anon_rmap_pmd(k, head) == -hm.EBUSY
    # migration's refcount test: one more reference than the mapping (and the caller's)
    assert fo.folio_ref_count(k, head) == hm.folio_expected_ref_count(k, head) + 1
    assert run_unblocked(op_fork(k, f, 0, 1)) == 0
    assert k.events["fork_dup_pmd_ebusy"] == 1
    # 7.0's copy_present_ptes per page: the batch fails (-EBUSY -> -EAGAIN; the table's
    # last page is never batched), a page is preallocated, the single-page try fails again
    # (tests/unit/test_fork_thp.py counts the same).
    assert k.events["fork_dup_ebusy"] == 2 * N and k.events["fork_prealloc"] == N
    assert k.pte_read(0, BASE + 3) >> PTE_PFN_SHIFT == rec.pfn
    child = k.pte_read(1, BASE + 3)
    assert child & PTE_TYPE_MASK == PTE_PRESENT and child >> PTE_PFN_SHIFT != rec.pfn
    check_counts(k)
    check_pmds(k)


def test_dma_through_a_pmd_pin_takes_the_pmd_lock() -> None:
    """op_pin_dma judges a PMD-mapped pin under the PMD lock (the entry's lock), not
    the PTL: a holder of the PMD lock holds the DMA off."""
    k, (a, b, _c), _vma, head = _thp()
    ptl = pm.pmd_lockptr(k, 0, 1)
    s = Stepper(gup.op_pin_dma(k, a, 0, BASE + 6, gup.MODE_PIN_FAST, 2, 1))
    run_unblocked(k.spin_lock(b, ptl, "t:hold"))
    for _ in range(50):
        if isinstance(s.step(), Block):
            break
    assert isinstance(s.last, Block) and s.last.word == ptl
    k.spin_unlock(b, ptl, "t:hold")
    while not s.done:
        assert not isinstance(s.step(), Block)
    assert s.value == 0 and k.events["dma_writes"] == 2
    assert k.shadow(0, BASE + 6) == k.data(head + 6)
    assert fo.folio_pincount(k, head) == 0
    check_counts(k)


def test_pin_vs_fork_workload_catches_fork_ignoring_pins_and_is_clean_without() -> None:
    """thp-pin-vs-fork: with the test-only fault fork_ignores_pins (copy_huge_pmd and
    the PTE copy share a pinned THP) a pin or data oracle fires within a few seeds; the
    same seed without the fault is clean and has met the -EBUSY of a pinned THP."""
    from pagerace.harness.runner import run_deterministic
    from pagerace.workloads import load_workload

    w = load_workload("thp-pin-vs-fork")
    found = None
    for seed in range(6):
        r = run_deterministic(w, variant="v7", seed=seed, faults=["fork_ignores_pins"])
        f = r.result.failure
        if f is not None and f.kind in (FailureKind.PIN_COHERENCY, FailureKind.STALE_READ):
            found = seed
            break
    assert found is not None
    clean = run_deterministic(w, variant="v7", seed=found)
    assert str(clean.result.outcome) == "clean", clean.result.failure
    ev = clean.kernel.events
    assert ev.get("gup_pmd_pinned", 0) + ev.get("gup_fast_pmd_pinned", 0) >= 1

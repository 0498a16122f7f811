"""v7's fork of large folios (issue 15, ``thpfork``): hand-written runs and
interleavings of 7.0's ``copy_huge_pmd`` / ``copy_huge_non_present_pmd`` and the
folio-aware PTE copy (core/mm/fork.py), judged by the folio oracles (check_pmds: the
whole-folio counts against the entries; thp_expected_refs: the head's references)."""

from __future__ import annotations

from typing import Any

import pytest
from pagerace.core.machine import folio as fo
from pagerace.core.machine import pmd as pm
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.kernel import Block
from pagerace.core.machine.layout import (
    PMD_TABLE,
    PTE_DEVICE_PRIVATE,
    PTE_DIRTY,
    PTE_EXCLUSIVE,
    PTE_MIGRATION,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    PTE_WRITE,
    PTE_YOUNG,
    PG_anon_exclusive,
    pte_encode,
)
from pagerace.core.mm import huge_memory as hm
from pagerace.core.mm import memory as mem
from pagerace.core.mm.fork import op_fork
from pagerace.core.oracles.folio import check_pmds
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload
from strategies import THP_BITS, Stepper, run_unblocked, thp, thp_geometry

GEO = thp_geometry(mms=2)
N = GEO.hpage_pmd_nr
BASE = 8  # the THP is PMD 1: pages 8..15


def _thp(zone: int = 0, kind: int = PTE_PRESENT, bits: int = THP_BITS, exclusive: bool = True):
    """A PMD-mapped anonymous THP at PMD 1 of mm 0, content and shadow agreeing."""
    return thp(GEO, zone=zone, kind=kind, bits=bits, exclusive=exclusive)


def _counts(k: Any, head: int) -> tuple[int, int, int, int]:
    return (fo.folio_ref_count(k, head), fo.folio_large_mapcount(k, head),
            fo.folio_entire_mapcount(k, head), fo.folio_nr_pages_mapped(k, head))


def test_fork_shares_a_huge_pmd_readonly_old_in_the_child() -> None:
    k, (a, f, _), _vma, head = _thp()
    assert run_unblocked(op_fork(k, f, 0, 1)) == 0
    parent, child = pm.pmdp_get(k, 0, 1), pm.pmdp_get(k, 1, 1)
    assert parent == pte_encode(PTE_PRESENT, head, PTE_DIRTY | PTE_YOUNG)  # wrprotected
    assert child == pte_encode(PTE_PRESENT, head, PTE_DIRTY)  # and old
    assert not k.test_flag(head, PG_anon_exclusive)
    ref, large, entire, _nr = _counts(k, head)
    assert (ref, large, entire) == (2, 2, 2)
    assert k.events["fork_copy_huge_pmd"] == 1
    check_pmds(k)
    for i in range(N):
        assert k.shadow(1, BASE + i) == 1000 + i
    assert run_unblocked(mem.cpu_access(k, a, 1, BASE + 3, False)) == mem.ACCESS_OK


def test_fork_of_pinned_exclusive_huge_pmd_splits_and_copies_ptes() -> None:
    """folio_try_dup_anon_rmap_pmd -EBUSY: the reference dropped, both PMD locks
    released, the parent's PMD split; copy_pte_range then copies every (exclusive,
    maybe pinned) page for the child (copy_present_page); the parent keeps the folio."""
    k, (a, f, _), _vma, head = _thp()
    fo.folio_pincount_add(k, head, 1)
    k.get_page(a, head, "t:pin")
    assert run_unblocked(op_fork(k, f, 0, 1)) == 0
    assert k.events["fork_dup_pmd_ebusy"] == 1
    # 7.0's copy_present_ptes: per page, the batch from it fails (-EBUSY -> -EAGAIN; the
    # last page of the table is never batched: max_nr 1), the locks are dropped, a page
    # preallocated, and the single-page try fails again before copy_present_page.
    assert k.events["fork_batch_eagain"] == N - 1 and k.events["fork_prealloc"] == N
    assert k.events["fork_dup_ebusy"] == 2 * N
    assert pm.pmdp_get(k, 0, 1) == PMD_TABLE and pm.pmdp_get(k, 1, 1) == PMD_TABLE
    for i in range(N):
        assert k.pte_read(0, BASE + i) >> PTE_PFN_SHIFT == head + i
        cpte = k.pte_read(1, BASE + i)
        assert cpte & PTE_TYPE_MASK == PTE_PRESENT and cpte >> PTE_PFN_SHIFT != head + i
        assert k.data(cpte >> PTE_PFN_SHIFT) == 1000 + i
        assert k.test_flag(head + i, PG_anon_exclusive)
    ref, large, entire, nr = _counts(k, head)
    assert (ref, large, entire, nr) == (N + 1, N, 0, N)
    check_pmds(k)


def test_fork_of_device_private_pmd_makes_both_readable() -> None:
    k, (_a, f, _), _vma, head = _thp(zone=1, kind=PTE_DEVICE_PRIVATE, bits=PTE_WRITE)
    assert run_unblocked(op_fork(k, f, 0, 1)) == 0
    want = pte_encode(PTE_DEVICE_PRIVATE, head, 0)
    assert pm.pmdp_get(k, 0, 1) == want and pm.pmdp_get(k, 1, 1) == want
    assert _counts(k, head)[:3] == (2, 2, 2)
    assert k.events["fork_copy_pmd_device_private"] == 1
    check_pmds(k)


def test_fork_of_pmd_migration_entry_makes_it_readable() -> None:
    k, (_a, f, _), _vma, head = _thp(kind=PTE_MIGRATION, bits=PTE_EXCLUSIVE | PTE_YOUNG)
    k.lock_page(f, head, "t:migration")  # the migration holds the folio lock
    # the migration entry replaced the PMD mapping (try_to_migrate): no mapping left
    fo.folio_remove_rmap_pmd(k, head, 0)
    assert run_unblocked(op_fork(k, f, 0, 1)) == 0
    want = pte_encode(PTE_MIGRATION, head, PTE_YOUNG)
    assert pm.pmdp_get(k, 0, 1) == want and pm.pmdp_get(k, 1, 1) == want
    assert _counts(k, head)[:3] == (1, 0, 0)
    assert k.events["fork_copy_pmd_migration_entry"] == 1


def test_fork_of_pte_mapped_large_folio_counts_per_page_and_folio() -> None:
    """After a PMD split, each PTE of the large folio is duplicated: page mapcount and
    _large_mapcount one more, _nr_pages_mapped unchanged, one folio reference each."""
    k, (a, f, _), vma, head = _thp()
    run_unblocked(hm.split_huge_pmd(k, a, 0, vma, BASE))
    assert run_unblocked(op_fork(k, f, 0, 1)) == 0
    assert pm.pmdp_get(k, 1, 1) == PMD_TABLE
    for i in range(N):
        assert k.pte_read(1, BASE + i) == pte_encode(PTE_PRESENT, head + i, PTE_DIRTY)
        assert k.pte_read(0, BASE + i) & PTE_WRITE == 0
        assert fo.page_mapcount(k, head + i) == 2
        assert not k.test_flag(head + i, PG_anon_exclusive)
    assert _counts(k, head) == (2 * N, 2 * N, 0, N)
    check_pmds(k)


def test_fork_waits_for_the_parent_pmd_lock() -> None:
    """copy_huge_pmd takes the child's PMD lock, then the parent's: a fault holding the
    parent's PMD lock holds the copy off; it re-reads the PMD under the lock."""
    k, (a, f, _), _vma, head = _thp()
    ptl = pm.pmd_lockptr(k, 0, 1)
    s = Stepper(op_fork(k, f, 0, 1))
    run_unblocked(k.spin_lock(a, ptl, "t:fault"))
    for _ in range(200):
        r = s.step()
        if isinstance(r, Block):
            break
    assert isinstance(r, Block) and pm.pmdp_get(k, 1, 1) == PMD_TABLE  # not copied yet
    # the fault splits the PMD meanwhile: the copy falls back to PTEs
    k.spin_unlock(a, ptl, "t:fault")
    vma = 0
    run_unblocked(hm.split_huge_pmd(k, a, 0, vma, BASE))
    while not s.done:
        assert not isinstance(s.step(), Block)
    assert s.value == 0
    assert pm.pmdp_get(k, 1, 1) == PMD_TABLE
    assert _counts(k, head) == (2 * N, 2 * N, 0, N)
    check_pmds(k)


def test_fork_marks_the_folio_maybe_mapped_shared() -> None:
    """_mm_ids: slot 0 is the parent's mm; the child's dup takes slot 1 and sets
    FOLIO_MM_IDS_SHARED; the child's exit frees its slot and clears the bit again."""
    k, (_a, f, _), _vma, head = _thp()
    assert fo.folio_mm_id(k, head, 0) == 1 and not fo.folio_maybe_mapped_shared(k, head)
    assert run_unblocked(op_fork(k, f, 0, 1)) == 0
    assert fo.folio_mm_id(k, head, 1) == 2 and fo.folio_maybe_mapped_shared(k, head)
    fo.folio_remove_rmap_pmd(k, head, 1)  # the child unmaps (zap_huge_pmd's rmap part)
    assert fo.folio_mm_id(k, head, 1) == 0 and not fo.folio_maybe_mapped_shared(k, head)


def _write_after_fork(faults: frozenset[str]) -> tuple[Any, int]:
    k, (a, f, _), _vma, head = _thp()
    k.faults = faults
    assert run_unblocked(op_fork(k, f, 0, 1)) == 0
    # the parent's store: do_huge_pmd_wp_page finds a second reference, splits the
    # PMD and falls back; do_wp_page on the large folio must copy, not reuse
    assert run_unblocked(mem.cpu_access(k, a, 0, BASE + 2, True)) == mem.ACCESS_OK
    return k, head


def test_write_after_fork_copies_the_page_of_the_shared_large_folio() -> None:
    k, head = _write_after_fork(frozenset())
    assert k.events["thp_wp_fallback"] == 1 and k.events["wp_copy"] == 1
    assert k.pte_read(0, BASE + 2) >> PTE_PFN_SHIFT != head + 2
    assert k.data(head + 2) == 1002  # the child's page is untouched
    assert run_unblocked(mem.cpu_access(k, k.actors[2], 1, BASE + 2, False)) == mem.ACCESS_OK
    check_pmds(k)


def test_ignoring_the_shared_bit_is_caught_by_the_data_oracle() -> None:
    """Test-only fault mm_ids_ignore_shared: the parent reuses the folio in place; the
    child's load of the page reads the parent's value (stale_read)."""
    k, head = _write_after_fork(frozenset({"mm_ids_ignore_shared"}))
    assert k.events.get("wp_copy", 0) == 0
    assert k.pte_read(0, BASE + 2) >> PTE_PFN_SHIFT == head + 2
    c = k.actors[2]
    with pytest.raises(InvariantViolation) as exc:
        run_unblocked(mem.cpu_access(k, c, 1, BASE + 2, False))
    assert exc.value.failure.kind is FailureKind.STALE_READ


@pytest.mark.parametrize("name", ["anon_write_child_thp", "thp-fork-vs-collect"])
def test_fork_workloads_catch_the_ignored_shared_bit_and_are_clean_without(name: str) -> None:
    """The v7 fork workloads: with mm_ids_ignore_shared a data oracle fires within a few
    seeds (the child sees the parent's store, or loses its own); the same seed without
    the fault is clean."""
    w = load_workload(name)
    found = None
    for seed in range(5):
        r = run_deterministic(w, variant="v7", seed=seed, faults=["mm_ids_ignore_shared"])
        f = r.result.failure
        if f is not None and f.kind in (FailureKind.STALE_READ, FailureKind.LOST_WRITE):
            found = seed
            break
    assert found is not None
    clean = run_deterministic(w, variant="v7", seed=found)
    assert str(clean.result.outcome) == "clean", clean.result.failure
    ev = clean.kernel.events
    assert ev.get("fork_copy_huge_pmd", 0) + ev.get("fork_copy_pmd_device_private", 0) >= 1


def test_the_shared_bit_oracle_fires_on_a_missing_bit_and_not_otherwise() -> None:
    """check_pmds: a folio two mms map must be maybe-mapped-shared. The test-only fault
    mm_ids_no_shared leaves the bit clear when the child takes slot 1."""
    k, (_a, f, _), _vma, _head = _thp()
    assert run_unblocked(op_fork(k, f, 0, 1)) == 0
    check_pmds(k)  # silent without the fault
    k, (_a, f, _), _vma, _head = _thp()
    k.faults = frozenset({"mm_ids_no_shared"})
    assert run_unblocked(op_fork(k, f, 0, 1)) == 0
    with pytest.raises(InvariantViolation) as exc:
        check_pmds(k)
    assert exc.value.failure.kind is FailureKind.MAPCOUNT_MISMATCH
    assert "maybe-mapped-shared" in str(exc.value)


def test_finding_013_replays() -> None:
    """docs/findings/013: the shrunk artifact reproduces the child's PMD migration entry
    left behind by migrate_vma_split_unmapped_folio (7.0 splits only the migrating VMA's
    PMD)."""
    from pathlib import Path

    from pagerace.core.machine.errors import FailureKind
    from pagerace.harness.artifacts import load_artifact, replay

    p = Path(__file__).resolve().parents[2] / "docs/findings/013-thp-fork-vs-collect.shrunk.json"
    rec, ok, _msg = replay(load_artifact(p))
    assert ok
    f = rec.result.failure
    assert f is not None and f.kind is FailureKind.MIGRATION_ENTRY_LEFT
    assert "PMD of mm 1" in f.message

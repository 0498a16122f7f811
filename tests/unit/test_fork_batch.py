"""v7's batched PTE copy of a large folio at fork (7.0 mm/memory.c ``copy_present_ptes``
with ``folio_pte_batch_flags``, ``folio_try_dup_anon_rmap_ptes`` with nr > 1, the
-EAGAIN / ``folio_prealloc`` retry of ``copy_pte_range``; issue 15, ``thpmove``):
hand-written runs and interleavings, judged by the folio oracles."""

from __future__ import annotations

from typing import Any

from pagerace.core.machine import folio as fo
from pagerace.core.machine import pmd as pm
from pagerace.core.machine.layout import (
    FO_MM_MAP0,
    PMD_TABLE,
    PTE_DIRTY,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_WRITE,
    PTE_YOUNG,
    PG_anon_exclusive,
    pte_encode,
)
from pagerace.core.mm import huge_memory as hm
from pagerace.core.mm.fork import op_fork
from pagerace.core.oracles.folio import check_pmds
from pagerace.core.oracles.invariants import check_all
from pagerace.harness.runner import build_model
from pagerace.workloads import parse_workload
from strategies import Stepper, run_unblocked, thp, thp_geometry

GEO = thp_geometry(sys_frames=40, mms=2)
N = GEO.hpage_pmd_nr
BASE = 8  # the THP is PMD 1: pages 8..15


def _pte_mapped_thp() -> tuple[Any, list[Any], int]:
    """A THP at PMD 1 of mm 0 split to PTEs (writable, dirty, young, every page
    anon-exclusive), content and shadow agreeing."""
    k, acts, vma, head = thp(GEO)
    run_unblocked(hm.split_huge_pmd(k, acts[0], 0, vma, BASE))
    return k, acts, head


def _counts(k: Any, head: int) -> tuple[int, int, int]:
    return (fo.folio_ref_count(k, head), fo.folio_large_mapcount(k, head),
            fo.folio_nr_pages_mapped(k, head))


def test_one_batch_copies_the_whole_folio() -> None:
    """Eight PTEs of one folio with the same bits: one batch, one reference add of 8;
    both sides read-only, the child's PTEs old, every page shared (not exclusive)."""
    k, (_a, f, _), head = _pte_mapped_thp()
    assert run_unblocked(op_fork(k, f, 0, 1)) == 0
    assert k.events["fork_pte_batch"] == 1 and k.events["fork_pte_batched"] == 1
    for i in range(N):
        assert k.pte_read(1, BASE + i) == pte_encode(PTE_PRESENT, head + i, PTE_DIRTY)
        assert k.pte_read(0, BASE + i) == pte_encode(PTE_PRESENT, head + i, PTE_DIRTY | PTE_YOUNG)
        assert fo.page_mapcount(k, head + i) == 2 and not k.test_flag(head + i, PG_anon_exclusive)
        assert k.shadow(1, BASE + i) == 1000 + i
    assert _counts(k, head) == (2 * N, 2 * N, N)
    check_pmds(k)
    check_all(k, final=True)


def test_a_different_dirty_bit_ends_the_batch_in_a_private_mapping() -> None:
    """FPB_RESPECT_DIRTY (a private mapping): pages 4..7 clean split the copy into two
    batches; young and write differences do not (FPB_MERGE_WRITE: any writable makes
    the batch write-protect all of its parent PTEs)."""
    k, (_a, f, _), head = _pte_mapped_thp()
    for i in range(N):
        bits = (PTE_DIRTY if i < 4 else 0) | (PTE_WRITE if i in (1, 6) else 0)
        bits |= PTE_YOUNG if i % 2 else 0
        k.set_pte(0, BASE + i, pte_encode(PTE_PRESENT, head + i, bits))
    assert run_unblocked(op_fork(k, f, 0, 1)) == 0
    assert k.events["fork_pte_batch"] == 2 and k.events["fork_pte_batched"] == 2
    for i in range(N):
        assert k.pte_read(1, BASE + i) == pte_encode(
            PTE_PRESENT, head + i, PTE_DIRTY if i < 4 else 0)
        assert not k.pte_read(0, BASE + i) & PTE_WRITE
    assert _counts(k, head) == (2 * N, 2 * N, N)
    check_pmds(k)


def test_a_hole_or_another_page_ends_the_batch() -> None:
    """A none PTE at page 3 and, at page 5, a page of the folio out of order: batches
    [0, 3), [4, 5), then 5, then [6, 8) (the folio's end bounds the last)."""
    k, (a, f, _), head = _pte_mapped_thp()
    k.set_pte(0, BASE + 3, 0)
    fo.folio_remove_rmap_ptes(k, head, head + 3, 1, 0)
    fo.folio_put(k, a, head, "t:zap")
    k.set_shadow(0, BASE + 3, 0)
    # page 5 maps head + 7 and page 7 maps head + 5: pfns no longer consecutive there
    k.set_pte(0, BASE + 5, pte_encode(PTE_PRESENT, head + 7, PTE_WRITE | PTE_DIRTY | PTE_YOUNG))
    k.set_pte(0, BASE + 7, pte_encode(PTE_PRESENT, head + 5, PTE_WRITE | PTE_DIRTY | PTE_YOUNG))
    k.set_shadow(0, BASE + 5, 1007)
    k.set_shadow(0, BASE + 7, 1005)
    assert run_unblocked(op_fork(k, f, 0, 1)) == 0
    # from 0: pages 0..2 (3 is none); from 4: 4 (5 maps head+7); from 5: head+7 is the
    # folio's last page, nr 1; from 6: 6 (7 maps head+5); 7: the table's last PTE,
    # max_nr 1, the single-page path
    assert k.events["fork_pte_batch"] == 4 and k.events["fork_pte_batched"] == 1
    assert k.pte_read(1, BASE + 3) == 0
    assert [k.pte_read(1, BASE + i) >> PTE_PFN_SHIFT for i in (0, 1, 2, 4, 5, 6, 7)] == [
        head, head + 1, head + 2, head + 4, head + 7, head + 6, head + 5]
    check_pmds(k)
    check_all(k, final=True)


def test_a_pinned_folio_retries_outside_the_lock_and_copies_the_exclusive_pages() -> None:
    """The folio may be pinned; pages 0..4 are shared already, 5..7 anon-exclusive. Every
    batch that reaches page 5 fails (-EBUSY -> -EAGAIN): the locks are dropped, a page
    preallocated, and the copy starts again at the same address one page at a time. A
    shared page is duplicated and the unused preallocated page put; an exclusive one is
    copied into it. The child ends with the folio's pages 0..4 and copies of 5..7."""
    k, (a, f, _), head = _pte_mapped_thp()
    fo.folio_pincount_add(k, head, 1)
    k.get_page(a, head, "t:pin")
    for i in range(5):
        k.clear_flag(head + i, PG_anon_exclusive)
    free_before = sum(1 for p in range(GEO.sys_frames) if k.ref_count(p) == 0)
    assert run_unblocked(op_fork(k, f, 0, 1)) == 0
    # batches from 0..4 and 5, 6 fail (the last page is never batched): 7 retries
    assert k.events["fork_batch_eagain"] == 7 and k.events["fork_prealloc"] == 8
    assert k.events.get("fork_pte_batch", 0) == 0
    for i in range(N):
        child = k.pte_read(1, BASE + i) >> PTE_PFN_SHIFT
        assert (child == head + i) == (i < 5)
        assert k.data(child) == 1000 + i
    # three copies allocated; every unused preallocated page went back
    assert sum(1 for p in range(GEO.sys_frames) if k.ref_count(p) == 0) == free_before - 3
    check_pmds(k)
    check_all(k, final=True)


def test_the_retry_drops_both_ptls_between_the_batch_and_the_copy() -> None:
    """The preemption point of the -EAGAIN retry: after the failed batch the parent's
    and the child's PTLs are free (others may take them) while mmap_lock stays held for
    write; nothing is copied for the failed address yet."""
    k, (a, f, _), head = _pte_mapped_thp()
    fo.folio_pincount_add(k, head, 1)
    k.get_page(a, head, "t:pin")
    s = Stepper(op_fork(k, f, 0, 1))
    s.run_until(lambda: k.events.get("fork_batch_eagain", 0) == 1)
    assert k.words.load(k.ptl_word(0, BASE)) == 0 and k.words.load(k.ptl_word(1, BASE)) == 0
    assert k.pte_read(1, BASE) == 0 and k.events.get("fork_prealloc", 0) == 0
    run_unblocked(k.spin_lock(a, k.ptl_word(0, BASE), "t:other"))
    k.spin_unlock(a, k.ptl_word(0, BASE), "t:other")
    assert s.finish(k) == 0
    assert k.pte_read(1, BASE) >> PTE_PFN_SHIFT != head
    check_pmds(k)


def test_the_thp_pte_setup_is_what_a_split_leaves() -> None:
    """A workload's ``thp_pte`` range: the same entries and counts as split_huge_pmd of a
    ``thp`` range, and the invariants (the folio's counts against its entries) hold."""
    table = {
        "name": "t", "geometry": {"sys_frames": 24, "dev_frames": 8, "pages_per_mm": 16,
                                  "ptes_per_table": 8},
        "mm": [{"id": 0, "thp_pte": [{"start": 8, "end": 16}]}],
        "actor": [{"kind": "cpu", "count": 1}],
    }
    m = build_model(parse_workload(table, "t"), "v7", (), 0)
    k = m.kernel
    k.actors = m.actors
    check_all(k, final=True)
    check_pmds(k)
    head = k.pte_read(0, 8) >> PTE_PFN_SHIFT
    # the same from a PMD-mapped THP split by the kernel
    k2, _acts, head2 = _pte_mapped_thp()
    assert pm.pmdp_get(k, 0, 1) == pm.pmdp_get(k2, 0, 1) == PMD_TABLE
    assert [k.pte_read(0, 8 + i) - (head << PTE_PFN_SHIFT) for i in range(N)] == [
        k2.pte_read(0, BASE + i) - (head2 << PTE_PFN_SHIFT) for i in range(N)]
    assert _counts(k, head) == _counts(k2, head2) == (N, N, N)
    for i in range(N):
        assert k.flags(head + i) & PG_anon_exclusive and fo.page_mapcount(k, head + i) == 1
    assert fo.folio_entire_mapcount(k, head) == 0 and fo.folio_test_large(k, head)


def test_a_setup_thp_has_its_mm_in_the_mm_ids_slot() -> None:
    """``thp`` (do_huge_pmd_anonymous_page → folio_add_new_anon_rmap →
    folio_set_large_mapcount(folio, 1, vma)): slot 0 is the mm with the one mapping, so
    a split by the same mm does not mark the folio maybe-mapped-shared (which would stop
    a later write fault from reusing it) and the slot keeps every mapping."""
    table = {
        "name": "t", "geometry": {"sys_frames": 24, "dev_frames": 8, "pages_per_mm": 16,
                                  "ptes_per_table": 8},
        "mm": [{"id": 0, "thp": [{"start": 8, "end": 16}]}],
        "actor": [{"kind": "cpu", "count": 1}],
    }
    m = build_model(parse_workload(table, "t"), "v7", (), 0)
    k = m.kernel
    k.actors = m.actors
    head = pm.pmd_pfn(pm.pmdp_get(k, 0, 1))
    assert fo.folio_mm_id(k, head, 0) == 1 and not fo.folio_maybe_mapped_shared(k, head)
    run_unblocked(hm.split_huge_pmd(k, m.actors[0], 0, k.s.find_vma(0, 8), 8))
    assert not fo.folio_maybe_mapped_shared(k, head)
    assert k.words.load(fo.fo_w(k, head + 1, FO_MM_MAP0)) == fo.folio_large_mapcount(k, head) == N
    check_all(k, final=True)

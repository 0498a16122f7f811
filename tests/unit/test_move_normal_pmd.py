"""v7's ``move_normal_pmd`` (7.0 mm/mremap.c, ``CONFIG_HAVE_MOVE_PMD``; issue 15,
``thpmove``): an mremap of a whole aligned PTE table moves the table by its PMD under
the anon_vma rwsem (always: ``should_take_rmap_locks(NORMAL_PMD)``) and both PMD locks,
with ``flush_tlb_range`` of the old range. Hand-written runs and interleavings."""

from __future__ import annotations

from typing import Any

import pytest
from pagerace.core.machine import folio as fo
from pagerace.core.machine import pmd as pm
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.kernel import S_ACQUIRED
from pagerace.core.machine.layout import (
    PMD_TABLE,
    PTE_PFN_SHIFT,
    PTE_TYPE_MASK,
)
from pagerace.core.mm import huge_memory as hm
from pagerace.core.mm import memory as mem
from pagerace.core.mm.mremap import move_normal_pmd as mem_move_normal_pmd
from pagerace.core.mm.mremap import op_mremap
from pagerace.core.mm.rmap import anon_vma_lock_read, anon_vma_unlock_read
from pagerace.core.oracles.invariants import check_all
from pagerace.core.world import install_mm
from strategies import Stepper, run_unblocked, thp, thp_geometry

GEO = thp_geometry()
N = GEO.hpage_pmd_nr
BASE = 8  # PMD 1: pages 8..15; the VMA is [0, 16); the destination PMD 3: pages 24..31


def _pte_mapped_thp(faults: tuple[str, ...] = ()) -> tuple[Any, list[Any], int, int]:
    """A THP at PMD 1 of mm 0, split to PTEs (a PTE table mapping the large folio), the
    mm oracles installed; CPU ``b`` (actor 1) has written page BASE + 2 (a 4K TLB
    entry)."""
    k, acts, vma, head = thp(GEO, faults=faults, vma_end=16)
    run_unblocked(hm.split_huge_pmd(k, acts[0], 0, vma, BASE))
    install_mm(k)
    assert run_unblocked(mem.cpu_access(k, acts[1], 0, BASE + 2, True)) == mem.ACCESS_OK
    assert k.tlb_lookup(acts[1], 0, BASE + 2) >= 0
    return k, acts, vma, head


def test_aligned_mremap_of_a_pte_table_moves_it_by_its_pmd() -> None:
    """The old PMD is none, the new one the table with every entry in place (the same
    pages, bits and shadow), the old range's 4K TLB entries flushed, the folio's counts
    untouched; the rmap finds the pages at the new address."""
    k, (a, b, _), _vma, head = _pte_mapped_thp()
    before = [k.pte_read(0, BASE + i) for i in range(N)]
    counts = (fo.folio_ref_count(k, head), fo.folio_large_mapcount(k, head))
    assert run_unblocked(op_mremap(k, a, 0, BASE, N, 24)) == 0
    assert k.events["move_normal_pmd"] == 1
    assert pm.pmd_none(pm.pmdp_get(k, 0, 1)) and pm.pmdp_get(k, 0, 3) == PMD_TABLE
    assert [k.pte_read(0, 24 + i) for i in range(N)] == before
    assert all(k.pte_read(0, BASE + i) == 0 for i in range(N))
    assert k.tlb_lookup(b, 0, BASE + 2) < 0
    assert (fo.folio_ref_count(k, head), fo.folio_large_mapcount(k, head)) == counts
    assert k.shadow(0, 24 + 5) == 1005 and k.shadow(0, BASE + 5) == 0
    assert run_unblocked(mem.cpu_access(k, b, 0, 24 + 2, True)) == mem.ACCESS_OK
    assert run_unblocked(mem.cpu_access(k, b, 0, BASE + 2, False)) == mem.ACCESS_SIGSEGV
    check_all(k, final=True)


def test_a_partial_table_moves_entry_by_entry() -> None:
    """Half a table is not a whole extent: move_ptes, no move_normal_pmd."""
    k, (a, _, _), _vma, head = _pte_mapped_thp()
    assert run_unblocked(op_mremap(k, a, 0, BASE + 4, 4, 24)) == 0
    assert k.events.get("move_normal_pmd", 0) == 0
    assert pm.pmdp_get(k, 0, 1) == PMD_TABLE and pm.pmdp_get(k, 0, 3) == PMD_TABLE
    assert [k.pte_read(0, 24 + i) >> PTE_PFN_SHIFT for i in range(4)] == list(
        range(head + 4, head + 8))


@pytest.mark.parametrize("faults", [(), ("move_pmd_no_flush",)])
def test_without_the_flush_a_store_at_the_old_address_is_stale(faults: tuple[str, ...]) -> None:
    """flush_tlb_range(old range) after pmd_populate: without it CPU b's 4K entry of the
    old address survives and its store lands in a page now mapped elsewhere."""
    k, (a, b, _), _vma, _head = _pte_mapped_thp(faults)
    assert run_unblocked(op_mremap(k, a, 0, BASE, N, 24)) == 0
    if faults:
        with pytest.raises(InvariantViolation) as e:
            run_unblocked(mem.cpu_access(k, b, 0, BASE + 2, True))
        assert e.value.failure.kind == FailureKind.STALE_TLB
    else:
        assert run_unblocked(mem.cpu_access(k, b, 0, BASE + 2, True)) == mem.ACCESS_SIGSEGV


def test_move_normal_pmd_always_takes_the_rmap_lock() -> None:
    """should_take_rmap_locks(NORMAL_PMD) is true even when need_rmap_locks is false (a
    new VMA after the old one in rmap order): the anon_vma rwsem for write is taken
    around move_normal_pmd, and a reader holding it holds the move off."""
    k, (a, _b, _), _vma, _head = _pte_mapped_thp()
    assert run_unblocked(op_mremap(k, a, 0, BASE, N, 24)) == 0
    assert k.events.get("mremap_need_rmap_locks", 0) == 0
    assert k.stats["move_normal_pmd:take_rmap_locks"][S_ACQUIRED] == 1
    # the same move held off by an rmap walk (the anon_vma rwsem for read)
    k2, (a2, b2, _), _vma2, _head2 = _pte_mapped_thp()
    # WARN_ON_ONCE(!pmd_none(*new_pmd)): every PMD of a fresh mm is a table
    assert run_unblocked(mem_move_normal_pmd(k2, a2, 0, 1, 3)) is False
    assert k2.events["move_normal_pmd_new_not_none"] == 1
    pm.set_pmd_at(k2, 0, 3, 0)  # what move_page_tables_v7 does for an empty table
    run_unblocked(anon_vma_lock_read(k2, b2, 0, "t:rmap_walk"))
    gen = mem_move_normal_pmd(k2, a2, 0, 1, 3)
    mv = Stepper(gen)
    mv.step()
    assert mv.blocked_on(k2) is not None and mv.last.site == "move_normal_pmd:take_rmap_locks"
    assert pm.pmdp_get(k2, 0, 1) == PMD_TABLE and k2.pte_read(0, BASE) & PTE_TYPE_MASK
    anon_vma_unlock_read(k2, b2, 0, "t:rmap_walk")
    assert mv.finish(k2) is True and k2.events["move_normal_pmd"] == 1


def test_a_pmd_that_is_no_longer_a_table_under_the_lock_is_not_moved() -> None:
    """'Racing with collapse?': the PMD read under the PMD lock is no longer a table (here
    a hand-made none PMD, as a collapse or a free of the table would leave it): not
    moved, and move_page_tables then finds the old PMD none and skips the extent."""
    k, (a, b, _), _vma, _head = _pte_mapped_thp()
    ptl = pm.pmd_lockptr(k, 0, 1)
    run_unblocked(k.spin_lock(b, ptl, "t:other"))
    mv = Stepper(op_mremap(k, a, 0, BASE, N, 24))
    mv.run_until(lambda: mv.blocked_on(k) is not None)
    assert mv.last.site == "move_normal_pmd:old_ptl"
    for i in range(N):
        k.words.store(k.pte_w(0, BASE + i), 0)
    pm.set_pmd_at(k, 0, 1, 0)
    k.spin_unlock(b, ptl, "t:other")
    assert mv.finish(k) == 0
    assert k.events.get("move_normal_pmd", 0) == 0 and k.events["move_normal_pmd_not_table"] == 1
    assert pm.pmd_none(pm.pmdp_get(k, 0, 3))

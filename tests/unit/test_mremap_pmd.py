"""v7's mremap of a huge PMD (issue 15): move_page_tables with the PMD level and
move_huge_pmd (7.0 mm/mremap.c, mm/huge_memory.c), hand-written."""

from __future__ import annotations

from pagerace.core.machine import folio as fo
from pagerace.core.machine import pmd as pm
from pagerace.core.machine.kernel import Block
from pagerace.core.machine.layout import (
    PMD_TABLE,
    PTE_DEVICE_PRIVATE,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    PTE_WRITE,
    pte_encode,
)
from pagerace.core.mm import memory as mem
from pagerace.core.mm.mremap import op_mremap
from pagerace.core.oracles.invariants import check_all
from strategies import THP_BITS, Stepper, run_unblocked, thp, thp_geometry

GEO = thp_geometry()
N = GEO.hpage_pmd_nr
BASE = 8  # the THP is PMD 1: pages 8..15; the VMA is [0, 16)


def _thp(zone: int = 0, kind: int = PTE_PRESENT, bits: int = THP_BITS):
    k, acts, _vma, head = thp(GEO, zone=zone, kind=kind, bits=bits, vma_end=16)
    return k, acts, head


def test_aligned_mremap_moves_the_huge_pmd_whole() -> None:
    """move_huge_pmd: the old PMD none, the new one the same leaf, the huge TLB entry of
    the old address flushed, the data read at the new address; the rmap finds it."""
    k, (a, b, _), head = _thp()
    assert run_unblocked(mem.cpu_access(k, b, 0, BASE + 2, False)) == mem.ACCESS_OK
    assert pm.htlb_lookup(k, b, 0, 1) >= 0
    old = pm.pmdp_get(k, 0, 1)
    assert run_unblocked(op_mremap(k, a, 0, BASE, N, 24)) == 0
    assert k.events["move_huge_pmd"] == 1
    assert pm.pmd_none(pm.pmdp_get(k, 0, 1)) and pm.pmdp_get(k, 0, 3) & ~0x3FF == old & ~0x3FF
    assert pm.htlb_lookup(k, b, 0, 1) < 0
    assert fo.folio_mapcount(k, head) == 1 and k.shadow(0, 24 + 5) == 1005
    assert run_unblocked(mem.cpu_access(k, b, 0, 24 + 5, True)) == mem.ACCESS_OK
    assert k.events.get("thp_split_pmd", 0) == 0
    check_all(k, final=True)


def test_aligned_mremap_moves_a_device_private_pmd() -> None:
    """is_swap_pmd: a device-private PMD moves as it is (no flush needed)."""
    k, (a, _, _), head = _thp(zone=1, kind=PTE_DEVICE_PRIVATE, bits=PTE_WRITE)
    assert run_unblocked(op_mremap(k, a, 0, BASE, N, 24)) == 0
    assert pm.pmdp_get(k, 0, 3) & PTE_TYPE_MASK == PTE_DEVICE_PRIVATE
    assert pm.pmd_pfn(pm.pmdp_get(k, 0, 3)) == head and pm.pmd_none(pm.pmdp_get(k, 0, 1))


def test_unaligned_mremap_splits_then_moves_ptes() -> None:
    """Half a THP: split_huge_pmd, then move_ptes of the four PTEs into a table that
    pte_alloc installs; the other half stays mapped by PTEs at the old address."""
    k, (a, _, _), head = _thp()
    assert run_unblocked(op_mremap(k, a, 0, BASE + 4, 4, 20)) == 0
    assert k.events.get("move_huge_pmd", 0) == 0 and pm.pmdp_get(k, 0, 1) == PMD_TABLE
    for i in range(4):
        assert k.pte_read(0, BASE + i) >> PTE_PFN_SHIFT == head + i
        assert k.pte_read(0, 20 + i) >> PTE_PFN_SHIFT == head + 4 + i
        assert k.pte_read(0, BASE + 4 + i) & PTE_TYPE_MASK == 0
    assert run_unblocked(mem.cpu_access(k, a, 0, 21, False)) == mem.ACCESS_OK
    check_all(k, final=True)


def test_move_rechecks_the_pmd_under_its_lock() -> None:
    """__pmd_trans_huge_lock: the mremap read a huge PMD, but a split holds the PMD lock;
    once the split has left a PTE table, move_huge_pmd finds no huge leaf under the
    lock and does not move it: the PTEs move one by one instead."""
    k, (a, b, _), head = _thp()
    ptl = pm.pmd_lockptr(k, 0, 1)
    run_unblocked(k.spin_lock(b, ptl, "t:split"))
    mv = Stepper(op_mremap(k, a, 0, BASE, N, 24))
    req = mv.step()
    while not isinstance(req, Block):
        req = mv.step()
    assert req.target == ptl
    for i in range(N):  # what __split_huge_pmd_locked leaves (the rmap aside)
        k.words.store(k.pte_w(0, BASE + i), pte_encode(PTE_PRESENT, head + i, PTE_WRITE))
    pm.set_pmd_at(k, 0, 1, PMD_TABLE)
    k.spin_unlock(b, ptl, "t:split")
    assert mv.finish(k) == 0
    assert k.events.get("move_huge_pmd", 0) == 0
    assert [k.pte_read(0, 24 + i) >> PTE_PFN_SHIFT for i in range(N)] == list(range(head, head + N))
    assert pm.pmdp_get(k, 0, 3) == PMD_TABLE and pm.pmdp_get(k, 0, 1) == PMD_TABLE

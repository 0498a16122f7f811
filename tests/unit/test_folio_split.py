"""The split of a mapped large folio (core/mm/huge_memory.py ``__folio_split``,
``split_folio``; core/mm/migrate_device.py ``migrate_vma_split_folio``; issue 15
stage 3a): unmap_folio through the PMD split with freeze, the refcount freeze, remap of
each new folio, the lock hand-over to the fault folio, and a CPU racing the split."""

from __future__ import annotations

from pagerace.core.machine import folio as fo
from pagerace.core.machine import pmd as pm
from pagerace.core.machine.layout import (
    PMD_TABLE,
    PTE_DEVICE_PRIVATE,
    PTE_DIRTY,
    PTE_MIGRATION,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    PTE_WRITE,
    PG_anon_exclusive,
    PG_lru,
    mapping_encode,
)
from pagerace.core.mm import huge_memory as hm
from pagerace.core.mm.migrate_device import migrate_vma_split_folio
from strategies import THP_BITS, Stepper, run_unblocked, thp, thp_geometry

GEO = thp_geometry()
N = GEO.hpage_pmd_nr
BITS = THP_BITS


def _thp(zone: int = 0, kind: int = PTE_PRESENT):
    """A PMD-mapped THP at PMD 1 of mm 0 (a v6 kernel, no shadow), on the LRU when in
    system memory; a non-present entry keeps only PTE_WRITE."""
    return thp(GEO, variant="v6", zone=zone, kind=kind,
               bits=BITS if kind == PTE_PRESENT else PTE_WRITE,
               flags=PG_lru if zone == 0 else 0, shadow=False)


def _check_split(k, head: int, kind: int) -> None:
    for i in range(N):
        p = head + i
        assert fo.page_folio(k, p) == p and fo.folio_order(k, p) == 0
        pte = k.pte_read(0, 8 + i)
        assert pte & PTE_TYPE_MASK == kind and pte >> 16 == p and pte & PTE_WRITE
        assert k.mapcount(p) == 1 and k.test_flag(p, PG_anon_exclusive)
        assert k.data(p) == 1000 + i
        assert int(k.s.mapping[p]) == mapping_encode(0, 8 + i)
    assert pm.pmdp_get(k, 0, 1) == PMD_TABLE


def test_split_folio_of_a_pmd_mapped_thp() -> None:
    k, (a, _, _), _vma, head = _thp()
    assert run_unblocked(migrate_vma_split_folio(k, a, head, -1)) == 0
    _check_split(k, head, PTE_PRESENT)
    for i in range(N):
        assert fo.folio_ref_count(k, head + i) == 1  # its mapping's
        assert not k.page_locked(head + i)
        assert k.test_flag(head + i, PG_lru)  # lru_add_split_folio
    assert not a.held


def test_split_folio_of_a_pte_mapped_thp() -> None:
    k, (a, _, _), vma, head = _thp()
    run_unblocked(hm.split_huge_pmd(k, a, 0, vma, 8))
    assert fo.folio_ref_count(k, head) == N
    assert run_unblocked(migrate_vma_split_folio(k, a, head, -1)) == 0
    _check_split(k, head, PTE_PRESENT)
    assert all(fo.folio_ref_count(k, head + i) == 1 for i in range(N))


def test_split_of_a_device_private_thp() -> None:
    k, (a, _, _), _vma, head = _thp(zone=1, kind=PTE_DEVICE_PRIVATE)
    assert run_unblocked(migrate_vma_split_folio(k, a, head, -1)) == 0
    _check_split(k, head, PTE_DEVICE_PRIVATE)


def test_split_keeps_the_fault_folio_locked() -> None:
    """With a fault page in the folio (locked by the fault path, which holds a
    reference), the lock and reference move to the fault page's new folio."""
    k, (a, _, _), _vma, head = _thp()
    fault_page = head + 5
    k.get_page(a, head, "t:fault_ref")
    assert k.trylock_page(a, head, "t:fault_lock")
    assert run_unblocked(migrate_vma_split_folio(k, a, head, fault_page)) == 0
    assert k.page_lock_owner(fault_page) == a.id and k.fw(fault_page, 0) in a.held
    assert not k.page_locked(head) and k.fw(head, 0) not in a.held
    assert fo.folio_ref_count(k, fault_page) == 2  # mapping + the fault path's
    assert fo.folio_ref_count(k, head) == 1
    assert sorted(a.held) == [k.fw(fault_page, 0)]


def test_split_refused_with_an_extra_reference() -> None:
    """A GUP pin (one more reference and _pincount) fails the racy expected-refcount
    check: -EAGAIN, the folio stays PMD-mapped and whole, nothing held."""
    k, (a, b, _), _vma, head = _thp()
    k.get_page(b, head, "t:pin")
    fo.folio_pincount_add(k, head, 1)
    assert run_unblocked(migrate_vma_split_folio(k, a, head, -1)) == -hm.EAGAIN
    assert fo.folio_order(k, head) == 3 and fo.folio_entire_mapcount(k, head) == 1
    assert pm.pmdp_get(k, 0, 1) & PTE_TYPE_MASK == PTE_PRESENT
    assert fo.folio_ref_count(k, head) == 2 and not a.held


def test_split_of_an_unmapped_folio_is_busy() -> None:
    k, (a, _, _), _vma, head = _thp()
    pm.pmdp_huge_get_and_clear(k, 0, 1)
    fo.folio_remove_rmap_pmd(k, head, 0)
    assert k.trylock_page(a, head, "t:lock")
    assert run_unblocked(hm.split_folio(k, a, head)) == -hm.EBUSY
    assert fo.folio_order(k, head) == 3


def test_cpu_races_the_split() -> None:
    """Between unmap_folio and remap_page a CPU's walk traps on the migration entries
    (the same entries a fault would wait on), and after the split it reads the same
    content through the new PTE."""
    k, (a, b, _), _vma, head = _thp()
    assert pm.hw_translate(k, b, 0, 11, write=False) == head + 3
    split = Stepper(migrate_vma_split_folio(k, a, head, -1))
    saw_migration = False
    while not split.done:
        split.step()
        pte = k.pte_read(0, 11)
        if pm.pmdp_get(k, 0, 1) == PMD_TABLE and pte & PTE_TYPE_MASK == PTE_MIGRATION:
            saw_migration = True
            assert pm.hw_translate(k, b, 0, 11, write=False) == -1  # traps
            assert k.page_locked(fo.page_folio(k, pte >> 16))  # its folio is locked
    assert saw_migration
    got = pm.hw_translate(k, b, 0, 11, write=False)
    assert got == head + 3 and k.data(got) == 1003


def test_pmd_migration_entry_and_back() -> None:
    """set_pmd_migration_entry / remove_migration_pmd (the compound collect and its
    restore): the PMD mapping and reference go into the entry and come back."""
    k, (a, _, _), _vma, head = _thp()
    k.get_page(a, head, "t:collect_ref")
    ptl = run_unblocked(pm.pmd_lock(k, a, 0, 1, "t:pmd_lock"))
    assert hm.set_pmd_migration_entry(k, a, 0, 1, head) == 0
    pmd = pm.pmdp_get(k, 0, 1)
    assert pmd & PTE_TYPE_MASK == PTE_MIGRATION and pmd & PTE_WRITE and pmd & PTE_DIRTY
    assert not fo.folio_mapped(k, head) and fo.folio_ref_count(k, head) == 1
    hm.remove_migration_pmd(k, a, 0, 1, head)
    k.spin_unlock(a, ptl, "t:pmd_unlock")
    assert pm.pmdp_get(k, 0, 1) & PTE_TYPE_MASK == PTE_PRESENT
    assert fo.folio_entire_mapcount(k, head) == 1 and fo.folio_ref_count(k, head) == 2
    assert k.test_flag(head, PG_anon_exclusive)


def test_pmd_migration_entry_refused_for_a_pinned_folio() -> None:
    k, (a, _, _), _vma, head = _thp()
    fo.folio_pincount_add(k, head, 1)
    before = pm.pmdp_get(k, 0, 1)
    ptl = run_unblocked(pm.pmd_lock(k, a, 0, 1, "t:pmd_lock"))
    assert hm.set_pmd_migration_entry(k, a, 0, 1, head) == -hm.EBUSY
    k.spin_unlock(a, ptl, "t:pmd_unlock")
    assert pm.pmdp_get(k, 0, 1) == before and fo.folio_entire_mapcount(k, head) == 1

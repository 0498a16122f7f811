"""v7's CPU side of THP (issue 15): hand-written interleavings of the CPU access and
fault path through a PMD (core/mm/memory.py handle_pmd_fault_v7, core/mm/huge_memory.py
do_huge_pmd_wp_page / huge_pmd_set_accessed), as 7.0's __handle_mm_fault writes them."""

from __future__ import annotations

from pagerace.core.machine import folio as fo
from pagerace.core.machine import pmd as pm
from pagerace.core.machine.kernel import Block
from pagerace.core.machine.layout import (
    PMD_INVALID,
    PMD_TABLE,
    PTE_DEVICE_PRIVATE,
    PTE_DIRTY,
    PTE_MIGRATION,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    PTE_WRITE,
    PTE_YOUNG,
    PG_anon,
    PG_anon_exclusive,
    pte_encode,
)
from pagerace.core.mm import huge_memory as hm
from pagerace.core.mm import memory as mem
from strategies import THP_BITS, Stepper, run_unblocked, thp, thp_geometry

GEO = thp_geometry()
N = GEO.hpage_pmd_nr
BASE = 8  # the THP is PMD 1: pages 8..15


def _thp(zone: int = 0, kind: int = PTE_PRESENT, bits: int = THP_BITS, exclusive: bool = True):
    """A PMD-mapped anonymous THP at PMD 1 of mm 0 with per-page content the shadow
    agrees with (the stale-read oracle checks every load)."""
    return thp(GEO, zone=zone, kind=kind, bits=bits, exclusive=exclusive)


def test_read_and_write_through_a_huge_pmd() -> None:
    """The hardware walk uses the huge PMD (accessed, then dirty on a store) and fills
    the huge TLB; no fault."""
    k, (a, _, _), _vma, head = _thp(bits=PTE_WRITE)
    assert run_unblocked(mem.cpu_access(k, a, 0, BASE + 3, False)) == mem.ACCESS_OK
    assert pm.pmdp_get(k, 0, 1) == pte_encode(PTE_PRESENT, head, PTE_WRITE | PTE_YOUNG)
    assert pm.htlb_lookup(k, a, 0, 1) == head << 1  # read-only translation cached
    assert run_unblocked(mem.cpu_access(k, a, 0, BASE + 5, True)) == mem.ACCESS_OK
    assert pm.pmdp_get(k, 0, 1) & PTE_DIRTY
    assert k.data(head + 5) == k.shadow(0, BASE + 5)
    assert k.events.get("faults", 0) == 0


def test_write_to_readonly_exclusive_huge_pmd_reuses() -> None:
    """do_huge_pmd_wp_page: PageAnonExclusive under the PMD lock: reuse, no split."""
    k, (a, _, _), _vma, head = _thp(bits=PTE_YOUNG)
    assert run_unblocked(mem.cpu_access(k, a, 0, BASE + 2, True)) == mem.ACCESS_OK
    pmd = pm.pmdp_get(k, 0, 1)
    assert pmd & PTE_TYPE_MASK == PTE_PRESENT and pmd & PTE_WRITE and pmd & PTE_DIRTY
    assert k.events["thp_wp_reuse"] == 1 and fo.folio_ref_count(k, head) == 1


def test_write_to_readonly_shared_huge_pmd_sole_reference_reuses() -> None:
    """Not exclusive, but the folio lock is got and the PMD's is the only reference:
    SetPageAnonExclusive and reuse."""
    k, (a, _, _), _vma, head = _thp(bits=PTE_YOUNG, exclusive=False)
    assert not k.test_flag(head, PG_anon_exclusive)
    assert run_unblocked(mem.cpu_access(k, a, 0, BASE, True)) == mem.ACCESS_OK
    assert k.test_flag(head, PG_anon_exclusive) and not k.page_locked(head)
    assert pm.pmdp_get(k, 0, 1) & PTE_WRITE


def test_write_to_readonly_referenced_huge_pmd_splits_and_copies() -> None:
    """An extra reference (a GUP pin, a migration): unlock_fallback, __split_huge_pmd,
    VM_FAULT_FALLBACK, and do_wp_page at the PTE level copies the one page."""
    k, (a, b, _), _vma, head = _thp(bits=PTE_YOUNG, exclusive=False)
    k.get_page(b, head, "t:extra")
    assert run_unblocked(mem.cpu_access(k, a, 0, BASE + 4, True)) == mem.ACCESS_OK
    assert pm.pmdp_get(k, 0, 1) == PMD_TABLE
    assert k.events["thp_wp_fallback"] == 1 and k.events["wp_copy"] == 1
    pte = k.pte_read(0, BASE + 4)
    assert pte & PTE_WRITE and pte >> PTE_PFN_SHIFT != head + 4  # a copy
    for i in (0, 1, 7):  # the other pages stay mapped, read-only, by PTEs
        assert k.pte_read(0, BASE + i) >> PTE_PFN_SHIFT == head + i
    assert fo.page_mapcount(k, head + 4) == 0 and not k.page_locked(head)
    assert run_unblocked(mem.cpu_access(k, a, 0, BASE + 4, False)) == mem.ACCESS_OK  # reads its write


def test_wp_waits_for_the_folio_lock_and_rechecks() -> None:
    """The trylock fails: a reference, the PMD lock dropped, a sleep on the folio lock;
    the PMD changed meanwhile (another fault reused it): return 0, put, unlock."""
    k, (a, b, _), vma, head = _thp(bits=PTE_YOUNG, exclusive=False)
    orig = pm.pmdp_get(k, 0, 1)
    assert k.trylock_page(b, head, "t:other")
    wp = Stepper(hm.do_huge_pmd_wp_page(k, a, 0, vma, BASE + 1, orig))
    req = wp.step()
    while not isinstance(req, Block):
        req = wp.step()
    assert req.kind == "page" and req.target == head and not a.held
    assert fo.folio_ref_count(k, head) == 2  # the sleeper's reference
    pm.set_pmd_at(k, 0, 1, orig | PTE_WRITE)  # someone else made it writable
    k.unlock_page(b, head, "t:unlock")
    assert wp.finish(k) == 0
    assert fo.folio_ref_count(k, head) == 1 and not k.page_locked(head) and not a.held


def test_access_waits_on_a_pmd_migration_entry() -> None:
    """A PMD migration entry traps; pmd_migration_entry_wait sleeps on the folio lock
    (no reference); once the migration puts the PMD back and unlocks, the access
    completes through the huge PMD."""
    k, (a, b, _), _vma, head = _thp(kind=PTE_MIGRATION, bits=PTE_WRITE)
    assert k.trylock_page(b, head, "t:migrate")
    acc = Stepper(mem.cpu_access(k, a, 0, BASE + 6, False))
    req = acc.step()
    while not isinstance(req, Block):
        req = acc.step()
    assert req.kind == "page" and req.target == head and fo.folio_ref_count(k, head) == 1
    assert k.events["thp_pmd_faults"] == 1
    pm.set_pmd_at(k, 0, 1, pte_encode(PTE_PRESENT, head, PTE_WRITE | PTE_YOUNG))
    k.unlock_page(b, head, "t:unlock")
    assert acc.finish(k) == mem.ACCESS_OK
    assert pm.htlb_lookup(k, a, 0, 1) == head << 1


class _FakeDevice:
    def __init__(self) -> None:
        self.calls: list[tuple[int, bool]] = []

    def migrate_to_ram(self, k, a, mm, vpn, pfn, locked, pmd=False):
        self.calls.append((pfn, k.page_lock_owner(pfn) == a.id))
        return 0
        yield  # pragma: no cover


def test_fault_on_a_device_private_pmd_calls_the_driver() -> None:
    """__handle_mm_fault: a device-private PMD goes to do_huge_pmd_device_private,
    which hands the locked head to the driver."""
    k, (a, _, _), _vma, head = _thp(zone=1, kind=PTE_DEVICE_PRIVATE, bits=PTE_WRITE)
    dev = _FakeDevice()
    k.devices = [dev]
    assert run_unblocked(mem.handle_mm_fault(k, a, 0, BASE + 3, False)) == mem.VM_FAULT_OK
    assert dev.calls == [(head, True)] and not k.page_locked(head) and not a.held


def test_fault_during_a_split_waits_for_the_pmd_lock() -> None:
    """A CPU traps on the PMD the split invalidated, waits for the PMD lock in the
    fault path, finds the PMD changed (huge_pmd_set_accessed: not pmd_same) and retries
    the access through the new PTE."""
    k, (a, b, _), vma, head = _thp()
    split = Stepper(hm.split_huge_pmd(k, a, 0, vma, BASE))
    while not pm.pmdp_get(k, 0, 1) & PMD_INVALID:
        split.step()
    acc = Stepper(mem.cpu_access(k, b, 0, BASE + 2, True))
    req = acc.step()
    while not isinstance(req, Block):
        req = acc.step()
    assert k.lock_owner(req.lock) == a.id  # the PMD lock, held by the split
    split.finish(k)
    assert acc.finish(k) == mem.ACCESS_OK
    assert pm.pmdp_get(k, 0, 1) == PMD_TABLE
    assert k.pte_read(0, BASE + 2) & PTE_DIRTY and k.data(head + 2) == k.shadow(0, BASE + 2)


def test_fault_on_pmd_none_installs_a_table() -> None:
    """No THP-eligible VMA in the model: pmd none falls back to the PTE level, whose
    pte_alloc installs the table; do_anonymous_page maps a small page."""
    k, (a, _, _), _vma, _head = _thp()
    pm.set_pmd_at(k, 0, 2, 0)
    assert run_unblocked(mem.cpu_access(k, a, 0, 2 * N + 1, True)) == mem.ACCESS_OK
    assert pm.pmdp_get(k, 0, 2) == PMD_TABLE
    assert k.pte_read(0, 2 * N + 1) & PTE_TYPE_MASK == PTE_PRESENT


# -- zap (core/mm/vma.py _zap_pmd, core/mm/huge_memory.py zap_huge_pmd) -------------------
def test_munmap_of_a_whole_huge_pmd_zaps_it() -> None:
    """zap_huge_pmd: the PMD cleared, the rmap removed, the huge TLB flushed before the
    unlock, the folio's last reference put after: freed."""
    from pagerace.core.mm import vma as vm

    k, (a, b, _), _vma, head = _thp()
    assert run_unblocked(mem.cpu_access(k, b, 0, BASE + 1, False)) == mem.ACCESS_OK
    assert pm.htlb_lookup(k, b, 0, 1) >= 0
    assert run_unblocked(vm.op_munmap(k, a, 0, BASE, BASE + N)) == 0
    assert pm.pmdp_get(k, 0, 1) == 0 and pm.htlb_lookup(k, b, 0, 1) == -1
    assert fo.folio_ref_count(k, head) == 0 and not k.test_flag(head, PG_anon)
    assert k.events["thp_zap_pmd"] == 1 and k.shadow(0, BASE + 1) == 0


def test_zap_of_device_private_and_migration_pmds() -> None:
    """A device-private PMD loses its rmap and reference at once; a PMD migration entry
    is only cleared (the migration holds the folio)."""
    from pagerace.core.mm import vma as vm

    k, (a, _, _), _vma, head = _thp(zone=1, kind=PTE_DEVICE_PRIVATE, bits=PTE_WRITE)
    k.get_page(a, head, "t:hold")  # keep it from being freed, to look at it
    run_unblocked(vm.zap_pte_range(k, a, 0, BASE, BASE + N, "unmap_region"))
    assert pm.pmdp_get(k, 0, 1) == 0
    assert fo.folio_ref_count(k, head) == 1 and fo.folio_mapcount(k, head) == 0
    k, (a, _b, _), _vma, head = _thp(kind=PTE_MIGRATION, bits=PTE_WRITE)
    fo.folio_remove_rmap_pmd(k, head, 0)  # as set_pmd_migration_entry leaves it
    run_unblocked(vm.zap_pte_range(k, a, 0, BASE, BASE + N, "unmap_region"))
    assert pm.pmdp_get(k, 0, 1) == 0 and fo.folio_ref_count(k, head) == 1


def test_munmap_of_half_a_thp_splits_then_zaps_ptes() -> None:
    """munmap of part of a PMD: __split_huge_pmd, then zap_pte_range of the pages in the
    range: the folio keeps one reference and one mapping per remaining page; the rest
    of the THP still reads its data; unmapping the rest frees the folio."""
    from pagerace.core.mm import vma as vm

    k, (a, b, _), _vma, head = _thp()
    assert run_unblocked(vm.op_munmap(k, a, 0, BASE, BASE + N // 2)) == 0
    assert pm.pmdp_get(k, 0, 1) == PMD_TABLE
    assert all(k.pte_read(0, BASE + i) == 0 for i in range(N // 2))
    assert fo.folio_ref_count(k, head) == N // 2 and fo.folio_large_mapcount(k, head) == N // 2
    assert run_unblocked(mem.cpu_access(k, b, 0, BASE + N - 1, False)) == mem.ACCESS_OK
    assert run_unblocked(vm.op_munmap(k, a, 0, BASE + N // 2, BASE + N)) == 0
    assert fo.folio_ref_count(k, head) == 0


def test_cpu_fault_races_a_zap_of_the_huge_pmd() -> None:
    """madvise(DONTNEED) of a THP races a CPU write fault on a read-only huge PMD: the
    fault read the PMD locklessly, the zap clears it (and flushes) before the fault
    takes the PMD lock; do_huge_pmd_wp_page finds it changed (not pmd_same) and the
    access retries: it faults in a fresh small page on the none PMD (pte_alloc). The
    gather's reference keeps the folio until tlb_finish_mmu."""
    k, (a, b, _), _vma, head = _thp(bits=PTE_YOUNG)
    acc = Stepper(mem.cpu_access(k, b, 0, BASE + 3, True))
    acc.run_until(lambda: k.events.get("thp_pmd_faults", 0) == 1)
    # at the yield between the lockless read and the PMD lock
    zap = Stepper(hm.zap_huge_pmd(k, a, 0, 1, "t:zap", lambda v: k.set_shadow(0, v, 0)))
    zap.step()  # cleared, flushed, unlocked; the folio still held by the gather
    assert pm.pmdp_get(k, 0, 1) == 0 and fo.folio_ref_count(k, head) == 1
    assert acc.finish(k) == mem.ACCESS_OK
    assert pm.pmdp_get(k, 0, 1) == PMD_TABLE
    assert k.pte_read(0, BASE + 3) >> PTE_PFN_SHIFT != head + 3
    assert "thp_wp_reuse" not in k.events and "thp_wp_fallback" not in k.events
    assert zap.finish(k) == 1 and fo.folio_ref_count(k, head) == 0

"""The split paths of 7.0's mm/huge_memory.c (core/mm/huge_memory.py; issue 15 stage 2):
hand-written interleavings of split_huge_pmd (present, frozen, device-private and
migration PMDs) with CPU walks and faults, pmd_migration_entry_wait,
do_huge_pmd_device_private, and the refcount freeze of folio_split_unmapped."""

from __future__ import annotations

from pagerace.core.machine import folio as fo
from pagerace.core.machine import pmd as pm
from pagerace.core.machine.kernel import Block
from pagerace.core.machine.layout import (
    PMD_INVALID,
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
    PG_anon,
    PG_anon_exclusive,
    PG_head,
    PG_isolated,
    PG_locked,
    PG_swapcache,
    mapping_encode,
    pte_encode,
)
from pagerace.core.mm import huge_memory as hm
from strategies import THP_BITS, Stepper, kernel_with_actors, run_unblocked, thp, thp_geometry

GEO = thp_geometry()
N = GEO.hpage_pmd_nr


def _thp(zone: int = 0, kind: int = PTE_PRESENT, bits: int = THP_BITS, idx: int = 1):
    """A PMD-mapped anonymous THP at PMD ``idx`` of mm 0 (a v6 kernel, no shadow), as
    do_huge_pmd_anonymous_page (or a migration to the device) leaves it: refcount 1,
    entire mapcount 1."""
    return thp(GEO, variant="v6", idx=idx, zone=zone, kind=kind, bits=bits, shadow=False)


def test_split_present_pmd() -> None:
    k, (a, _, _), vma, head = _thp()
    run_unblocked(hm.split_huge_pmd(k, a, 0, vma, 8 + 3))
    assert pm.pmdp_get(k, 0, 1) == PMD_TABLE
    for i in range(N):
        pte = k.pte_read(0, 8 + i)
        assert pte == pte_encode(PTE_PRESENT, head + i, PTE_WRITE | PTE_DIRTY | PTE_YOUNG)
        assert k.test_flag(head + i, PG_anon_exclusive)  # propagated to every page
        assert fo.page_mapcount(k, head + i) == 1
    assert fo.folio_ref_count(k, head) == N  # one reference per PTE mapping
    assert fo.folio_entire_mapcount(k, head) == 0 and fo.folio_large_mapcount(k, head) == N
    assert fo.folio_nr_pages_mapped(k, head) == N
    assert hm.folio_expected_ref_count(k, head) == N
    assert not a.held and pm.hw_translate(k, a, 0, 13, write=True) == head + 5


def test_split_races_a_cpu_walk() -> None:
    """A CPU with the huge translation cached uses it until the split's flush; from the
    invalidation on its walk traps, its fault waits for the PMD lock, and after the
    split it reaches the same page through the new PTE."""
    k, (a, b, _), vma, head = _thp()
    assert pm.hw_translate(k, b, 0, 12, write=False) == head + 4  # huge TLB filled
    split = Stepper(hm.split_huge_pmd(k, a, 0, vma, 12))
    assert split.step() is None  # at the yield after pmdp_invalidate (PMD lock held)
    assert pm.pmdp_get(k, 0, 1) & PMD_INVALID
    assert pm.htlb_lookup(k, b, 0, 1) == -1  # flushed by pmdp_invalidate
    assert pm.hw_translate(k, b, 0, 12, write=False) == -1  # traps
    fault = Stepper(pm.pmd_lock(k, b, 0, 1, "t:fault"))
    req = fault.step()
    assert isinstance(req, Block) and k.lock_owner(req.lock) == a.id
    split.step()
    assert split.done
    fault.step()
    assert fault.done
    k.spin_unlock(b, fault.value, "t:fault_unlock")
    assert pm.hw_translate(k, b, 0, 12, write=False) == head + 4


def test_split_freeze_installs_migration_entries() -> None:
    k, (a, _, _), vma, head = _thp()
    k.get_page(a, head, "t:caller_ref")  # try_to_migrate's caller holds a reference
    assert k.trylock_page(a, head, "t:lock")
    run_unblocked(hm.split_huge_pmd(k, a, 0, vma, 8, freeze=True))
    for i in range(N):
        pte = k.pte_read(0, 8 + i)
        assert pte & PTE_TYPE_MASK == PTE_MIGRATION and pte >> PTE_PFN_SHIFT == head + i
        assert pte & PTE_WRITE and pte & PTE_DIRTY and pte & PTE_YOUNG
    assert not k.test_flag(head, PG_anon_exclusive)  # shared before the freeze
    assert fo.folio_ref_count(k, head) == 1 and not fo.folio_mapped(k, head)


def test_split_freeze_of_a_pinned_exclusive_folio_only_splits() -> None:
    """folio_try_share_anon_rmap_pmd fails on a maybe-pinned folio: freeze is dropped,
    the PMD is split into present PTEs (try_to_migrate fails later)."""
    k, (a, _, _), vma, head = _thp()
    fo.folio_pincount_add(k, head, 1)
    run_unblocked(hm.split_huge_pmd(k, a, 0, vma, 8, freeze=True))
    assert all(k.pte_read(0, 8 + i) & PTE_TYPE_MASK == PTE_PRESENT for i in range(N))
    assert k.test_flag(head, PG_anon_exclusive) and fo.folio_ref_count(k, head) == N


def test_split_readonly_exclusive_freeze() -> None:
    k, (a, _, _), vma, head = _thp(bits=PTE_YOUNG)
    k.get_page(a, head, "t:ref")
    run_unblocked(hm.split_huge_pmd(k, a, 0, vma, 8, freeze=True))
    pte = k.pte_read(0, 9)
    # PageAnonExclusive moves from the page into the entries: readable-exclusive
    # migration entries, the page flag cleared (folio_try_share_anon_rmap_pmd)
    assert pte & PTE_TYPE_MASK == PTE_MIGRATION and pte & PTE_EXCLUSIVE and not pte & PTE_WRITE
    assert not k.test_flag(head, PG_anon_exclusive)


def test_split_device_private_pmd() -> None:
    k, (a, _, _), vma, head = _thp(zone=1, kind=PTE_DEVICE_PRIVATE, bits=PTE_WRITE)
    assert k.is_device_private(head)
    run_unblocked(hm.split_huge_pmd(k, a, 0, vma, 8))
    for i in range(N):
        assert k.pte_read(0, 8 + i) == pte_encode(PTE_DEVICE_PRIVATE, head + i, PTE_WRITE)
        assert fo.page_mapcount(k, head + i) == 1
    assert fo.folio_ref_count(k, head) == N and fo.folio_entire_mapcount(k, head) == 0


def test_split_migration_pmd() -> None:
    k, (a, _, _), vma, head = _thp(kind=PTE_MIGRATION, bits=PTE_EXCLUSIVE | PTE_YOUNG)
    # a PMD migration entry holds no mapcount (set_pmd_migration_entry removed it)
    fo.folio_remove_rmap_pmd(k, head, 0)
    run_unblocked(hm.split_huge_pmd(k, a, 0, vma, 8))
    for i in range(N):
        assert k.pte_read(0, 8 + i) == pte_encode(PTE_MIGRATION, head + i, PTE_EXCLUSIVE | PTE_YOUNG)
    assert fo.folio_ref_count(k, head) == 1 and not fo.folio_mapped(k, head)


def test_pmd_migration_entry_wait() -> None:
    k, (a, b, _), _vma, head = _thp(kind=PTE_MIGRATION)
    assert k.trylock_page(a, head, "t:migration_lock")
    w = Stepper(hm.pmd_migration_entry_wait(k, b, 0, 1))
    req = w.step()
    assert isinstance(req, Block) and req.kind == "page" and req.target == head
    assert not b.held  # the PMD lock was dropped after queueing
    k.unlock_page(a, head, "t:unlock")
    w.step()
    assert w.done
    # No longer a migration entry: return at once, lock released.
    pm.set_pmd_at(k, 0, 1, PMD_TABLE)
    run_unblocked(hm.pmd_migration_entry_wait(k, b, 0, 1))
    assert not b.held


class _FakeDevice:
    """Records what do_huge_pmd_device_private hands the driver."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bool, int, int]] = []

    def migrate_to_ram(self, k, a, mm, vpn, pfn, locked, pmd=False):
        head = fo.page_folio(k, pfn)
        self.calls.append((pfn, k.page_lock_owner(head) == a.id, fo.folio_ref_count(k, head), vpn))
        return 0
        yield  # pragma: no cover


def test_do_huge_pmd_device_private() -> None:
    k, (a, b, _), _vma, head = _thp(zone=1, kind=PTE_DEVICE_PRIVATE, bits=PTE_WRITE)
    dev = _FakeDevice()
    k.devices = [dev]
    orig = pm.pmdp_get(k, 0, 1)
    assert run_unblocked(hm.do_huge_pmd_device_private(k, a, 0, 13, orig)) == 0
    # vmf->page is the entry's page (the head), locked and referenced by the faulter
    assert dev.calls == [(head, True, 2, 13)]
    assert not k.page_locked(head) and fo.folio_ref_count(k, head) == 1 and not a.held
    # The PMD changed since the fault read it: nothing happens.
    assert run_unblocked(hm.do_huge_pmd_device_private(k, a, 0, 13, orig | PTE_DIRTY)) == 0
    # The folio is locked by someone else: the trylock fails, the fault is retried.
    assert k.trylock_page(b, head, "t:other")
    assert run_unblocked(hm.do_huge_pmd_device_private(k, a, 0, 13, orig)) == 0
    assert len(dev.calls) == 1 and not a.held


def _unmapped_locked(zone: int = 0, swapcache: bool = False):
    k, acts = kernel_with_actors(GEO, 3)
    a = acts[0]
    head = fo.folio_alloc(k, a, zone, 3, "t:alloc")
    k.set_flag(head, PG_anon | PG_isolated | (PG_swapcache if swapcache else 0))
    k.s.mapping[head] = mapping_encode(0, 8)
    assert k.trylock_page(a, head, "t:lock")
    return k, acts, head


def test_folio_split_unmapped_uniform() -> None:
    k, (a, _b, _), head = _unmapped_locked()
    assert hm.folio_split_unmapped(k, a, head, 0) == 0
    for i in range(N):
        p = head + i
        assert fo.page_folio(k, p) == p and fo.folio_order(k, p) == 0
        assert fo.folio_ref_count(k, p) == 1
        assert k.page_lock_owner(p) == a.id and k.fw(p, 0) in a.held  # stay locked
        assert k.flags(p) & PG_isolated and not k.flags(p) & PG_head
        assert int(k.s.mapping[p]) == mapping_encode(0, 8 + i)
        assert not any(k.s.folio[p])
    for i in range(N):
        k.unlock_page(a, head + i, "t:unlock")
        fo.folio_put(k, a, head + i, "t:put")
    assert k.s.zones[0, 0] == GEO.sys_frames


def test_folio_split_unmapped_refuses_extra_reference() -> None:
    """A speculative reference taken before the check (or the freeze) makes the split
    fail with -EAGAIN and leaves the folio whole."""
    k, (a, b, _), head = _unmapped_locked()
    assert k.get_page_unless_zero(b, head)
    assert hm.folio_split_unmapped(k, a, head, 0) == -hm.EAGAIN
    assert fo.folio_order(k, head) == 3 and fo.folio_ref_count(k, head) == 2
    # the freeze itself fails the same way when the check passed with a stale count
    assert hm.__dict__["__folio_freeze_and_split_unmapped"](
        k, a, head, 0, head, hm.SPLIT_TYPE_UNIFORM) == -hm.EAGAIN
    assert fo.folio_order(k, head) == 3


def test_folio_split_unmapped_swapcache_counts() -> None:
    k, (a, _, _), head = _unmapped_locked(swapcache=True)
    assert hm.folio_expected_ref_count(k, head) == N
    k.words.fetch_add(k.fw(head, 1), N)  # the swap cache's references
    assert hm.folio_split_unmapped(k, a, head, 0) == 0
    assert all(fo.folio_ref_count(k, head + i) == 2 for i in range(N))


def test_non_uniform_split_and_driver_callback() -> None:
    """folio_split()'s buddy-like split around page 5 of an order-3 anonymous folio:
    order 2 at 0, then (order 1 skipped for anon) four order-0 folios; the driver's
    folio_split callback sees each new folio, then the final call."""
    k, (a, _, _), head = _unmapped_locked(zone=1)
    seen: list[tuple[int, int]] = []

    class Dev:
        def folio_split(self, k, a, orig, new):
            seen.append((orig, new))

        def folio_free(self, k, a, pfn):
            pass

    k.devices = [Dev()]
    fz = hm.__dict__["__folio_freeze_and_split_unmapped"]
    assert fz(k, a, head, 0, head + 5, hm.SPLIT_TYPE_NON_UNIFORM) == 0
    assert fo.folio_order(k, head) == 2
    assert all(fo.page_folio(k, head + i) == head for i in range(4))
    assert [fo.folio_order(k, head + i) for i in range(4, 8)] == [0, 0, 0, 0]
    assert seen == [(head, head + 4), (head, head + 5), (head, head + 6), (head, head + 7),
                    (head, -1)]
    assert all(k.page_locked(head + i) for i in (0, 4, 5, 6, 7))
    assert not k.page_locked(head + 1) and not k.flags(head + 1) & PG_locked


def test_expected_ref_count() -> None:
    k, (_a, _, _), _vma, head = _thp()
    assert hm.folio_expected_ref_count(k, head) == 1  # one PMD mapping
    fo.folio_add_rmap_ptes(k, head, head, 3, 0)
    assert hm.folio_expected_ref_count(k, head) == 4

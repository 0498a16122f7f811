"""v7's PMD level of hmm_range_fault (issue 15): hand-written interleavings of
hmm_vma_walk_pmd / hmm_vma_handle_pmd / hmm_vma_handle_absent_pmd (7.0 mm/hmm.c) and
the mirror's use of their per-4K entries with HMM_PFN_ORDER (dmirror_mkentry's
HMM_DMIRROR_PROT_PMD)."""

from __future__ import annotations

from pagerace.core.lib.test_hmm import (
    HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
    HMM_DMIRROR_PROT_PMD,
    HMM_DMIRROR_PROT_READ,
    HMM_DMIRROR_PROT_WRITE,
    dmirror_mkentry,
)
from pagerace.core.machine import folio as fo
from pagerace.core.machine import pmd as pm
from pagerace.core.machine.kernel import Block
from pagerace.core.machine.layout import (
    F_GEN,
    PMD_TABLE,
    PTE_DEVICE_PRIVATE,
    PTE_MIGRATION,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    PTE_WRITE,
    PTE_YOUNG,
    pte_encode,
)
from pagerace.core.mm.hmm import (
    EFAULT,
    HMM_PFN_ERROR,
    HMM_PFN_REQ_FAULT,
    HMM_PFN_REQ_WRITE,
    HMM_PFN_VALID,
    HMM_PFN_WRITE,
    HmmRange,
    hmm_pfn_to_map_order,
    hmm_pfn_to_page,
    hmm_range_fault,
)
from strategies import THP_BITS, Stepper, run_unblocked, thp, thp_geometry

GEO = thp_geometry(devices=2, dmirrors=((0, 0),))
N = GEO.hpage_pmd_nr
BASE = 8  # the THP is PMD 1: pages 8..15


def _thp(zone: int = 0, kind: int = PTE_PRESENT, bits: int = THP_BITS):
    """A PMD-mapped anonymous THP at PMD 1 of mm 0 (as test_thp_cpu's)."""
    k, acts, _vma, head = thp(GEO, zone=zone, kind=kind, bits=bits)
    return k, acts, head


def _rng(start: int = BASE, end: int = BASE + N, flags: int = 0, owner: int = 0) -> HmmRange:
    return HmmRange(notifier=0, mm=0, start=start, end=end, default_flags=flags,
                    dev_private_owner=owner)


def test_huge_present_pmd_is_reported_per_page_with_its_order() -> None:
    """hmm_vma_handle_pmd: every 4K page its own pfn, VALID (no WRITE: read-only PMD)
    and the PMD's order; the snapshot byte says READ | PMD; no fault."""
    k, (a, _, _), head = _thp(bits=PTE_YOUNG)
    r = _rng()
    assert run_unblocked(hmm_range_fault(k, a, r)) == 0
    for i, hp in enumerate(r.hmm_pfns):
        assert hp & HMM_PFN_VALID and not hp & (HMM_PFN_WRITE | HMM_PFN_ERROR)
        assert hmm_pfn_to_page(hp) == head + i and hmm_pfn_to_map_order(hp) == 3
        assert r.gens[i] == k.words.load(k.fw(head + i, F_GEN))
        assert dmirror_mkentry(k, 0, hp) == HMM_DMIRROR_PROT_READ | HMM_DMIRROR_PROT_PMD
    assert k.events.get("hmm_vma_fault", 0) == 0 and k.events.get("faults", 0) == 0


def test_range_starting_inside_the_pmd_gets_the_right_pfns() -> None:
    """pmd_pfn + ((addr & ~PMD_MASK) >> PAGE_SHIFT): a range from the 4th page."""
    k, (a, _, _), head = _thp()
    r = _rng(BASE + 3, BASE + 6, flags=HMM_PFN_REQ_FAULT | HMM_PFN_REQ_WRITE)
    assert run_unblocked(hmm_range_fault(k, a, r)) == 0
    assert [hmm_pfn_to_page(hp) for hp in r.hmm_pfns] == [head + 3, head + 4, head + 5]
    assert all(hp & HMM_PFN_WRITE for hp in r.hmm_pfns)
    assert dmirror_mkentry(k, 0, r.hmm_pfns[0]) == HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD


def test_write_request_on_a_readonly_pmd_faults_then_reports_writable() -> None:
    """hmm_vma_fault through handle_mm_fault: do_huge_pmd_wp_page reuses the exclusive
    folio (the PMD made writable), the walk restarts (-EBUSY) and reports WRITE."""
    k, (a, _, _), head = _thp(bits=PTE_YOUNG)
    r = _rng(flags=HMM_PFN_REQ_FAULT | HMM_PFN_REQ_WRITE)
    assert run_unblocked(hmm_range_fault(k, a, r)) == 0
    assert k.events["hmm_vma_fault"] == 1
    assert pm.pmdp_get(k, 0, 1) & PTE_WRITE and pm.pmdp_get(k, 0, 1) >> PTE_PFN_SHIFT == head
    assert all(hp & HMM_PFN_WRITE and hmm_pfn_to_map_order(hp) == 3 for hp in r.hmm_pfns)


def test_device_private_pmd_of_the_owner_and_of_another_device() -> None:
    """hmm_vma_handle_absent_pmd: the owner's device-private PMD is reported page by page
    (DEV_PRIVATE_LOCAL | WRITE | PMD); another device's is HMM_PFN_ERROR when nothing
    is asked (7.0 as written: the PTE level reports 0 there), -EFAULT never."""
    k, (a, _, _), head = _thp(zone=1, kind=PTE_DEVICE_PRIVATE, bits=PTE_WRITE)
    assert k.device_of(head) == 0
    r = _rng(owner=0)
    assert run_unblocked(hmm_range_fault(k, a, r)) == 0
    assert [hmm_pfn_to_page(hp) for hp in r.hmm_pfns] == list(range(head, head + N))
    assert dmirror_mkentry(k, 0, r.hmm_pfns[5]) == (
        HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD
    )
    r = _rng(owner=1)
    assert run_unblocked(hmm_range_fault(k, a, r)) == 0
    assert all(hp == HMM_PFN_ERROR for hp in r.hmm_pfns)


def test_migration_pmd_waits_and_restarts_or_reports_nothing() -> None:
    """A PMD migration entry: without a fault request the pages report 0; with one, the
    walk sleeps in pmd_migration_entry_wait (no reference), and once the migration
    restores the PMD and unlocks, restarts and reports the huge PMD."""
    k, (a, b, _), head = _thp(kind=PTE_MIGRATION, bits=PTE_WRITE)
    r = _rng()
    assert run_unblocked(hmm_range_fault(k, a, r)) == 0
    assert r.hmm_pfns == [0] * N
    assert k.trylock_page(b, head, "t:migrate")
    r = _rng(flags=HMM_PFN_REQ_FAULT)
    s = Stepper(hmm_range_fault(k, a, r))
    req = s.step()
    while not isinstance(req, Block):
        req = s.step()
    assert req.kind == "page" and req.target == head and fo.folio_ref_count(k, head) == 1
    pm.set_pmd_at(k, 0, 1, pte_encode(PTE_PRESENT, head, PTE_WRITE | PTE_YOUNG))
    k.unlock_page(b, head, "t:unlock")
    assert s.finish(k) == 0
    assert [hmm_pfn_to_page(hp) for hp in r.hmm_pfns] == list(range(head, head + N))


def test_none_pmd_is_a_hole_or_faulted_at_the_pte_level() -> None:
    """hmm_vma_walk_hole: 0 without a request; with one, handle_mm_fault installs a PTE
    table (no THP-eligible VMA) and maps 4K pages, reported without an order."""
    k, (a, _, _), _head = _thp()
    pm.set_pmd_at(k, 0, 2, 0)
    r = _rng(16, 24)
    assert run_unblocked(hmm_range_fault(k, a, r)) == 0 and r.hmm_pfns == [0] * N
    r = _rng(16, 24, flags=HMM_PFN_REQ_FAULT)
    assert run_unblocked(hmm_range_fault(k, a, r)) == 0
    assert pm.pmdp_get(k, 0, 2) == PMD_TABLE
    for i, hp in enumerate(r.hmm_pfns):
        assert hp & HMM_PFN_VALID and hmm_pfn_to_map_order(hp) == 0
        assert hmm_pfn_to_page(hp) == k.pte_read(0, 16 + i) >> PTE_PFN_SHIFT
        assert not dmirror_mkentry(k, 0, hp) & HMM_DMIRROR_PROT_PMD


def test_pmd_split_between_the_two_reads_goes_again_to_the_ptes() -> None:
    """The walk read a huge PMD; a split replaces it with a PTE table before the second
    lockless read: `goto again` and the PTE level reports the same pages, order 0."""
    k, (a, _, _), head = _thp()
    r = _rng()
    s = Stepper(hmm_range_fault(k, a, r))
    s.step()  # between the two pmdp_get_lockless
    assert pm.pmdp_get(k, 0, 1) & PTE_TYPE_MASK == PTE_PRESENT
    for i in range(N):  # what __split_huge_pmd_locked leaves (mapcounts aside)
        k.words.store(k.pte_w(0, BASE + i), pte_encode(PTE_PRESENT, head + i, PTE_WRITE))
    pm.set_pmd_at(k, 0, 1, PMD_TABLE)
    assert s.finish(k) == 0
    assert k.events["hmm_walk_pmd_again"] == 1
    assert [hmm_pfn_to_page(hp) for hp in r.hmm_pfns] == list(range(head, head + N))
    assert all(hmm_pfn_to_map_order(hp) == 0 for hp in r.hmm_pfns)


def test_unreadable_absent_pmd_with_a_fault_request_is_efault() -> None:
    """hmm_vma_handle_absent_pmd: a non-device-private absent PMD (here a swap-type
    word, which the model never writes) asked to fault is -EFAULT, else ERROR."""
    k, (a, _, _), head = _thp()
    pm.set_pmd_at(k, 0, 1, pte_encode(4, head, 0))  # PMD_TYPE_NAMES[4] == "swap"
    assert run_unblocked(hmm_range_fault(k, a, _rng(flags=HMM_PFN_REQ_FAULT))) == EFAULT
    r = _rng()
    assert run_unblocked(hmm_range_fault(k, a, r)) == 0 and all(hp == HMM_PFN_ERROR for hp in r.hmm_pfns)

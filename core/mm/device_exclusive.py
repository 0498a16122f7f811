"""Device-exclusive entries: ``make_device_exclusive()`` of 7.0 ``mm/rmap.c``.

A device that wants atomic access to a page of system memory (nouveau's GPU atomics,
``lib/test_hmm.c``'s ``HMM_DMIRROR_EXCLUSIVE``) asks the kernel to take the CPU's
mapping away: the present entry is replaced by a device-exclusive entry (a PFN swap
entry naming the page, ``PTE_DEVICE_EXCLUSIVE``), so the next CPU access faults and
``remove_device_exclusive_entry()`` (``core/mm/memory.py``) revokes the device's access
(an ``MMU_NOTIFY_CLEAR`` invalidation) before it restores the entry.

What 7.0 leaves on the folio: the mapping stays counted (mapcount and the mapping's
reference are unchanged: the entry maps the page as far as rmap is concerned, and
``page_vma_mapped_walk`` finds it), the page stays anon-exclusive, and the caller gets
the folio locked with the GUP reference (``*foliop``), which it drops after programming
its device. The entry carries soft-dirty (and never uffd-wp: the pte was writable);
it is "clean and old" for core-mm: a dirty pte's dirtiness went to the folio.

Device-exclusive arrived in 5.13 (``make_device_exclusive_range``, a readable and a
writable entry type); 6.14 reworked it into this one-page form with one entry type.
The model runs 7.0's on ``v6``; ``hmm-2017`` and ``v5.0`` have none (the
``device_exclusive`` path: workloads that need it are refused for them).

This module sits apart from ``core/mm/rmap.py`` only because it calls GUP
(``core/mm/gup.py``), which calls the fault path, which imports rmap.

How the other 7.0 paths treat the entry: the fault (``do_swap_page`` →
``remove_device_exclusive_entry``), fork (``copy_nonpresent_pte`` →
``try_restore_exclusive_pte``, ``core/mm/fork.py``), zap (``zap_nonpresent_ptes``,
``core/mm/vma.py``), ``try_to_migrate_one`` (a readable-exclusive migration entry,
``core/mm/rmap.py``), ``try_to_unmap_one`` (a swap entry, ``core/mm/vmscan.py``),
``migrate_vma_collect_pmd`` (not collected: "only care about unaddressable device page
special page table entry"), GUP and ``hmm_range_fault`` (not present: they fault it
back, ``core/mm/hmm.py``).
"""

from __future__ import annotations

from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
    PTE_DEVICE_EXCLUSIVE,
    PTE_DIRTY,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_SOFT_DIRTY,
    PTE_TYPE_MASK,
    PTE_WRITE,
    PG_anon,
    PG_dirty,
    pte_encode,
)
from .gup import get_user_page_vma_remote
from .mmu_notifier import (
    MMU_NOTIFY_EXCLUSIVE,
    MmuNotifierRange,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
)

EOPNOTSUPP = -95


def make_device_exclusive_entry(pfn: int, old: int) -> int:
    """``make_device_exclusive_entry(page_to_pfn(page))`` as a pte
    (``swp_entry_to_pte``), soft-dirty kept from the entry it replaces."""
    return pte_encode(PTE_DEVICE_EXCLUSIVE, pfn, old & PTE_SOFT_DIRTY)


def make_device_exclusive(k: Kernel, a: Actor, mm: int, vpn: int, owner: int = -1) -> Path:
    """``make_device_exclusive(mm, addr, owner, &folio)`` (7.0 mm/rmap.c), the caller
    holding ``mmap_read_lock``.

    ``retry:`` fault the page in writable through GUP (``FOLL_GET | FOLL_WRITE``; an
    entry already device-exclusive is restored by that fault, another device's
    included), refuse a non-anonymous folio, ``folio_lock_killable``, then an
    ``MMU_NOTIFY_EXCLUSIVE`` invalidation with ``owner`` (the caller must filter its
    own event out; dmirror passes NULL and does not), and ``folio_walk_start`` under
    the PTL: unless the entry is still this page, present and writable (it may have
    been zapped, COW-broken, migrated or write-protected since GUP), undo and retry.
    Else ``ptep_clear_flush``, the dirty bit to the folio, the device-exclusive entry.

    Returns the pfn, locked and with the GUP reference, or a negative errno.
    """
    site = "make_device_exclusive"
    while True:
        page = yield from get_user_page_vma_remote(k, a, mm, vpn, site + ":get_user_page_vma_remote")
        if page < 0:
            return page
        if not k.test_flag(page, PG_anon):
            k.put_page(a, page, site + ":folio_put")
            return EOPNOTSUPP
        yield  # GUP returned; the entry may change before the folio lock
        yield from k.lock_page(a, page, site + ":folio_lock_killable")
        rng = MmuNotifierRange(MMU_NOTIFY_EXCLUSIVE, mm, vpn, vpn + 1, owner)
        yield from mmu_notifier_invalidate_range_start(k, a, rng)
        ptl = k.ptl_word(mm, vpn)
        yield from k.spin_lock(a, ptl, site + ":folio_walk_start:ptl")
        pte = k.pte_read(mm, vpn)
        if pte & PTE_TYPE_MASK != PTE_PRESENT or pte >> PTE_PFN_SHIFT != page or not pte & PTE_WRITE:
            k.spin_unlock(a, ptl, site + ":folio_walk_end:ptl")
            yield from mmu_notifier_invalidate_range_end(k, a, rng)
            k.unlock_page(a, page, site + ":folio_unlock")
            k.put_page(a, page, site + ":folio_put")
            k.count("make_device_exclusive_retry")
            yield
            continue
        old = k.ptep_get_and_clear(mm, vpn)  # ptep_clear_flush()
        k.flush_tlb_range(mm, vpn, vpn + 1)
        if old & PTE_DIRTY and "exclusive_drops_dirty" not in k.faults:
            k.set_flag(page, PG_dirty)  # folio_mark_dirty()
        k.set_pte(mm, vpn, make_device_exclusive_entry(page, old))
        k.spin_unlock(a, ptl, site + ":folio_walk_end:ptl")
        yield from mmu_notifier_invalidate_range_end(k, a, rng)
        k.count("make_device_exclusive")
        return page


__all__ = ["EOPNOTSUPP", "make_device_exclusive", "make_device_exclusive_entry"]

"""Reclaim: ``mm/vmscan.c`` (``shrink_folio_list``, ``__remove_mapping``) with
``try_to_unmap()`` from ``mm/rmap.c`` and ``add_to_swap()`` / ``pageout()``.

A reclaimer walks the system LRU from a position its stream chose, isolates anonymous
pages (``isolate_lru_folios``: a speculative reference, then the LRU flag), trylocks
each, adds it to the swap cache (claiming a slot and marking the folio dirty), unmaps it
(every present entry becomes a swap entry; an anon-exclusive page that may be pinned
makes ``try_to_unmap`` fail, as ``folio_try_share_anon_rmap_pte`` does), writes it to
its slot if it is dirty (``pageout``), and drops it when its count freezes at the
expected value (isolation + swap cache, ``__remove_mapping``); anything else puts it back.

Dropping a page is where data can be lost: the dirty-conservation oracle
(:func:`~pagerace.core.oracles.world.check_drop_clean`) checks that a page dropped as clean
holds exactly its swap copy.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from ..actors import register_op
from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
    F_PRIV,
    PTE_DEVICE_EXCLUSIVE,
    PTE_DIRTY,
    PTE_EXCLUSIVE,
    PTE_PRESENT,
    PTE_SOFT_DIRTY,
    PTE_SWAP,
    PTE_TYPE_MASK,
    PTE_UFFD_WP,
    S_DATA,
    PG_allocated,
    PG_anon,
    PG_anon_exclusive,
    PG_dirty,
    PG_isolated,
    PG_lru,
    PG_swapcache,
    PG_writeback,
    pte_encode,
)
from ..oracles.world import check_drop_clean
from .migrate_device import folio_putback_lru
from .mmu_notifier import (
    MMU_NOTIFY_CLEAR,
    MmuNotifierRange,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
)
from .rmap import folio_try_share_anon_rmap_pte, map_pte, rmap_walk
from .swapfile import add_to_swap_cache, delete_from_swap_cache, get_swap_page, swap_duplicate, swap_w


def try_to_unmap(k: Kernel, a: Actor, pfn: int, slot: int) -> Path:
    """``try_to_unmap()`` → ``rmap_walk()`` → ``try_to_unmap_one()`` (7.0) for a locked
    anonymous folio in the swap cache: each present entry the walk finds becomes a swap
    entry for ``slot`` (exclusive if the page was), its dirty bit moves to the folio;
    a device-exclusive entry too (7.0 handles the PFN swap entries that map pages).
    Returns False when an anon-exclusive page may be pinned (the entry is restored and
    the walk stops)."""
    site = "try_to_unmap_one"
    pinned = False

    def try_to_unmap_one(mm: int, vpn: int) -> Generator[Any, Any, bool]:
        nonlocal pinned
        # 7.0 try_to_unmap_one(): an MMU_NOTIFY_CLEAR invalidation around this mapping.
        rng = MmuNotifierRange(MMU_NOTIFY_CLEAR, mm, vpn, vpn + 1)
        yield from mmu_notifier_invalidate_range_start(k, a, rng)
        old = yield from map_pte(k, a, mm, vpn, pfn, site)
        if old < 0:
            yield from mmu_notifier_invalidate_range_end(k, a, rng)
            return True
        ptl = k.ptl_word(mm, vpn)
        kind = old & PTE_TYPE_MASK
        if kind != PTE_PRESENT and kind != PTE_DEVICE_EXCLUSIVE:
            k.spin_unlock(a, ptl, site + ":ptl")
            yield from mmu_notifier_invalidate_range_end(k, a, rng)
            return True
        if kind == PTE_PRESENT:
            old = k.ptep_get_and_clear(mm, vpn)  # ptep_clear_flush
            k.flush_tlb_range(mm, vpn, vpn + 1)
        else:
            # 7.0: "Handle PFN swap PTEs, such as device-exclusive ones, that actually
            # map pages": pte_clear(), no flush (nothing cached it); the swap entry keeps
            # its swp soft-dirty / uffd-wp bits.
            old = k.ptep_get_and_clear(mm, vpn)
        excl = k.test_flag(pfn, PG_anon_exclusive)
        if excl and not folio_try_share_anon_rmap_pte(k, a, pfn):
            k.set_pte(mm, vpn, old)
            k.spin_unlock(a, ptl, site + ":ptl")
            yield from mmu_notifier_invalidate_range_end(k, a, rng)
            k.outcome("reclaim", "pinned")
            pinned = True
            return False
        if old & PTE_DIRTY:
            k.set_flag(pfn, PG_dirty)
        swap_duplicate(k, slot)
        bits = (old & (PTE_SOFT_DIRTY | PTE_UFFD_WP)) | (PTE_EXCLUSIVE if excl else 0)
        k.set_pte(mm, vpn, pte_encode(PTE_SWAP, slot, bits))
        k.mapcount_add(pfn, -1)
        k.put_page(a, pfn, site)
        k.spin_unlock(a, ptl, site + ":ptl")
        yield from mmu_notifier_invalidate_range_end(k, a, rng)
        return True

    yield from rmap_walk(
        k, a, pfn, try_to_unmap_one, "try_to_unmap",
        done=lambda: k.mapcount(pfn) <= 0, anon_lock=True,
    )
    return not pinned


def _putback(k: Kernel, a: Actor, pfn: int, reason: str) -> None:
    k.unlock_page(a, pfn, "shrink_folio_list:folio_unlock")
    folio_putback_lru(k, a, pfn, "shrink_folio_list:putback")
    k.outcome("reclaim", reason)


def shrink_folio(k: Kernel, a: Actor, pfn: int) -> Path:
    """``shrink_folio_list()`` for one isolated folio (we hold the isolation reference)."""
    site = "shrink_folio_list"
    if not k.trylock_page(a, pfn, site + ":folio_trylock"):
        folio_putback_lru(k, a, pfn, site + ":putback")
        k.outcome("reclaim", "lock_contended")
        return
    if k.test_flag(pfn, PG_swapcache):
        slot = k.words.load(k.fw(pfn, F_PRIV)) - 1
    else:
        slot = get_swap_page(k)  # add_to_swap()
        if slot < 0:
            _putback(k, a, pfn, "swap_full")
            return
        add_to_swap_cache(k, a, pfn, slot, site + ":add_to_swap")
        k.set_flag(pfn, PG_dirty)  # add_to_swap() marks the folio dirty
    yield
    if k.mapcount(pfn) > 0:
        ok = yield from try_to_unmap(k, a, pfn, slot)
        if not ok or k.mapcount(pfn) > 0:
            _putback(k, a, pfn, "still_mapped")
            return
    if k.test_flag(pfn, PG_dirty) and "reclaim_drops_dirty" not in k.faults:
        # pageout(): folio_clear_dirty_for_io, writeback, swap_writepage.
        k.clear_flag(pfn, PG_dirty)
        k.set_flag(pfn, PG_writeback)
        yield  # the write I/O
        k.words.store(swap_w(k, slot, S_DATA), k.data(pfn))
        k.clear_flag(pfn, PG_writeback)
        k.count("pageout")
    if k.test_flag(pfn, PG_dirty) and "reclaim_drops_dirty" not in k.faults:
        _putback(k, a, pfn, "redirtied")
        return
    # __remove_mapping(): freeze at isolation + swap cache.
    if not k.page_ref_freeze(pfn, 2):
        _putback(k, a, pfn, "referenced")
        return
    check_drop_clean(k, a, pfn, slot, site + ":__remove_mapping")
    delete_from_swap_cache(k, a, pfn, False, site + ":__delete_from_swap_cache")
    k.clear_flag(pfn, PG_isolated | PG_dirty)
    k.unlock_page(a, pfn, site + ":folio_unlock")
    k.free_page(a, pfn, site + ":free")
    k.outcome("reclaim", "reclaimed")


def op_reclaim(k: Kernel, a: Actor, start: int, nr: int) -> Path:
    """A reclaimer pass: up to ``nr`` anonymous LRU pages of system RAM, scanning from
    frame ``start``."""
    n = k.geo.sys_frames
    taken = 0
    for i in range(n):
        if taken >= nr:
            break
        pfn = (start + i) % n
        f = k.flags(pfn)
        if f & (PG_lru | PG_anon | PG_allocated) != PG_lru | PG_anon | PG_allocated:
            continue
        # isolate_lru_folios(): folio_try_get, then folio_test_clear_lru.
        if not k.get_page_unless_zero(a, pfn):
            continue
        if not k.test_flag(pfn, PG_anon) or not k.test_clear_flag(pfn, PG_lru):
            k.put_page(a, pfn, "isolate_lru_folios:folio_put")
            continue
        k.set_flag(pfn, PG_isolated)
        taken += 1
        yield
        yield from shrink_folio(k, a, pfn)
        yield
    k.count("reclaim_pass")
    return taken


register_op("reclaim", op_reclaim)

__all__ = ["op_reclaim", "shrink_folio", "try_to_unmap"]

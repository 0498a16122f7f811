"""Swap slots, the swap cache and the swap-in fault: ``mm/swapfile.c``,
``mm/swap_state.c`` and the swap branch of ``do_swap_page()`` in ``mm/memory.c``.

A swap slot is two words (``S_DATA``: the content written to it; ``S_USED``: the
``swap_map`` count, one per swap entry that names the slot, plus ``SWAP_HAS_CACHE``
while a page of the swap cache holds it). A page in the swap cache has ``PG_swapcache``
and keeps ``slot + 1`` in its private word (``folio->swap``), and the swap cache holds one
reference on it.

Dirtiness is tracked exactly: a swap-cache page is dirty when it has ``PG_dirty`` or a
dirty entry maps it; otherwise its content is its swap copy
(:func:`~pagerace.core.oracles.world.check_dirty`).
"""

from __future__ import annotations

from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
    F_PRIV,
    PTE_DIRTY,
    PTE_EXCLUSIVE,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_SOFT_DIRTY,
    PTE_UFFD_WP,
    PTE_WRITE,
    PTE_YOUNG,
    S_DATA,
    S_USED,
    SWAP_HAS_CACHE,
    SWAP_WORDS,
    VM_WRITE,
    PG_anon,
    PG_anon_exclusive,
    PG_dirty,
    PG_lru,
    PG_swapcache,
    PG_uptodate,
    PG_writeback,
    pte_encode,
)
from ..oracles.world import swapcache_page
from .memory import VM_FAULT_OK, VM_FAULT_OOM, VM_FAULT_SIGBUS
from .rmap import folio_set_anon


def swap_w(k: Kernel, slot: int, field: int) -> int:
    return k.lay.SWAP + slot * SWAP_WORDS + field


def swap_count(k: Kernel, slot: int) -> int:
    """Number of swap entries naming ``slot`` (``swap_swapcount``)."""
    return k.words.load(swap_w(k, slot, S_USED)) & (SWAP_HAS_CACHE - 1)


def get_swap_page(k: Kernel) -> int:
    """``folio_alloc_swap()``: claim a free slot for the swap cache, or -1 when full."""
    words = k.words
    for slot in range(k.geo.swap_slots):
        w = swap_w(k, slot, S_USED)
        if words.load(w) == 0 and words.cas(w, 0, SWAP_HAS_CACHE):
            k.count("swap_slot_alloc")
            return slot
    k.count("swap_full")
    return -1


def swap_duplicate(k: Kernel, slot: int) -> None:
    """``swap_duplicate()``: one more swap entry names ``slot`` (fork, unmap)."""
    k.words.fetch_add(swap_w(k, slot, S_USED), 1)


def swap_free(k: Kernel, slot: int) -> None:
    """``swap_free()`` / ``free_swap_and_cache()`` for an entry going away; the slot is
    free once neither an entry nor the swap cache holds it (a cached page stays cached
    until reclaim drops it)."""
    k.words.fetch_add(swap_w(k, slot, S_USED), -1)


def add_to_swap_cache(k: Kernel, a: Actor, pfn: int, slot: int, site: str) -> None:
    """``add_to_swap_cache()``: the slot's ``SWAP_HAS_CACHE`` is already claimed."""
    k.get_page(a, pfn, site)
    k.words.store(k.fw(pfn, F_PRIV), slot + 1)
    k.set_flag(pfn, PG_swapcache)


def delete_from_swap_cache(k: Kernel, a: Actor, pfn: int, put: bool, site: str) -> None:
    """``__delete_from_swap_cache()`` (+ ``folio_put`` for the cache's reference unless
    the caller froze the count)."""
    slot = k.words.load(k.fw(pfn, F_PRIV)) - 1
    k.clear_flag(pfn, PG_swapcache)
    k.words.store(k.fw(pfn, F_PRIV), 0)
    k.words.fetch_add(swap_w(k, slot, S_USED), -SWAP_HAS_CACHE)
    if put:
        k.put_page(a, pfn, site)


def reuse_swap_page(k: Kernel, a: Actor, pfn: int) -> tuple[bool, int]:
    """``reuse_swap_page(page, &total_map_swapcount)`` of 4.14-5.0 (mm/swapfile.c, gone
    in 5.19) for a locked, small (not THP) anonymous page, called by 4.14-5.0's
    ``do_wp_page`` (``core/mm/memory.py`` ``do_wp_page_anon_414``; the model plugs it
    as ``k.hooks["reuse_swap_page"]``: memory.py cannot import this module).

    ``page_trans_huge_map_swapcount()``'s small-page branch: ``count = mapcount +
    swapcount``, the swap count (``page_swapcount``, without ``SWAP_HAS_CACHE``) only for
    a ``PageSwapCache`` page; ``*total_map_swapcount`` is the same sum. When ``count ==
    1`` and the page is in the swap cache: not under writeback, ``delete_from_swap_cache``
    (which puts the cache's reference) and ``SetPageDirty`` (the page is now the only
    copy); under writeback, the ``SWP_STABLE_WRITES`` test refuses reuse on a device that
    needs stable pages: the model's swap device does not (no block-integrity / stable
    writes), so the page is reused and stays in the swap cache. Returns ``(count <= 1,
    total_map_swapcount)``; the refcount plays no part."""
    mapcount = k.mapcount(pfn)
    swapcount = 0
    cached = k.test_flag(pfn, PG_swapcache)
    slot = k.words.load(k.fw(pfn, F_PRIV)) - 1
    if cached:
        swapcount = swap_count(k, slot)
    count = mapcount + swapcount
    if count == 1 and cached:
        if not k.test_flag(pfn, PG_writeback):
            delete_from_swap_cache(k, a, pfn, True, "reuse_swap_page:delete_from_swap_cache")
            k.set_flag(pfn, PG_dirty)
            k.count("wp_old_swapcache_freed")
        else:
            k.count("wp_old_reuse_writeback")  # !(p->flags & SWP_STABLE_WRITES)
    return count <= 1, count


def do_swap_page(k: Kernel, a: Actor, mm: int, vpn: int, orig: int, write: bool) -> Path:
    """``do_swap_page()`` for a real swap entry (``k.hooks["do_swap_page"]``), called
    under ``mmap_read_lock``.

    Look the slot up in the swap cache (``swap_cache_get_folio``); on a miss claim
    ``SWAP_HAS_CACHE`` (``swapcache_prepare``), allocate a page, add it to the swap cache
    and read the slot into it. Lock the folio, recheck the entry under the PTL
    (``pte_same``), drop the entry's swap count, and free the swap copy only for a write
    fault that is the folio's only user (7.0 ``should_try_to_free_swap``: a write fault
    and no reference but the swap cache's and ours; ``folio_free_swap`` then needs no
    other entry naming the slot, and the page, now the only copy, is dirty). A read
    fault keeps the folio in the swap cache, clean: its swap copy is still good (5.0's
    ``reuse_swap_page`` freed it on write faults only, too). The entry is mapped
    exclusive when the swap entry was, or when nobody else holds the folio; on ``v6``
    (7.0) an exclusive mapping of a writable VMA is writable even on a read fault, dirty
    only on a write; the older generations map it writable only for a write.
    """
    if "swapin_spurious_sigbus" in k.faults:
        return VM_FAULT_SIGBUS
    site = "do_swap_page"
    slot = orig >> PTE_PFN_SHIFT
    words = k.words
    pfn = swapcache_page(k, slot)
    if pfn >= 0:
        if not k.get_page_unless_zero(a, pfn):
            yield  # being freed by reclaim: retry the fault
            return VM_FAULT_OK
        yield from k.lock_page(a, pfn, site + ":folio_lock")
        if not (k.test_flag(pfn, PG_swapcache) and words.load(k.fw(pfn, F_PRIV)) == slot + 1):
            k.unlock_page(a, pfn, site + ":folio_unlock")
            k.put_page(a, pfn, site + ":folio_put")
            return VM_FAULT_OK
        k.count("swapin_cache_hit")
    else:
        w = swap_w(k, slot, S_USED)
        cur = words.load(w)
        if cur & SWAP_HAS_CACHE or cur == 0 or not words.cas(w, cur, cur | SWAP_HAS_CACHE):
            yield  # another fault is reading it in, or the entry went away: retry
            return VM_FAULT_OK
        pfn = k.alloc_page(a, 0, site + ":alloc")
        if pfn < 0:
            words.fetch_add(w, -SWAP_HAS_CACHE)
            k.count("oom")
            return VM_FAULT_OOM
        k.trylock_page(a, pfn, site + ":folio_lock_new")
        k.set_flag(pfn, PG_anon | PG_lru)
        add_to_swap_cache(k, a, pfn, slot, site + ":add_to_swap_cache")
        yield  # swap_read_folio(): the I/O
        k.set_data(pfn, words.load(swap_w(k, slot, S_DATA)))
        k.set_flag(pfn, PG_uptodate)
        k.count("swapin_read")
    ptl = k.ptl_word(mm, vpn)
    yield from k.spin_lock(a, ptl, site + ":ptl")
    if k.pte_read(mm, vpn) != orig:
        k.spin_unlock(a, ptl, site + ":ptl")
        k.unlock_page(a, pfn, site + ":folio_unlock")
        k.put_page(a, pfn, site + ":folio_put")
        return VM_FAULT_OK
    exclusive = bool(orig & PTE_EXCLUSIVE)
    swap_free(k, slot)
    bits = PTE_YOUNG | (orig & (PTE_SOFT_DIRTY | PTE_UFFD_WP))
    if (
        write
        and k.ref_count(pfn) == 2  # should_try_to_free_swap(): the swap cache's and ours
        and swap_count(k, slot) == 0  # folio_free_swap(): no other entry needs the copy
        and not k.test_flag(pfn, PG_writeback)
    ):
        delete_from_swap_cache(k, a, pfn, True, site + ":folio_free_swap")
        k.set_flag(pfn, PG_dirty)
    else:
        k.count("swapin_keeps_swapcache")
    if k.ref_count(pfn) == 1:
        exclusive = True  # "exclusive || folio_ref_count(folio) == 1"
    if exclusive:
        k.set_flag(pfn, PG_anon_exclusive)
        row = k.s.find_vma(mm, vpn)
        vm_write = row >= 0 and bool(k.s.vma_flags(mm, row) & VM_WRITE)
        if write:
            bits |= PTE_WRITE | PTE_DIRTY
        elif vm_write and k.variant.name in ("v6", "v7"):
            bits |= PTE_WRITE  # 7.0: pte_mkwrite() without pte_mkdirty() on a read
    if not k.words.load(k.lay.MAPPING + pfn):
        folio_set_anon(k, pfn, mm, vpn)  # folio_add_new_anon_rmap(): a folio read in
    k.mapcount_add(pfn, 1)  # our reference becomes the mapping's
    k.set_pte(mm, vpn, pte_encode(PTE_PRESENT, pfn, bits))
    k.spin_unlock(a, ptl, site + ":ptl")
    k.unlock_page(a, pfn, site + ":folio_unlock")
    k.count("swapin")
    return VM_FAULT_OK


__all__ = [
    "SWAP_HAS_CACHE",
    "add_to_swap_cache",
    "delete_from_swap_cache",
    "do_swap_page",
    "get_swap_page",
    "reuse_swap_page",
    "swap_count",
    "swap_duplicate",
    "swap_free",
]

"""mm/huge_memory.c of 7.0 (and the PMD parts of mm/migrate.c): PMD splits, the split of
an unmapped large folio with its refcount freeze, the PMD fault paths of device-private
THP (issue 15, the ``v7`` generation; /work/shared/kernel-7.0/).

- :func:`split_huge_pmd` / :func:`split_huge_pmd_locked` / :func:`__split_huge_pmd_locked`:
  replace a huge PMD (present, device-private or a PMD migration entry) by a PTE table
  of ``HPAGE_PMD_NR`` entries, with ``freeze`` turning present mappings into migration
  entries at once;
- :func:`folio_split_unmapped` → ``__folio_freeze_and_split_unmapped`` →
  ``__split_unmapped_folio`` → ``__split_folio_to_order``: freeze the refcount at
  ``folio_cache_ref_count + 1`` and split the folio into folios of ``new_order``
  (uniform) or by halves around one page (non-uniform), calling the driver's
  ``folio_split`` for device-private folios (``zone_device_private_split_cb``);
- :func:`folio_expected_ref_count` (include/linux/mm.h);
- :func:`pmd_migration_entry_wait` (mm/migrate.c) and
  :func:`do_huge_pmd_device_private`.

Everything here runs with the geometry's ``thp``. Anonymous VMAs only: the model has no
file THP (``__split_huge_pmd_locked``'s ``!vma_is_anonymous`` branch is transcribed,
but no workload maps a file folio by a PMD).
"""

from __future__ import annotations

from ..machine import folio as fo
from ..machine import pmd as pm
from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
    F_OWNER,
    F_REF,
    FO_HEAD,
    FO_ORDER,
    FOLIO_WORDS,
    MAPPING_INDEX_SHIFT,
    PMD_TABLE,
    PTE_DEVICE_PRIVATE,
    PTE_DIRTY,
    PTE_EXCLUSIVE,
    PTE_MIGRATION,
    PTE_PRESENT,
    PTE_SOFT_DIRTY,
    PTE_TYPE_MASK,
    PTE_UFFD_WP,
    PTE_WRITE,
    PTE_YOUNG,
    STATIC_MASK,
    VM_ANON,
    PG_allocated,
    PG_anon,
    PG_anon_exclusive,
    PG_dirty,
    PG_head,
    PG_isolated,
    PG_locked,
    PG_pagecache,
    PG_swapcache,
    PG_uptodate,
    pte_encode,
)
from .mmu_notifier import (
    MMU_NOTIFY_CLEAR,
    MmuNotifierRange,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
)

# The flags __split_folio_to_order() copies from the folio to each new folio (7.0:
# referenced, swapbacked, swapcache, mlocked, uptodate, active, workingset, locked,
# unevictable, dirty, and the LRU generation bits), in the model's terms; PG_anon is
# folio->mapping's anon bit (copied with the mapping) and PG_isolated the model's
# "off the LRU" bit. PG_allocated is the model's, kept on every frame.
SPLIT_CLONE_FLAGS = PG_swapcache | PG_uptodate | PG_locked | PG_dirty | PG_anon | PG_isolated

SPLIT_TYPE_UNIFORM = 0
SPLIT_TYPE_NON_UNIFORM = 1

EAGAIN = 11
EINVAL = 22
EBUSY = 16


# -- include/linux/mm.h ------------------------------------------------------------------
def folio_expected_ref_count(k: Kernel, head: int) -> int:
    """``folio_expected_ref_count()`` (7.0): one reference per page from the swap cache
    (anonymous) or the page cache (file; plus PG_private, which the model never sets:
    no buffers), plus one per page-table mapping (``folio_mapcount``: a PMD mapping of a
    large folio is one). The caller adds its own references."""
    order = fo.folio_order(k, head)
    f = k.flags(head)
    ref = 0
    if f & PG_anon:
        ref += (1 << order) if f & PG_swapcache else 0
    else:
        ref += (1 << order) if f & PG_pagecache else 0
    return ref + fo.folio_mapcount(k, head)


def folio_cache_ref_count(k: Kernel, head: int) -> int:
    """``folio_cache_ref_count()`` (mm/huge_memory.c): the references of the page cache
    or the swap cache."""
    f = k.flags(head)
    if f & PG_anon and not f & PG_swapcache:
        return 0
    return fo.folio_nr_pages(k, head)


# -- PMD splits ------------------------------------------------------------------------
def _migration_bits(write: bool, anon_exclusive: bool, young: bool, dirty: bool,
                    soft_dirty: bool, uffd_wp: bool) -> int:
    """``make_{writable,readable_exclusive,readable}_migration_entry`` with
    ``make_migration_entry_young`` / ``_dirty`` and the swap soft-dirty / uffd-wp bits."""
    bits = PTE_WRITE if write else (PTE_EXCLUSIVE if anon_exclusive else 0)
    if young:
        bits |= PTE_YOUNG
    if dirty:
        bits |= PTE_DIRTY
    if soft_dirty:
        bits |= PTE_SOFT_DIRTY
    if uffd_wp:
        bits |= PTE_UFFD_WP
    return bits


def folio_try_share_anon_rmap_pmd(k: Kernel, head: int) -> int:
    """``folio_try_share_anon_rmap_pmd()`` → ``__folio_try_share_anon_rmap``: clear
    PageAnonExclusive unless the folio may be pinned (-EBUSY); a device-private folio
    cannot be pinned by GUP and is always shared."""
    if k.is_device_private(head):
        k.clear_flag(head, PG_anon_exclusive)
        return 0
    if fo.folio_maybe_dma_pinned(k, head):
        return -EBUSY
    k.clear_flag(head, PG_anon_exclusive)
    return 0


def _folio_add_anon_rmap_ptes(k: Kernel, head: int, page: int, nr: int, exclusive: bool) -> None:
    """``folio_add_anon_rmap_ptes(folio, page, nr, vma, addr, flags)`` of an anonymous
    folio already mapped: the PTE mapcounts, and PageAnonExclusive on each page for
    RMAP_EXCLUSIVE (``__folio_add_anon_rmap``)."""
    fo.folio_add_rmap_ptes(k, head, page, nr)
    if exclusive:
        for p in range(page, page + nr):
            k.set_flag(p, PG_anon_exclusive)


def __split_huge_pmd_locked(
    k: Kernel, a: Actor, mm: int, vma: int, idx: int, freeze: bool
) -> Path:
    """``__split_huge_pmd_locked()`` (7.0 mm/huge_memory.c 2988), with the PMD lock held.

    A present huge PMD is first invalidated for the hardware (``pmdp_invalidate``: a
    CPU that walks it now traps into the fault path and waits for the PMD lock; one
    with the huge TLB entry still cached keeps using it until the flush), the one
    preemption point here. Without ``freeze`` each page becomes a PTE mapping (one
    more reference per page beyond the first and the PTE mapcounts; PageAnonExclusive
    propagated to every page); with ``freeze`` (and the exclusive bit cleared, or the
    folio not exclusive) each becomes a migration entry and the PMD's reference is
    dropped. A device-private PMD becomes device-private PTEs (young and dirty are not
    propagated, as 7.0 says); a PMD migration entry becomes PTE migration entries. The
    PTEs are written into the table before ``pmd_populate`` makes it visible."""
    n = k.geo.hpage_pmd_nr
    haddr = pm.pmd_addr_start(k, idx)
    pw = pm.pmd_w(k, mm, idx)
    words = k.words
    k.count("thp_split_pmd")
    if not k.s.vma_flags(mm, vma) & VM_ANON:
        old = pm.pmdp_huge_get_and_clear(k, mm, idx)
        pm.flush_pmd_tlb_range(k, mm, idx)
        if old & PTE_TYPE_MASK == PTE_MIGRATION:
            return
        head = pm.pmd_pfn(old)
        if old & PTE_DIRTY:
            k.set_flag(head, PG_dirty)
        fo.folio_remove_rmap_pmd(k, head)
        fo.folio_put(k, a, head, "__split_huge_pmd_locked:file")
        return
    pmd = words.load(pw)
    kind = pmd & PTE_TYPE_MASK
    soft_dirty = uffd_wp = young = write = anon_exclusive = dirty = False
    if kind == PTE_MIGRATION:
        old = pmd
        head = page = pm.pmd_pfn(old)
        soft_dirty = bool(old & PTE_SOFT_DIRTY)
        uffd_wp = bool(old & PTE_UFFD_WP)
        write = bool(old & PTE_WRITE)
        if k.flags(page) & PG_anon:
            anon_exclusive = bool(old & PTE_EXCLUSIVE)
        young = bool(old & PTE_YOUNG)
        dirty = bool(old & PTE_DIRTY)
    elif kind == PTE_DEVICE_PRIVATE:
        old = pmd
        head = page = pm.pmd_pfn(old)
        soft_dirty = bool(old & PTE_SOFT_DIRTY)
        uffd_wp = bool(old & PTE_UFFD_WP)
        write = bool(old & PTE_WRITE)
        anon_exclusive = k.test_flag(page, PG_anon_exclusive)
        if freeze and anon_exclusive and folio_try_share_anon_rmap_pmd(k, head):
            freeze = False
        if not freeze:
            words.fetch_add(k.fw(head, F_REF), n - 1)  # folio_ref_add(folio, HPAGE_PMD_NR - 1)
            _folio_add_anon_rmap_ptes(k, head, page, n, anon_exclusive)
    else:
        old = pm.pmdp_invalidate(k, mm, idx)
        yield  # the PMD is invalid for the hardware; other CPUs run and trap
        head = page = pm.pmd_pfn(old)
        if old & PTE_DIRTY:
            dirty = True
            k.set_flag(head, PG_dirty)
        write = bool(old & PTE_WRITE)
        young = bool(old & PTE_YOUNG)
        soft_dirty = bool(old & PTE_SOFT_DIRTY)
        uffd_wp = bool(old & PTE_UFFD_WP)
        anon_exclusive = k.test_flag(page, PG_anon_exclusive)
        if freeze and anon_exclusive and folio_try_share_anon_rmap_pmd(k, head):
            freeze = False
        if not freeze:
            words.fetch_add(k.fw(head, F_REF), n - 1)  # folio_ref_add(folio, HPAGE_PMD_NR - 1)
            _folio_add_anon_rmap_ptes(k, head, page, n, anon_exclusive)
    # pgtable_trans_huge_withdraw + the PTEs of the new table (not visible yet).
    if freeze or kind == PTE_MIGRATION:
        bits = _migration_bits(write, anon_exclusive, young, dirty, soft_dirty, uffd_wp)
        for i in range(n):
            k.set_pte(mm, haddr + i, pte_encode(PTE_MIGRATION, page + i, bits))
    elif kind == PTE_DEVICE_PRIVATE:
        bits = (PTE_WRITE if write else 0) | (PTE_SOFT_DIRTY if soft_dirty else 0)
        bits |= PTE_UFFD_WP if uffd_wp else 0
        for i in range(n):
            k.set_pte(mm, haddr + i, pte_encode(PTE_DEVICE_PRIVATE, page + i, bits))
    else:
        bits = (PTE_WRITE if write else 0) | (PTE_YOUNG if young else 0)
        bits |= (PTE_DIRTY if dirty else 0) | (PTE_SOFT_DIRTY if soft_dirty else 0)
        bits |= PTE_UFFD_WP if uffd_wp else 0
        for i in range(n):
            k.set_pte(mm, haddr + i, pte_encode(PTE_PRESENT, page + i, bits))
    if words.load(pw) & PTE_TYPE_MASK != PTE_MIGRATION:
        fo.folio_remove_rmap_pmd(k, head)
    if freeze:
        fo.folio_put(k, a, head, "__split_huge_pmd_locked:freeze")
    pm.set_pmd_at(k, mm, idx, PMD_TABLE)  # smp_wmb(); pmd_populate()


def split_huge_pmd_locked(k: Kernel, a: Actor, mm: int, vma: int, idx: int, freeze: bool) -> Path:
    """``split_huge_pmd_locked()``: split if the PMD is still huge or a valid leaf entry."""
    kind = pm.pmdp_get(k, mm, idx) & PTE_TYPE_MASK
    if kind in (PTE_PRESENT, PTE_MIGRATION, PTE_DEVICE_PRIVATE):
        yield from __split_huge_pmd_locked(k, a, mm, vma, idx, freeze)


def split_huge_pmd(k: Kernel, a: Actor, mm: int, vma: int, vpn: int, freeze: bool = False) -> Path:
    """``split_huge_pmd()`` → ``__split_huge_pmd()`` (7.0): an MMU_NOTIFY_CLEAR
    invalidation of the PMD's range around ``pmd_lock`` + ``split_huge_pmd_locked``."""
    idx = pm.pmd_index(k, vpn)
    haddr = pm.pmd_addr_start(k, idx)
    rng = MmuNotifierRange(MMU_NOTIFY_CLEAR, mm, haddr, haddr + k.geo.hpage_pmd_nr)
    yield from mmu_notifier_invalidate_range_start(k, a, rng)
    ptl = yield from pm.pmd_lock(k, a, mm, idx, "__split_huge_pmd:pmd_lock")
    yield from split_huge_pmd_locked(k, a, mm, vma, idx, freeze)
    k.spin_unlock(a, ptl, "__split_huge_pmd:pmd_unlock")
    yield from mmu_notifier_invalidate_range_end(k, a, rng)


# -- PMD fault paths ---------------------------------------------------------------------
def pmd_migration_entry_wait(k: Kernel, a: Actor, mm: int, idx: int) -> Path:
    """``pmd_migration_entry_wait()`` (7.0 mm/migrate.c 549): under the PMD lock, if the
    PMD is still a migration entry, wait for its folio's unlock
    (``softleaf_entry_wait_on_locked``: no reference, the lock is dropped after
    queueing); the caller retries the fault."""
    ptl = yield from pm.pmd_lock(k, a, mm, idx, "pmd_migration_entry_wait:pmd_lock")
    pmd = pm.pmdp_get(k, mm, idx)
    if pmd & PTE_TYPE_MASK != PTE_MIGRATION:
        k.spin_unlock(a, ptl, "pmd_migration_entry_wait:unlock")
        return
    yield from k.migration_entry_wait_on_locked(
        a, pm.pmd_pfn(pmd), ptl, "pmd_migration_entry_wait", "pmd_migration_entry_wait:unlock"
    )


def do_huge_pmd_device_private(k: Kernel, a: Actor, mm: int, vpn: int, orig_pmd: int) -> Path:
    """``do_huge_pmd_device_private()`` (7.0 mm/huge_memory.c 1375): under the PMD lock,
    if the PMD is unchanged, trylock the device folio; on success take a reference,
    drop the lock and call the driver's ``migrate_to_ram`` with ``vmf->page`` the
    folio's first page (the entry's page: a PMD entry names the head), then unlock and
    put. A lost trylock returns 0: the fault is retried. (The per-VMA-lock fault is not
    modelled: the model's faults run under ``mmap_read_lock``.)"""
    idx = pm.pmd_index(k, vpn)
    ptl = yield from pm.pmd_lock(k, a, mm, idx, "do_huge_pmd_device_private:pmd_lock")
    if pm.pmdp_get(k, mm, idx) != orig_pmd:
        k.spin_unlock(a, ptl, "do_huge_pmd_device_private:unlock")
        return 0
    page = pm.pmd_pfn(orig_pmd)
    head = fo.page_folio(k, page)
    ret = 0
    if k.trylock_page(a, head, "do_huge_pmd_device_private:folio_trylock"):
        k.get_page(a, head, "do_huge_pmd_device_private:folio_get")
        k.spin_unlock(a, ptl, "do_huge_pmd_device_private:unlock")
        yield
        ret = yield from k.device_for(page).migrate_to_ram(k, a, mm, vpn, page, locked=True)
        k.unlock_page(a, head, "do_huge_pmd_device_private:folio_unlock")
        fo.folio_put(k, a, head, "do_huge_pmd_device_private:folio_put")
    else:
        k.spin_unlock(a, ptl, "do_huge_pmd_device_private:unlock")
    return ret or 0


# -- the split of an unmapped folio ---------------------------------------------------------
def _owner(k: Kernel, head: int) -> Actor | None:
    """The actor holding ``head``'s lock (the model tracks lock holders)."""
    aid = k.words.load(k.fw(head, F_OWNER)) - 1
    for act in k.actors:
        if act.id == aid:
            return act
    return None


def __split_folio_to_order(k: Kernel, head: int, old_order: int, new_order: int) -> None:
    """``__split_folio_to_order()`` (7.0 mm/huge_memory.c 3483): every new folio after
    the first gets the folio's flags (``SPLIT_CLONE_FLAGS``: the lock too: the new
    folios stay locked, by the folio's holder), its mapping and index + i, and stops
    being a tail (``clear_compound_head``); a large new folio is prepared as one. Its
    refcount stays 0 (frozen) until the caller unfreezes it. The folio itself keeps
    its flags and takes the new order (or stops being compound)."""
    words = k.words
    new_nr = 1 << new_order
    nr = 1 << old_order
    hflags = words.load(k.fw(head, 0))
    mapping = words.load(k.lay.MAPPING + head)
    owner = words.load(k.fw(head, F_OWNER))
    holder = _owner(k, head) if hflags & PG_locked else None
    for i in range(new_nr, nr, new_nr):
        nh = head + i
        fl = k.fw(nh, 0)
        cur = words.load(fl)
        words.store(fl, (cur & STATIC_MASK) | PG_allocated | (hflags & SPLIT_CLONE_FLAGS))
        if hflags & PG_locked:
            words.store(fl + F_OWNER, owner)
            if holder is not None:
                holder.held[fl] = holder.held.get(k.fw(head, 0), "__split_folio_to_order")
        if mapping:
            words.store(k.lay.MAPPING + nh, mapping + (i << MAPPING_INDEX_SHIFT))
        words.store(fo.fo_w(k, nh, FO_HEAD), 0)  # clear_compound_head()
        if new_order:
            fo.prep_compound_page(k, nh, new_order)
    # the old page[1] row (order, counts) of what are now tails or heads: cleared below
    if new_order:
        words.store(fo.fo_w(k, head + 1, FO_ORDER), new_order)  # folio_set_order()
        for p in range(head + 1, head + new_nr):
            words.store(fo.fo_w(k, p, FO_HEAD), head + 1)
    else:
        k.clear_flag(head, PG_head)  # ClearPageCompound()
        for field in range(FO_ORDER, FOLIO_WORDS):
            words.store(fo.fo_w(k, head + 1, field), 0)


def __split_unmapped_folio(
    k: Kernel, head: int, new_order: int, split_at: int, split_type: int
) -> int:
    """``__split_unmapped_folio()`` (7.0 mm/huge_memory.c 3628), no page cache: a
    uniform split straight to ``new_order``, or a non-uniform one, a half at a time,
    splitting on the half holding ``split_at`` (order 1 skipped for anonymous folios)."""
    is_anon = bool(k.flags(head) & PG_anon)
    old_order = fo.folio_order(k, head)
    start = new_order if split_type == SPLIT_TYPE_UNIFORM else old_order - 1
    folio = head
    for split_order in range(start, new_order - 1, -1):
        if is_anon and split_order == 1:
            continue
        __split_folio_to_order(k, folio, old_order, split_order)
        folio = fo.page_folio(k, split_at)
        old_order = split_order
    return 0


def zone_device_private_split_cb(k: Kernel, a: Actor, orig: int, new: int) -> None:
    """``zone_device_private_split_cb()`` (include/linux/memremap.h): for a
    device-private folio, the driver's ``folio_split`` callback (``new`` = -1 for the
    final call), or, without one, the new folio takes the original's pgmap and
    mapping (the model's zone bits are static; the mapping was copied already)."""
    if not k.is_device_private(orig):
        return
    dev = k.device_for(orig)
    cb = getattr(dev, "folio_split", None)
    if cb is not None:
        cb(k, a, orig, new)


def __folio_freeze_and_split_unmapped(
    k: Kernel, a: Actor, head: int, new_order: int, split_at: int, split_type: int
) -> int:
    """``__folio_freeze_and_split_unmapped()`` (7.0 mm/huge_memory.c 3779), anonymous
    folios outside the swap cache, without LRU handling (``do_lru`` false: the only
    caller transcribed is :func:`folio_split_unmapped`): freeze the refcount at
    ``folio_cache_ref_count + 1`` or fail with -EAGAIN; split; unfreeze each new folio
    after the first (the driver's split callback first), then the folio itself."""
    old_order = fo.folio_order(k, head)
    nr = 1 << old_order
    if not k.page_ref_freeze(head, folio_cache_ref_count(k, head) + 1):
        return -EAGAIN
    ret = __split_unmapped_folio(k, head, new_order, split_at, split_type)
    p = head + fo.folio_nr_pages(k, head)
    while p < head + nr:
        step = fo.folio_nr_pages(k, p)
        zone_device_private_split_cb(k, a, head, p)
        k.page_ref_unfreeze(p, folio_cache_ref_count(k, p) + 1)
        p += step
    zone_device_private_split_cb(k, a, head, -1)
    k.page_ref_unfreeze(head, folio_cache_ref_count(k, head) + 1)
    return ret


def folio_split_unmapped(k: Kernel, a: Actor, head: int, new_order: int) -> int:
    """``folio_split_unmapped()`` (7.0 mm/huge_memory.c 4137): split a locked, unmapped
    anonymous large folio (a migration that refuses THP half way). -EAGAIN if it has
    references beyond the caller's one (``folio_expected_ref_count != refcount - 1``) or
    the freeze loses to a speculative reference. The new folios stay locked, each with
    one reference, off the LRU; nothing is remapped."""
    if folio_expected_ref_count(k, head) != fo.folio_ref_count(k, head) - 1:
        return -EAGAIN
    return __folio_freeze_and_split_unmapped(k, a, head, new_order, head, SPLIT_TYPE_UNIFORM)


__all__ = [
    "SPLIT_TYPE_NON_UNIFORM",
    "SPLIT_TYPE_UNIFORM",
    "do_huge_pmd_device_private",
    "folio_cache_ref_count",
    "folio_expected_ref_count",
    "folio_split_unmapped",
    "folio_try_share_anon_rmap_pmd",
    "pmd_migration_entry_wait",
    "split_huge_pmd",
    "split_huge_pmd_locked",
    "zone_device_private_split_cb",
]

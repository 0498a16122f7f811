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
  :func:`do_huge_pmd_device_private`;
- :func:`thp_vma_allowable_order` and :func:`do_huge_pmd_anonymous_page` /
  ``__do_huge_pmd_anonymous_page``: a fault on a none PMD of a THP-eligible
  (``VM_HUGEPAGE``) anonymous VMA maps a fresh zeroed PMD-sized folio.

Everything here runs with the geometry's ``thp``. Anonymous VMAs only: the model has no
file THP (``__split_huge_pmd_locked``'s ``!vma_is_anonymous`` branch is transcribed,
but no workload maps a file folio by a PMD).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

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
    PTE_DEVICE_EXCLUSIVE,
    PTE_DEVICE_PRIVATE,
    PTE_DIRTY,
    PTE_EXCLUSIVE,
    PTE_MIGRATION,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_SOFT_DIRTY,
    PTE_TYPE_MASK,
    PTE_UFFD_WP,
    PTE_WRITE,
    PTE_YOUNG,
    STATIC_MASK,
    V_END,
    V_START,
    VM_ANON,
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_SHARED,
    VM_SPECIAL,
    VM_WRITE,
    PG_allocated,
    PG_anon,
    PG_anon_exclusive,
    PG_dirty,
    PG_head,
    PG_isolated,
    PG_locked,
    PG_lru,
    PG_pagecache,
    PG_swapcache,
    PG_uptodate,
    mapping_encode,
    pte_encode,
)
from ..oracles.folio import check_split
from .mmu_notifier import (
    MMU_NOTIFY_CLEAR,
    MmuNotifierRange,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
)
from .rmap import (
    anon_vma_interval_tree,
    anon_vma_lock_read,
    anon_vma_lock_write,
    anon_vma_trylock_read,
    anon_vma_unlock_read,
    anon_vma_unlock_write,
    folio_anon_vma,
    folio_pgoff,
    invalid_migration_vma,
    linear_page_index,
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

# vm_fault_t VM_FAULT_FALLBACK (include/linux/mm_types.h): the huge fault gives way to
# the PTE level.
VM_FAULT_FALLBACK = 0x800


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


def _folio_add_anon_rmap_ptes(
    k: Kernel, head: int, page: int, nr: int, exclusive: bool, mm: int
) -> None:
    """``folio_add_anon_rmap_ptes(folio, page, nr, vma, addr, flags)`` of an anonymous
    folio already mapped: the PTE mapcounts, and PageAnonExclusive on each page for
    RMAP_EXCLUSIVE (``__folio_add_anon_rmap``)."""
    fo.folio_add_rmap_ptes(k, head, page, nr, mm)
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
        fo.folio_remove_rmap_pmd(k, head, mm)
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
            _folio_add_anon_rmap_ptes(k, head, page, n, anon_exclusive, mm)
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
            _folio_add_anon_rmap_ptes(k, head, page, n, anon_exclusive, mm)
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
        fo.folio_remove_rmap_pmd(k, head, mm)
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
        ret = yield from k.device_for(page).migrate_to_ram(
            k, a, mm, vpn, page, locked=True, pmd=True  # vmf->pte = NULL
        )
        k.unlock_page(a, head, "do_huge_pmd_device_private:folio_unlock")
        fo.folio_put(k, a, head, "do_huge_pmd_device_private:folio_put")
    else:
        k.spin_unlock(a, ptl, "do_huge_pmd_device_private:unlock")
    return ret or 0


def huge_pmd_set_accessed(k: Kernel, mm: int, idx: int, orig_pmd: int, write: bool) -> bool:
    """``huge_pmd_set_accessed()`` → ``touch_pmd()`` (7.0 mm/huge_memory.c 2018), with
    the PMD lock held: if the PMD is still ``orig_pmd``, mark it young (and dirty for a
    write); ``pmdp_set_access_flags`` stores only a changed entry. Returns whether it
    changed (``fix_spurious_fault`` otherwise: nothing to do on x86)."""
    if pm.pmdp_get(k, mm, idx) != orig_pmd:
        return False
    new = orig_pmd | PTE_YOUNG | (PTE_DIRTY if write else 0)
    if new == orig_pmd:
        return False
    pm.set_pmd_at(k, mm, idx, new)
    return True


def do_huge_pmd_wp_page(k: Kernel, a: Actor, mm: int, vma: int, vpn: int, orig_pmd: int) -> Path:
    """``do_huge_pmd_wp_page()`` (7.0 mm/huge_memory.c 2060; reached through
    ``wp_huge_pmd`` for an anonymous VMA): a write to a read-only huge PMD. Reuse the
    folio when its head is ``PageAnonExclusive`` (checked under the PMD lock, and again
    after the folio lock), or when the folio lock is got and the folio has no reference
    but the PMD's (then ``SetPageAnonExclusive``); otherwise split the PMD
    (``__split_huge_pmd``) and return ``VM_FAULT_FALLBACK``: the fault goes on at the PTE
    level, where ``do_wp_page`` copies or reuses the one page. The huge zero folio, the
    swap cache term (no THP swap in the model), ``folio_move_anon_rmap`` (the model's
    anonymous mapping is per mm already) and ``FAULT_FLAG_UNSHARE`` are not modelled.
    Returns 0 or ``VM_FAULT_FALLBACK``."""
    site = "do_huge_pmd_wp_page"
    idx = pm.pmd_index(k, vpn)
    ptl = pm.pmd_lockptr(k, mm, idx)
    yield from k.spin_lock(a, ptl, site + ":pmd_lock")
    if pm.pmdp_get(k, mm, idx) != orig_pmd:
        k.spin_unlock(a, ptl, site + ":unlock")
        return 0
    page = pm.pmd_pfn(orig_pmd)
    folio = fo.page_folio(k, page)
    reuse = k.test_flag(page, PG_anon_exclusive)  # early check under the PT lock
    if not reuse:
        if not k.trylock_page(a, folio, site + ":folio_trylock"):
            k.get_page(a, folio, site + ":folio_get")
            k.spin_unlock(a, ptl, site + ":unlock")
            yield
            yield from k.lock_page(a, folio, site + ":folio_lock")
            yield
            yield from k.spin_lock(a, ptl, site + ":pmd_lock")
            if pm.pmdp_get(k, mm, idx) != orig_pmd:
                k.spin_unlock(a, ptl, site + ":unlock")
                k.unlock_page(a, folio, site + ":folio_unlock")
                fo.folio_put(k, a, folio, site + ":folio_put")
                return 0
            fo.folio_put(k, a, folio, site + ":folio_put")
        if k.test_flag(page, PG_anon_exclusive):  # recheck after dropping the PT lock
            k.unlock_page(a, folio, site + ":folio_unlock")
            reuse = True
        elif fo.folio_ref_count(k, folio) > 1:  # + folio_test_swapcache * nr: no THP swap
            k.unlock_page(a, folio, site + ":folio_unlock")  # unlock_fallback
            k.spin_unlock(a, ptl, site + ":unlock")
        else:
            k.set_flag(page, PG_anon_exclusive)  # folio_move_anon_rmap + SetPageAnonExclusive
            k.unlock_page(a, folio, site + ":folio_unlock")
            reuse = True
    if reuse:
        entry = orig_pmd | PTE_YOUNG | PTE_DIRTY
        if k.s.vma_flags(mm, vma) & VM_WRITE:  # maybe_pmd_mkwrite
            entry |= PTE_WRITE
        if entry != orig_pmd:  # pmdp_set_access_flags
            pm.set_pmd_at(k, mm, idx, entry)
        k.spin_unlock(a, ptl, site + ":unlock")
        k.count("thp_wp_reuse")
        return 0
    yield
    yield from split_huge_pmd(k, a, mm, vma, vpn, False)  # fallback: __split_huge_pmd
    k.count("thp_wp_fallback")
    return VM_FAULT_FALLBACK


# -- the THP fault (7.0 mm/huge_memory.c 1256-1511, include/linux/huge_mm.h) ------------
def thp_vma_allowable_order(k: Kernel, mm: int, vma: int, vpn: int) -> bool:
    """``thp_vma_allowable_order(vma, vm_flags, TVA_PAGEFAULT, PMD_ORDER)`` with
    ``thp_vma_suitable_order``, as the model's sysfs is set (``enabled = madvise``):
    an anonymous private VMA with ``VM_HUGEPAGE`` (``madvise(MADV_HUGEPAGE)``; never a
    hugetlb or special one) that covers the whole PMD-aligned range around ``vpn``."""
    flags = k.s.vma_flags(mm, vma)
    if not flags & VM_HUGEPAGE or not flags & VM_ANON:
        return False
    if flags & (VM_HUGETLB | VM_SPECIAL | VM_SHARED):
        return False
    haddr = pm.pmd_addr_start(k, pm.pmd_index(k, vpn))
    v = k.s.vma[mm, vma]
    return int(v[V_START]) <= haddr and haddr + k.geo.hpage_pmd_nr <= int(v[V_END])


def do_huge_pmd_anonymous_page(
    k: Kernel, a: Actor, mm: int, vma: int, vpn: int, write: bool,
    stable_check: Callable[[Kernel, int], int],
) -> Path:
    """``create_huge_pmd()`` → ``do_huge_pmd_anonymous_page()`` (7.0 mm/huge_memory.c
    1461) for a fault on a none PMD of an anonymous VMA that
    :func:`thp_vma_allowable_order` allows. ``thp_vma_suitable_order`` again (else
    ``VM_FAULT_FALLBACK``); ``vmf_anon_prepare`` (the model's anon_vma is the mm's:
    nothing to prepare); a read fault would map the huge zero folio, which the model's
    sysfs disables (``transparent_hugepage/use_zero_page = 0``): read and write faults
    both go to :func:`__do_huge_pmd_anonymous_page`. ``stable_check`` is
    ``check_stable_address_space`` (core/mm/memory.py, which calls this)."""
    if not thp_vma_allowable_order(k, mm, vma, vpn):
        return VM_FAULT_FALLBACK
    return (yield from __do_huge_pmd_anonymous_page(k, a, mm, vma, vpn, stable_check))


def __do_huge_pmd_anonymous_page(
    k: Kernel, a: Actor, mm: int, vma: int, vpn: int,
    stable_check: Callable[[Kernel, int], int],
) -> Path:
    """``__do_huge_pmd_anonymous_page()`` (7.0 mm/huge_memory.c 1323).
    ``vma_alloc_anon_folio_pmd``: an aligned order-``HPAGE_PMD_ORDER`` folio of system
    RAM, else ``VM_FAULT_FALLBACK`` (``THP_FAULT_FALLBACK``: the PTE level maps a small
    page); ``folio_zero_user`` and ``__folio_mark_uptodate``. Then (the allocations may
    sleep: a preemption point) ``pmd_lock``: a PMD that is no longer none (another
    fault, a migration's insert) releases the folio and returns 0; an OOM-reaped mm
    (``check_stable_address_space``) returns ``VM_FAULT_SIGBUS``; else
    ``map_anon_folio_pmd_pf``: a dirty, young PMD, writable when the VMA is
    (``maybe_pmd_mkwrite``), ``folio_add_new_anon_rmap(RMAP_EXCLUSIVE)``,
    ``folio_add_lru_vma``, ``set_pmd_at``. No memcg charge, no userfaultfd, no deposited
    page table (the model's PTE tables always exist), no deferred split queue."""
    site = "__do_huge_pmd_anonymous_page"
    n = k.geo.hpage_pmd_nr
    idx = pm.pmd_index(k, vpn)
    haddr = pm.pmd_addr_start(k, idx)
    head = fo.folio_alloc(k, a, 0, n.bit_length() - 1, site + ":vma_alloc_folio")
    if head < 0:
        k.count("thp_fault_fallback")
        return VM_FAULT_FALLBACK
    for p in range(head, head + n):
        k.set_data(p, 0)  # folio_zero_user
        k.set_flag(p, PG_anon)  # the model keeps the anon bit on every page of the folio
    k.set_flag(head, PG_uptodate)  # __folio_mark_uptodate
    yield  # pte_alloc_one (may sleep) before the PMD lock
    ptl = yield from pm.pmd_lock(k, a, mm, idx, site + ":pmd_lock")
    if not pm.pmd_none(pm.pmdp_get(k, mm, idx)):
        k.spin_unlock(a, ptl, site + ":pmd_unlock")
        fo.folio_put(k, a, head, site + ":release")
        k.count("thp_fault_raced")
        return 0
    ret = stable_check(k, mm)
    if ret:
        k.spin_unlock(a, ptl, site + ":pmd_unlock")
        fo.folio_put(k, a, head, site + ":release")
        k.count("unstable_sigbus")
        return ret
    # map_anon_folio_pmd_pf() -> map_anon_folio_pmd_nopf()
    bits = PTE_DIRTY | PTE_YOUNG
    if k.s.vma_flags(mm, vma) & VM_WRITE:  # maybe_pmd_mkwrite
        bits |= PTE_WRITE
    av, index = linear_page_index(k, mm, haddr)
    fo.folio_add_new_anon_rmap(k, head, mapping_encode(av, index), exclusive=True, mm=mm)
    k.folio_add_lru(a, head, site + ":folio_add_lru_vma")
    pm.set_pmd_at(k, mm, idx, pte_encode(PTE_PRESENT, head, bits))
    k.spin_unlock(a, ptl, site + ":pmd_unlock")
    k.count("thp_fault_alloc")
    return 0


# -- zap ---------------------------------------------------------------------------------
def zap_huge_pmd(
    k: Kernel, a: Actor, mm: int, idx: int, site: str, on_clear: Callable[[int], None]
) -> Generator[Any, Any, int]:
    """``zap_huge_pmd()`` (7.0 mm/huge_memory.c 2344), for anonymous VMAs: under the PMD
    lock (``__pmd_trans_huge_lock``: 0 when the PMD is no longer a huge leaf) clear the
    PMD (``pmdp_huge_get_and_clear_full``); a present PMD loses its rmap
    (``folio_remove_rmap_pmd``) and its reference is put after the TLB flush
    (``tlb_remove_page_size``); a device-private PMD loses its rmap and reference at
    once; a PMD migration entry is only cleared (the migration owns the folio; no
    flush needed). ``on_clear(vpn)`` runs under the lock for every page of the range
    (the caller's oracle bookkeeping: pins, shadow). The flush of the huge translation
    is done before the PMD lock is dropped, as the model's ``zap_pte_range`` does its
    own (7.0 flushes in ``tlb_flush_mmu`` after the unlock, the folio still held by the
    gather: docs/internals.md, deliberate simplifications). Returns 1 when zapped."""
    ptl = yield from pm.pmd_lock(k, a, mm, idx, site + ":pmd_lock")
    kind = pm.pmdp_get(k, mm, idx) & PTE_TYPE_MASK
    if kind not in (PTE_PRESENT, PTE_MIGRATION, PTE_DEVICE_PRIVATE):
        k.spin_unlock(a, ptl, site + ":pmd_unlock")
        return 0
    orig = pm.pmdp_huge_get_and_clear(k, mm, idx)
    head = pm.pmd_pfn(orig)
    flush_needed = kind == PTE_PRESENT
    if flush_needed:
        fo.folio_remove_rmap_pmd(k, head, mm)
    if kind == PTE_DEVICE_PRIVATE:  # folio_is_device_private()
        fo.folio_remove_rmap_pmd(k, head, mm)
        fo.folio_put(k, a, head, site + ":zap_huge_pmd")
    start = pm.pmd_addr_start(k, idx)
    for v in range(start, start + k.geo.hpage_pmd_nr):
        on_clear(v)
    if flush_needed:
        pm.flush_pmd_tlb_range(k, mm, idx)
        k.flush_tlb_range(mm, start, start + k.geo.hpage_pmd_nr)
    k.spin_unlock(a, ptl, site + ":pmd_unlock")
    if flush_needed:
        yield  # the gather still holds the folio: others run before tlb_finish_mmu
        fo.folio_put(k, a, head, site + ":tlb_finish_mmu")  # tlb_remove_page_size
    k.count("thp_zap_pmd")
    return 1


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
        clone = SPLIT_CLONE_FLAGS
        if "split_drops_lock" in k.faults:  # test-only fault
            clone &= ~PG_locked
        words.store(fl, (cur & STATIC_MASK) | PG_allocated | (hflags & clone))
        if hflags & clone & PG_locked:
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
    d = k.device_of(orig)
    if d >= len(k.devices):
        return  # no driver object (a bare kernel of the unit tests): no callback
    cb = getattr(k.devices[d], "folio_split", None)
    if cb is not None:
        cb(k, a, orig, new)


def __folio_freeze_and_split_unmapped(
    k: Kernel, a: Actor, head: int, new_order: int, split_at: int, split_type: int,
    do_lru: bool = False,
) -> int:
    """``__folio_freeze_and_split_unmapped()`` (7.0 mm/huge_memory.c 3779), anonymous
    folios outside the swap cache, without LRU handling (``do_lru`` false: the only
    one caller, :func:`folio_split_unmapped`; :func:`__folio_split` passes ``do_lru``:
    each new folio goes where ``lru_add_split_folio`` puts it, on the LRU when the
    folio was): freeze the refcount at
    ``folio_cache_ref_count + 1`` or fail with -EAGAIN; split; unfreeze each new folio
    after the first (the driver's split callback first), then the folio itself."""
    old_order = fo.folio_order(k, head)
    nr = 1 << old_order
    if not k.page_ref_freeze(head, folio_cache_ref_count(k, head) + 1):
        return -EAGAIN
    on_lru = do_lru and k.test_flag(head, PG_lru)
    locked_by = k.words.load(k.fw(head, F_OWNER)) if k.test_flag(head, PG_locked) else 0
    ret = __split_unmapped_folio(k, head, new_order, split_at, split_type)
    p = head + fo.folio_nr_pages(k, head)
    while p < head + nr:
        step = fo.folio_nr_pages(k, p)
        zone_device_private_split_cb(k, a, head, p)
        extra = 1 if "split_unfreeze_extra_ref" in k.faults else 0  # test-only fault
        k.page_ref_unfreeze(p, folio_cache_ref_count(k, p) + 1 + extra)
        if on_lru:
            k.set_flag(p, PG_lru)  # lru_add_split_folio(): next to the folio on its LRU
        p += step
    zone_device_private_split_cb(k, a, head, -1)
    k.page_ref_unfreeze(head, folio_cache_ref_count(k, head) + 1)
    check_split(k, a, head, nr, locked_by, "__folio_freeze_and_split_unmapped")
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


# -- large-folio rmap (mm/rmap.c of 7.0: try_to_migrate_one's PMD and large-folio parts,
#    remove_migration_pte / remove_migration_pmd of mm/migrate.c and huge_memory.c) ------
RmapOneLarge = Callable[[int, int, int, int], Generator[Any, Any, bool]]


def _large_interval_tree(k: Kernel, av: int, head: int) -> list[tuple[int, int, int, int]]:
    """``anon_vma_interval_tree_foreach(avc, root, pgoff_start, pgoff_end)`` over the
    whole folio: (mm, address of the folio's first page, vm_flags, VMA row) of every
    VMA that maps some page of it (the address may lie outside the VMA when only part
    of the folio is inside: ``page_vma_mapped_walk`` checks each page against the
    VMA's bounds). One entry per VMA: after a munmap or mprotect of part of the folio's
    range two VMAs of one mm give the folio the same address."""
    index = folio_pgoff(k, head)
    nr = fo.folio_nr_pages(k, head)
    seen: set[tuple[int, int]] = set()
    out = []
    for i in range(nr):
        for mm, vpn, vflags in anon_vma_interval_tree(k, av, index + i):
            row = k.s.find_vma(mm, vpn)
            key = (mm, row)
            if key not in seen:
                seen.add(key)
                out.append((mm, vpn - i, vflags, row))
    return out


def rmap_walk_anon_large(
    k: Kernel, a: Actor, head: int, rmap_one: RmapOneLarge, site: str, locked: bool,
    anon_lock: bool = False, done: Callable[[], bool] | None = None,
    invalid_vma: Callable[[int], bool] | None = None,
) -> Path:
    """``rmap_walk_anon()`` of a folio of any order: the anon_vma's read lock unless the
    caller holds it (``TTU_RMAP_LOCKED``; ``__folio_split`` holds it for write), with
    ``rwc->anon_lock`` = ``folio_lock_anon_vma_read`` (nothing to walk when the folio
    is not mapped), then ``rmap_one`` per VMA."""
    av = folio_anon_vma(k, head)
    if av < 0:
        return
    if not locked:
        if anon_lock and not fo.folio_mapped(k, head):
            return
        if not anon_vma_trylock_read(k, a, av, site + ":anon_vma_lock_read"):
            yield from anon_vma_lock_read(k, a, av, site + ":anon_vma_lock_read")
    try:
        for mm, vpn, vflags, row in _large_interval_tree(k, av, head):
            yield  # cond_resched()
            if invalid_vma is not None and invalid_vma(vflags):
                continue
            if not (yield from rmap_one(mm, vpn, vflags, row)):
                break
            if done is not None and done():
                break
    finally:
        if not locked:
            anon_vma_unlock_read(k, a, av, site + ":anon_vma_unlock_read")


def set_pmd_migration_entry(k: Kernel, a: Actor, mm: int, idx: int, head: int) -> int:
    """``set_pmd_migration_entry()`` (7.0 mm/huge_memory.c 4862), with the PMD lock held:
    clear (a non-present PMD) or invalidate the PMD, share an anon-exclusive folio
    (refused for a maybe-pinned one: the PMD is put back, -EBUSY), and install a PMD
    migration entry (write / readable-exclusive / readable, young, dirty, soft-dirty,
    uffd-wp); the PMD mapping and its reference are dropped."""
    pw = pm.pmd_w(k, mm, idx)
    if k.words.load(pw) & PTE_TYPE_MASK != PTE_PRESENT:
        pmdval = pm.pmdp_huge_get_and_clear(k, mm, idx)
    else:
        pmdval = pm.pmdp_invalidate(k, mm, idx) & ~pm.PMD_INVALID
    anon_exclusive = k.test_flag(head, PG_anon) and k.test_flag(head, PG_anon_exclusive)
    if anon_exclusive and folio_try_share_anon_rmap_pmd(k, head):
        pm.set_pmd_at(k, mm, idx, pmdval)
        k.count("thp_share_pmd_ebusy")  # a pinned THP stays where it is
        return -EBUSY
    if pmdval & PTE_DIRTY:
        k.set_flag(head, PG_dirty)
    bits = _migration_bits(
        bool(pmdval & PTE_WRITE), anon_exclusive, bool(pmdval & PTE_YOUNG),
        bool(pmdval & PTE_DIRTY), bool(pmdval & PTE_SOFT_DIRTY), bool(pmdval & PTE_UFFD_WP),
    )
    pm.set_pmd_at(k, mm, idx, pte_encode(PTE_MIGRATION, head, bits))
    fo.folio_remove_rmap_pmd(k, head, mm)
    fo.folio_put(k, a, head, "set_pmd_migration_entry:folio_put")
    return 0


def remove_migration_pmd(k: Kernel, a: Actor, mm: int, idx: int, new: int) -> None:
    """``remove_migration_pmd()`` (7.0 mm/huge_memory.c 4915), with the PMD lock held:
    the PMD migration entry becomes a huge PMD of ``new`` (a device-private PMD for a
    device-private folio) with the entry's write, soft-dirty, uffd-wp and young bits,
    dirty only if the folio and the entry both are; one more reference and a PMD
    mapping, exclusive unless the entry was readable."""
    old = pm.pmdp_get(k, mm, idx)
    k.get_page(a, new, "remove_migration_pmd:folio_get")
    bits = old & (PTE_WRITE | PTE_SOFT_DIRTY | PTE_UFFD_WP)
    if k.is_device_private(new):
        pmde = pte_encode(PTE_DEVICE_PRIVATE, new, bits)
    else:
        bits |= old & PTE_YOUNG
        if k.test_flag(new, PG_dirty) and old & PTE_DIRTY:
            bits |= PTE_DIRTY
        pmde = pte_encode(PTE_PRESENT, new, bits)
    if k.test_flag(new, PG_anon):
        if old & (PTE_WRITE | PTE_EXCLUSIVE):  # !softleaf_is_migration_read(entry)
            k.set_flag(new, PG_anon_exclusive)
        fo.folio_add_rmap_pmd(k, new, mm)
    pm.set_pmd_at(k, mm, idx, pmde)


def try_to_migrate_large(
    k: Kernel, a: Actor, head: int, split_huge_pmd: bool, locked: bool,
    site: str = "try_to_migrate_one",
) -> Path:
    """``try_to_migrate(folio, flags)`` of a large anonymous folio (7.0 mm/rmap.c
    ``try_to_migrate_one``): per VMA, under an ``MMU_NOTIFY_CLEAR`` invalidation of the
    folio's range, ``page_vma_mapped_walk`` the PMD, then each PTE. A PMD mapping is
    split into migration entries (``TTU_SPLIT_HUGE_PMD``: ``split_huge_pmd_locked(...,
    freeze)``, once, then the walk restarts) or replaced by a PMD migration entry
    (``set_pmd_migration_entry``). Each PTE naming a page of the folio (present,
    device-private or device-exclusive) becomes a migration entry, its mapping and
    reference dropped; an anon-exclusive page of a maybe-pinned folio stops the walk.
    Returns whether the folio is unmapped."""
    nr = fo.folio_nr_pages(k, head)
    n = k.geo.hpage_pmd_nr

    def one(mm: int, vpn: int, vflags: int, row: int) -> Generator[Any, Any, bool]:
        split = split_huge_pmd
        lo, hi = k.s.vma_bounds(mm, row)  # the VMA the interval tree gave
        rng = MmuNotifierRange(MMU_NOTIFY_CLEAR, mm, max(vpn, lo), min(vpn + nr, hi))
        yield from mmu_notifier_invalidate_range_start(k, a, rng)
        ret = True
        try:
            restart = True
            while restart:
                restart = False
                if nr == n and vpn % n == 0 and lo <= vpn and vpn + n <= hi:
                    idx = vpn // n
                    pmd = pm.pmdp_get(k, mm, idx)
                    kind = pmd & PTE_TYPE_MASK
                    if kind in (PTE_PRESENT, PTE_DEVICE_PRIVATE) and pm.pmd_pfn(pmd) == head:
                        yield  # between the lockless read and pmd_lock()
                        ptl = yield from pm.pmd_lock(k, a, mm, idx, site + ":pmd_lock")
                        pmd = pm.pmdp_get(k, mm, idx)
                        kind = pmd & PTE_TYPE_MASK
                        if kind in (PTE_PRESENT, PTE_DEVICE_PRIVATE) and pm.pmd_pfn(pmd) == head:
                            if split:
                                yield from split_huge_pmd_locked(k, a, mm, row, idx, True)
                                split = False
                                k.spin_unlock(a, ptl, site + ":pmd_unlock")
                                restart = True  # page_vma_mapped_walk_restart()
                                continue
                            rc = set_pmd_migration_entry(k, a, mm, idx, head)
                            k.spin_unlock(a, ptl, site + ":pmd_unlock")
                            return rc == 0
                        k.spin_unlock(a, ptl, site + ":pmd_unlock")
                    if kind != pm.PMD_TABLE:
                        return True
                for i in range(nr):
                    v = vpn + i
                    if not lo <= v < hi:
                        continue
                    if pm.pmdp_get(k, mm, v // n) & PTE_TYPE_MASK != pm.PMD_TABLE:
                        continue
                    pte = k.pte_read(mm, v)
                    kind = pte & PTE_TYPE_MASK
                    if kind not in (PTE_PRESENT, PTE_DEVICE_PRIVATE, PTE_DEVICE_EXCLUSIVE):
                        continue
                    if pte >> PTE_PFN_SHIFT != head + i:
                        continue
                    yield  # map_pte(): between the lockless read and the PTL
                    ptl = k.ptl_word(mm, v)
                    yield from k.spin_lock(a, ptl, site + ":ptl")
                    pte = k.pte_read(mm, v)
                    kind = pte & PTE_TYPE_MASK
                    if kind not in (PTE_PRESENT, PTE_DEVICE_PRIVATE, PTE_DEVICE_EXCLUSIVE) or (
                        pte >> PTE_PFN_SHIFT != head + i
                    ):
                        k.spin_unlock(a, ptl, site + ":ptl")
                        continue
                    page = head + i
                    old = k.ptep_get_and_clear(mm, v)
                    k.flush_tlb_range(mm, v, v + 1)
                    anon_exclusive = k.test_flag(head, PG_anon) and k.test_flag(page, PG_anon_exclusive)
                    if anon_exclusive:
                        if fo.folio_maybe_dma_pinned(k, head) and not k.is_device_private(head):
                            k.set_pte(mm, v, old)
                            k.spin_unlock(a, ptl, site + ":ptl")
                            ret = False
                            break
                        k.clear_flag(page, PG_anon_exclusive)
                    if old & PTE_DIRTY:
                        k.set_flag(head, PG_dirty)
                    bits = _migration_bits(
                        bool(old & PTE_WRITE), anon_exclusive, bool(old & PTE_YOUNG),
                        bool(old & PTE_DIRTY), bool(old & PTE_SOFT_DIRTY), bool(old & PTE_UFFD_WP),
                    )
                    k.set_pte(mm, v, pte_encode(PTE_MIGRATION, page, bits))
                    fo.folio_remove_rmap_ptes(k, head, page, 1, mm)
                    fo.folio_put(k, a, head, site)
                    k.spin_unlock(a, ptl, site + ":ptl")
            return ret
        finally:
            yield from mmu_notifier_invalidate_range_end(k, a, rng)

    yield from rmap_walk_anon_large(
        k, a, head, one, "try_to_migrate", locked, anon_lock=True,
        done=lambda: not fo.folio_mapped(k, head), invalid_vma=invalid_migration_vma,
    )
    return not fo.folio_mapped(k, head)


def remove_migration_ptes_large(
    k: Kernel, a: Actor, src: int, dst: int, locked: bool, site: str = "remove_migration_pte"
) -> Path:
    """``remove_migration_ptes(src, dst, flags)`` (7.0 mm/migrate.c) for a folio of any
    order: walk ``dst``'s rmap; a PMD migration entry naming ``src`` becomes a PMD of
    ``dst`` (``remove_migration_pmd``), each PTE migration entry naming page ``i`` of
    ``src`` a mapping of page ``i`` of ``dst`` (present, or device-private), with one
    more reference and the page's mapcount, exclusive again for a writable or
    readable-exclusive entry; young and dirty as ``v6``'s (6.1+). ``locked``:
    ``TTU_RMAP_LOCKED``, the caller holds the anon_vma."""
    nr = fo.folio_nr_pages(k, dst)
    n = k.geo.hpage_pmd_nr
    dst_private = k.is_device_private(dst)

    def one(mm: int, vpn: int, vflags: int, row: int) -> Generator[Any, Any, bool]:
        lo, hi = k.s.vma_bounds(mm, row)  # the VMA the interval tree gave
        if nr == n and vpn % n == 0 and lo <= vpn and vpn + n <= hi and (
            "finalize_skips_pmd_restore" not in k.faults  # test-only fault
        ):
            idx = vpn // n
            ptl = yield from pm.pmd_lock(k, a, mm, idx, site + ":pmd_lock")
            pmd = pm.pmdp_get(k, mm, idx)
            if pmd & PTE_TYPE_MASK == PTE_MIGRATION and pm.pmd_pfn(pmd) == src:
                remove_migration_pmd(k, a, mm, idx, dst)
                k.spin_unlock(a, ptl, site + ":pmd_unlock")
                return True
            k.spin_unlock(a, ptl, site + ":pmd_unlock")
        for i in range(nr):
            v = vpn + i
            if not lo <= v < hi or pm.pmdp_get(k, mm, v // n) & PTE_TYPE_MASK != pm.PMD_TABLE:
                continue
            ptl = k.ptl_word(mm, v)
            yield from k.spin_lock(a, ptl, site + ":ptl")  # PVMW_SYNC
            old = k.pte_read(mm, v)
            if old & PTE_TYPE_MASK == PTE_MIGRATION and old >> PTE_PFN_SHIFT == src + i:
                page = dst + i
                k.get_page(a, dst, site)
                bits = old & (PTE_WRITE | PTE_SOFT_DIRTY | PTE_UFFD_WP)
                if dst_private:
                    new = pte_encode(PTE_DEVICE_PRIVATE, page, bits)
                else:
                    bits |= old & PTE_YOUNG
                    if old & PTE_DIRTY and k.test_flag(dst, PG_dirty):
                        bits |= PTE_DIRTY
                    new = pte_encode(PTE_PRESENT, page, bits)
                if k.test_flag(dst, PG_anon) and old & (PTE_WRITE | PTE_EXCLUSIVE):
                    k.set_flag(page, PG_anon_exclusive)
                fo.folio_add_rmap_ptes(k, dst, page, 1, mm)
                k.set_pte(mm, v, new)
            k.spin_unlock(a, ptl, site + ":ptl")
        return True

    yield from rmap_walk_anon_large(k, a, dst, one, "remove_migration_ptes", locked)


# -- __folio_split (mm/huge_memory.c 3944) -------------------------------------------------
def __folio_split(
    k: Kernel, a: Actor, head: int, new_order: int, split_at: int, lock_at: int,
    split_type: int,
) -> Path:
    """``__folio_split()`` (7.0 mm/huge_memory.c 3944) of a locked, anonymous large
    folio: the checks (``folio_check_splittable``), the anon_vma locked for write
    (``folio_get_anon_vma``: -EBUSY once the folio is unmapped), the racy
    ``folio_expected_ref_count`` check (-EAGAIN), ``unmap_folio`` (every mapping to
    migration entries, a PMD mapping split first), the freeze and split, ``remap_page``
    (each new folio's migration entries back, the split or not), and every after-split
    folio but the one holding ``lock_at`` unlocked and its reference dropped."""
    old_order = fo.folio_order(k, head)
    nr = 1 << old_order
    if fo.page_folio(k, split_at) != head or fo.page_folio(k, lock_at) != head:
        return -EINVAL
    if new_order >= old_order:
        return -EINVAL
    f = k.flags(head)
    if not f & PG_anon:
        return -EBUSY  # folio_check_splittable(): no file THP in the model
    if new_order == 1:
        return -EINVAL
    if (split_type == SPLIT_TYPE_NON_UNIFORM or new_order) and f & PG_swapcache:
        return -EINVAL
    av = folio_anon_vma(k, head)
    if av < 0 or not fo.folio_mapped(k, head):
        return -EBUSY  # folio_get_anon_vma() returns NULL for an unmapped folio
    yield from anon_vma_lock_write(k, a, av, "__folio_split:anon_vma_lock_write")
    ret = 0
    try:
        if folio_expected_ref_count(k, head) != fo.folio_ref_count(k, head) - 1:
            ret = -EAGAIN
            return ret
        yield from try_to_migrate_large(  # unmap_folio()
            k, a, head, fo.folio_test_pmd_mappable(k, head), locked=True,
            site="unmap_folio",
        )
        yield
        ret = __folio_freeze_and_split_unmapped(
            k, a, head, new_order, split_at, split_type, do_lru=True
        )
        # remap_page(folio, 1 << old_order): the new folios' entries (or the folio's,
        # when the freeze failed) back
        p = head
        while p < head + nr:
            yield from remove_migration_ptes_large(k, a, p, p, locked=True, site="remap_page")
            p += fo.folio_nr_pages(k, p)
        keep = fo.page_folio(k, lock_at)
        p = head
        while p < head + nr:
            step = fo.folio_nr_pages(k, p)
            if p != keep:
                k.unlock_page(a, p, "__folio_split:folio_unlock")
                fo.folio_put(k, a, p, "__folio_split:free_folio_and_swap_cache")
            p += step
        return ret
    finally:
        anon_vma_unlock_write(k, a, av, "__folio_split:anon_vma_unlock_write")


def split_folio(k: Kernel, a: Actor, head: int) -> Path:
    """``split_folio()`` → ``split_huge_page_to_list_to_order(&folio->page, NULL, 0)``:
    a uniform split to order 0, the first page's folio left locked."""
    return (yield from __folio_split(k, a, head, 0, head, head, SPLIT_TYPE_UNIFORM))


def folio_split(k: Kernel, a: Actor, head: int, new_order: int, split_at: int) -> Path:
    """``folio_split()``: the non-uniform split around ``split_at``; the folio (its first
    page) is left locked."""
    return (yield from __folio_split(k, a, head, new_order, split_at, head, SPLIT_TYPE_NON_UNIFORM))


__all__ = [
    "SPLIT_TYPE_NON_UNIFORM",
    "SPLIT_TYPE_UNIFORM",
    "do_huge_pmd_device_private",
    "folio_cache_ref_count",
    "folio_expected_ref_count",
    "folio_split",
    "folio_split_unmapped",
    "folio_try_share_anon_rmap_pmd",
    "pmd_migration_entry_wait",
    "remove_migration_pmd",
    "remove_migration_ptes_large",
    "rmap_walk_anon_large",
    "set_pmd_migration_entry",
    "split_folio",
    "split_huge_pmd",
    "split_huge_pmd_locked",
    "try_to_migrate_large",
    "zone_device_private_split_cb",
]

"""Large folios: a head frame plus an order (issue 15, the ``v7`` generation).

A folio of order ``n`` is ``1 << n`` contiguous frames whose first pfn is a multiple of
``1 << n``. Its refcount, lock, flags, ``folio->mapping`` and lifetime are the head
frame's words (``F_REF``, ``PG_locked`` / ``F_OWNER``, ``F_FLAGS``, the ``mapping``
table), exactly the words an order-0 folio uses, so the existing page primitives of
:class:`~.kernel.Kernel` serve as the folio primitives once a page is resolved to its
head: ``folio_lock(folio)`` is ``k.lock_page(a, head, site)``, ``folio_get`` is
``k.get_page(a, head, site)``, ``folio_ref_freeze`` is ``k.page_ref_freeze(head, n)``.
What a large folio adds lives where 7.0 keeps it (``include/linux/mm_types.h``, 64-bit,
``CONFIG_PAGE_MAPCOUNT``), in the ``folio`` table (``core/machine/layout.py``):

- ``PG_head`` in the head's flags (``folio_test_large``);
- every tail page's ``compound_head`` (``FO_HEAD``: head + 1) and refcount 0;
- in ``page[1]``'s row: the order (``_flags_1``), ``_large_mapcount``,
  ``_entire_mapcount``, ``_nr_pages_mapped`` and ``_pincount``;
- each page's own ``_mapcount`` (``F_MAP``) and content (``F_DATA``), per 4K page;
- ``_mm_ids`` / ``_mm_id_mapcount[2]`` (``CONFIG_MM_ID``): which two mms hold the
  mappings and ``FOLIO_MM_IDS_SHARED_BIT`` (``folio_maybe_mapped_shared``), updated with
  ``_large_mapcount`` under ``folio_lock_large_mapcount`` (a bit lock in ``FO_MM_IDS``
  that nothing holds across a preemption point: taken and dropped in one step; under the
  parallel engine a real spin). Every rmap add / remove names its mm for it.

Paths call :func:`page_folio` and the ``folio_*`` functions here explicitly, as the
7.0 code does; nothing here yields (each is one kernel atomic or a short sequence of
them with no preemption point in the kernel either). The table exists only in
geometries with ``thp``: the other generations never create a large folio.

Counts are stored as counts (the model's convention for ``F_MAP``), not the kernel's
``count - 1``: ``atomic_inc_and_test(&page->_mapcount)`` ("first mapping") is
``fetch_add(F_MAP, 1) == 0`` here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import FailureKind
from .layout import (
    ENTIRELY_MAPPED,
    F_DATA,
    F_GEN,
    F_MAP,
    F_OWNER,
    F_PIN,
    F_PRIV,
    F_REF,
    FO_ENTIRE_MAPCOUNT,
    FO_HEAD,
    FO_LARGE_MAPCOUNT,
    FO_MM_IDS,
    FO_MM_MAP0,
    FO_MM_MAP1,
    FO_NR_PAGES_MAPPED,
    FO_ORDER,
    FO_PINCOUNT,
    FOLIO_MM_IDS_LOCK,
    FOLIO_MM_IDS_SHARED,
    FOLIO_PAGES_MAPPED,
    FOLIO_WORDS,
    GUP_PIN_COUNTING_BIAS,
    MM_ID_BITS,
    MM_ID_MASK,
    STATIC_MASK,
    Z_DEVICE,
    Z_DEVID_MASK,
    Z_DEVID_SHIFT,
    Z_FREE,
    ZONE_WORDS,
    PG_allocated,
    PG_anon_exclusive,
    PG_head,
    PG_locked,
)

if TYPE_CHECKING:
    from .kernel import Actor, Kernel


def fo_w(k: Kernel, pfn: int, field: int) -> int:
    """Word index of a field of ``pfn``'s row of the ``folio`` table."""
    return k.lay.FOLIO + pfn * FOLIO_WORDS + field


# -- what a page belongs to (include/linux/page-flags.h, mm.h) -------------------------
def page_folio(k: Kernel, pfn: int) -> int:
    """``page_folio()``: the head pfn of the folio ``pfn`` belongs to (``pfn`` itself for
    a head or an order-0 page). Without ``thp`` every page is its own folio."""
    if not k.geo.thp:
        return pfn
    h = k.words.load(k.lay.FOLIO + pfn * FOLIO_WORDS + FO_HEAD)
    return h - 1 if h else pfn


def page_is_tail(k: Kernel, pfn: int) -> bool:
    """``PageTail()``."""
    return bool(k.geo.thp and k.words.load(fo_w(k, pfn, FO_HEAD)))


def folio_test_large(k: Kernel, head: int) -> bool:
    """``folio_test_large()``: PG_head."""
    return bool(k.flags(head) & PG_head)


def folio_order(k: Kernel, head: int) -> int:
    """``folio_order()``: 0, or the order kept in ``page[1]`` (``_flags_1``)."""
    if not k.flags(head) & PG_head:
        return 0
    return k.words.load(fo_w(k, head + 1, FO_ORDER))


def folio_nr_pages(k: Kernel, head: int) -> int:
    """``folio_nr_pages()``."""
    return 1 << folio_order(k, head)


def folio_page_idx(k: Kernel, head: int, pfn: int) -> int:
    """``folio_page_idx()``: the index of page ``pfn`` in its folio."""
    return pfn - head


def folio_test_pmd_mappable(k: Kernel, head: int) -> bool:
    """``folio_test_pmd_mappable()``: order >= HPAGE_PMD_ORDER."""
    return folio_nr_pages(k, head) >= k.geo.hpage_pmd_nr


def _check_head(k: Kernel, a: Actor | None, pfn: int, site: str) -> None:
    """``VM_BUG_ON_PAGE(PageTail(page))`` of the folio functions: a folio is never a
    tail page."""
    if page_is_tail(k, pfn):
        raise k.fail(
            FailureKind.BUG_ON,
            f"{a.name if a else 'kernel'} used tail page {pfn} as a folio at {site} "
            f"(its head is {page_folio(k, pfn)}; VM_BUG_ON_PAGE(PageTail))",
            actors=[a] if a else [],
            pages=[pfn],
            sites=[site],
        )


# -- references (include/linux/mm.h, page_ref.h) ------------------------------------------
def folio_ref_count(k: Kernel, head: int) -> int:
    """``folio_ref_count()``."""
    return k.words.load(k.fw(head, F_REF))


def folio_put(k: Kernel, a: Actor, head: int, site: str, refs: int = 1) -> None:
    """``folio_put_refs()``: drop ``refs`` references; the last one frees the folio, all
    its pages (``__folio_put`` → ``free_frozen_pages`` / ``free_zone_device_folio``).
    An order-0 folio goes through ``Kernel.put_page``, unchanged."""
    _check_head(k, a, head, site)
    if not k.flags(head) & PG_head:
        k.put_page(a, head, site, refs)
        return
    k.touch(a, head, site)
    old = k.words.fetch_add(k.fw(head, F_REF), -refs)
    if old < refs:
        what = f"folio {head} (order {folio_order(k, head)})"
        raise k.refcount_underflow(a, what, head, refs, old, site)
    if old == refs:
        free_folio(k, a, head, site)


def folio_maybe_dma_pinned(k: Kernel, head: int) -> bool:
    """``folio_maybe_dma_pinned()``: a large folio counts pins exactly in ``_pincount``;
    an order-0 folio by the refcount bias."""
    if k.flags(head) & PG_head:
        return k.words.load(fo_w(k, head + 1, FO_PINCOUNT)) > 0
    return k.ref_count(head) >= GUP_PIN_COUNTING_BIAS


def folio_pincount(k: Kernel, head: int) -> int:
    """``folio->_pincount`` of a large folio (``F_PIN`` of an order-0 one)."""
    if k.flags(head) & PG_head:
        return k.words.load(fo_w(k, head + 1, FO_PINCOUNT))
    return k.words.load(k.fw(head, F_PIN))


def folio_pincount_add(k: Kernel, head: int, n: int) -> int:
    """``atomic_add(n, &folio->_pincount)`` (``try_grab_folio`` / ``gup_put_folio`` of a
    large folio: pins count 1 each there, plus one reference); returns the new value."""
    return k.words.fetch_add(fo_w(k, head + 1, FO_PINCOUNT), n) + n


# -- _mm_ids (include/linux/rmap.h of 7.0, CONFIG_MM_ID) ---------------------------------
def folio_mm_id(k: Kernel, head: int, slot: int) -> int:
    """``folio_mm_id(folio, slot)``: ``mm + 1`` of the slot's mm, 0 (``MM_ID_DUMMY``)."""
    return (k.words.load(fo_w(k, head + 1, FO_MM_IDS)) >> (slot * MM_ID_BITS)) & MM_ID_MASK


def folio_maybe_mapped_shared(k: Kernel, head: int) -> bool:
    """``folio_maybe_mapped_shared()`` of a large folio: ``FOLIO_MM_IDS_SHARED_BIT``."""
    return bool(k.words.load(fo_w(k, head + 1, FO_MM_IDS)) & FOLIO_MM_IDS_SHARED)


def _lock_large_mapcount(k: Kernel, head: int) -> int:
    """``folio_lock_large_mapcount()``: ``bit_spin_lock``; returns the ``_mm_ids`` word
    (locked). Never held across a preemption point."""
    w = fo_w(k, head + 1, FO_MM_IDS)
    while True:
        old = k.words.fetch_or(w, FOLIO_MM_IDS_LOCK)
        if not old & FOLIO_MM_IDS_LOCK:
            return int(old)


def _unlock_large_mapcount(k: Kernel, head: int, ids: int) -> None:
    k.words.store(fo_w(k, head + 1, FO_MM_IDS), ids & ~FOLIO_MM_IDS_LOCK)


def _set_mm_id(ids: int, slot: int, mm_id: int) -> int:
    shift = slot * MM_ID_BITS
    return (ids & ~(MM_ID_MASK << shift)) | (mm_id << shift)


def _set_large_mapcount(k: Kernel, head: int, mapcount: int, mm: int) -> None:
    """``folio_set_large_mapcount(folio, mapcount, vma)`` (7.0 rmap.h): a folio nobody
    maps; slot 0 is the mm with every mapping."""
    p1 = head + 1
    k.words.store(fo_w(k, p1, FO_LARGE_MAPCOUNT), mapcount)
    k.words.store(fo_w(k, p1, FO_MM_MAP0), mapcount)
    k.words.store(fo_w(k, p1, FO_MM_MAP1), 0)
    k.words.store(fo_w(k, p1, FO_MM_IDS), mm + 1)


def folio_add_return_large_mapcount(k: Kernel, head: int, diff: int, mm: int) -> int:
    """``folio_add_return_large_mapcount(folio, diff, vma)`` (7.0 rmap.h 177, 64-bit):
    under the large-mapcount lock, ``_large_mapcount`` += diff and the mm's slot: its
    own count, or a free slot taken (slot 0: shared when other mappings exist; slot 1:
    always shared); an mm with no slot free leaves the slots alone. Returns the new
    count."""
    words = k.words
    p1 = head + 1
    mm_id = mm + 1
    ids = _lock_large_mapcount(k, head)
    new = words.load(fo_w(k, p1, FO_LARGE_MAPCOUNT)) + diff
    words.store(fo_w(k, p1, FO_LARGE_MAPCOUNT), new)
    id0 = ids & MM_ID_MASK
    id1 = (ids >> MM_ID_BITS) & MM_ID_MASK
    if id0 == mm_id:
        words.fetch_add(fo_w(k, p1, FO_MM_MAP0), diff)
    elif id1 == mm_id:
        words.fetch_add(fo_w(k, p1, FO_MM_MAP1), diff)
    elif id0 == 0:
        ids = _set_mm_id(ids, 0, mm_id)
        words.store(fo_w(k, p1, FO_MM_MAP0), diff)
        if new != diff:  # "We might have other mappings already."
            ids |= FOLIO_MM_IDS_SHARED
    elif id1 == 0:
        ids = _set_mm_id(ids, 1, mm_id)
        words.store(fo_w(k, p1, FO_MM_MAP1), diff)
        if "mm_ids_no_shared" not in k.faults:
            ids |= FOLIO_MM_IDS_SHARED  # "Slot 0 certainly has mappings as well."
    _unlock_large_mapcount(k, head, ids)
    return int(new)


def folio_sub_return_large_mapcount(k: Kernel, head: int, diff: int, mm: int) -> int:
    """``folio_sub_return_large_mapcount(folio, diff, vma)`` (7.0 rmap.h 228): the mm's
    slot loses ``diff`` (freed when it goes negative); when one slot then owns every
    mapping (or none is left), the folio is no longer "maybe mapped shared"."""
    words = k.words
    p1 = head + 1
    mm_id = mm + 1
    ids = _lock_large_mapcount(k, head)
    new = words.load(fo_w(k, p1, FO_LARGE_MAPCOUNT)) - diff
    words.store(fo_w(k, p1, FO_LARGE_MAPCOUNT), new)
    done = False
    for slot, field in ((0, FO_MM_MAP0), (1, FO_MM_MAP1)):
        if (ids >> (slot * MM_ID_BITS)) & MM_ID_MASK == mm_id:
            left = words.fetch_add(fo_w(k, p1, field), -diff) - diff
            if left >= 1:
                done = True
            else:
                words.store(fo_w(k, p1, field), 0)
                ids = _set_mm_id(ids, slot, 0)
            break
    if not done and (
        words.load(fo_w(k, p1, FO_MM_MAP0)) == new or words.load(fo_w(k, p1, FO_MM_MAP1)) == new
    ):
        ids &= ~FOLIO_MM_IDS_SHARED
    _unlock_large_mapcount(k, head, ids)
    return int(new)


# -- mapcounts (include/linux/mm.h, rmap.h; mm/rmap.c __folio_add_rmap / _remove_rmap) --
def folio_large_mapcount(k: Kernel, head: int) -> int:
    """``folio_large_mapcount()``: the mappings of the whole folio, each PTE and each PMD
    counted once."""
    return k.words.load(fo_w(k, head + 1, FO_LARGE_MAPCOUNT))


def folio_entire_mapcount(k: Kernel, head: int) -> int:
    """``folio_entire_mapcount()``: the PMD mappings of the folio."""
    return k.words.load(fo_w(k, head + 1, FO_ENTIRE_MAPCOUNT))


def folio_nr_pages_mapped(k: Kernel, head: int) -> int:
    """``folio->_nr_pages_mapped``: PTE-mapped pages plus ENTIRELY_MAPPED while PMD-mapped."""
    return k.words.load(fo_w(k, head + 1, FO_NR_PAGES_MAPPED))


def folio_mapcount(k: Kernel, head: int) -> int:
    """``folio_mapcount()``: ``_mapcount + 1`` of a small folio, ``_large_mapcount + 1``
    of a large one (both stored as counts here)."""
    if k.flags(head) & PG_head:
        return folio_large_mapcount(k, head)
    return k.mapcount(head)


def folio_mapped(k: Kernel, head: int) -> bool:
    """``folio_mapped()``."""
    return folio_mapcount(k, head) >= 1


def page_mapcount(k: Kernel, pfn: int) -> int:
    """``page_mapcount()`` (CONFIG_PAGE_MAPCOUNT): the page's own PTE mappings plus the
    PMD mappings of its folio."""
    head = page_folio(k, pfn)
    n = k.mapcount(pfn)
    if k.flags(head) & PG_head:
        n += folio_entire_mapcount(k, head)
    return n


def folio_add_rmap_ptes(k: Kernel, head: int, pfn: int, nr_pages: int, mm: int) -> int:
    """``folio_add_anon_rmap_ptes()`` / ``folio_add_file_rmap_ptes()`` →
    ``__folio_add_rmap(PGTABLE_LEVEL_PTE)``: ``nr_pages`` pages from ``pfn`` are mapped
    by one more PTE each. Returns the pages that became mapped (the stat delta)."""
    words = k.words
    if not words.load(k.fw(head, 0)) & PG_head:
        return int(words.fetch_add(k.fw(head, F_MAP), 1) == 0)
    first = 0
    for p in range(pfn, pfn + nr_pages):
        first += words.fetch_add(k.fw(p, F_MAP), 1) == 0
    nr = 0
    if first and words.fetch_add(fo_w(k, head + 1, FO_NR_PAGES_MAPPED), first) + first < ENTIRELY_MAPPED:
        nr = first
    folio_add_return_large_mapcount(k, head, nr_pages, mm)
    return nr


def folio_add_rmap_pmd(k: Kernel, head: int, mm: int) -> int:
    """``folio_add_anon_rmap_pmd()`` → ``__folio_add_rmap(PGTABLE_LEVEL_PMD)``: one more
    PMD mapping of the whole folio. Returns the pages that became mapped."""
    words = k.words
    p1 = head + 1
    first = words.fetch_add(fo_w(k, p1, FO_ENTIRE_MAPCOUNT), 1) == 0
    nr = 0
    if first:
        nr = words.fetch_add(fo_w(k, p1, FO_NR_PAGES_MAPPED), ENTIRELY_MAPPED) + ENTIRELY_MAPPED
        if nr < ENTIRELY_MAPPED + ENTIRELY_MAPPED:
            nr = max(folio_nr_pages(k, head) - (nr & FOLIO_PAGES_MAPPED), 0)
        else:
            nr = 0  # raced ahead of a remove of ENTIRELY_MAPPED
    folio_add_return_large_mapcount(k, head, 1, mm)
    return nr


def folio_remove_rmap_ptes(k: Kernel, head: int, pfn: int, nr_pages: int, mm: int) -> int:
    """``folio_remove_rmap_ptes()`` → ``__folio_remove_rmap(PGTABLE_LEVEL_PTE)``. Returns
    the pages that became unmapped. (A partially mapped anonymous folio would be queued
    for deferred split: not modelled, device-private folios are never queued.)"""
    words = k.words
    if not words.load(k.fw(head, 0)) & PG_head:
        return int(words.fetch_add(k.fw(head, F_MAP), -1) == 1)
    folio_sub_return_large_mapcount(k, head, nr_pages, mm)
    last = 0
    for p in range(pfn, pfn + nr_pages):
        last += words.fetch_add(k.fw(p, F_MAP), -1) == 1
    nr = 0
    if last and words.fetch_add(fo_w(k, head + 1, FO_NR_PAGES_MAPPED), -last) - last < ENTIRELY_MAPPED:
        nr = last
    return nr


def folio_remove_rmap_pmd(k: Kernel, head: int, mm: int) -> int:
    """``folio_remove_rmap_pmd()`` → ``__folio_remove_rmap(PGTABLE_LEVEL_PMD)``."""
    words = k.words
    p1 = head + 1
    folio_sub_return_large_mapcount(k, head, 1, mm)
    last = words.fetch_add(fo_w(k, p1, FO_ENTIRE_MAPCOUNT), -1) == 1
    nr = 0
    if last:
        nr = words.fetch_add(fo_w(k, p1, FO_NR_PAGES_MAPPED), -ENTIRELY_MAPPED) - ENTIRELY_MAPPED
        if nr < ENTIRELY_MAPPED:
            nr = max(folio_nr_pages(k, head) - nr, 0)
        else:
            nr = 0  # an add of ENTIRELY_MAPPED raced ahead
    return nr


def folio_dup_rmap_ptes(k: Kernel, head: int, pfn: int, nr_pages: int, mm: int) -> None:
    """The mapcount part of ``__folio_try_dup_anon_rmap(PGTABLE_LEVEL_PTE)`` /
    ``folio_dup_file_rmap_ptes()`` (7.0 include/linux/rmap.h) of a large folio: each
    page's ``_mapcount`` and ``folio_add_large_mapcount(folio, nr_pages)``. The pages
    are mapped already (in the parent): ``_nr_pages_mapped`` does not change."""
    words = k.words
    for p in range(pfn, pfn + nr_pages):
        words.fetch_add(k.fw(p, F_MAP), 1)
    folio_add_return_large_mapcount(k, head, nr_pages, mm)  # the child's mm


def folio_dup_rmap_pmd(k: Kernel, head: int, mm: int) -> None:
    """The mapcount part of ``__folio_try_dup_anon_rmap(PGTABLE_LEVEL_PMD)`` (7.0):
    ``atomic_inc(&folio->_entire_mapcount)`` and ``folio_inc_large_mapcount()``; the
    folio is PMD-mapped already, ``_nr_pages_mapped`` does not change."""
    words = k.words
    words.fetch_add(fo_w(k, head + 1, FO_ENTIRE_MAPCOUNT), 1)
    folio_add_return_large_mapcount(k, head, 1, mm)  # the child's mm


def folio_add_new_anon_rmap(
    k: Kernel, head: int, mapping: int, exclusive: bool, mm: int
) -> None:
    """``folio_add_new_anon_rmap()`` (mm/rmap.c, 7.0) of a folio nobody maps yet:
    ``folio->mapping`` (the caller's :func:`~.layout.mapping_encode` word) and the first
    mapping: one PTE for an order-0 folio, one PTE per page for a large folio that is
    not PMD-mappable, one PMD for a PMD-mappable one. ``PageAnonExclusive`` on the
    head only, or on every page of a PTE-mapped large folio, as 7.0 sets it. A large
    folio's ``_mm_ids`` slot 0 is ``mm`` with every mapping (``folio_set_large_mapcount``)."""
    words = k.words
    k.words.store(k.lay.MAPPING + head, mapping)
    nr = folio_nr_pages(k, head)
    if nr == 1:
        words.store(k.fw(head, F_MAP), 1)
        if exclusive:
            k.set_flag(head, PG_anon_exclusive)
    elif not folio_test_pmd_mappable(k, head):
        for p in range(head, head + nr):
            words.store(k.fw(p, F_MAP), 1)
            if exclusive:
                k.set_flag(p, PG_anon_exclusive)
        _set_large_mapcount(k, head, nr, mm)
        words.store(fo_w(k, head + 1, FO_NR_PAGES_MAPPED), nr)
    else:
        words.store(fo_w(k, head + 1, FO_ENTIRE_MAPCOUNT), 1)
        _set_large_mapcount(k, head, 1, mm)
        words.store(fo_w(k, head + 1, FO_NR_PAGES_MAPPED), ENTIRELY_MAPPED)
        if exclusive:
            k.set_flag(head, PG_anon_exclusive)


# -- allocation and free (mm/page_alloc.c, mm/internal.h prep_compound_*; memremap.c) ----
def prep_compound_page(k: Kernel, head: int, order: int) -> None:
    """``prep_compound_page()`` → ``prep_compound_head`` / ``prep_compound_tail``: PG_head,
    the order and zeroed folio counts in ``page[1]``, ``compound_head`` in every tail.
    The frames are allocated (ours alone) already."""
    words = k.words
    nr = 1 << order
    for p in range(head + 1, head + nr):
        words.store(fo_w(k, p, FO_HEAD), head + 1)
    p1 = head + 1
    words.store(fo_w(k, p1, FO_ORDER), order)
    words.store(fo_w(k, p1, FO_LARGE_MAPCOUNT), 0)
    words.store(fo_w(k, p1, FO_ENTIRE_MAPCOUNT), 0)
    words.store(fo_w(k, p1, FO_NR_PAGES_MAPPED), 0)
    words.store(fo_w(k, p1, FO_PINCOUNT), 0)
    words.store(fo_w(k, p1, FO_MM_IDS), 0)
    words.store(fo_w(k, p1, FO_MM_MAP0), 0)
    words.store(fo_w(k, p1, FO_MM_MAP1), 0)
    k.set_flag(head, PG_head)


def folio_alloc(k: Kernel, a: Actor, zone: int, order: int, site: str) -> int:
    """Allocate a folio of ``order`` from ``zone`` (0: system RAM, 1 + d: device d):
    ``1 << order`` free frames whose first pfn is a multiple of ``1 << order``
    (the buddy allocator's alignment; a device's driver hands out the aligned chunks
    ``zone_device_folio_init`` makes folios of). Returns the head pfn, or -1 when no
    aligned run is free: the caller falls back to order 0 (:func:`folio_alloc_fallback`)
    as 7.0's callers do. Order 0 is ``Kernel.alloc_page``.

    Each frame is claimed with a compare-and-swap of its flags, so two allocators never
    share one; a run lost half way is given back. The head's refcount goes from 0 to 1
    last, as in ``alloc_page``."""
    if order == 0:
        return k.alloc_page(a, zone, site)
    if not k.geo.thp:
        raise ValueError(f"folio_alloc of order {order} in a geometry without thp")
    if zone == 0 and "alloc_fail_sys" in k.faults:
        return -1
    words = k.words
    nr = 1 << order
    zw = k.lay.ZONES + zone * ZONE_WORDS
    if words.load(zw + Z_FREE) < nr:
        return -1
    lo, hi = k.lay.zone_range(zone)
    first = -(-lo // nr) * nr
    heads = list(range(first, hi - nr + 1, nr))
    if not heads:
        return -1
    start = words.fetch_add(zw + 1, 1) % len(heads)  # Z_CURSOR
    for j in range(len(heads)):
        head = heads[(start + j) % len(heads)]
        claimed: list[tuple[int, int]] = []
        for p in range(head, head + nr):
            fl = k.fw(p, 0)
            cur = words.load(fl)
            if cur & PG_allocated or not words.cas(fl, cur, (cur & STATIC_MASK) | PG_allocated):
                break
            claimed.append((fl, cur))
        if len(claimed) < nr:
            for fl, cur in claimed:  # give the partial run back
                words.store(fl, cur & STATIC_MASK)
            continue
        words.fetch_add(zw + Z_FREE, -nr)
        for p in range(head, head + nr):
            fl = k.fw(p, 0)
            words.store(fl + F_MAP, 0)
            words.store(fl + F_PIN, 0)
            words.store(fl + F_OWNER, 0)
            words.store(fl + F_DATA, 0)
            words.store(fl + F_PRIV, 0)
            words.fetch_add(fl + F_GEN, 1)
        prep_compound_page(k, head, order)
        words.store(k.fw(head, F_REF), 1)
        k.count(f"alloc_zone{zone}_order{order}")
        return head
    return -1


def folio_alloc_fallback(
    k: Kernel, a: Actor, zone: int, order: int, site: str
) -> tuple[int, int]:
    """A large folio, else an order-0 page: ``(pfn, order)``, or ``(-1, 0)`` when even
    order 0 fails (``dmirror_devmem_alloc_page`` and the THP fault paths' fallback)."""
    if order:
        pfn = folio_alloc(k, a, zone, order, site)
        if pfn >= 0:
            return pfn, order
        k.count("folio_alloc_fallback")
    return k.alloc_page(a, zone, site), 0


def free_folio(k: Kernel, a: Actor, head: int, site: str) -> None:
    """The refcount of a large folio reached zero: ``free_frozen_pages`` (system RAM:
    ``free_pages_prepare`` → ``free_tail_page_prepare`` checks each tail) or
    ``free_zone_device_folio`` (the driver's ``folio_free`` once, for the whole folio).
    Every page goes back to its zone. The checks are the kernel's bad-page checks:
    locked, mapped (per page or entirely) or pinned."""
    words = k.words
    nr = folio_nr_pages(k, head)
    f = words.load(k.fw(head, 0))
    if f & PG_locked:
        raise k.fail(
            FailureKind.BUG_ON,
            f"folio {head} (order {folio_order(k, head)}) freed at {site} while locked by "
            f"actor {words.load(k.fw(head, F_OWNER)) - 1} (VM_BUG_ON_FOLIO(folio_test_locked))",
            actors=[a],
            pages=[head],
            sites=[site],
        )
    p1 = head + 1
    bad = []
    for name, field in (
        ("_large_mapcount", FO_LARGE_MAPCOUNT),
        ("_entire_mapcount", FO_ENTIRE_MAPCOUNT),
        ("_nr_pages_mapped", FO_NR_PAGES_MAPPED),
        ("_pincount", FO_PINCOUNT),
    ):
        v = words.load(fo_w(k, p1, field))
        if v:
            bad.append(f"{name} {v}")
    for p in range(head, head + nr):
        m = words.load(k.fw(p, F_MAP))
        if m:
            bad.append(f"page {p} mapcount {m}")
        if p != head and words.load(k.fw(p, F_REF)):
            bad.append(f"tail {p} refcount {words.load(k.fw(p, F_REF))}")
    if bad:
        raise k.fail(
            FailureKind.BUG_ON,
            f"folio {head} (order {folio_order(k, head)}) freed at {site} with "
            f"{', '.join(bad)} (bad_page)",
            actors=[a],
            pages=[head],
            sites=[site],
        )
    if f & Z_DEVICE and k.devices:
        dev = (f & Z_DEVID_MASK) >> Z_DEVID_SHIFT
        if dev < len(k.devices):
            k.devices[dev].folio_free(k, a, head)
    # Tails first, the head last: once the head is free an allocator may claim the run.
    for p in list(range(head + 1, head + nr)) + [head]:
        fl = k.fw(p, 0)
        row = fo_w(k, p, 0)
        for field in range(FOLIO_WORDS):
            words.store(row + field, 0)
        words.store(fl + F_DATA, 0)
        words.store(fl + F_PRIV, 0)
        words.store(k.lay.MAPPING + p, 0)
        words.fetch_add(fl + F_GEN, 1)
        words.store(fl, words.load(fl) & STATIC_MASK)
    zone = k.lay.zone_of(head)
    words.fetch_add(k.lay.ZONES + zone * ZONE_WORDS + Z_FREE, nr)
    k.count(f"free_zone{zone}_large")


__all__ = [
    "folio_add_new_anon_rmap",
    "folio_add_return_large_mapcount",
    "folio_add_rmap_pmd",
    "folio_add_rmap_ptes",
    "folio_alloc",
    "folio_alloc_fallback",
    "folio_dup_rmap_pmd",
    "folio_dup_rmap_ptes",
    "folio_entire_mapcount",
    "folio_large_mapcount",
    "folio_mapcount",
    "folio_mapped",
    "folio_maybe_dma_pinned",
    "folio_maybe_mapped_shared",
    "folio_mm_id",
    "folio_nr_pages",
    "folio_nr_pages_mapped",
    "folio_order",
    "folio_pincount",
    "folio_pincount_add",
    "folio_put",
    "folio_ref_count",
    "folio_remove_rmap_pmd",
    "folio_remove_rmap_ptes",
    "folio_sub_return_large_mapcount",
    "folio_test_large",
    "folio_test_pmd_mappable",
    "free_folio",
    "page_folio",
    "page_is_tail",
    "page_mapcount",
    "prep_compound_page",
]

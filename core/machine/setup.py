"""Building the initial memory picture a workload asks for, before any actor runs.

These write the arrays directly (no actor, no locks): the state a process would be in
after its own ``mmap`` + page faults, a ``fork``, an ``mremap`` or an earlier migration.
Frames are taken lowest-first, so the same workload always builds the same state.
"""

from __future__ import annotations

from .layout import (
    AV_PARENT,
    AV_ROOT,
    ENTIRELY_MAPPED,
    F_DATA,
    F_FLAGS,
    F_MAP,
    F_REF,
    FO_ENTIRE_MAPCOUNT,
    FO_HEAD,
    FO_LARGE_MAPCOUNT,
    FO_MM_IDS,
    FO_MM_MAP0,
    FO_NR_PAGES_MAPPED,
    FO_ORDER,
    M_USERS,
    PMD_TABLE,
    PTE_DEVICE_PRIVATE,
    PTE_DIRTY,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    PTE_WRITE,
    PTE_YOUNG,
    V_AVC,
    V_PGOFF,
    V_START,
    Z_FREE,
    PG_allocated,
    PG_anon,
    PG_anon_exclusive,
    PG_dirty,
    PG_head,
    PG_ksm,
    PG_lru,
    PG_uptodate,
    mapping_encode,
    pte_encode,
)
from .state import State


def _set_anon(s: State, pfn: int, mm: int, vpn: int) -> None:
    """``__folio_set_anon()`` at build time: the mapping of the VMA at ``vpn``."""
    row = s.find_vma(mm, vpn)
    if row < 0:
        raise ValueError(f"mm {mm} page {vpn} is outside every VMA; it cannot be populated")
    v = s.vma[mm, row]
    s.mapping[pfn] = mapping_encode(mm, int(v[V_PGOFF]) + vpn - int(v[V_START]))


def alloc_frame(s: State, zone: int) -> int:
    """Take the lowest free frame of ``zone`` with refcount 1."""
    lo, hi = s.layout.zone_range(zone)
    fl = s.frames[lo:hi, F_FLAGS]
    free = (fl & PG_allocated) == 0
    idx = int(free.argmax())
    if not free[idx]:
        raise ValueError(f"zone {zone} has no free frame left for the initial state")
    pfn = lo + idx
    s.frames[pfn, F_FLAGS] |= PG_allocated | PG_uptodate
    s.frames[pfn, F_REF] = 1
    s.frames[pfn, F_MAP] = 0
    s.frames[pfn, F_DATA] = 0
    s.zones[zone, Z_FREE] -= 1
    return pfn


def init_token(mm: int, vpn: int) -> int:
    """The content token a page holds before any actor writes it."""
    return (0xFF << 40) | (mm << 20) | (vpn + 1)


def populate(s: State, mm: int, vpn: int, write: bool = True) -> int:
    """Fault in an anonymous page at ``vpn`` as a write fault would, with initial
    content; returns its pfn."""
    pfn = alloc_frame(s, 0)
    s.frames[pfn, F_FLAGS] |= PG_anon | PG_anon_exclusive | PG_lru
    s.frames[pfn, F_MAP] = 1
    tok = init_token(mm, vpn)
    s.frames[pfn, F_DATA] = tok
    bits = PTE_YOUNG | ((PTE_WRITE | PTE_DIRTY) if write else 0)
    s.pte[mm, vpn] = pte_encode(PTE_PRESENT, pfn, bits)
    s.shadow[mm, vpn] = tok
    _set_anon(s, pfn, mm, vpn)
    return pfn


def populate_device(s: State, dev: int, mm: int, vpn: int, write: bool = True) -> int:
    """A page already migrated to device ``dev`` (a device-private entry)."""
    pfn = alloc_frame(s, 1 + dev)
    s.frames[pfn, F_FLAGS] |= PG_anon | PG_anon_exclusive | PG_dirty
    s.frames[pfn, F_MAP] = 1
    tok = init_token(mm, vpn)
    s.frames[pfn, F_DATA] = tok
    s.pte[mm, vpn] = pte_encode(PTE_DEVICE_PRIVATE, pfn, PTE_WRITE if write else 0)
    s.shadow[mm, vpn] = tok
    _set_anon(s, pfn, mm, vpn)
    return pfn


def share_cow(s: State, mm_src: int, vpn_src: int, mm_dst: int, vpn_dst: int) -> int:
    """Map the page at (mm_src, vpn_src) also at (mm_dst, vpn_dst), as ``fork`` (and an
    ``mremap`` in one of them) leaves it: both entries read-only, the page no longer
    anon-exclusive, one more mapping and reference."""
    pte = int(s.pte[mm_src, vpn_src])
    kind = pte & PTE_TYPE_MASK
    if kind not in (PTE_PRESENT, PTE_DEVICE_PRIVATE):
        raise ValueError(f"mm {mm_src} page {vpn_src} is not mapped; populate it first")
    pfn = pte >> PTE_PFN_SHIFT
    ro = pte & ~PTE_WRITE
    s.pte[mm_src, vpn_src] = ro
    s.pte[mm_dst, vpn_dst] = ro
    s.frames[pfn, F_FLAGS] &= ~PG_anon_exclusive
    s.frames[pfn, F_MAP] += 1
    s.frames[pfn, F_REF] += 1
    s.shadow[mm_dst, vpn_dst] = s.shadow[mm_src, vpn_src]
    # anon_vma_fork(): mm_dst's VMA is linked to every anon_vma of mm_src's VMA, and
    # mm_dst's own anon_vma is a child of mm_src's (same root). When the VMA's pgoff does
    # not fit the page's index (pages in reverse order: opposite-order), the rmap walk
    # cannot reach this mapping (docs/internals.md, "Deliberate simplifications").
    src_row = s.find_vma(mm_src, vpn_src)
    dst_row = s.find_vma(mm_dst, vpn_dst)
    if src_row < 0 or dst_row < 0:
        raise ValueError(
            f"share of mm {mm_src} page {vpn_src} to mm {mm_dst} page {vpn_dst}: no VMA there"
        )
    s.vma[mm_dst, dst_row, V_AVC] |= s.vma[mm_src, src_row, V_AVC] | (1 << mm_dst)
    dv = s.vma[mm_dst, dst_row]
    if int(dv[V_PGOFF]) + vpn_dst - int(dv[V_START]) != int(s.mapping[pfn]) >> 8:
        # No anon_vma can hold this mapping (the VMA's pgoff does not reach the page's
        # index: pages in another order than the source's): only KSM merging maps one
        # page at unrelated addresses. The page is a KSM page; rmap_walk_ksm finds it.
        s.frames[pfn, F_FLAGS] |= PG_ksm
    if mm_dst != mm_src and not s.anon_vma[mm_dst, AV_ROOT]:
        root = int(s.anon_vma[mm_src, AV_ROOT]) or mm_src + 1
        s.anon_vma[mm_dst, AV_ROOT] = root
        s.anon_vma[mm_dst, AV_PARENT] = mm_src + 1
    return pfn


def populate_thp(s: State, mm: int, vpn: int) -> int:
    """A PMD-mapped anonymous THP at the PMD-aligned ``vpn`` (``geometry.thp`` only), as
    ``do_huge_pmd_anonymous_page`` leaves it after a write fault: the lowest free
    aligned run of HPAGE_PMD_NR frames, one folio (refcount 1, ``_entire_mapcount`` 1,
    ``_nr_pages_mapped`` ENTIRELY_MAPPED), a writable dirty huge PMD, initial content
    per page, this mm in ``_mm_ids`` slot 0 with the one mapping (7.0's
    ``folio_add_new_anon_rmap`` → ``folio_set_large_mapcount``); returns the head pfn."""
    g = s.geo
    n = g.hpage_pmd_nr
    if not g.thp or vpn % n:
        raise ValueError(f"a THP at mm {mm} page {vpn} needs a thp geometry and a PMD boundary")
    lo, hi = s.layout.zone_range(0)
    free = (s.frames[lo:hi, F_FLAGS] & PG_allocated) == 0
    head = -1
    for h in range(-(-lo // n) * n, hi - n + 1, n):
        if free[h - lo : h - lo + n].all():
            head = h
            break
    if head < 0:
        raise ValueError(f"zone 0 has no free aligned run of {n} frames for the THP at page {vpn}")
    for i in range(n):
        p = head + i
        s.frames[p, F_FLAGS] |= PG_allocated | PG_uptodate | PG_anon | PG_lru | PG_dirty
        s.frames[p, F_MAP] = 0
        tok = init_token(mm, vpn + i)
        s.frames[p, F_DATA] = tok
        s.shadow[mm, vpn + i] = tok
        if i:
            s.folio[p, FO_HEAD] = head + 1
            s.frames[p, F_FLAGS] &= ~(PG_lru | PG_dirty)
    s.frames[head, F_FLAGS] |= PG_head | PG_anon_exclusive
    s.frames[head, F_REF] = 1
    s.folio[head + 1, FO_ORDER] = n.bit_length() - 1
    s.folio[head + 1, FO_LARGE_MAPCOUNT] = 1
    s.folio[head + 1, FO_MM_IDS] = mm + 1  # folio_set_large_mapcount(folio, 1, vma): slot 0
    s.folio[head + 1, FO_MM_MAP0] = 1
    s.folio[head + 1, FO_ENTIRE_MAPCOUNT] = 1
    s.folio[head + 1, FO_NR_PAGES_MAPPED] = ENTIRELY_MAPPED
    s.zones[0, Z_FREE] -= n
    _set_anon(s, head, mm, vpn)
    s.pmd[mm, vpn // n] = pte_encode(PTE_PRESENT, head, PTE_WRITE | PTE_DIRTY | PTE_YOUNG)
    return head


def populate_thp_pte(s: State, mm: int, vpn: int) -> int:
    """A PTE-mapped anonymous THP at the PMD-aligned ``vpn`` (``geometry.thp`` only): the
    THP of :func:`populate_thp` as ``__split_huge_pmd_locked`` (7.0, not frozen) leaves
    it: the PMD a PTE table, one writable dirty young PTE per page, the folio still
    large with a reference and a mapping per page (``_large_mapcount`` HPAGE_PMD_NR,
    all in this mm's ``_mm_ids`` slot; no entire mapping), PageAnonExclusive on every
    page. Returns the head pfn."""
    head = populate_thp(s, mm, vpn)
    n = s.geo.hpage_pmd_nr
    for i in range(n):
        p = head + i
        s.frames[p, F_FLAGS] |= PG_anon_exclusive
        s.frames[p, F_MAP] = 1
        s.pte[mm, vpn + i] = pte_encode(PTE_PRESENT, p, PTE_WRITE | PTE_DIRTY | PTE_YOUNG)
    s.frames[head, F_REF] = n
    s.folio[head + 1, FO_LARGE_MAPCOUNT] = n
    s.folio[head + 1, FO_MM_MAP0] = n
    s.folio[head + 1, FO_ENTIRE_MAPCOUNT] = 0
    s.folio[head + 1, FO_NR_PAGES_MAPPED] = n
    s.pmd[mm, vpn // n] = PMD_TABLE
    return head
def none_pmds(s: State) -> None:
    """``geometry.thp`` with THP-eligible VMAs (``VM_HUGEPAGE``): every PMD of every mm
    that maps nothing (a PTE table with only none entries) is none, as a fresh mm's
    PMDs are, so that a fault there can map a THP (``do_huge_pmd_anonymous_page``) and
    fork leaves the child's none. Without such VMAs every PMD stays a PTE table (the
    model's default: the paths that do not know PMDs and v7's agree on every entry)."""
    g = s.geo
    n = g.ptes_per_table
    for mm in range(g.mms):
        for idx in range(g.tables_per_mm):
            if s.pmd[mm, idx] & PTE_TYPE_MASK != PMD_TABLE:
                continue
            if not (s.pte[mm, idx * n : (idx + 1) * n] & PTE_TYPE_MASK).any():
                s.pmd[mm, idx] = 0


def mm_live(s: State, mm: int) -> None:
    s.mm[mm, M_USERS] = 1

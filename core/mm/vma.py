"""Unmapping: ``munmap()``, ``madvise(MADV_DONTNEED)`` and process exit, all through
``zap_pte_range()`` (``mm/memory.c``) with the ``mmu_gather`` batching of
``mm/mmu_gather.c``.

Under the page-table lock each entry is cleared: a present page loses its mapping
(``folio_remove_rmap_pte``) and is batched (``__tlb_remove_page``) to be put only after
the TLB flush, so no CPU can still write it through a stale translation once it is
freed; a device-private page loses its mapping and reference at once
(``zap_nonpresent_ptes``); a migration entry is simply cleared (the migration owns the
page); a swap entry drops its slot's count (``free_swap_and_cache``). The flush happens
before the PTL is dropped (``tlb_flush_mmu_tlbonly`` under ``force_flush``), then the
batched pages are put. The oracle's shadow of the unmapped pages is cleared with the
flush: the program no longer has a value there.

``munmap()`` holds ``mmap_write_lock`` and removes the VMA range (splitting a VMA row
when the hole is inside it); ``madvise(MADV_DONTNEED)`` holds ``mmap_read_lock`` and
keeps the VMA, so the next access faults in a zeroed page.
"""

from __future__ import annotations

from ..actors import register_op
from ..machine import folio as fo
from ..machine import pmd as pm
from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
    G_AVC_SEQ,
    M_PARENT,
    M_USERS,
    MM_WORDS,
    PTE_DEVICE_EXCLUSIVE,
    PTE_DEVICE_PRIVATE,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_SWAP,
    PTE_TYPE_MASK,
    SHADOW_REAPED,
    V_AVC,
    V_END,
    V_FLAGS,
    V_ORIGIN,
    V_PGOFF,
    V_SEQ,
    V_START,
    VM_ANON,
    VM_LIVE,
    VMA_WORDS,
)
from . import huge_memory as hm
from .gup import pins_unmapped
from .mmu_notifier import (
    MMU_NOTIFY_CLEAR,
    MMU_NOTIFY_UNMAP,
    MmuNotifierRange,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
)
from .rmap import anon_vma_lock_write, anon_vma_unlock_write
from .swapfile import swap_free

EINVAL = -22
ENOMEM = -12

# --------------------------------------------------------------------------------------
# VMA rows (changed only under mmap_write_lock)


def _vw(k: Kernel, mm: int, row: int, field: int) -> int:
    return k.lay.VMA + (mm * k.geo.max_vmas + row) * VMA_WORDS + field


def vma_rows(k: Kernel, mm: int) -> list[tuple[int, int, int, int]]:
    """(row, start, end, flags) of every live VMA of ``mm``, by start."""
    load = k.words.load
    out = []
    for r in range(k.geo.max_vmas):
        f = load(_vw(k, mm, r, V_FLAGS))
        if f & VM_LIVE:
            out.append((r, load(_vw(k, mm, r, V_START)), load(_vw(k, mm, r, V_END)), f))
    return sorted(out, key=lambda x: x[1])


def vma_free_rows(k: Kernel, mm: int) -> list[int]:
    load = k.words.load
    return [r for r in range(k.geo.max_vmas) if not load(_vw(k, mm, r, V_FLAGS)) & VM_LIVE]


def vma_reinsert(k: Kernel, mm: int, row: int) -> None:
    """``anon_vma_interval_tree_pre_update_vma()`` + ``_post_update_vma()``: a VMA whose
    range or pgoff changed is taken out of its anon_vma trees and inserted again, so it
    is visited after the VMAs of equal pgoff (``V_SEQ``). Under the anon_vma rwsem for
    write (``vma_prepare``), or before anyone can walk (setup)."""
    seq = k.words.fetch_add(k.lay.GLOB + G_AVC_SEQ, 1) + 1
    k.words.store(_vw(k, mm, row, V_SEQ), seq)


def vma_add(
    k: Kernel,
    mm: int,
    start: int,
    end: int,
    flags: int,
    origin: int = -1,
    pgoff: int | None = None,
    avc: int | None = None,
) -> int:
    """Fill a free VMA row (the caller checked there is one and nothing overlaps) and
    link it into its anon_vma trees: ``vm_pgoff`` is ``pgoff`` (an mmap: ``start``), the
    chain ``avc`` (an mmap: the mm's own anon_vma)."""
    r = vma_free_rows(k, mm)[0]
    store = k.words.store
    store(_vw(k, mm, r, V_START), start)
    store(_vw(k, mm, r, V_END), end)
    store(_vw(k, mm, r, V_ORIGIN), origin)
    store(_vw(k, mm, r, V_PGOFF), start if pgoff is None else pgoff)
    if avc is None:
        avc = (1 << mm) if flags & VM_ANON else 0
    store(_vw(k, mm, r, V_AVC), avc)
    vma_reinsert(k, mm, r)
    store(_vw(k, mm, r, V_FLAGS), flags | VM_LIVE)
    return r


def vma_pgoff(k: Kernel, mm: int, row: int) -> int:
    return k.words.load(_vw(k, mm, row, V_PGOFF))


def vma_avc(k: Kernel, mm: int, row: int) -> int:
    return k.words.load(_vw(k, mm, row, V_AVC))


def vma_mergeable(k: Kernel, mm: int, r0: int, r1: int) -> bool:
    """``is_mergeable_vma()`` + ``is_mergeable_anon_vma()`` for ``r0`` just below ``r1``:
    they touch, same flags, same anon_vma chain, and ``r1``'s pgoff continues ``r0``'s
    (``can_vma_merge_after``)."""
    load = k.words.load
    s0, e0 = load(_vw(k, mm, r0, V_START)), load(_vw(k, mm, r0, V_END))
    return (
        e0 == load(_vw(k, mm, r1, V_START))
        and load(_vw(k, mm, r0, V_FLAGS)) == load(_vw(k, mm, r1, V_FLAGS))
        and vma_avc(k, mm, r0) == vma_avc(k, mm, r1)
        and vma_pgoff(k, mm, r0) + e0 - s0 == vma_pgoff(k, mm, r1)
    )


def vma_merge_new_range(k: Kernel, mm: int, row: int) -> int:
    """``vma_merge_new_range()`` for the VMA just added at ``row``: merge it into the
    VMA before it and/or after it when mergeable (``vma_expand``: the survivor is
    reinserted into the trees). Returns the surviving row, or -1 when nothing merged."""
    merged = False
    store = k.words.store
    rows = vma_rows(k, mm)
    i = next(j for j, x in enumerate(rows) if x[0] == row)
    if i + 1 < len(rows) and vma_mergeable(k, mm, row, rows[i + 1][0]):
        nxt = rows[i + 1][0]
        store(_vw(k, mm, row, V_END), rows[i + 1][2])
        store(_vw(k, mm, nxt, V_FLAGS), 0)
        vma_reinsert(k, mm, row)
        merged = True
    if i > 0 and vma_mergeable(k, mm, rows[i - 1][0], row):
        prev = rows[i - 1][0]
        store(_vw(k, mm, prev, V_END), k.words.load(_vw(k, mm, row, V_END)))
        store(_vw(k, mm, row, V_FLAGS), 0)
        vma_reinsert(k, mm, prev)
        row = prev
        merged = True
    return row if merged else -1


def vma_merge(k: Kernel, mm: int) -> None:
    """``vma_merge()``: join every pair of mergeable neighbours (:func:`vma_mergeable`)."""
    store = k.words.store
    rows = vma_rows(k, mm)
    i = 0
    while i + 1 < len(rows):
        r0, s0, _e0, f0 = rows[i]
        r1, _s1, e1, _f1 = rows[i + 1]
        if vma_mergeable(k, mm, r0, r1):
            store(_vw(k, mm, r1, V_FLAGS), 0)
            store(_vw(k, mm, r0, V_END), e1)
            vma_reinsert(k, mm, r0)
            rows[i] = (r0, s0, e1, f0)
            del rows[i + 1]
        else:
            i += 1


def vma_punch_rows_needed(k: Kernel, mm: int, start: int, end: int) -> int:
    """Extra rows removing ``[start, end)`` needs (one per VMA the hole splits in two)."""
    return sum(1 for _r, vs, ve, _f in vma_rows(k, mm) if vs < start and end < ve)


def vma_remove_range(k: Kernel, mm: int, start: int, end: int) -> None:
    """``do_vmi_munmap()``'s VMA side: trim, split or drop every VMA over the range,
    unlinking what goes from the anon_vma trees (``unlink_anon_vmas``). Each piece that
    stays comes out of ``__split_vma`` linked anew (``anon_vma_clone``, or the
    pre/post-update reinsertion), the lower piece before the upper one; a piece whose
    start moves up keeps its pages' pgoffs (``vm_pgoff`` grows with it). The caller
    holds the anon_vma rwsem for write."""
    store = k.words.store
    for r, vs, ve, f in vma_rows(k, mm):
        if ve <= start or vs >= end:
            continue
        pg = vma_pgoff(k, mm, r)
        if start <= vs and ve <= end:
            store(_vw(k, mm, r, V_FLAGS), 0)
        elif vs < start and end < ve:
            store(_vw(k, mm, r, V_END), start)
            vma_reinsert(k, mm, r)
            vma_add(
                k, mm, end, ve, f & ~VM_LIVE, pgoff=pg + end - vs, avc=vma_avc(k, mm, r)
            )
        elif vs < start:
            store(_vw(k, mm, r, V_END), start)
            vma_reinsert(k, mm, r)
        else:
            store(_vw(k, mm, r, V_START), end)
            store(_vw(k, mm, r, V_PGOFF), pg + end - vs)
            vma_reinsert(k, mm, r)


# --------------------------------------------------------------------------------------
# zap_pte_range


def zap_pte_range(k: Kernel, a: Actor, mm: int, start: int, end: int, site: str) -> Path:
    """``zap_pte_range()`` over ``[start, end)``, one page table at a time, inside the
    caller's mmu notifier invalidation (7.0 ``unmap_vmas``: ``MMU_NOTIFY_UNMAP``;
    ``zap_page_range_single_batched`` for madvise: ``MMU_NOTIFY_CLEAR``)."""
    rng = MmuNotifierRange(
        MMU_NOTIFY_CLEAR if site == "madvise_dontneed" else MMU_NOTIFY_UNMAP, mm, start, end
    )
    yield from mmu_notifier_invalidate_range_start(k, a, rng)
    yield from _zap_pte_range(k, a, mm, start, end, site)
    yield from mmu_notifier_invalidate_range_end(k, a, rng)


def _zap_pte_range(
    k: Kernel, a: Actor, mm: int, start: int, end: int, site: str, keep_shadow: bool = False
) -> Path:
    """``zap_pte_range()`` itself. ``keep_shadow``: the OOM reaper's zap
    (core/mm/oom_kill.py), which the program did not ask for: the oracle keeps the last
    value written, marked ``SHADOW_REAPED`` (a refault that found zeroes there would be a
    stale read; the global check excuses exactly these pages, while their mm is
    ``MMF_UNSTABLE`` and maps nothing there)."""
    ppt = k.geo.ptes_per_table
    vpn = start
    while vpn < end:
        tab_end = min((vpn // ppt + 1) * ppt, end)
        if k.geo.thp:  # v7: zap_pmd_range() first
            zapped = yield from _zap_pmd(k, a, mm, vpn, tab_end, site, keep_shadow)
            if zapped:
                yield
                vpn = tab_end
                continue
        ptl = k.ptl_word(mm, vpn)
        yield from k.spin_lock(a, ptl, site + ":ptl")
        batch: list[int] = []
        cleared: list[int] = []
        for v in range(vpn, tab_end):
            pte = k.pte_read(mm, v)
            kind = pte & PTE_TYPE_MASK
            if kind == PTE_NONE:
                continue
            pfn = pte >> PTE_PFN_SHIFT
            if kind == PTE_PRESENT:
                k.ptep_get_and_clear(mm, v)  # ptep_get_and_clear_full
                batch.append(_remove_rmap_pte(k, pfn, mm))  # __tlb_remove_page: put after the flush
            elif kind in (PTE_DEVICE_PRIVATE, PTE_DEVICE_EXCLUSIVE):
                k.ptep_get_and_clear(mm, v)
                head = _remove_rmap_pte(k, pfn, mm)
                if (
                    "zap_device_keeps_entry" if kind == PTE_DEVICE_PRIVATE
                    else "zap_exclusive_keeps_entry"
                ) in k.faults:
                    k.set_pte(mm, v, pte)
                if head != pfn:
                    fo.folio_put(k, a, head, site + ":zap_nonpresent_ptes")
                else:
                    k.put_page(a, pfn, site + ":zap_nonpresent_ptes")
            elif kind == PTE_MIGRATION:
                k.ptep_get_and_clear(mm, v)
            elif kind == PTE_SWAP:
                k.ptep_get_and_clear(mm, v)
                if "zap_swap_no_free" not in k.faults:
                    swap_free(k, pfn)
            cleared.append(v)
            pins_unmapped(k, mm, v)
        # tlb_flush_mmu_tlbonly() before the PTL is dropped, then the shadow goes.
        k.flush_tlb_range(mm, vpn, tab_end)
        for v in cleared:
            k.set_shadow(mm, v, k.shadow(mm, v) | SHADOW_REAPED if keep_shadow else 0)
        k.spin_unlock(a, ptl, site + ":ptl")
        # tlb_finish_mmu(): free the batched pages.
        if "zap_no_put" not in k.faults:
            for pfn in batch:
                if k.geo.thp and fo.folio_test_large(k, pfn):
                    fo.folio_put(k, a, pfn, site + ":tlb_finish_mmu")
                else:
                    k.put_page(a, pfn, site + ":tlb_finish_mmu")
        k.count("zap_pages", len(cleared))
        yield
        vpn = tab_end


def _remove_rmap_pte(k: Kernel, pfn: int, mm: int) -> int:
    """``folio_remove_rmap_pte(page_folio(page), page)``: one PTE mapping of ``pfn``
    less; returns the folio to put (its head: a page of a large folio, v7, drops the
    head's reference; an order-0 page is its own folio)."""
    if k.geo.thp:
        head = fo.page_folio(k, pfn)
        if fo.folio_test_large(k, head):
            fo.folio_remove_rmap_ptes(k, head, pfn, 1, mm)
            return head
    k.mapcount_add(pfn, -1)
    return pfn


def _zap_pmd(
    k: Kernel, a: Actor, mm: int, vpn: int, tab_end: int, site: str, keep_shadow: bool
) -> Path:
    """The PMD step of ``zap_pmd_range()`` (7.0 mm/memory.c 1883; v7): a huge leaf
    (present, device-private or a migration entry) that the range covers whole is
    zapped by :func:`~core.mm.huge_memory.zap_huge_pmd`; one it covers in part is split
    first (``__split_huge_pmd``) and its PTEs zapped. A none PMD has nothing to zap.
    Returns True when nothing is left for ``zap_pte_range`` in ``[vpn, tab_end)``."""
    ppt = k.geo.ptes_per_table
    idx = vpn // ppt
    kind = pm.pmdp_get(k, mm, idx) & PTE_TYPE_MASK
    if kind in (PTE_PRESENT, PTE_MIGRATION, PTE_DEVICE_PRIVATE):
        if tab_end - vpn != ppt:
            row = k.s.find_vma(mm, vpn)
            yield from hm.split_huge_pmd(k, a, mm, row, vpn, False)
        else:

            def on_clear(v: int) -> None:
                pins_unmapped(k, mm, v)
                k.set_shadow(mm, v, k.shadow(mm, v) | SHADOW_REAPED if keep_shadow else 0)

            if (yield from hm.zap_huge_pmd(k, a, mm, idx, site, on_clear)):
                return True
    return pm.pmd_none(pm.pmdp_get(k, mm, idx))


def op_munmap(k: Kernel, a: Actor, mm: int, start: int, end: int) -> Path:
    """``munmap()`` (``do_vmi_munmap`` → ``unmap_region``) of ``[start, end)``."""
    yield from k.mmap_write_lock(a, mm, "munmap:mmap_write_lock")
    try:
        if len(vma_free_rows(k, mm)) < vma_punch_rows_needed(k, mm, start, end):
            k.count("munmap_enomem")
            return ENOMEM
        for _r, vs, ve, _f in vma_rows(k, mm):
            lo, hi = max(vs, start), min(ve, end)
            if lo < hi:
                yield from zap_pte_range(k, a, mm, lo, hi, "unmap_region")
        # The splits (vma_prepare) and unlink_anon_vmas() under the anon_vma rwsem.
        yield from anon_vma_lock_write(k, a, mm, "munmap:anon_vma_lock_write")
        vma_remove_range(k, mm, start, end)
        anon_vma_unlock_write(k, a, mm, "munmap:anon_vma_unlock_write")
        k.count("munmap")
        return 0
    finally:
        k.mmap_write_unlock(a, mm, "munmap:mmap_write_unlock")


def op_madv_dontneed(k: Kernel, a: Actor, mm: int, start: int, end: int) -> Path:
    """``madvise(MADV_DONTNEED)`` (``madvise_dontneed_single_vma`` → ``zap_page_range``)."""
    yield from k.mmap_read_lock(a, mm, "madvise:mmap_read_lock")
    try:
        rows = vma_rows(k, mm)
        if not any(vs <= start < ve for _r, vs, ve, _f in rows):
            return EINVAL
        for _r, vs, ve, _f in rows:
            lo, hi = max(vs, start), min(ve, end)
            if lo < hi:
                yield from zap_pte_range(k, a, mm, lo, hi, "madvise_dontneed")
        k.count("madv_dontneed")
        return 0
    finally:
        k.mmap_read_unlock(a, mm, "madvise:mmap_read_unlock")


def exit_mmap(k: Kernel, a: Actor, mm: int) -> Path:
    """``exit_mmap()``: zap every VMA of a dying mm and drop the VMAs."""
    yield from k.mmap_write_lock(a, mm, "exit_mmap:mmap_write_lock")
    try:
        for _r, vs, ve, _f in vma_rows(k, mm):
            yield from zap_pte_range(k, a, mm, vs, ve, "exit_mmap")
        yield from anon_vma_lock_write(k, a, mm, "exit_mmap:anon_vma_lock_write")
        vma_remove_range(k, mm, 0, k.geo.pages_per_mm)  # free_pgtables: unlink_anon_vmas
        anon_vma_unlock_write(k, a, mm, "exit_mmap:anon_vma_unlock_write")
        base = k.lay.MM + mm * MM_WORDS
        k.words.store(base + M_USERS, 0)
        k.words.store(base + M_PARENT, 0)
        k.count("exit_mmap")
    finally:
        k.mmap_write_unlock(a, mm, "exit_mmap:mmap_write_unlock")


def op_child_exit(k: Kernel, a: Actor, mm: int) -> Path:
    """A forked child exits: its mm goes away (``exit_mm`` → ``mmput`` → ``exit_mmap``)."""
    if not k.words.load(k.lay.MM + mm * MM_WORDS + M_USERS):
        return EINVAL
    yield from exit_mmap(k, a, mm)
    return 0


register_op("munmap", op_munmap)
register_op("madv_dontneed", op_madv_dontneed)
register_op("child_exit", op_child_exit)

__all__ = [
    "exit_mmap",
    "op_child_exit",
    "op_madv_dontneed",
    "op_munmap",
    "vma_add",
    "vma_free_rows",
    "vma_merge",
    "vma_remove_range",
    "vma_rows",
    "zap_pte_range",
]

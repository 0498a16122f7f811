"""``mremap()`` of part of a range to another address: ``mm/mremap.c``
(``move_vma`` → ``move_page_tables`` → ``move_ptes``).

Under ``mmap_write_lock`` a VMA covers the destination first (``copy_vma``: merged
with a neighbour whose flags, anon_vma chain and pgoff it continues, or a new VMA with
the source's pgoff, linked after the source in its anon_vma trees); then the entries
move under the old and the new page-table locks (``move_ptes``: ``ptep_get_and_clear``
at the old address, flush, ``set_pte_at`` at the new one), with the anon_vma rwsem for
write when the VMA they move to may come first in rmap order (``need_rmap_locks``);
then the source range leaves its VMA (which may split). Entries of every kind move as
they are: a migration entry moved while a migration's rmap walk runs is found at its
old address or at its new one, never missed. The oracle's shadow moves with the entry.

Moving half of a range in one mm of a fork leaves the two mms mapping the same pages in
opposite virtual order: the setup of the AB-BA migration deadlock of ``hmm-2017``.
"""

from __future__ import annotations

from ..actors import register_op
from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import VM_LIVE
from .gup import pins_unmapped
from .mmu_notifier import (
    MMU_NOTIFY_UNMAP,
    MmuNotifierRange,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
)
from .rmap import anon_vma_lock_write, anon_vma_unlock_write
from .vma import (
    vma_add,
    vma_avc,
    vma_free_rows,
    vma_merge_new_range,
    vma_pgoff,
    vma_punch_rows_needed,
    vma_remove_range,
    vma_rows,
)

EINVAL = -22
ENOMEM = -12


def move_ptes(
    k: Kernel, a: Actor, mm: int, src: int, dst: int, n: int, need_rmap_locks: bool
) -> Path:
    """``move_page_tables()`` → ``move_ptes()`` (7.0) for ``n`` entries from ``src`` to
    ``dst`` in ``mm``, one page-table extent at a time: with ``need_rmap_locks`` the
    anon_vma rwsem for write first (``take_rmap_locks``), then the old PTL and the new
    one; each entry is cleared (``ptep_get_and_clear``), flushed and set at its new
    address. Without the rmap lock, rmap's traversal order keeps a walk from missing
    both the old and the new entry: the new VMA is visited after the old one."""
    site = "move_ptes"
    ppt = k.geo.ptes_per_table
    i = 0
    while i < n:
        extent = min(n - i, ppt - (src + i) % ppt, ppt - (dst + i) % ppt)
        if need_rmap_locks:
            yield from anon_vma_lock_write(k, a, mm, site + ":take_rmap_locks")
        old_ptl = k.ptl_word(mm, src + i)
        new_ptl = k.ptl_word(mm, dst + i)
        yield from k.spin_lock(a, old_ptl, site + ":old_ptl")
        if new_ptl != old_ptl:
            yield from k.spin_lock(a, new_ptl, site + ":new_ptl")
        for j in range(i, i + extent):
            pte = k.ptep_get_and_clear(mm, src + j)
            k.flush_tlb_range(mm, src + j, src + j + 1)
            k.set_pte(mm, dst + j, pte)
            k.set_shadow(mm, dst + j, k.shadow(mm, src + j))
            k.set_shadow(mm, src + j, 0)
            pins_unmapped(k, mm, src + j, moved_to=dst + j)
        if new_ptl != old_ptl:
            k.spin_unlock(a, new_ptl, site + ":new_ptl")
        k.spin_unlock(a, old_ptl, site + ":old_ptl")
        if need_rmap_locks:
            anon_vma_unlock_write(k, a, mm, site + ":drop_rmap_locks")
        i += extent
        yield


def op_mremap(k: Kernel, a: Actor, mm: int, src: int, n: int, dst: int) -> Path:
    """``mremap(src, n, n, MREMAP_MAYMOVE | MREMAP_FIXED, dst)`` → ``move_vma()``:
    ``copy_vma()`` (the new range merged into a neighbour whose pgoff it continues, or
    a new VMA linked into the source's anon_vma trees after it), ``move_page_tables()``
    (with the rmap locks when the merged VMA may come first in rmap order:
    ``need_rmap_locks = new_vma->vm_pgoff <= vma->vm_pgoff``), then the source range is
    unmapped (its VMA split), all under ``mmap_write_lock``.

    Returns 0, -EINVAL (the source is not one VMA, or the destination is not free) or
    -ENOMEM (no VMA row left).
    """
    yield from k.mmap_write_lock(a, mm, "mremap:mmap_write_lock")
    try:
        rows = vma_rows(k, mm)
        srcv = [x for x in rows if x[1] <= src and src + n <= x[2]]
        if n <= 0 or not srcv or dst < 0 or dst + n > k.geo.pages_per_mm:
            k.count("mremap_einval")
            return EINVAL
        if any(not (dst + n <= vs or dst >= ve) for _r, vs, ve, _f in rows):
            k.count("mremap_einval")
            return EINVAL
        if len(vma_free_rows(k, mm)) < 1 + vma_punch_rows_needed(k, mm, src, src + n):
            k.count("mremap_enomem")
            return ENOMEM
        row, vs, _ve, flags = srcv[0]
        vma_pg = vma_pgoff(k, mm, row)
        new_pgoff = vma_pg + src - vs
        yield from anon_vma_lock_write(k, a, mm, "copy_vma:anon_vma_lock_write")
        new = vma_add(k, mm, dst, dst + n, flags & ~VM_LIVE, pgoff=new_pgoff, avc=vma_avc(k, mm, row))
        merged = vma_merge_new_range(k, mm, new)
        need_rmap_locks = merged >= 0 and vma_pgoff(k, mm, merged) <= vma_pg
        anon_vma_unlock_write(k, a, mm, "copy_vma:anon_vma_unlock_write")
        if need_rmap_locks:
            k.count("mremap_need_rmap_locks")
        # move_page_tables(): an MMU_NOTIFY_UNMAP invalidation of the old range.
        rng = MmuNotifierRange(MMU_NOTIFY_UNMAP, mm, src, src + n)
        yield from mmu_notifier_invalidate_range_start(k, a, rng)
        yield from move_ptes(k, a, mm, src, dst, n, need_rmap_locks)
        yield from mmu_notifier_invalidate_range_end(k, a, rng)
        # do_vmi_munmap() of the old range: its pages are gone, its VMA is split.
        yield from anon_vma_lock_write(k, a, mm, "mremap:unmap:anon_vma_lock_write")
        vma_remove_range(k, mm, src, src + n)
        anon_vma_unlock_write(k, a, mm, "mremap:unmap:anon_vma_unlock_write")
        k.count("mremap")
        return 0
    finally:
        k.mmap_write_unlock(a, mm, "mremap:mmap_write_unlock")


register_op("mremap", op_mremap)

__all__ = ["move_ptes", "op_mremap"]

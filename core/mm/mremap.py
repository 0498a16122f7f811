"""``mremap()`` of part of a range to another address: ``mm/mremap.c``
(``move_vma`` → ``move_page_tables`` → ``move_ptes``).

Under ``mmap_write_lock`` the source range leaves its VMA (which may split) and a new
VMA covers the destination (merged with a neighbour of the same flags, ``vma_merge``);
then each entry moves under the old and the new page-table locks (``move_ptes``:
``ptep_get_and_clear`` at the old address, flush, ``set_pte_at`` at the new one).
Entries of every kind move as they are: a migration entry moved while a migration runs
is found at its new address by ``remove_migration_ptes``. The oracle's shadow moves
with the entry.

Moving half of a range in one mm of a fork leaves the two mms mapping the same pages in
opposite virtual order: the setup of the AB-BA migration deadlock of ``hmm-2017``.
"""

from __future__ import annotations

from ..actors import register_op
from ..machine.kernel import Actor, Kernel, Path
from .gup import pins_unmapped
from .mmu_notifier import (
    MMU_NOTIFY_UNMAP,
    MmuNotifierRange,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
)
from .vma import (
    vma_add,
    vma_free_rows,
    vma_merge,
    vma_punch_rows_needed,
    vma_remove_range,
    vma_rows,
)

EINVAL = -22
ENOMEM = -12


def move_ptes(k: Kernel, a: Actor, mm: int, src: int, dst: int, n: int) -> Path:
    """``move_ptes()`` for ``n`` entries from ``src`` to ``dst`` in ``mm``."""
    site = "move_ptes"
    for i in range(n):
        old_ptl = k.ptl_word(mm, src + i)
        new_ptl = k.ptl_word(mm, dst + i)
        yield from k.spin_lock(a, old_ptl, site + ":old_ptl")
        if new_ptl != old_ptl:
            yield from k.spin_lock(a, new_ptl, site + ":new_ptl")
        pte = k.ptep_get_and_clear(mm, src + i)
        k.flush_tlb_range(mm, src + i, src + i + 1)
        k.set_pte(mm, dst + i, pte)
        k.set_shadow(mm, dst + i, k.shadow(mm, src + i))
        k.set_shadow(mm, src + i, 0)
        pins_unmapped(k, mm, src + i, moved_to=dst + i)
        if new_ptl != old_ptl:
            k.spin_unlock(a, new_ptl, site + ":new_ptl")
        k.spin_unlock(a, old_ptl, site + ":old_ptl")
        yield


def op_mremap(k: Kernel, a: Actor, mm: int, src: int, n: int, dst: int) -> Path:
    """``mremap(src, n, n, MREMAP_MAYMOVE | MREMAP_FIXED, dst)``.

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
        flags = srcv[0][3]
        vma_remove_range(k, mm, src, src + n)
        vma_add(k, mm, dst, dst + n, flags)
        vma_merge(k, mm)
        # move_page_tables(): an MMU_NOTIFY_UNMAP invalidation of the old range.
        rng = MmuNotifierRange(MMU_NOTIFY_UNMAP, mm, src, src + n)
        yield from mmu_notifier_invalidate_range_start(k, a, rng)
        yield from move_ptes(k, a, mm, src, dst, n)
        yield from mmu_notifier_invalidate_range_end(k, a, rng)
        k.count("mremap")
        return 0
    finally:
        k.mmap_write_unlock(a, mm, "mremap:mmap_write_unlock")


register_op("mremap", op_mremap)

__all__ = ["move_ptes", "op_mremap"]

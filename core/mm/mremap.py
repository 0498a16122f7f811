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

v7 (``geometry.thp``): ``move_page_tables`` reads each PMD first: a huge leaf of a
whole aligned extent moves as one entry (``move_huge_pmd``), a partial one is split
first (``split_huge_pmd``), a PTE table of a whole aligned extent moves by its PMD
(``move_normal_pmd``), and a none destination PMD gets its PTE table.

Moving half of a range in one mm of a fork leaves the two mms mapping the same pages in
opposite virtual order: the setup of the AB-BA migration deadlock of ``hmm-2017``.
"""

from __future__ import annotations

from ..actors import register_op
from ..machine import pmd as pm
from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
    PTE_DEVICE_PRIVATE,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    VM_LIVE,
)
from .gup import pins_unmapped
from .huge_memory import split_huge_pmd
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


_HUGE = (PTE_PRESENT, PTE_MIGRATION, PTE_DEVICE_PRIVATE)


def move_huge_pmd(
    k: Kernel, a: Actor, mm: int, old_idx: int, new_idx: int, need_rmap_locks: bool
) -> Path:
    """``move_pgt_entry(HPAGE_PMD)`` → ``move_huge_pmd()`` (7.0 mm/mremap.c,
    mm/huge_memory.c; v7): with ``need_rmap_locks`` the anon_vma rwsem for write; the
    new PMD must be none (``WARN_ON``: not moved); ``__pmd_trans_huge_lock`` of the old
    PMD (the PMD lock, and the PMD must still be a huge leaf: present, migration or
    device-private), the new PMD lock if it is another; ``pmdp_huge_get_and_clear``,
    ``set_pmd_at`` at the new address, the TLB flush of the old range when the PMD was
    present. No PTE table deposit, soft-dirty or uffd-wp handling. Returns whether it
    moved."""
    site = "move_huge_pmd"
    ppt = k.geo.ptes_per_table
    if need_rmap_locks:
        yield from anon_vma_lock_write(k, a, mm, site + ":take_rmap_locks")
    moved = False
    if pm.pmd_none(pm.pmdp_get(k, mm, new_idx)):
        old_ptl = yield from pm.pmd_lock(k, a, mm, old_idx, site + ":old_ptl")
        if pm.pmdp_get(k, mm, old_idx) & PTE_TYPE_MASK in _HUGE:
            new_ptl = pm.pmd_lockptr(k, mm, new_idx)
            if new_ptl != old_ptl:
                yield from k.spin_lock(a, new_ptl, site + ":new_ptl")
            pmd = pm.pmdp_huge_get_and_clear(k, mm, old_idx)
            force_flush = pmd & PTE_TYPE_MASK == PTE_PRESENT
            pm.set_pmd_at(k, mm, new_idx, pmd)
            src, dst = old_idx * ppt, new_idx * ppt
            if force_flush:  # flush_pmd_tlb_range(vma, old_addr, old_addr + PMD_SIZE)
                pm.flush_pmd_tlb_range(k, mm, old_idx)
                k.flush_tlb_range(mm, src, src + ppt)
            for j in range(ppt):
                k.set_shadow(mm, dst + j, k.shadow(mm, src + j))
                k.set_shadow(mm, src + j, 0)
                pins_unmapped(k, mm, src + j, moved_to=dst + j)
            if new_ptl != old_ptl:
                k.spin_unlock(a, new_ptl, site + ":new_ptl")
            moved = True
            k.count("move_huge_pmd")
        k.spin_unlock(a, old_ptl, site + ":old_ptl")
    else:
        k.count("move_huge_pmd_new_not_none")
    if need_rmap_locks:
        anon_vma_unlock_write(k, a, mm, site + ":drop_rmap_locks")
    return moved


def move_normal_pmd(k: Kernel, a: Actor, mm: int, old_idx: int, new_idx: int) -> Path:
    """``move_pgt_entry(NORMAL_PMD)`` → ``move_normal_pmd()`` (7.0 mm/mremap.c,
    ``CONFIG_HAVE_MOVE_PMD``, x86; v7): a whole PTE table moved by moving its PMD.
    ``should_take_rmap_locks(NORMAL_PMD)`` is always true: the anon_vma rwsem for write
    (``take_rmap_locks``), so no rmap walk runs meanwhile. ``WARN_ON_ONCE(!pmd_none(
    *new_pmd))`` → not moved; then ``pmd_lock`` of the old PMD, the new PMD lock if it
    is another (``spin_lock_nested``; no PTE-table lock: ``mmap_lock`` for write
    excludes every other page-table walker); ``pmd = *old_pmd``, not moved if it is no
    longer a table ("Racing with collapse?": ``!pmd_present || pmd_leaf``);
    ``pmd_clear(old_pmd)``, ``pmd_populate(new_pmd, pmd_pgtable(pmd))``,
    ``flush_tlb_range`` of the old range, the unlocks. Returns whether it moved.

    The model's PTE tables sit at fixed addresses (one per PMD, never freed), so the
    table "moves" by its entries: each is taken from the old slot (``xchg``) and stored
    at the new one between ``pmd_clear`` of the old PMD and ``pmd_populate`` of the new
    one, in the same step (no preemption point inside, as the kernel's one PMD store).
    The hardware walk does not look at a PTE under a none PMD, so no CPU sees an entry
    in either slot while they are copied. ``vma_has_uffd_without_event_remap``: the
    model has no userfaultfd VMAs. See docs/internals.md (Deliberate simplifications)
    for what the fixed tables could hide."""
    site = "move_normal_pmd"
    ppt = k.geo.ptes_per_table
    yield from anon_vma_lock_write(k, a, mm, site + ":take_rmap_locks")
    moved = False
    if pm.pmd_none(pm.pmdp_get(k, mm, new_idx)):
        old_ptl = yield from pm.pmd_lock(k, a, mm, old_idx, site + ":old_ptl")
        new_ptl = pm.pmd_lockptr(k, mm, new_idx)
        if new_ptl != old_ptl:
            yield from k.spin_lock(a, new_ptl, site + ":new_ptl")
        pmd = pm.pmdp_get(k, mm, old_idx)
        if pm.pmd_is_table(pmd):
            pm.set_pmd_at(k, mm, old_idx, 0)  # pmd_clear(old_pmd)
            src, dst = old_idx * ppt, new_idx * ppt
            for j in range(ppt):  # the table itself: see the docstring
                k.set_pte(mm, dst + j, k.ptep_get_and_clear(mm, src + j))
            pm.set_pmd_at(k, mm, new_idx, pmd)  # pmd_populate(mm, new_pmd, ...)
            if "move_pmd_no_flush" not in k.faults:  # test-only fault
                k.flush_tlb_range(mm, src, src + ppt)
            for j in range(ppt):
                k.set_shadow(mm, dst + j, k.shadow(mm, src + j))
                k.set_shadow(mm, src + j, 0)
                pins_unmapped(k, mm, src + j, moved_to=dst + j)
            moved = True
            k.count("move_normal_pmd")
        else:
            k.count("move_normal_pmd_not_table")
        if new_ptl != old_ptl:
            k.spin_unlock(a, new_ptl, site + ":new_ptl")
        k.spin_unlock(a, old_ptl, site + ":old_ptl")
    else:
        k.count("move_normal_pmd_new_not_none")
    anon_vma_unlock_write(k, a, mm, site + ":drop_rmap_locks")
    return moved


def move_page_tables_v7(
    k: Kernel, a: Actor, mm: int, src: int, dst: int, n: int, need_rmap_locks: bool
) -> Path:
    """``move_page_tables()`` (7.0 mm/mremap.c) with the PMD level (v7): per extent
    (``get_extent(NORMAL_PMD)``), a none old PMD has nothing to move (``get_old_pmd``);
    a huge leaf of a whole, aligned extent moves as one entry (:func:`move_huge_pmd`),
    otherwise it is split (``split_huge_pmd``) and its PTEs move; the new PMD gets a
    PTE table if it has none (``pte_alloc``, under the PMD lock), then ``move_ptes``.

    ``alloc_new_pmd``: the model's PTE tables are never freed, so an empty PTE table at
    the destination (every entry none: the range left every VMA, where 7.0's
    ``free_pgtables`` would have freed it) stands for the none PMD the kernel finds
    there. A PTE table of a whole, aligned extent (``extent == PMD_SIZE``, x86's
    ``CONFIG_HAVE_MOVE_PMD``) moves at once (:func:`move_normal_pmd`); when that fails
    (the new PMD is not none, or the old one no longer a table) its PTEs move one by
    one. A huge leaf that was split does not try ``move_normal_pmd`` (``else if``)."""
    ppt = k.geo.ptes_per_table
    i = 0
    while i < n:
        old, new = src + i, dst + i
        extent = min(n - i, ppt - old % ppt, ppt - new % ppt)
        oidx, nidx = old // ppt, new // ppt
        kind = pm.pmdp_get(k, mm, oidx) & PTE_TYPE_MASK
        if kind == PTE_NONE:
            i += extent
            continue
        if extent == ppt:
            npmd = pm.pmdp_get(k, mm, nidx)
            if pm.pmd_is_table(npmd) and all(
                k.pte_read(mm, new + j) & PTE_TYPE_MASK == PTE_NONE for j in range(ppt)
            ):
                pm.set_pmd_at(k, mm, nidx, 0)  # see the docstring: no table there
        if kind in _HUGE:
            if extent == ppt and (yield from move_huge_pmd(k, a, mm, oidx, nidx, need_rmap_locks)):
                i += extent
                yield
                continue
            yield from split_huge_pmd(k, a, mm, k.s.find_vma(mm, old), old, False)
        elif extent == ppt and (yield from move_normal_pmd(k, a, mm, oidx, nidx)):
            i += extent
            yield
            continue
        if pm.pmd_none(pm.pmdp_get(k, mm, oidx)):
            i += extent
            continue
        if pm.pmd_none(pm.pmdp_get(k, mm, nidx)):  # pte_alloc(new_pmd): pmd_install
            ptl = yield from pm.pmd_lock(k, a, mm, nidx, "pte_alloc:pmd_lock")
            if pm.pmd_none(pm.pmdp_get(k, mm, nidx)):
                pm.set_pmd_at(k, mm, nidx, pm.PMD_TABLE)
            k.spin_unlock(a, ptl, "pte_alloc:pmd_unlock")
        yield from move_ptes(k, a, mm, old, new, extent, need_rmap_locks)
        i += extent


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
        if k.geo.thp:  # v7: the PMD level (move_huge_pmd, split_huge_pmd, pte_alloc)
            yield from move_page_tables_v7(k, a, mm, src, dst, n, need_rmap_locks)
        else:
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

__all__ = ["move_huge_pmd", "move_normal_pmd", "move_page_tables_v7", "move_ptes", "op_mremap"]

"""``fork()``: ``dup_mmap()`` → ``copy_page_range()`` → ``copy_pte_range()`` in
``mm/memory.c`` (``copy_present_pte``, ``copy_nonpresent_pte``, ``copy_present_page``),
with ``folio_try_dup_anon_rmap_pte()`` from ``include/linux/rmap.h`` (seed 001).

The parent's ``mmap_lock`` is held for write for the whole copy (and the child's, which
nobody else can see yet). Per page table, under the child's and then the parent's PTL:

- a present anonymous page of a private mapping is shared copy-on-write: the mapping is
  duplicated (``folio_try_dup_anon_rmap_pte``: one more mapping and reference, and the
  page is no longer anon-exclusive) and both entries become read-only. When the page is
  anon-exclusive and may be pinned, duplicating fails with -EBUSY and the child gets its
  own copy instead (``copy_present_page``): a pinned page must stay the parent's;
- a device-private entry is duplicated the same way (it cannot be pinned, so it cannot
  fail), and a writable one becomes read-only on both sides;
- a migration entry is copied, made read-only on both sides
  (``make_readable_migration_entry``): when the migration finishes, its
  ``remove_migration_ptes`` maps the child too;
- a swap entry is copied with one more count on its slot (``swap_duplicate``), and
  neither side keeps the exclusive marker;
- a device-exclusive entry (7.0 ``copy_nonpresent_pte``) is first restored to a present
  entry in the parent (``try_restore_exclusive_pte``: only if ``folio_trylock``
  succeeds; the device lost its atomic mapping to the fork's
  ``MMU_NOTIFY_PROTECTION_PAGE`` invalidation) and then copied as a present page. When
  the trylock fails, ``copy_pte_range`` stops with -EBUSY, ``copy_pmd_range`` turns it
  into -ENOMEM, and the fork fails: ``dup_mm`` drops the half-copied child
  (``mmput`` → ``exit_mmap``).

The model flushes the parent's TLB for each table before it drops the parent's PTL;
the kernel batches the flush to the end of ``dup_mmap``, still under ``mmap_write_lock``.
Flushing at once keeps the oracle exact: a parent thread's store through a stale
writable translation after the write-protect would otherwise show in the child.
``mm->write_protect_seq`` is odd for the whole copy, so a concurrent GUP-fast pin backs
off (the pin may land after the pin check of ``folio_try_dup_anon_rmap_pte`` but before
the write-protect; its own B4 re-check alone would miss that).

The child is an mm slot of the workload geometry that is not live (no VMAs); the child
exits through :func:`~pagerace.core.mm.vma.op_child_exit`.
"""

from __future__ import annotations

from ..actors import register_op
from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
    M_PARENT,
    M_USERS,
    M_WP_SEQ,
    MM_WORDS,
    PTE_DEVICE_EXCLUSIVE,
    PTE_DEVICE_PRIVATE,
    PTE_DIRTY,
    PTE_EXCLUSIVE,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_SWAP,
    PTE_TYPE_MASK,
    PTE_WRITE,
    PTE_YOUNG,
    VM_LIVE,
    VM_SHARED,
    PG_anon,
    PG_anon_exclusive,
    PG_lru,
    PG_uptodate,
    pte_encode,
)
from .memory import restore_exclusive_pte
from .mmu_notifier import (
    MMU_NOTIFY_PROTECTION_PAGE,
    MmuNotifierRange,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
)
from .rmap import (
    anon_vma_link_child,
    anon_vma_lock_write,
    anon_vma_unlock_write,
    folio_set_anon,
)
from .swapfile import swap_duplicate
from .vma import exit_mmap, vma_add, vma_avc, vma_pgoff, vma_rows

EBUSY = -16
EAGAIN = -11
ENOMEM = -12


def folio_try_dup_anon_rmap_pte(k: Kernel, a: Actor, pfn: int) -> bool:
    """``folio_try_dup_anon_rmap_pte()`` (seed 001): fail with -EBUSY when the page is
    anon-exclusive and may be pinned; otherwise the page is no longer exclusive and has
    one more mapping (the caller takes the reference)."""
    if (
        k.test_flag(pfn, PG_anon_exclusive)
        and k.maybe_dma_pinned(pfn)
        and "fork_ignores_pins" not in k.faults
    ):
        k.count("fork_dup_ebusy")
        return False
    k.clear_flag(pfn, PG_anon_exclusive)
    k.mapcount_add(pfn, 1)
    return True


def copy_present_page(k: Kernel, a: Actor, parent: int, child: int, vpn: int, pfn: int) -> bool:
    """``copy_present_page()``: the child gets a private copy of a possibly pinned page."""
    new = k.alloc_page(a, 0, "copy_present_page:alloc")
    if new < 0:
        k.count("fork_copy_oom")
        return False
    k.touch(a, pfn, "copy_present_page:copy")
    k.set_data(new, k.data(pfn))
    k.set_flag(new, PG_anon | PG_anon_exclusive | PG_lru | PG_uptodate)
    folio_set_anon(k, new, child, vpn)  # folio_add_new_anon_rmap(new_folio, dst_vma)
    k.mapcount_add(new, 1)
    k.set_pte(child, vpn, pte_encode(PTE_PRESENT, new, PTE_WRITE | PTE_DIRTY | PTE_YOUNG))
    k.count("fork_copied_pinned")
    return True


def copy_pte_range(
    k: Kernel, a: Actor, parent: int, child: int, start: int, end: int, vflags: int
) -> Path:
    """``copy_pte_range()`` for ``[start, end)``, one page table at a time. Returns 0,
    or -EBUSY when a device-exclusive entry's folio could not be trylocked (the copy
    stops after that table, as the kernel's does)."""
    ppt = k.geo.ptes_per_table
    cow = not vflags & VM_SHARED  # is_cow_mapping() for a writable private mapping
    site = "copy_pte_range"
    vpn = start
    while vpn < end:
        tab_end = min((vpn // ppt + 1) * ppt, end)
        dst_ptl = k.ptl_word(child, vpn)
        src_ptl = k.ptl_word(parent, vpn)
        yield from k.spin_lock(a, dst_ptl, site + ":dst_ptl")
        yield from k.spin_lock(a, src_ptl, site + ":src_ptl")
        done: list[int] = []
        ret = 0
        for v in range(vpn, tab_end):
            pte = k.pte_read(parent, v)
            kind = pte & PTE_TYPE_MASK
            if kind == PTE_NONE:
                continue
            pfn = pte >> PTE_PFN_SHIFT
            copied = True
            if kind == PTE_DEVICE_EXCLUSIVE and "fork_copies_exclusive" not in k.faults:
                # try_restore_exclusive_pte(): copy_nonpresent_pte returns -ENOENT and
                # the now present entry is copied below.
                if not k.trylock_page(a, pfn, site + ":try_restore_exclusive_pte"):
                    k.count("fork_exclusive_ebusy")
                    ret = EBUSY
                    break
                restore_exclusive_pte(k, parent, v, pfn, pte)
                k.unlock_page(a, pfn, site + ":try_restore_exclusive_pte")
                pte = k.pte_read(parent, v)
                kind = PTE_PRESENT
            if kind == PTE_PRESENT:
                if k.test_flag(pfn, PG_anon) and cow:
                    if folio_try_dup_anon_rmap_pte(k, a, pfn):
                        k.get_page(a, pfn, site + ":folio_get")
                        if pte & PTE_WRITE:
                            pte &= ~PTE_WRITE
                            k.set_pte(parent, v, pte)  # ptep_set_wrprotect
                        k.set_pte(child, v, pte & ~PTE_YOUNG)  # pte_mkold
                    else:
                        copied = copy_present_page(k, a, parent, child, v, pfn)
                else:
                    k.mapcount_add(pfn, 1)
                    k.get_page(a, pfn, site + ":folio_get")
                    k.set_pte(child, v, pte & ~(PTE_YOUNG | PTE_DIRTY))
            elif kind == PTE_DEVICE_PRIVATE:
                # copy_nonpresent_pte(): cannot fail for device-private folios.
                k.get_page(a, pfn, site + ":device_private_get")
                k.clear_flag(pfn, PG_anon_exclusive)
                k.mapcount_add(pfn, 1)
                if pte & PTE_WRITE and cow:
                    pte &= ~PTE_WRITE  # make_readable_device_private_entry
                    k.set_pte(parent, v, pte)
                k.set_pte(child, v, pte)
            elif kind == PTE_MIGRATION:
                k.count("fork_copy_migration_entry")
                if pte & (PTE_WRITE | PTE_EXCLUSIVE) and cow:
                    pte &= ~(PTE_WRITE | PTE_EXCLUSIVE)  # make_readable_migration_entry
                    k.set_pte(parent, v, pte)
                k.set_pte(child, v, pte)
            elif kind == PTE_DEVICE_EXCLUSIVE:
                # test-only (fork_copies_exclusive): the entry copied as it is, as
                # copy_nonpresent_pte does a device-private one.
                k.get_page(a, pfn, site + ":folio_get")
                k.clear_flag(pfn, PG_anon_exclusive)
                k.mapcount_add(pfn, 1)
                k.set_pte(child, v, pte)
            elif kind == PTE_SWAP:
                swap_duplicate(k, pfn)
                if pte & PTE_EXCLUSIVE:
                    pte &= ~PTE_EXCLUSIVE  # pte_swp_clear_exclusive
                    k.set_pte(parent, v, pte)
                k.set_pte(child, v, pte)
            else:
                copied = False
            if copied:
                done.append(v)
        # The flush waits for accesses in flight (the shootdown IPI): only then is the
        # parent's value at each address final for the child's copy of the shadow.
        k.flush_tlb_range(parent, vpn, tab_end)
        for v in done:
            k.set_shadow(child, v, k.shadow(parent, v))
        k.spin_unlock(a, src_ptl, site + ":src_ptl")
        k.spin_unlock(a, dst_ptl, site + ":dst_ptl")
        yield
        if ret:
            return ret
        vpn = tab_end
    return 0


def op_fork(k: Kernel, a: Actor, parent: int, child: int) -> Path:
    """``fork()``: ``dup_mm()`` → ``dup_mmap()`` into the (unused) mm slot ``child``.

    Returns 0, or -EAGAIN when the child slot is still in use.
    """
    mmw = k.lay.MM + child * MM_WORDS
    if parent == child or k.words.load(mmw + M_USERS) or vma_rows(k, child):
        k.count("fork_child_busy")
        return EAGAIN
    yield from k.mmap_write_lock(a, parent, "dup_mmap:mmap_write_lock")
    yield from k.mmap_write_lock(a, child, "dup_mmap:mmap_write_lock_nested")
    seq = k.lay.MM + parent * MM_WORDS + M_WP_SEQ
    ret = 0
    try:
        k.words.store(mmw + M_USERS, 1)
        k.words.store(mmw + M_PARENT, parent + 1)
        k.words.fetch_add(seq, 1)  # raw_write_seqcount_begin(&src_mm->write_protect_seq)
        anon_vma_link_child(k, child, parent)
        for r, vs, ve, f in vma_rows(k, parent):
            # anon_vma_fork(): the child's VMA is linked into every anon_vma tree its
            # parent's is in (anon_vma_clone) and into its own new anon_vma, under the
            # root's rwsem, after the parent's VMA: a walk that runs meanwhile visits
            # the parent's entry first, then the child's.
            yield from anon_vma_lock_write(k, a, parent, "anon_vma_fork:anon_vma_lock_write")
            avc = vma_avc(k, parent, r) | ((1 << child) if vma_avc(k, parent, r) else 0)
            vma_add(
                k, child, vs, ve, f & ~VM_LIVE, origin=parent,
                pgoff=vma_pgoff(k, parent, r), avc=avc,
            )
            anon_vma_unlock_write(k, a, parent, "anon_vma_fork:anon_vma_unlock_write")
            yield
            # 7.0 copy_page_range(): a COW mapping's copy write-protects the parent's
            # entries inside an MMU_NOTIFY_PROTECTION_PAGE invalidation of the parent.
            rng = MmuNotifierRange(MMU_NOTIFY_PROTECTION_PAGE, parent, vs, ve)
            cow = not f & VM_SHARED
            if cow:
                yield from mmu_notifier_invalidate_range_start(k, a, rng)
            ret = yield from copy_pte_range(k, a, parent, child, vs, ve, f)
            if cow:
                yield from mmu_notifier_invalidate_range_end(k, a, rng)
            if ret:
                ret = ENOMEM  # copy_pmd_range(): "if (copy_pte_range(...)) return -ENOMEM"
                break
        if not ret:
            k.count("fork")
    finally:
        if k.words.load(seq) & 1:
            k.words.fetch_add(seq, 1)  # raw_write_seqcount_end()
        k.mmap_write_unlock(a, child, "dup_mmap:mmap_write_unlock_nested")
        k.mmap_write_unlock(a, parent, "dup_mmap:mmap_write_unlock")
    if ret:
        # dup_mm(): "free_pt: ... mmput(mm)": the half-copied child goes away.
        k.count("fork_failed")
        yield
        yield from exit_mmap(k, a, child)
    return ret


register_op("fork", op_fork)

__all__ = ["copy_present_page", "copy_pte_range", "folio_try_dup_anon_rmap_pte", "op_fork"]

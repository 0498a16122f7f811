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

On ``v7`` (geometries with ``thp``) the copy goes through ``copy_pmd_range`` of 7.0: a
huge PMD (present, device-private, migration entry) is ``copy_huge_pmd`` under the
child's and the parent's PMD locks (a maybe-pinned exclusive folio: the parent's PMD is
split and its PTEs copied instead), and a PTE that maps a page of a large folio is
duplicated on the folio (its reference on the head, the page's ``_mapcount`` and the
folio's ``_large_mapcount``), as 7.0's ``copy_present_ptes`` does: the PTEs of one
large folio with the same bits are one batch (``folio_pte_batch_flags``,
``folio_try_dup_anon_rmap_ptes`` with nr > 1, one reference add of nr), and a copy that
needs a page (a failed batch of a maybe-pinned folio, a pinned exclusive page) drops
the PTLs, preallocates and starts again from the same address (-EAGAIN).

The child is an mm slot of the workload geometry that is not live (no VMAs); the child
exits through :func:`~pagerace.core.mm.vma.op_child_exit`.
"""

from __future__ import annotations

from ..actors import register_op
from ..machine import folio as fo
from ..machine import pmd as pm
from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
    F_REF,
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
    PTE_SOFT_DIRTY,
    PTE_SWAP,
    PTE_TYPE_MASK,
    PTE_UFFD_WP,
    PTE_WRITE,
    PTE_YOUNG,
    VM_ANON,
    VM_LIVE,
    VM_SHARED,
    PG_anon,
    PG_anon_exclusive,
    PG_lru,
    PG_uptodate,
    pte_encode,
)
from .huge_memory import split_huge_pmd
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


def folio_try_dup_anon_rmap_pte(k: Kernel, a: Actor, pfn: int, child: int) -> bool:
    """``folio_try_dup_anon_rmap_pte()`` (seed 001; 7.0 ``__folio_try_dup_anon_rmap``
    at ``PGTABLE_LEVEL_PTE``): fail with -EBUSY when the page is anon-exclusive and its
    folio may be pinned; otherwise the page is no longer exclusive and has one more
    mapping (the caller takes the reference). A page of a large folio (``v7``): the
    pins are the folio's (``_pincount``), a device-private folio is never "maybe
    pinned", and the mapping is counted per page and in ``_large_mapcount``."""
    if k.geo.thp:
        head = fo.page_folio(k, pfn)
        if fo.folio_test_large(k, head):
            maybe_pinned = not k.is_device_private(head) and fo.folio_maybe_dma_pinned(k, head)
            if (
                maybe_pinned
                and k.test_flag(pfn, PG_anon_exclusive)
                and "fork_ignores_pins" not in k.faults
            ):
                k.count("fork_dup_ebusy")
                return False
            k.clear_flag(pfn, PG_anon_exclusive)
            fo.folio_dup_rmap_ptes(k, head, pfn, 1, child)
            return True
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


def _folio_of(k: Kernel, pfn: int) -> int:
    """``page_folio()`` on ``v7`` (the head of a large folio); ``pfn`` itself elsewhere."""
    return fo.page_folio(k, pfn) if k.geo.thp else pfn


def _dup_rmap_pte(k: Kernel, head: int, pfn: int, child: int) -> None:
    """``folio_dup_file_rmap_pte()`` / the device-private ``folio_try_dup_anon_rmap_pte``
    that cannot fail: one more PTE mapping of ``pfn`` (per page and in the large folio's
    ``_large_mapcount``)."""
    if head != pfn or (k.geo.thp and fo.folio_test_large(k, head)):
        fo.folio_dup_rmap_ptes(k, head, pfn, 1, child)
    else:
        k.mapcount_add(pfn, 1)


def _share_cow_pte(
    k: Kernel, a: Actor, parent: int, child: int, v: int, pte: int, head: int, site: str
) -> None:
    """``__copy_present_ptes()`` of one anonymous page in a COW mapping whose rmap dup
    succeeded: ``folio_get``, ``ptep_set_wrprotect`` of a writable parent entry, the
    child's entry old (``pte_mkold``). Under both PTLs: no preemption point."""
    k.get_page(a, head, site + ":folio_get")
    if pte & PTE_WRITE:
        pte &= ~PTE_WRITE
        k.set_pte(parent, v, pte)  # ptep_set_wrprotect
    k.set_pte(child, v, pte & ~PTE_YOUNG)  # pte_mkold


def _share_pte(
    k: Kernel, a: Actor, child: int, v: int, pte: int, head: int, pfn: int, site: str
) -> None:
    """``__copy_present_ptes()`` of a page that is not copied on write (shared or not
    anonymous): ``folio_dup_file_rmap_pte``, ``folio_get``, the child's entry old and
    clean (``pte_mkold``, ``pte_mkclean`` of a shared mapping)."""
    _dup_rmap_pte(k, head, pfn, child)
    k.get_page(a, head, site + ":folio_get")
    k.set_pte(child, v, pte & ~(PTE_YOUNG | PTE_DIRTY))


def copy_present_page(
    k: Kernel, a: Actor, parent: int, child: int, vpn: int, pfn: int,
    prealloc: list[int] | None = None,
) -> bool:
    """``copy_present_page()``: the child gets a private copy of a possibly pinned page.
    v7 (``prealloc``, 7.0 as written): the copy takes over the page
    ``copy_pte_range`` allocated with the locks dropped (``*prealloc``); without one
    the caller gets -EAGAIN (False, ``prealloc[0]`` still -1). The older generations
    allocate here, under the PTL (seed 001's shape)."""
    if prealloc is not None:
        new = prealloc[0]
        if new < 0:
            return False  # -EAGAIN
        prealloc[0] = -1
    else:
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


def folio_pte_batch_flags(
    k: Kernel, head: int, mm: int, vpn: int, pte: int, max_nr: int, respect_dirty: bool
) -> tuple[int, bool]:
    """``folio_pte_batch_flags()`` (7.0 mm/internal.h) with ``FPB_MERGE_WRITE`` (and
    ``FPB_RESPECT_DIRTY`` for a private mapping): how many PTEs from ``vpn`` map
    consecutive pages of folio ``head`` with the same bits, young ignored, write merged
    (returned: whether any is writable), dirty ignored unless respected, soft-dirty
    ignored (``vma_soft_dirty_enabled`` is false: the model has no ``VM_SOFTDIRTY``
    tracking). ``max_nr`` is first limited to the folio's end. ``pte_batch_hint`` is 1
    (x86)."""
    max_nr = min(max_nr, head + fo.folio_nr_pages(k, head) - (pte >> PTE_PFN_SHIFT))
    ignore = PTE_YOUNG | PTE_WRITE | PTE_SOFT_DIRTY | (0 if respect_dirty else PTE_DIRTY)
    expected = (pte + (1 << PTE_PFN_SHIFT)) & ~ignore  # pte_advance_pfn(pte, 1)
    any_writable = False
    nr = 1
    while nr < max_nr:
        cur = k.pte_read(mm, vpn + nr)
        if cur & ~ignore != expected:
            break
        any_writable |= bool(cur & PTE_WRITE)
        expected += 1 << PTE_PFN_SHIFT
        nr += 1
    return nr, any_writable


def folio_try_dup_anon_rmap_ptes(
    k: Kernel, head: int, pfn: int, nr: int, child: int
) -> bool:
    """``folio_try_dup_anon_rmap_ptes(folio, page, nr, ...)`` (7.0 include/linux/rmap.h
    ``__folio_try_dup_anon_rmap``, ``PGTABLE_LEVEL_PTE``) of a large folio: when the
    folio may be pinned (not device-private), -EBUSY if any of the ``nr`` pages is
    anon-exclusive; otherwise each page loses the exclusive bit and gains a mapping,
    and ``_large_mapcount`` gains ``nr`` (for the child's mm)."""
    maybe_pinned = not k.is_device_private(head) and fo.folio_maybe_dma_pinned(k, head)
    if maybe_pinned and "fork_ignores_pins" not in k.faults and any(
        k.test_flag(p, PG_anon_exclusive) for p in range(pfn, pfn + nr)
    ):
        k.count("fork_dup_ebusy")
        return False
    for p in range(pfn, pfn + nr):
        k.clear_flag(p, PG_anon_exclusive)
    fo.folio_dup_rmap_ptes(k, head, pfn, nr, child)
    return True


def copy_present_ptes_batch(
    k: Kernel, a: Actor, parent: int, child: int, vpn: int, pte: int, head: int,
    max_nr: int, vflags: int, site: str,
) -> int:
    """The batched half of ``copy_present_ptes()`` (7.0 mm/memory.c 1126; v7), taken for
    a large folio when no page is preallocated and ``max_nr != 1``: ``nr`` PTEs of the
    folio (:func:`folio_pte_batch_flags`), ``folio_ref_add(folio, nr)`` in one add,
    ``folio_try_dup_anon_rmap_ptes`` (on -EBUSY ``folio_ref_sub`` and -EAGAIN: the
    caller drops the locks and preallocates), then ``__copy_present_ptes``: a COW
    mapping with any writable PTE has the ``nr`` parent PTEs write-protected
    (``wrprotect_ptes``), and the child gets ``set_ptes`` of the first PTE's bits
    (write-protected, clean for a shared mapping, old) on consecutive pages. All under
    the PTL the caller holds: no preemption point. Returns ``nr`` or -EAGAIN."""
    shared = bool(vflags & VM_SHARED)
    cow = not shared  # is_cow_mapping() for a writable private mapping
    pfn = pte >> PTE_PFN_SHIFT
    nr, any_writable = folio_pte_batch_flags(k, head, parent, vpn, pte, max_nr, not shared)
    if any_writable:
        pte |= PTE_WRITE  # pte_mkwrite(*ptentp)
    k.touch(a, head, site + ":folio_ref_add")
    k.words.fetch_add(k.fw(head, F_REF), nr)  # folio_ref_add(folio, nr)
    if k.test_flag(head, PG_anon):
        if not folio_try_dup_anon_rmap_ptes(k, head, pfn, nr, child):
            k.words.fetch_add(k.fw(head, F_REF), -nr)  # folio_ref_sub(folio, nr)
            k.count("fork_batch_eagain")
            return EAGAIN
    else:
        fo.folio_dup_rmap_ptes(k, head, pfn, nr, child)  # folio_dup_file_rmap_ptes
    if cow and pte & PTE_WRITE:  # wrprotect_ptes(src_mm, addr, src_pte, nr)
        for j in range(nr):
            cur = k.pte_read(parent, vpn + j)
            if cur & PTE_WRITE:
                k.set_pte(parent, vpn + j, cur & ~PTE_WRITE)
        pte &= ~PTE_WRITE
    if shared:
        pte &= ~PTE_DIRTY  # pte_mkclean
    pte &= ~PTE_YOUNG  # pte_mkold
    for j in range(nr):  # set_ptes(dst_mm, addr, dst_pte, pte, nr)
        k.set_pte(child, vpn + j, pte + (j << PTE_PFN_SHIFT))
    k.count("fork_pte_batch")
    if nr > 1:
        k.count("fork_pte_batched")
    return nr


def copy_pte_range(
    k: Kernel, a: Actor, parent: int, child: int, start: int, end: int, vflags: int
) -> Path:
    """``copy_pte_range()`` for ``[start, end)``, one page table at a time. Returns 0,
    or -EBUSY when a device-exclusive entry's folio could not be trylocked (the copy
    stops after that table, as the kernel's does).

    v7 (``geometry.thp``, 7.0 as written): a present PTE goes through
    ``copy_present_ptes``: the PTEs of one large folio are copied as one batch
    (:func:`copy_present_ptes_batch`) while no page is preallocated; a batch (or a
    single page) that must be copied because the folio may be pinned returns -EAGAIN:
    the copy stops there, drops both PTLs (a preemption point), preallocates a page
    (``folio_prealloc``; -ENOMEM when that fails) and starts ``again`` at the same
    address, where the page goes one by one and ``copy_present_page`` takes the
    preallocated page; a preallocated page still unused after the next present PTE is
    put. The older generations copy page by page and allocate under the PTL."""
    ppt = k.geo.ptes_per_table
    cow = not vflags & VM_SHARED  # is_cow_mapping() for a writable private mapping
    site = "copy_pte_range"
    v7 = k.geo.thp
    prealloc = [-1]  # v7: struct folio *prealloc
    vpn = start
    while vpn < end:
        tab_end = min((vpn // ppt + 1) * ppt, end)
        dst_ptl = k.ptl_word(child, vpn)
        src_ptl = k.ptl_word(parent, vpn)
        yield from k.spin_lock(a, dst_ptl, site + ":dst_ptl")
        yield from k.spin_lock(a, src_ptl, site + ":src_ptl")
        done: list[int] = []
        ret = 0
        v = vpn - 1
        nr = 1
        while v + nr < tab_end:
            v += nr
            nr = 1
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
            if kind == PTE_PRESENT and v7:
                head = _folio_of(k, pfn)
                if prealloc[0] < 0 and fo.folio_test_large(k, head) and tab_end - v != 1:
                    nr = copy_present_ptes_batch(
                        k, a, parent, child, v, pte, head, tab_end - v, vflags, site
                    )
                    if nr == EAGAIN:
                        nr = 1
                        ret = EAGAIN
                        break
                elif k.test_flag(head, PG_anon) and cow:
                    if folio_try_dup_anon_rmap_pte(k, a, pfn, child):
                        _share_cow_pte(k, a, parent, child, v, pte, head, site)
                    elif not copy_present_page(k, a, parent, child, v, pfn, prealloc):
                        ret = EAGAIN  # no preallocated page yet
                        break
                else:
                    _share_pte(k, a, child, v, pte, head, pfn, site)
                if prealloc[0] >= 0:  # not consumed: put it (mempolicy)
                    k.put_page(a, prealloc[0], site + ":prealloc_put")
                    prealloc[0] = -1
            elif kind == PTE_PRESENT:
                head = _folio_of(k, pfn)
                if k.test_flag(head, PG_anon) and cow:
                    if folio_try_dup_anon_rmap_pte(k, a, pfn, child):
                        _share_cow_pte(k, a, parent, child, v, pte, head, site)
                    else:
                        copied = copy_present_page(k, a, parent, child, v, pfn)
                else:
                    _share_pte(k, a, child, v, pte, head, pfn, site)
            elif kind == PTE_DEVICE_PRIVATE:
                # copy_nonpresent_pte(): cannot fail for device-private folios.
                head = _folio_of(k, pfn)
                k.get_page(a, head, site + ":device_private_get")
                k.clear_flag(pfn, PG_anon_exclusive)
                _dup_rmap_pte(k, head, pfn, child)
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
                done.extend(range(v, v + nr))
        # The flush waits for accesses in flight (the shootdown IPI): only then is the
        # parent's value at each address final for the child's copy of the shadow.
        k.flush_tlb_range(parent, vpn, tab_end)
        for d in done:
            k.set_shadow(child, d, k.shadow(parent, d))
        k.spin_unlock(a, src_ptl, site + ":src_ptl")
        k.spin_unlock(a, dst_ptl, site + ":dst_ptl")
        yield
        if ret == EAGAIN:  # v7: folio_prealloc() with the locks dropped, then again
            prealloc[0] = k.alloc_page(a, 0, site + ":folio_prealloc")
            if prealloc[0] < 0:
                k.count("fork_copy_oom")
                return ENOMEM
            k.count("fork_prealloc")
            vpn = v
            continue
        if ret:
            if prealloc[0] >= 0:
                k.put_page(a, prealloc[0], site + ":prealloc_put")
            return ret
        vpn = tab_end
    if prealloc[0] >= 0:
        k.put_page(a, prealloc[0], site + ":prealloc_put")
    return 0


# -- the PMD level (7.0 mm/huge_memory.c, v7) ---------------------------------------
def folio_try_dup_anon_rmap_pmd(k: Kernel, head: int, child: int) -> int:
    """``folio_try_dup_anon_rmap_pmd()`` → ``__folio_try_dup_anon_rmap(PGTABLE_LEVEL_PMD)``
    (7.0 include/linux/rmap.h 567): -EBUSY when the head page is anon-exclusive and the
    folio may be pinned (never a device-private one); otherwise the head page is no
    longer exclusive, ``_entire_mapcount`` and ``_large_mapcount`` one more."""
    maybe_pinned = not k.is_device_private(head) and fo.folio_maybe_dma_pinned(k, head)
    if k.test_flag(head, PG_anon_exclusive):
        if maybe_pinned and "fork_ignores_pins" not in k.faults:
            k.count("fork_dup_pmd_ebusy")
            return EBUSY
        k.clear_flag(head, PG_anon_exclusive)
    fo.folio_dup_rmap_pmd(k, head, child)
    return 0


def copy_huge_non_present_pmd(
    k: Kernel, a: Actor, parent: int, child: int, idx: int, pmd: int
) -> None:
    """``copy_huge_non_present_pmd()`` (7.0 mm/huge_memory.c 1793), both PMD locks held:
    a writable or read-exclusive PMD migration entry becomes readable in the parent
    (``make_readable_migration_entry``; soft-dirty / uffd-wp kept, young / dirty are
    in the offset and kept); a writable device-private PMD becomes readable in the
    parent, and the folio gets one more reference and PMD mapping (cannot fail). The
    child's entry loses uffd-wp (no VMA of the model is ``userfaultfd_wp``)."""
    kind = pmd & PTE_TYPE_MASK
    if kind == PTE_MIGRATION:
        k.count("fork_copy_pmd_migration_entry")
        if pmd & (PTE_WRITE | PTE_EXCLUSIVE):
            pmd &= ~(PTE_WRITE | PTE_EXCLUSIVE)
            pm.set_pmd_at(k, parent, idx, pmd)
    else:  # device-private
        k.count("fork_copy_pmd_device_private")
        if pmd & PTE_WRITE:
            pmd &= ~PTE_WRITE  # make_readable_device_private_entry
            pm.set_pmd_at(k, parent, idx, pmd)
        head = pm.pmd_pfn(pmd)
        k.get_page(a, head, "copy_huge_non_present_pmd:folio_get")
        folio_try_dup_anon_rmap_pmd(k, head, child)  # does not fail for device-private folios
    pm.set_pmd_at(k, child, idx, pmd & ~PTE_UFFD_WP)  # pmd_swp_clear_uffd_wp


def _copy_pmd_shadow(k: Kernel, parent: int, child: int, idx: int) -> None:
    """The oracle's side of a PMD copied to the child: each page's shadow, after the
    flush (the parent's value at each address is final)."""
    start = pm.pmd_addr_start(k, idx)
    for v in range(start, start + k.geo.ptes_per_table):
        k.set_shadow(child, v, k.shadow(parent, v))


def copy_huge_pmd(
    k: Kernel, a: Actor, parent: int, child: int, idx: int, src_vma: int, dst_flags: int
) -> Path:
    """``copy_huge_pmd()`` (7.0 mm/huge_memory.c 1849) for PMD ``idx``: 0 when the PMD
    was copied (or need not be: a VMA that is not anonymous refaults), -EAGAIN when the
    caller must copy PTEs (the PMD is no longer huge under the lock, or the folio may be
    pinned: the parent's PMD is split first, ``__split_huge_pmd``).

    Under the child's PMD lock, then the parent's (``spin_lock_nested``), the PMD is
    read again: a PMD migration entry or a device-private PMD is
    :func:`copy_huge_non_present_pmd`; a huge present PMD takes a folio reference and
    :func:`folio_try_dup_anon_rmap_pmd` (on -EBUSY the reference is dropped, both locks
    released, the parent's PMD split), then ``pmdp_set_wrprotect`` in the parent
    (atomic: the hardware walk may set young / dirty meanwhile) and the old,
    write-protected, uffd-wp-cleared copy in the child. No special or huge-zero PMDs
    (the model has neither); ``pte_alloc_one`` of the deposited table cannot fail. The
    model flushes the parent's huge translation before it drops the PMD lock, as its
    ``copy_pte_range`` does (see the module docstring)."""
    site = "copy_huge_pmd"
    if not dst_flags & VM_ANON:
        return 0  # "Skip if can be re-fill on fault"
    dst_ptl = yield from pm.pmd_lock(k, a, child, idx, site + ":dst_ptl")
    src_ptl = pm.pmd_lockptr(k, parent, idx)
    yield from k.spin_lock(a, src_ptl, site + ":src_ptl")
    ret = EAGAIN
    pmd = pm.pmdp_get(k, parent, idx)
    kind = pmd & PTE_TYPE_MASK
    if kind in (PTE_MIGRATION, PTE_DEVICE_PRIVATE):
        copy_huge_non_present_pmd(k, a, parent, child, idx, pmd)
        pm.flush_pmd_tlb_range(k, parent, idx)
        _copy_pmd_shadow(k, parent, child, idx)
        ret = 0
    elif pm.pmd_trans_huge(pmd):
        head = pm.pmd_pfn(pmd)
        k.get_page(a, head, site + ":folio_get")
        if folio_try_dup_anon_rmap_pmd(k, head, child):
            # "Page maybe pinned: split and retry the fault on PTEs."
            fo.folio_put(k, a, head, site + ":folio_put")
            k.spin_unlock(a, src_ptl, site + ":src_ptl")
            k.spin_unlock(a, dst_ptl, site + ":dst_ptl")
            yield
            yield from split_huge_pmd(k, a, parent, src_vma, pm.pmd_addr_start(k, idx))
            return EAGAIN
        # pmdp_set_wrprotect(src_mm, addr, src_pmd)
        k.words.fetch_and(pm.pmd_w(k, parent, idx), ~PTE_WRITE)
        pm.flush_pmd_tlb_range(k, parent, idx)
        # the child's copy is the value read under the lock: pmd_wrprotect, pmd_mkold
        pm.set_pmd_at(k, child, idx, pmd & ~(PTE_WRITE | PTE_UFFD_WP | PTE_YOUNG))
        _copy_pmd_shadow(k, parent, child, idx)
        k.count("fork_copy_huge_pmd")
        ret = 0
    k.spin_unlock(a, src_ptl, site + ":src_ptl")
    k.spin_unlock(a, dst_ptl, site + ":dst_ptl")
    return ret


def copy_pmd_range(
    k: Kernel, a: Actor, parent: int, child: int, row: int, start: int, end: int,
    vflags: int,
) -> Path:
    """``copy_pmd_range()`` (7.0 mm/memory.c): per PMD of ``[start, end)``, a huge PMD
    (present, device-private or migration entry: ``pmd_is_huge``) goes to
    :func:`copy_huge_pmd`; -ENOMEM ends the copy, 0 skips the PMD, -EAGAIN falls through
    to the PTE copy. The generations without a PMD level (every geometry without
    ``thp``) copy PTEs only. The child's PMD becomes a table where the parent's is one
    (``pte_alloc_map_lock``). Returns 0 or :func:`copy_pte_range`'s error."""
    if not k.geo.thp:
        return (yield from copy_pte_range(k, a, parent, child, start, end, vflags))
    ppt = k.geo.ptes_per_table
    vpn = start
    while vpn < end:
        nxt = min((vpn // ppt + 1) * ppt, end)
        idx = vpn // ppt
        kind = pm.pmdp_get(k, parent, idx) & PTE_TYPE_MASK
        if kind in (PTE_PRESENT, PTE_DEVICE_PRIVATE, PTE_MIGRATION):
            err = yield from copy_huge_pmd(k, a, parent, child, idx, row, vflags)
            if err == ENOMEM:
                return ENOMEM
            if not err:
                yield
                vpn = nxt
                continue
            kind = pm.pmdp_get(k, parent, idx) & PTE_TYPE_MASK
        if kind == pm.PMD_TABLE and pm.pmd_none(pm.pmdp_get(k, child, idx)):
            pm.set_pmd_at(k, child, idx, pm.PMD_TABLE)  # pte_alloc_map_lock(dst_mm)
        ret = yield from copy_pte_range(k, a, parent, child, vpn, nxt, vflags)
        if ret:
            return ret
        vpn = nxt
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
            ret = yield from copy_pmd_range(k, a, parent, child, r, vs, ve, f)
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

__all__ = [
    "copy_huge_non_present_pmd",
    "copy_huge_pmd",
    "copy_pmd_range",
    "copy_present_page",
    "copy_present_ptes_batch",
    "copy_pte_range",
    "folio_pte_batch_flags",
    "folio_try_dup_anon_rmap_pmd",
    "folio_try_dup_anon_rmap_pte",
    "folio_try_dup_anon_rmap_ptes",
    "op_fork",
]

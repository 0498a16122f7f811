"""``mprotect()``: ``mm/mprotect.c`` of 7.0 (``do_mprotect_pkey`` → ``mprotect_fixup`` →
``change_protection`` → ``change_pte_range``), for the write permission of whole VMAs.

Under ``mmap_write_lock`` the VMA's ``VM_WRITE`` is set or cleared, then inside an
``MMU_NOTIFY_PROTECTION_VMA`` invalidation each page table is walked under its PTL:

- a present entry gets the new protection (``change_present_ptes``): losing write makes it
  read-only; gaining write makes it writable only where ``can_change_pte_writable()``
  allows it for a private anonymous mapping (``MM_CP_TRY_CHANGE_WRITABLE``: the page is
  anon-exclusive); otherwise the next write faults;
- a non-present entry (``change_softleaf_pte``): a writable migration entry becomes
  readable (readable-exclusive for an anonymous folio: "a protection check is difficult
  so just be safe and disable write"), a writable device-private entry readable; a
  device-exclusive entry, a swap entry, anything else stays as it is (a device-exclusive
  entry restored later takes ``vm_flags`` as they are then: ``restore_exclusive_pte``).

The TLB of each table is flushed before its PTL is dropped (the kernel flushes once at
the end, with ``inc_tlb_flush_pending`` keeping concurrent walkers honest; the stale-TLB
oracle is exact with the earlier flush, as fork's is).

Simplification (docs/internals.md): only whole VMAs (``[start, end)`` must be a union
of VMAs; anything else is -EINVAL), no VMA split or merge (``vma_modify_flags``), and
only ``PROT_WRITE`` changes (read stays).
"""

from __future__ import annotations

from ..actors import register_op
from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
    PTE_DEVICE_PRIVATE,
    PTE_EXCLUSIVE,
    PTE_MIGRATION,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    PTE_UFFD_WP,
    PTE_WRITE,
    V_FLAGS,
    VM_SHARED,
    VM_WRITE,
    PG_anon,
    PG_anon_exclusive,
)
from .mmu_notifier import (
    MMU_NOTIFY_PROTECTION_VMA,
    MmuNotifierRange,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
)
from .vma import _vw, vma_rows

EINVAL = -22


def change_pte_range(k: Kernel, a: Actor, mm: int, start: int, end: int, write: bool, vflags: int) -> Path:
    """``change_pte_range()`` over ``[start, end)`` of a VMA whose new flags are
    ``vflags``, one page table at a time."""
    ppt = k.geo.ptes_per_table
    site = "change_pte_range"
    vpn = start
    while vpn < end:
        tab_end = min((vpn // ppt + 1) * ppt, end)
        ptl = k.ptl_word(mm, vpn)
        yield from k.spin_lock(a, ptl, site + ":ptl")
        for v in range(vpn, tab_end):
            pte = k.pte_read(mm, v)
            kind = pte & PTE_TYPE_MASK
            new = pte
            if kind == PTE_PRESENT:
                pfn = pte >> PTE_PFN_SHIFT
                if not write:
                    new = pte & ~PTE_WRITE
                elif (
                    not vflags & VM_SHARED
                    and not pte & PTE_UFFD_WP
                    and k.test_flag(pfn, PG_anon)
                    and k.test_flag(pfn, PG_anon_exclusive)
                ):
                    new = pte | PTE_WRITE  # MM_CP_TRY_CHANGE_WRITABLE
            elif kind == PTE_MIGRATION and pte & PTE_WRITE:
                pfn = pte >> PTE_PFN_SHIFT
                new = pte & ~PTE_WRITE
                if k.test_flag(pfn, PG_anon):
                    new |= PTE_EXCLUSIVE  # make_readable_exclusive_migration_entry
            elif kind == PTE_DEVICE_PRIVATE and pte & PTE_WRITE:
                new = pte & ~PTE_WRITE  # make_readable_device_private_entry
            if new != pte:
                k.set_pte(mm, v, new)
        k.flush_tlb_range(mm, vpn, tab_end)
        k.spin_unlock(a, ptl, site + ":ptl")
        yield
        vpn = tab_end


def op_mprotect(k: Kernel, a: Actor, mm: int, start: int, end: int, write: int) -> Path:
    """``mprotect(start, end - start, PROT_READ | (PROT_WRITE if write))`` of whole VMAs.

    Returns 0, or -EINVAL when ``[start, end)`` is not exactly a union of VMAs.
    """
    yield from k.mmap_write_lock(a, mm, "mprotect:mmap_write_lock")
    try:
        rows = [(r, vs, ve, f) for r, vs, ve, f in vma_rows(k, mm) if vs < end and ve > start]
        covered = sum(ve - vs for _r, vs, ve, _f in rows)
        if not rows or any(vs < start or ve > end for _r, vs, ve, _f in rows) or covered != end - start:
            k.count("mprotect_einval")
            return EINVAL
        for r, vs, ve, f in rows:
            nf = (f | VM_WRITE) if write else (f & ~VM_WRITE)
            k.words.store(_vw(k, mm, r, V_FLAGS), nf)
            rng = MmuNotifierRange(MMU_NOTIFY_PROTECTION_VMA, mm, vs, ve)
            yield from mmu_notifier_invalidate_range_start(k, a, rng)
            yield from change_pte_range(k, a, mm, vs, ve, bool(write), nf)
            yield from mmu_notifier_invalidate_range_end(k, a, rng)
        k.count("mprotect")
        return 0
    finally:
        k.mmap_write_unlock(a, mm, "mprotect:mmap_write_unlock")


register_op("mprotect", op_mprotect)

__all__ = ["change_pte_range", "op_mprotect"]

"""The reverse map: who maps a page, and the walks that unmap and remap it.

Transcribes ``mm/rmap.c`` (``try_to_migrate()`` / ``try_to_migrate_one()``,
``folio_try_share_anon_rmap_pte()`` from ``include/linux/rmap.h``, seed 001) and
``mm/migrate.c`` (``remove_migration_ptes()`` / ``remove_migration_pte()``, seed 002).

The kernel finds the mappings of an anonymous folio by walking its ``anon_vma`` tree.
The model has no anon_vma: :func:`rmap_find` scans every mm's page table for entries
naming the pfn, vectorized over the numpy view. Like the kernel walk it is a racy
snapshot; every candidate is rechecked under its page-table lock before it is changed.
"""

from __future__ import annotations

import numpy as np

from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
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
    PG_anon,
    PG_anon_exclusive,
    PG_dirty,
    pte_encode,
)
from .mmu_notifier import (
    MMU_NOTIFY_CLEAR,
    MmuNotifierRange,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
)


def rmap_find(k: Kernel, pfn: int, kinds: tuple[int, ...]) -> list[tuple[int, int]]:
    """All (mm, vpn) whose entry is one of ``kinds`` and names ``pfn``, sorted.

    One vectorized pass finds the entries naming ``pfn`` (a handful at most); their types
    are then checked one by one, which is cheaper than building type masks over every
    entry of every mm.
    """
    flat = k.s.pte.reshape(-1)
    hits = np.flatnonzero((flat >> PTE_PFN_SHIFT) == pfn)
    if not len(hits):
        return []
    ppm = k.geo.pages_per_mm
    return [
        (i // ppm, i % ppm) for i in hits.tolist() if int(flat[i]) & PTE_TYPE_MASK in kinds
    ]


def folio_try_share_anon_rmap_pte(k: Kernel, a: Actor, pfn: int) -> bool:
    """``folio_try_share_anon_rmap_pte()`` (include/linux/rmap.h, seed 001).

    Called with the entry already cleared and flushed (A1-A2): if the page may be
    pinned (A3), fail with -EBUSY; otherwise clear ``PageAnonExclusive`` (A4). GUP-fast
    re-reads the entry after pinning (B3), so it either sees the cleared entry and backs
    off, or its pin is visible here.
    """
    if k.maybe_dma_pinned(pfn):
        k.count("share_anon_rmap_ebusy")
        return False
    k.clear_flag(pfn, PG_anon_exclusive)
    return True


def make_migration_entry(pfn: int, old: int, anon_exclusive: bool) -> int:
    """The migration entry that replaces ``old`` (``migrate_vma_collect_pmd`` and
    ``try_to_migrate_one``): writable, readable-exclusive or readable, and it keeps the
    young / dirty / soft-dirty / uffd-wp bits of the entry it replaces."""
    bits = 0
    if old & PTE_WRITE:
        bits |= PTE_WRITE
    elif anon_exclusive:
        bits |= PTE_EXCLUSIVE
    bits |= old & (PTE_YOUNG | PTE_DIRTY | PTE_SOFT_DIRTY | PTE_UFFD_WP)
    return pte_encode(PTE_MIGRATION, pfn, bits)


def try_to_migrate(k: Kernel, a: Actor, pfn: int, site: str = "try_to_migrate_one") -> Path:
    """``try_to_migrate()``: replace every mapping of a locked folio with a migration
    entry (mm/rmap.c ``try_to_migrate_one``). Stops at a mapping it cannot convert
    (an anon-exclusive page that may be pinned); the caller sees the folio still mapped.
    """
    for mm, vpn in rmap_find(k, pfn, (PTE_PRESENT, PTE_DEVICE_PRIVATE)):
        # 7.0 try_to_migrate_one(): an MMU_NOTIFY_CLEAR invalidation around the walk of
        # this mapping (no-op without notifiers on the mm).
        rng = MmuNotifierRange(MMU_NOTIFY_CLEAR, mm, vpn, vpn + 1)
        yield from mmu_notifier_invalidate_range_start(k, a, rng)
        ptl = k.ptl_word(mm, vpn)
        yield from k.spin_lock(a, ptl, site + ":ptl")
        old = k.pte_read(mm, vpn)
        kind = old & PTE_TYPE_MASK
        if (kind != PTE_PRESENT and kind != PTE_DEVICE_PRIVATE) or old >> PTE_PFN_SHIFT != pfn:
            k.spin_unlock(a, ptl, site + ":ptl")
            yield from mmu_notifier_invalidate_range_end(k, a, rng)
            yield
            continue
        old = k.ptep_get_and_clear(mm, vpn)
        k.flush_tlb_range(mm, vpn, vpn + 1)
        anon_exclusive = k.test_flag(pfn, PG_anon_exclusive)
        if anon_exclusive and not folio_try_share_anon_rmap_pte(k, a, pfn):
            k.set_pte(mm, vpn, old)
            k.spin_unlock(a, ptl, site + ":ptl")
            yield from mmu_notifier_invalidate_range_end(k, a, rng)
            return False
        if old & PTE_DIRTY:
            k.set_flag(pfn, PG_dirty)
        k.set_pte(mm, vpn, make_migration_entry(pfn, old, anon_exclusive))
        k.mapcount_add(pfn, -1)
        k.put_page(a, pfn, site)
        k.spin_unlock(a, ptl, site + ":ptl")
        yield from mmu_notifier_invalidate_range_end(k, a, rng)
        yield
    return True


def remove_migration_ptes(
    k: Kernel, a: Actor, src: int, dst: int, site: str = "remove_migration_pte"
) -> Path:
    """``remove_migration_ptes(src, dst)`` (mm/migrate.c): every migration entry that
    names ``src`` becomes a mapping of ``dst``: a present entry for system RAM and
    device-coherent memory, a device-private entry for device-private memory. The write
    bit comes from the migration entry; a writable or readable-exclusive entry makes the
    anonymous page exclusive again (``RMAP_EXCLUSIVE``).
    """
    dst_private = k.is_device_private(dst)
    # The kernel's walk visits a forked child's VMA after its parent's (anon_vma_fork
    # links it at the tail), and mremap moves entries under both PTLs, so a migration
    # entry copied or moved while the walk runs is still found. The model's snapshot
    # rescans after each pass until no entry names src.
    todo = rmap_find(k, src, (PTE_MIGRATION,))
    while todo:
        mm, vpn = todo.pop(0)
        ptl = k.ptl_word(mm, vpn)
        yield from k.spin_lock(a, ptl, site + ":ptl")
        old = k.pte_read(mm, vpn)
        if old & PTE_TYPE_MASK == PTE_MIGRATION and old >> PTE_PFN_SHIFT == src:
            k.get_page(a, dst, site)
            bits = old & (PTE_WRITE | PTE_SOFT_DIRTY | PTE_UFFD_WP)
            if dst_private:
                new = pte_encode(PTE_DEVICE_PRIVATE, dst, bits)
            else:
                bits |= old & (PTE_YOUNG | PTE_DIRTY)
                new = pte_encode(PTE_PRESENT, dst, bits)
            if k.test_flag(dst, PG_anon) and old & (PTE_WRITE | PTE_EXCLUSIVE):
                k.set_flag(dst, PG_anon_exclusive)
            k.mapcount_add(dst, 1)
            k.set_pte(mm, vpn, new)
        k.spin_unlock(a, ptl, site + ":ptl")
        yield
        if not todo:
            todo = rmap_find(k, src, (PTE_MIGRATION,))

"""Device-memory migration as in today's ``mm/migrate_device.c`` (seed 000): the ``v6``
protocol.

The driver API is split in three: :func:`migrate_vma_setup` (argument checks, collect,
unmap), then the driver allocates and copies, :func:`migrate_vma_pages`, the driver
updates its own page table, :func:`migrate_vma_finalize`. Eviction without a VMA uses
:func:`migrate_device_range` / :func:`migrate_device_pfns`, then
:func:`migrate_device_pages` and :func:`migrate_device_finalize`.

The ``src`` / ``dst`` arrays hold ``migrate_pfn(pfn) | MIGRATE_PFN_*`` words as in
``include/linux/migrate.h``. Older protocol generations (``hmm-2017``, ``v5.0``) differ
in collect, prepare and the page check; where they do, the variant object decides
(``core/variants.py``) and the shared steps stay here.

The ``v7`` generation (Linux 7.0, device-private THP: ``SELECT_COMPOUND``,
``MIGRATE_PFN_COMPOUND``, ``migrate_vma_collect_huge_pmd``, ``migrate_vma_split_folio``,
compound pages and finalize) is in the ``*_v7`` functions at the end of this module; the
public entry points (``migrate_vma_setup``, ``migrate_vma_pages``,
``migrate_vma_finalize``, ``migrate_device_range`` / ``_pfns`` / ``_pages`` /
``_finalize``) hand over to them when the variant has ``large_folios``. v6 (seed 000)
keeps every folio a single page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..machine import pmd as pm
from ..machine.errors import FailureKind
from ..machine.folio import (
    folio_add_new_anon_rmap,
    folio_mapcount,
    folio_mapped,
    folio_nr_pages,
    folio_order,
    folio_put,
    folio_ref_count,
    folio_test_large,
    page_folio,
    page_is_tail,
)
from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
    PTE_DEVICE_PRIVATE,
    PTE_DIRTY,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    PTE_WRITE,
    PTE_YOUNG,
    VM_ANON,
    VM_HUGETLB,
    VM_SHARED,
    VM_SPECIAL,
    VM_WRITE,
    Z_DEVICE,
    Z_DEVICE_COHERENT,
    Z_DEVICE_PRIVATE,
    Z_DEVID_MASK,
    Z_DEVID_SHIFT,
    PG_anon,
    PG_anon_exclusive,
    PG_dirty,
    PG_head,
    PG_isolated,
    PG_lru,
    PG_pagecache,
    PG_swapcache,
    PG_uptodate,
    mapping_encode,
    pte_encode,
)
from ..oracles.folio import check_collected, check_no_migration_entries
from .huge_memory import (
    folio_split_unmapped,
    remove_migration_ptes_large,
    set_pmd_migration_entry,
    split_folio,
    split_huge_pmd,
    try_to_migrate_large,
)
from .memory import check_stable_address_space
from .mmu_notifier import (
    MMU_NOTIFY_MIGRATE,
    MmuNotifierRange,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
)
from .rmap import (
    folio_copy_mapping,
    folio_set_anon,
    folio_try_share_anon_rmap_pte,
    linear_page_index,
    make_migration_entry,
    remove_migration_ptes,
    try_to_migrate,
)

# include/linux/migrate.h
MIGRATE_PFN_VALID = 1 << 0
MIGRATE_PFN_MIGRATE = 1 << 1
MIGRATE_PFN_LOCKED = 1 << 2  # hmm-2017 and v5.0 only
MIGRATE_PFN_WRITE = 1 << 3
MIGRATE_PFN_DEVICE = 1 << 4  # hmm-2017 and v5.0 only
MIGRATE_PFN_ERROR = 1 << 5  # hmm-2017 and v5.0 only; kept by the model for copy errors
MIGRATE_PFN_SHIFT = 6

# enum migrate_vma_direction
MIGRATE_VMA_SELECT_SYSTEM = 1 << 0
MIGRATE_VMA_SELECT_DEVICE_PRIVATE = 1 << 1
MIGRATE_VMA_SELECT_DEVICE_COHERENT = 1 << 2

EINVAL = -22
EBUSY = -16
ENOMEM = -12
EAGAIN = -11
ENOENT = -2


def migrate_pfn(pfn: int) -> int:
    return (pfn << MIGRATE_PFN_SHIFT) | MIGRATE_PFN_VALID


def migrate_pfn_to_page(mpfn: int) -> int:
    """The pfn of a src/dst word, or -1 when it has no valid page."""
    if not mpfn & MIGRATE_PFN_VALID:
        return -1
    return mpfn >> MIGRATE_PFN_SHIFT


@dataclass
class MigrateVma:
    """``struct migrate_vma``: one migration of ``[start, end)`` of ``mm``.

    ``vma`` is the VMA row, -1 for none (the ``-EINVAL`` check). ``fault_page`` is the
    device page a ``migrate_to_ram`` handler migrates (it holds a reference), or -1.
    ``fault_folio`` is the page whose lock the caller already holds (collect does not
    trylock it and finalize does not unlock it): the fault page in 6.15+, none before.
    """

    mm: int
    vma: int
    start: int
    end: int
    flags: int = MIGRATE_VMA_SELECT_SYSTEM
    pgmap_owner: int = -1
    fault_page: int = -1
    src: list[int] = field(default_factory=list)
    dst: list[int] = field(default_factory=list)
    npages: int = 0
    cpages: int = 0
    kind: str = "to_device"
    fault_folio: int = -1

    def __post_init__(self) -> None:
        n = max(self.end - self.start, 0)
        if not self.src:
            self.src = [0] * n
        if not self.dst:
            self.dst = [0] * n


# ------------------------------------------------------------------------------------
# setup


def vma_is_anonymous(vflags: int) -> bool:
    """``vma_is_anonymous()``: a private anonymous VMA. A ``VM_SHARED`` anonymous VMA is
    shmem in the kernel (``MAP_SHARED | MAP_ANONYMOUS``: ``shmem_zero_setup``), which the
    model keeps as anonymous pages in a shared VMA (docs/internals.md)."""
    return bool(vflags & VM_ANON) and not vflags & VM_SHARED


def bad_migrate_range(k: Kernel, m: MigrateVma) -> bool:
    """The range checks every generation's driver entry makes (``migrate_vma_setup()``;
    ``migrate_vma()`` of seeds 004 and 002) before it returns ``-EINVAL``: no VMA, a
    hugetlb or special VMA, an empty range, or one not inside the VMA."""
    if m.vma < 0:
        return True
    vflags = k.s.vma_flags(m.mm, m.vma)
    vstart, vend = k.s.vma_bounds(m.mm, m.vma)
    if vflags & (VM_HUGETLB | VM_SPECIAL):
        return True
    if m.end - m.start <= 0:
        return True
    if m.start < vstart or m.start >= vend:
        return True
    return m.end <= vstart or m.end > vend


def migrate_vma_setup(k: Kernel, a: Actor, m: MigrateVma) -> Path:
    """``migrate_vma_setup()``: check the arguments, then collect and unmap.

    Returns (the path's result) 0 or ``-EINVAL``. The caller holds ``mmap_read_lock``.
    Forwards: a plain function returning the generation's path (v6:
    :func:`migrate_vma_setup_v6`; v7: :func:`migrate_vma_setup_v7`), no frame of its own
    at each point of collect and unmap.
    """
    if k.variant.large_folios:  # v7: 7.0's setup
        return migrate_vma_setup_v7(k, a, m)
    return migrate_vma_setup_v6(k, a, m)


def migrate_vma_setup_v6(k: Kernel, a: Actor, m: MigrateVma) -> Path:
    """``migrate_vma_setup()`` of v6 (seed 000, single pages): the argument checks, then
    the variant's collect and unmap. (No preemption point of its own: never the
    innermost function of a step.)"""
    if bad_migrate_range(k, m):
        return EINVAL
    if m.fault_page >= 0 and not k.is_device_private(m.fault_page):
        return EINVAL
    if (
        m.fault_page >= 0
        and k.variant_checks_fault_page_locked()
        and not k.page_locked(m.fault_page)
    ):
        return EINVAL
    m.npages = 0
    m.cpages = 0
    yield from k.variant.collect(k, a, m)
    yield from k.variant.unmap(k, a, m)
    return 0


def _selected_present(k: Kernel, m: MigrateVma, pfn: int) -> bool:
    """Whether a present page is one ``m``'s ``flags`` select (system RAM, or a
    device-coherent page of our owner). :func:`collected_mpfn` has it inlined: keep the
    two the same."""
    if k.is_zone_device(pfn):
        return bool(
            m.flags & MIGRATE_VMA_SELECT_DEVICE_COHERENT
            and k.is_device_coherent(pfn)
            and k.device_of(pfn) == m.pgmap_owner
        )
    return bool(m.flags & MIGRATE_VMA_SELECT_SYSTEM)


def collected_mpfn(k: Kernel, m: MigrateVma, pte: int, device_flag: int) -> int:
    """The src word every generation's collect gives a page-table entry that is not a
    hole: a device-private entry of our owner (with ``device_flag``:
    ``MIGRATE_PFN_DEVICE`` before v6, HMM 14/15; 0 in v6) or a selected present page
    gets ``migrate_pfn(pfn) | MIGRATE`` (``| WRITE`` for a writable entry); anything
    else (another owner's or an unselected page, migration and swap entries) 0: not
    ours to migrate."""
    kind = pte & PTE_TYPE_MASK
    pfn = pte >> PTE_PFN_SHIFT
    # Hot (every page collected): is_zone_device / is_device_coherent / device_of are
    # inlined as one read of the frame's flags word (its zone bits never change).
    if kind == PTE_DEVICE_PRIVATE:
        if not m.flags & MIGRATE_VMA_SELECT_DEVICE_PRIVATE:
            return 0
        f = k.flags(pfn)
        owner = (f & Z_DEVID_MASK) >> Z_DEVID_SHIFT if f & Z_DEVICE else -1  # device_of
        if owner != m.pgmap_owner:
            return 0
        # migrate_pfn(pfn), inlined here and below (hot: every page collected)
        mpfn = (pfn << MIGRATE_PFN_SHIFT) | MIGRATE_PFN_VALID | device_flag | MIGRATE_PFN_MIGRATE
    elif kind == PTE_PRESENT:
        # _selected_present(k, m, pfn), inlined
        f = k.flags(pfn)
        if f & Z_DEVICE:
            if not (
                m.flags & MIGRATE_VMA_SELECT_DEVICE_COHERENT
                and f & Z_DEVICE_COHERENT
                and (f & Z_DEVID_MASK) >> Z_DEVID_SHIFT == m.pgmap_owner
            ):
                return 0
        elif not m.flags & MIGRATE_VMA_SELECT_SYSTEM:
            return 0
        mpfn = (pfn << MIGRATE_PFN_SHIFT) | MIGRATE_PFN_VALID | MIGRATE_PFN_MIGRATE
    else:
        return 0
    if pte & PTE_WRITE:
        mpfn |= MIGRATE_PFN_WRITE
    return mpfn


def set_migration_entry(
    k: Kernel, a: Actor, m: MigrateVma, vpn: int, pfn: int, old: int, anon_exclusive: bool,
    put_site: str,
) -> None:
    """What v6's collect does with a page it locked once it has cleared its entry
    (``old``): the dirty bit goes to the page (``folio_mark_dirty``, since 6.1), a
    migration entry takes the mapping's place, which drops its mapcount
    (``folio_remove_rmap_pte``) and the reference collect took (put at ``put_site``).
    v5.0's collect does what seed 002 says instead
    (:func:`~pagerace.core.mm.migrate_v50.collect_migration_entry_v50`)."""
    if old & PTE_DIRTY:
        k.set_flag(pfn, PG_dirty)
    k.set_pte(m.mm, vpn, make_migration_entry(pfn, old, anon_exclusive))
    k.mapcount_add(pfn, -1)
    k.put_page(a, pfn, put_site)


def migrate_vma_collect(k: Kernel, a: Actor, m: MigrateVma) -> Path:
    """``migrate_vma_collect()`` → ``migrate_vma_collect_pmd()`` (v6).

    Under the page-table lock, for each entry: a hole in an anonymous VMA is marked
    ``MIGRATE``; a device-private entry of our owner or a selected present page gets a
    reference and, if ``fault_folio == folio || folio_trylock(folio)``, a migration
    entry at once (clearing ``PageAnonExclusive`` first, or skipping the page when it
    may be pinned). A page we cannot lock is skipped: migration is best effort.
    """
    s = k.s
    vflags = s.vma_flags(m.mm, m.vma)
    anon = vma_is_anonymous(vflags)
    ppt = k.geo.ptes_per_table
    fault_folio = m.fault_folio
    if "no-fault-folio-exception" in k.bugs:
        fault_folio = -1
    # 7.0: the walk is bracketed by an MMU_NOTIFY_MIGRATE invalidation with the
    # migration's pgmap_owner (a driver skips its own device's pages).
    rng = MmuNotifierRange(MMU_NOTIFY_MIGRATE, m.mm, m.start, m.end, m.pgmap_owner)
    yield from mmu_notifier_invalidate_range_start(k, a, rng)
    i = 0
    vpn = m.start
    while vpn < m.end:
        tab_end = min((vpn // ppt + 1) * ppt, m.end)
        ptl = k.ptl_word(m.mm, vpn)
        yield from k.spin_lock(a, ptl, "migrate_vma_collect_pmd:ptl")
        lo = vpn
        while vpn < tab_end:
            pte = k.pte_read(m.mm, vpn)
            kind = pte & PTE_TYPE_MASK
            mpfn = 0
            if kind == PTE_NONE:
                if anon:
                    mpfn = MIGRATE_PFN_MIGRATE
                    m.cpages += 1
                    k.outcome(m.kind, "hole_collected")
                m.src[i] = mpfn
                m.dst[i] = 0
                i += 1
                vpn += 1
                continue
            pfn = pte >> PTE_PFN_SHIFT
            mpfn = collected_mpfn(k, m, pte, 0)
            if not mpfn:
                m.src[i] = 0
                i += 1
                vpn += 1
                continue
            k.get_page(a, pfn, "migrate_vma_collect_pmd:folio_get")
            if fault_folio == pfn or k.trylock_page(a, pfn, "migrate_vma_collect_pmd:folio_trylock"):
                # 7.0: "anon_exclusive = folio_test_anon(folio) && PageAnonExclusive(page)"
                # for a device-private page too; folio_try_share_anon_rmap_pte() clears
                # it (a device-private folio cannot be pinned) and the migration entry of
                # a read-only mapping is readable-exclusive, so the restore or the new
                # page is exclusive again.
                anon_exclusive = k.test_flag(pfn, PG_anon) and k.test_flag(
                    pfn, PG_anon_exclusive
                )
                if anon_exclusive:
                    old = k.ptep_get_and_clear(m.mm, vpn)  # ptep_clear_flush
                    k.flush_tlb_range(m.mm, vpn, vpn + 1)
                    if not folio_try_share_anon_rmap_pte(k, a, pfn):
                        k.set_pte(m.mm, vpn, old)
                        if fault_folio != pfn:
                            k.unlock_page(a, pfn, "migrate_vma_collect_pmd:folio_unlock")
                        k.put_page(a, pfn, "migrate_vma_collect_pmd:folio_put")
                        k.outcome(m.kind, "pinned")
                        m.src[i] = 0
                        i += 1
                        vpn += 1
                        yield
                        continue
                else:
                    old = k.ptep_get_and_clear(m.mm, vpn)
                set_migration_entry(
                    k, a, m, vpn, pfn, old, anon_exclusive, "migrate_vma_collect_pmd:folio_put"
                )
                m.cpages += 1
            else:
                k.put_page(a, pfn, "migrate_vma_collect_pmd:folio_put")
                k.outcome(m.kind, "lock_contended")
                mpfn = 0
            m.src[i] = mpfn
            m.dst[i] = 0
            i += 1
            vpn += 1
            yield
        k.flush_tlb_range(m.mm, lo, tab_end)
        k.spin_unlock(a, ptl, "migrate_vma_collect_pmd:ptl")
        yield
    yield from mmu_notifier_invalidate_range_end(k, a, rng)
    m.npages = i


def page_refs_beyond_mappings(k: Kernel, pfn: int, fault_page: int) -> bool:
    """The refcount test every generation's ``migrate_vma_check_page`` makes (present
    since seed 004): one extra reference is the caller's (isolation or collect), one
    more if this is the fault page, one more for ZONE_DEVICE; anything beyond the
    mappings means a pin."""
    extra = 1 + (1 if pfn == fault_page else 0)
    if k.is_zone_device(pfn):
        extra += 1
    return k.ref_count(pfn) - extra > k.mapcount(pfn)


def migrate_vma_check_page(k: Kernel, pfn: int, fault_page: int) -> bool:
    """``migrate_vma_check_page(page, fault_page)`` (v6, seed 000): refuse pinned pages
    (:func:`page_refs_beyond_mappings`). The catalog toggle ``check-ignores-pins``
    drops the refcount test."""
    if "check-ignores-pins" in k.bugs:
        return True
    return not page_refs_beyond_mappings(k, pfn, fault_page)


def folio_isolate_lru(k: Kernel, a: Actor, pfn: int) -> bool:
    """``folio_isolate_lru()``: take the folio off the LRU with a reference."""
    if k.test_clear_flag(pfn, PG_lru):
        k.get_page(a, pfn, "folio_isolate_lru")
        k.set_flag(pfn, PG_isolated)
        return True
    return False


def folio_putback_lru(k: Kernel, a: Actor, pfn: int, site: str) -> None:
    """``folio_putback_lru()``: back on the LRU, dropping the isolation reference."""
    k.clear_flag(pfn, PG_isolated)
    k.set_flag(pfn, PG_lru)
    k.put_page(a, pfn, site)


def migrate_device_unmap(
    k: Kernel, a: Actor, src: list[int], fault_page: int, kind: str, fault_folio: int = -1
) -> Path:
    """``migrate_device_unmap()``: drain this CPU's LRU-add batch, isolate (draining
    every CPU's batch at the first folio not on the LRU), unmap what is still mapped,
    check for pins, and restore (``remove_migration_ptes(folio, folio)``) the pages that
    cannot move. Returns the number of entries still marked ``MIGRATE``."""
    restore = 0
    unmapped = 0
    allow_drain = True
    k.lru_add_drain(a, "migrate_device_unmap:lru_add_drain")
    for i, mpfn in enumerate(src):
        # migrate_pfn_to_page(), inlined (hot: every page of every step)
        pfn = mpfn >> MIGRATE_PFN_SHIFT if mpfn & MIGRATE_PFN_VALID else -1
        if pfn < 0:
            if mpfn & MIGRATE_PFN_MIGRATE:
                unmapped += 1
            continue
        if not k.is_zone_device(pfn):
            if not k.test_flag(pfn, PG_lru) and allow_drain:
                # Drain CPU's lru cache, with every collected folio locked.
                yield from k.lru_add_drain_all(a, "migrate_device_unmap:lru_add_drain_all")
                allow_drain = False
            if not folio_isolate_lru(k, a, pfn):
                src[i] &= ~MIGRATE_PFN_MIGRATE
                restore += 1
                k.outcome(kind, "not_isolated")
                continue
            k.put_page(a, pfn, "migrate_device_unmap:folio_put")  # the reference collect took
        if k.mapcount(pfn) > 0:
            yield from try_to_migrate(k, a, pfn)
        if k.mapcount(pfn) > 0 or not k.variant.check_page(k, pfn, fault_page):
            if not k.is_zone_device(pfn):
                k.get_page(a, pfn, "migrate_device_unmap:folio_get")
                folio_putback_lru(k, a, pfn, "migrate_device_unmap:putback")
            src[i] &= ~MIGRATE_PFN_MIGRATE
            restore += 1
            k.outcome(kind, "pinned")
            continue
        unmapped += 1
        yield
    yield from restore_unmoved(
        k, a, src, len(src), restore, fault_folio, kind,
        unlock="migrate_device_unmap:folio_unlock", put="migrate_device_unmap:restore_put",
    )
    return unmapped


def restore_unmoved(
    k: Kernel,
    a: Actor,
    src: list[int],
    npages: int,
    restore: int,
    fault_folio: int,
    kind: str,
    unlock: str,
    put: str,
    putback: str | None = None,
) -> Path:
    """The restore loop every generation's unmap (and v5.0's prepare) ends with: each of
    the first ``npages`` entries with a page that lost ``MIGRATE`` (``restore`` of them)
    gets its migration entries removed (``remove_migration_ptes(folio, folio)``), its
    src word cleared, its lock dropped (not ``fault_folio``'s) and its reference put.

    ``unlock`` / ``put`` are the call sites. ``putback``: seed 004's unmap (kept by
    seed 002) puts a system page back on the LRU (``putback_lru_page``, at that site)
    instead of dropping the reference; v6 and v5.0's prepare drop it."""
    for i in range(npages):
        if not restore:
            break
        # migrate_pfn_to_page(), inlined (hot: every page of every step)
        pfn = src[i] >> MIGRATE_PFN_SHIFT if src[i] & MIGRATE_PFN_VALID else -1
        if pfn < 0 or src[i] & MIGRATE_PFN_MIGRATE:
            continue
        yield from remove_migration_ptes(k, a, pfn, pfn)
        src[i] = 0
        if pfn != fault_folio:
            k.unlock_page(a, pfn, unlock)
        if putback is not None and not k.is_zone_device(pfn):
            folio_putback_lru(k, a, pfn, putback)
        else:
            k.put_page(a, pfn, put)
        k.outcome(kind, "restored")
        restore -= 1
        yield


def migrate_vma_unmap(k: Kernel, a: Actor, m: MigrateVma) -> Path:
    """``migrate_vma_unmap()``."""
    m.cpages = yield from migrate_device_unmap(
        k, a, m.src, m.fault_page, m.kind, m.fault_folio
    )


# ------------------------------------------------------------------------------------
# pages


def migrate_vma_insert_page(k: Kernel, a: Actor, m: MigrateVma, i: int, page: int) -> Path:
    """``migrate_vma_insert_page()``: map a new page at a hole, as do_anonymous_page
    would, unless the entry changed meanwhile or (7.0, and since 5.6: not in the older
    generations, ``Variant.stable_check_insert``; the catalog toggle
    ``insert-no-stable-check`` removes it from ``v6``) the OOM reaper has made the mm
    unstable (``check_stable_address_space`` under the PTL): then the hole is not
    migrated."""
    s = k.s
    vpn = m.start + i
    vflags = s.vma_flags(m.mm, m.vma)
    if not vflags & VM_ANON:
        m.src[i] &= ~MIGRATE_PFN_MIGRATE
        return
    ptl = k.ptl_word(m.mm, vpn)
    yield from k.spin_lock(a, ptl, "migrate_vma_insert_page:ptl")
    if (
        k.variant.stable_check_insert
        and "insert-no-stable-check" not in k.bugs
        and check_stable_address_space(k, m.mm)
    ):
        # 7.0 (5.6+): an OOM-reaped mm gets no new page (goto unlock_abort).
        k.spin_unlock(a, ptl, "migrate_vma_insert_page:ptl")
        m.src[i] &= ~MIGRATE_PFN_MIGRATE
        k.outcome(m.kind, "unstable_mm")
        return
    if k.pte_read(m.mm, vpn) != 0:
        k.spin_unlock(a, ptl, "migrate_vma_insert_page:ptl")
        m.src[i] &= ~MIGRATE_PFN_MIGRATE
        k.outcome(m.kind, "hole_populated")
        return
    k.set_flag(page, PG_anon | PG_anon_exclusive | PG_uptodate)
    folio_set_anon(k, page, m.mm, vpn)  # folio_add_new_anon_rmap
    if not k.is_zone_device(page):
        k.set_flag(page, PG_lru)
    k.mapcount_add(page, 1)
    k.get_page(a, page, "migrate_vma_insert_page:folio_get")
    write = bool(vflags & VM_WRITE)
    if k.is_device_private(page):
        entry = pte_encode(PTE_DEVICE_PRIVATE, page, PTE_WRITE if write else 0)
    else:
        entry = pte_encode(
            PTE_PRESENT, page, (PTE_WRITE | PTE_DIRTY | PTE_YOUNG) if write else PTE_YOUNG
        )
    k.set_pte(m.mm, vpn, entry)
    k.spin_unlock(a, ptl, "migrate_vma_insert_page:ptl")
    m.src[i] = MIGRATE_PFN_MIGRATE
    yield


def folio_migrate_mapping(k: Kernel, a: Actor, new: int, old: int, extra: int) -> Path:
    """``__folio_migrate_mapping()`` (7.0) / ``migrate_page_move_mapping()`` (seeds 002,
    004) for an anonymous folio without a mapping: the reference count must be exactly
    the expected one (1 + ``extra``), else -EAGAIN; it is compared, not frozen ("Anonymous
    page without mapping": every generation), and the new folio takes the old one's
    mapping and index ("No turning back from here").

    With the catalog bug ``move-mapping-no-freeze`` the compare and the switch are apart
    (a preemption point between them): the toggle's window, which for this case the
    kernel also has without a freeze, harmless because the folio is locked and unmapped
    (a speculative reference re-checks the entry and drops). The toggle is real for the
    mapping case (``core/mm/filemap.py``), which freezes.
    """
    expected = 1 + extra
    if k.ref_count(old) != expected:
        return EAGAIN
    if "move-mapping-no-freeze" in k.bugs:
        yield  # the window between the compare and the switch
    folio_copy_mapping(k, new, old)
    return 0


def folio_migrate_flags(k: Kernel, new: int, old: int) -> None:
    """``folio_migrate_flags()``: the new page takes over the old page's state."""
    f = k.flags(old)
    # folio_mark_uptodate, folio_set_anon (the mapping), folio_set_dirty and (with the
    # test-only fault) the swap-cache bit: no preemption point between them, one fetch_or
    # of their union (hot: every page migrated).
    new_flags = PG_uptodate | (f & (PG_anon | PG_dirty))
    if f & PG_swapcache and "swapcache_moves" in k.faults:
        new_flags |= PG_swapcache
    k.set_flag(new, new_flags)


def migrate_device_pages_common(
    k: Kernel, a: Actor, src: list[int], dst: list[int], m: MigrateVma | None, kind: str
) -> Path:
    """``__migrate_device_pages()``: move each page's metadata from src to dst."""
    fault_page = m.fault_page if m is not None else -1
    notified: MmuNotifierRange | None = None
    for i in range(len(src)):
        # migrate_pfn_to_page(), inlined (hot: every page of every step); src[i] and
        # dst[i] read once (nothing changes them before the branches below)
        s = src[i]
        d = dst[i]
        new = d >> MIGRATE_PFN_SHIFT if d & MIGRATE_PFN_VALID else -1
        page = s >> MIGRATE_PFN_SHIFT if s & MIGRATE_PFN_VALID else -1
        if new < 0:
            if s & MIGRATE_PFN_MIGRATE:
                k.outcome(kind, "no_destination")
            src[i] = s & ~MIGRATE_PFN_MIGRATE
            continue
        if page < 0:
            if not s & MIGRATE_PFN_MIGRATE:
                continue
            if m is None:
                raise k.fail(
                    FailureKind.BUG_ON,
                    "a hole in a migration without a VMA (VM_BUG_ON(!migrate))",
                    actors=[a],
                    sites=["migrate_device_pages"],
                )
            if notified is None:
                # 7.0: the holes' insertion is one MMU_NOTIFY_MIGRATE invalidation
                # from the first hole to the end, with the owner.
                notified = MmuNotifierRange(
                    MMU_NOTIFY_MIGRATE, m.mm, m.start + i, m.end, m.pgmap_owner
                )
                yield from mmu_notifier_invalidate_range_start(k, a, notified)
            yield from migrate_vma_insert_page(k, a, m, i, new)
            if src[i] & MIGRATE_PFN_MIGRATE:
                k.outcome(kind, "migrated_hole")
            continue
        # is_zone_device / is_device_private / is_device_coherent (new), inlined: one
        # read of the frame's flags word (hot: every page migrated; its zone bits never
        # change)
        zf = k.flags(new)
        devmem = zf & (Z_DEVICE_PRIVATE | Z_DEVICE_COHERENT)
        if zf & Z_DEVICE and not devmem:
            src[i] &= ~MIGRATE_PFN_MIGRATE
            continue
        if m is not None and devmem and k.s.vma_flags(m.mm, m.vma) & VM_SHARED:
            # 7.0: "if (mapping) { /* For now only support anonymous memory migrating to
            # device private or coherent memory. */ if (!folio_test_anon(folio) || ...)"
            # A VM_SHARED page is shmem in the kernel (folio_mapping set, not anon).
            src[i] &= ~MIGRATE_PFN_MIGRATE
            k.outcome(kind, "shared_mapping")
            continue
        extra = 1 if (m is not None and fault_page == page) else 0
        r = yield from folio_migrate_mapping(k, a, new, page, extra)
        if r:
            src[i] &= ~MIGRATE_PFN_MIGRATE
            k.outcome(kind, "refcount_changed")
        else:
            folio_migrate_flags(k, new, page)
        yield
    if notified is not None:
        yield from mmu_notifier_invalidate_range_end(k, a, notified)


def migrate_vma_pages(k: Kernel, a: Actor, m: MigrateVma) -> Path:
    """``migrate_vma_pages()``."""
    # Forwards (a plain function returning the path: no frame of its own).
    if k.variant.large_folios:  # v7
        return migrate_device_pages_v7(k, a, m.src, m.dst, m.npages, m, m.kind)
    return migrate_device_pages_common(k, a, m.src, m.dst, m, m.kind)


def migrate_device_pages(k: Kernel, a: Actor, src: list[int], dst: list[int], kind: str) -> Path:
    """``migrate_device_pages()``: the same without a VMA (eviction)."""
    # Forwards (a plain function returning the path: no frame of its own).
    if k.variant.large_folios:  # v7
        return migrate_device_pages_v7(k, a, src, dst, len(src), None, kind)
    return migrate_device_pages_common(k, a, src, dst, None, kind)


# ------------------------------------------------------------------------------------
# finalize


def migrate_device_finalize_common(
    k: Kernel, a: Actor, src: list[int], dst: list[int], fault_folio: int, kind: str
) -> Path:
    """``__migrate_device_finalize()``: point the entries at the new pages (or back at
    the old ones), unlock both, put the old page back on the LRU or drop it."""
    for i in range(len(src)):
        # migrate_pfn_to_page(), inlined (hot: every page of every step); src[i] and
        # dst[i] read once (nothing changes them in this loop)
        s = src[i]
        d = dst[i]
        dpage = d >> MIGRATE_PFN_SHIFT if d & MIGRATE_PFN_VALID else -1
        spage = s >> MIGRATE_PFN_SHIFT if s & MIGRATE_PFN_VALID else -1
        if spage < 0:
            if dpage >= 0:
                k.unlock_page(a, dpage, "migrate_device_finalize:unlock_dst")
                k.put_page(a, dpage, "migrate_device_finalize:put_dst")
            continue
        if not s & MIGRATE_PFN_MIGRATE or dpage < 0:
            if dpage >= 0:
                k.unlock_page(a, dpage, "migrate_device_finalize:unlock_dst")
                k.put_page(a, dpage, "migrate_device_finalize:put_dst")
                k.outcome(kind, "restored")
            dpage = spage
        else:
            k.outcome(kind, "migrated")
        yield from remove_migration_ptes(k, a, spage, dpage)
        if spage != fault_folio:
            k.unlock_page(a, spage, "migrate_device_finalize:unlock_src")
        if k.is_zone_device(spage):
            k.put_page(a, spage, "migrate_device_finalize:put_src")
        else:
            folio_putback_lru(k, a, spage, "migrate_device_finalize:putback_src")
        if dpage != spage:
            k.unlock_page(a, dpage, "migrate_device_finalize:unlock_dst")
            if k.is_zone_device(dpage):
                k.put_page(a, dpage, "migrate_device_finalize:put_dst")
            else:
                k.set_flag(dpage, PG_isolated)
                folio_putback_lru(k, a, dpage, "migrate_device_finalize:putback_dst")
        yield


def migrate_vma_finalize(k: Kernel, a: Actor, m: MigrateVma) -> Path:
    """``migrate_vma_finalize()``."""
    # Forwards (a plain function returning the path: no frame of its own).
    if k.variant.large_folios:  # v7
        return migrate_device_finalize_v7(k, a, m.src, m.dst, m.npages, m.fault_page, m.kind)
    return migrate_device_finalize_common(k, a, m.src, m.dst, m.fault_folio, m.kind)


def migrate_device_finalize(
    k: Kernel, a: Actor, src: list[int], dst: list[int], kind: str
) -> Path:
    """``migrate_device_finalize()``."""
    # Forwards (a plain function returning the path: no frame of its own).
    if k.variant.large_folios:  # v7
        return migrate_device_finalize_v7(k, a, src, dst, len(src), -1, kind)
    return migrate_device_finalize_common(k, a, src, dst, -1, kind)


# ------------------------------------------------------------------------------------
# eviction without a VMA


def migrate_device_pfn_lock(k: Kernel, a: Actor, pfn: int) -> int:
    """``migrate_device_pfn_lock()``: a reference unless free (``folio_get_nontail_page``),
    then ``folio_trylock``; a src word, or 0 to skip the page."""
    if not k.get_page_unless_zero(a, pfn):
        return 0
    if not k.trylock_page(a, pfn, "migrate_device_pfn_lock:folio_trylock"):
        k.put_page(a, pfn, "migrate_device_pfn_lock:folio_put")
        k.outcome("evict", "lock_contended")
        return 0
    return migrate_pfn(pfn) | MIGRATE_PFN_MIGRATE


def migrate_device_range(k: Kernel, a: Actor, src: list[int], start: int, npages: int) -> Path:
    """``migrate_device_range()``: lock every allocated device page of a pfn range and
    unmap it, for eviction (driver unload)."""
    if k.variant.large_folios:  # v7
        return (yield from migrate_device_range_v7(k, a, src, start, npages))
    for i in range(npages):
        src[i] = migrate_device_pfn_lock(k, a, start + i)
        yield
    yield from migrate_device_unmap(k, a, src, -1, "evict")
    return 0


def migrate_device_pfns(k: Kernel, a: Actor, src: list[int]) -> Path:
    """``migrate_device_pfns()``: the same over a pre-populated array of pfns."""
    if k.variant.large_folios:  # v7
        return (yield from migrate_device_pfns_v7(k, a, src))
    for i in range(len(src)):
        src[i] = migrate_device_pfn_lock(k, a, src[i])
        yield
    yield from migrate_device_unmap(k, a, src, -1, "evict")
    return 0


def migrate_device_coherent_folio(k: Kernel, a: Actor, pfn: int) -> Path:
    """``migrate_device_coherent_folio()``: move one locked device-coherent folio back
    to system memory; ``-EBUSY`` if it cannot be unmapped (pinned)."""
    src = [migrate_pfn(pfn) | MIGRATE_PFN_MIGRATE]
    yield from migrate_device_unmap(k, a, src, -1, "coherent")
    if not src[0] & MIGRATE_PFN_MIGRATE:
        return EBUSY
    dst = [0]
    new = k.alloc_page(a, 0, "migrate_device_coherent_folio:alloc")
    if new >= 0:
        yield from k.lock_page(a, new, "migrate_device_coherent_folio:lock_dst")
        k.set_data(new, k.data(pfn))
        dst[0] = migrate_pfn(new)
    yield from migrate_device_pages(k, a, src, dst, "coherent")
    yield from migrate_device_finalize(k, a, src, dst, "coherent")
    return 0 if src[0] & MIGRATE_PFN_MIGRATE and new >= 0 else EBUSY



# --------------------------------------------------------------------------------------
# v7 (Linux 7.0 mm/migrate_device.c, device-private THP; issue 15). Added beside v6's
# paths, which stay as they are.


def migrate_vma_split_folio(k: Kernel, a: Actor, head: int, fault_page: int) -> Path:
    """``migrate_vma_split_folio()`` (7.0 mm/migrate_device.c 82): split a PTE-mapped
    large folio met by collect. The folio is referenced and locked unless it is the
    fault folio (already locked by the fault path); after the split the lock must end
    on the folio that now holds ``fault_page``: the old folio's lock and reference are
    dropped and the new fault folio's taken (or, without a fault page, both dropped).
    Returns 0 or the split's error."""

    fault_folio = page_folio(k, fault_page) if fault_page >= 0 else -1
    if head != fault_folio:
        k.get_page(a, head, "migrate_vma_split_folio:folio_get")
        yield from k.lock_page(a, head, "migrate_vma_split_folio:folio_lock")
    ret = yield from split_folio(k, a, head)
    if ret:
        if head != fault_folio:
            k.unlock_page(a, head, "migrate_vma_split_folio:folio_unlock")
            folio_put(k, a, head, "migrate_vma_split_folio:folio_put")
        return ret
    new_fault_folio = page_folio(k, fault_page) if fault_page >= 0 else -1
    if new_fault_folio < 0:
        k.unlock_page(a, head, "migrate_vma_split_folio:folio_unlock")
        folio_put(k, a, head, "migrate_vma_split_folio:folio_put")
    elif head != new_fault_folio:
        if new_fault_folio != fault_folio:
            k.get_page(a, new_fault_folio, "migrate_vma_split_folio:new_fault_get")
            yield from k.lock_page(a, new_fault_folio, "migrate_vma_split_folio:new_fault_lock")
        k.unlock_page(a, head, "migrate_vma_split_folio:folio_unlock")
        folio_put(k, a, head, "migrate_vma_split_folio:folio_put")
    return 0


# include/linux/migrate.h of 7.0. MIGRATE_PFN_COMPOUND is bit 4, the bit 4.14-5.x had
# for MIGRATE_PFN_DEVICE (hmm-2017 and v5.0 only: no generation has both).
MIGRATE_PFN_COMPOUND = 1 << 4
MIGRATE_VMA_SELECT_COMPOUND = 1 << 3


def _src_push(k: Kernel, a: Actor, m: MigrateVma, mpfn: int, site: str) -> None:
    """``migrate->dst[migrate->npages] = 0; migrate->src[migrate->npages++] = mpfn``:
    the arrays have the length the driver allocated (``end - start`` entries); a write
    past it is what KASAN reports as a slab-out-of-bounds write, a kernel failure."""
    n = m.npages
    if n >= len(m.src) or n >= len(m.dst):
        raise k.fail(
            FailureKind.BUG_ON,
            f"{a.name} wrote src[{n}] / dst[{n}] at {site}, past the {len(m.src)} entries of "
            f"the migration's arrays (KASAN: slab-out-of-bounds)",
            actors=[a],
            sites=[site],
        )
    m.dst[n] = 0
    m.src[n] = mpfn
    m.npages = n + 1


def migrate_vma_collect_skip_v7(k: Kernel, a: Actor, m: MigrateVma, start: int, end: int) -> None:
    """``migrate_vma_collect_skip()`` (7.0): an empty src entry per page of [start, end)."""
    for _ in range(start, end):
        _src_push(k, a, m, 0, "migrate_vma_collect_skip")


def migrate_vma_collect_hole_v7(k: Kernel, a: Actor, m: MigrateVma, start: int, end: int) -> None:
    """``migrate_vma_collect_hole()`` (7.0): in an anonymous VMA each page is a hole to
    populate; with ``MIGRATE_VMA_SELECT_COMPOUND`` and a PMD-aligned range, one
    compound entry and the rest empty ("in case we need to split later")."""
    if not vma_is_anonymous(k.s.vma_flags(m.mm, m.vma)):
        migrate_vma_collect_skip_v7(k, a, m, start, end)
        return
    n = k.geo.hpage_pmd_nr
    if m.flags & MIGRATE_VMA_SELECT_COMPOUND and start % n == 0 and end % n == 0:
        _src_push(k, a, m, MIGRATE_PFN_MIGRATE | MIGRATE_PFN_COMPOUND, "migrate_vma_collect_hole")
        m.cpages += 1
        k.outcome(m.kind, "hole_collected")
        migrate_vma_collect_skip_v7(k, a, m, start + 1, end)
        return
    for _ in range(start, end):
        _src_push(k, a, m, MIGRATE_PFN_MIGRATE, "migrate_vma_collect_hole")
        m.cpages += 1
        k.outcome(m.kind, "hole_collected")


def migrate_vma_collect_huge_pmd(
    k: Kernel, a: Actor, m: MigrateVma, idx: int, start: int, end: int, fault_folio: int
) -> Path:
    """``migrate_vma_collect_huge_pmd()`` (7.0 mm/migrate_device.c 136), for the range
    [start, end) of PMD ``idx``. Under the PMD lock: none → holes; a huge present PMD
    (``SELECT_SYSTEM``) or a device-private PMD of our owner
    (``SELECT_DEVICE_PRIVATE``) is referenced and trylocked (skipped if the trylock
    fails); with ``SELECT_COMPOUND`` over the whole PMD it becomes one compound src
    entry and a PMD migration entry; otherwise (or if the entry cannot be set: a pinned
    exclusive folio) the folio is split (``split_folio``) and the caller walks the PTEs
    (-ENOENT). Any other PMD (another owner's, a migration entry) is skipped; a PMD
    that became a table since the caller looked: -EAGAIN. Returns 0, -EAGAIN or -ENOENT."""
    site = "migrate_vma_collect_huge_pmd"
    ptl = yield from pm.pmd_lock(k, a, m.mm, idx, "migrate_vma_collect_huge_pmd:pmd_lock")
    pmd = pm.pmdp_get(k, m.mm, idx)
    kind = pmd & PTE_TYPE_MASK
    if kind == PTE_NONE:
        k.spin_unlock(a, ptl, "migrate_vma_collect_huge_pmd:pmd_unlock")
        migrate_vma_collect_hole_v7(k, a, m, start, end)
        return 0
    write = 0
    if kind == PTE_PRESENT:
        if not m.flags & MIGRATE_VMA_SELECT_SYSTEM:
            k.spin_unlock(a, ptl, "migrate_vma_collect_huge_pmd:pmd_unlock")
            migrate_vma_collect_skip_v7(k, a, m, start, end)
            return 0
        folio = page_folio(k, pm.pmd_pfn(pmd))
        if pmd & PTE_WRITE:
            write = MIGRATE_PFN_WRITE
    elif kind != pm.PMD_TABLE:
        folio = page_folio(k, pm.pmd_pfn(pmd))
        if (
            kind != PTE_DEVICE_PRIVATE
            or not m.flags & MIGRATE_VMA_SELECT_DEVICE_PRIVATE
            or k.device_of(folio) != m.pgmap_owner
        ):
            k.spin_unlock(a, ptl, "migrate_vma_collect_huge_pmd:pmd_unlock")
            migrate_vma_collect_skip_v7(k, a, m, start, end)
            return 0
        if kind == PTE_MIGRATION:  # 7.0's branch, after the device-private test above
            yield from k.migration_entry_wait_on_locked(
                a, folio, ptl, "migrate_vma_collect_huge_pmd:wait", "migrate_vma_collect_huge_pmd:pmd_unlock"
            )
            return EAGAIN
        if pmd & PTE_WRITE:
            write = MIGRATE_PFN_WRITE
    else:
        k.spin_unlock(a, ptl, "migrate_vma_collect_huge_pmd:pmd_unlock")
        return EAGAIN
    k.get_page(a, folio, "migrate_vma_collect_huge_pmd:folio_get")
    if folio != fault_folio and not k.trylock_page(a, folio, "migrate_vma_collect_huge_pmd:folio_trylock"):
        k.spin_unlock(a, ptl, "migrate_vma_collect_huge_pmd:pmd_unlock")
        folio_put(k, a, folio, "migrate_vma_collect_huge_pmd:folio_put")
        k.outcome(m.kind, "lock_contended")
        migrate_vma_collect_skip_v7(k, a, m, start, end)
        return 0
    n = k.geo.hpage_pmd_nr
    if m.flags & MIGRATE_VMA_SELECT_COMPOUND and start % n == 0 and end % n == 0:
        _src_push(
            k, a, m,
            migrate_pfn(folio) | write | MIGRATE_PFN_MIGRATE | MIGRATE_PFN_COMPOUND, site,
        )
        m.cpages += 1
        if set_pmd_migration_entry(k, a, m.mm, idx, folio):
            m.npages -= 1
            m.cpages -= 1
            m.src[m.npages] = 0
            m.dst[m.npages] = 0
            k.outcome(m.kind, "pinned")
        else:
            migrate_vma_collect_skip_v7(k, a, m, start + 1, end)
            k.spin_unlock(a, ptl, "migrate_vma_collect_huge_pmd:pmd_unlock")
            return 0
    # fallback:
    k.spin_unlock(a, ptl, "migrate_vma_collect_huge_pmd:pmd_unlock")
    if not folio_test_large(k, folio):
        return ENOENT  # done: (7.0 leaves the folio referenced and locked here)
    yield
    ret = yield from split_folio(k, a, folio)
    if fault_folio != folio:
        k.unlock_page(a, folio, "migrate_vma_collect_huge_pmd:folio_unlock")
    folio_put(k, a, folio, "migrate_vma_collect_huge_pmd:folio_put")
    if ret:
        k.outcome(m.kind, "split_failed")
        migrate_vma_collect_skip_v7(k, a, m, start, end)
        return 0
    if pm.pmdp_get(k, m.mm, idx) & PTE_TYPE_MASK == PTE_NONE:
        migrate_vma_collect_hole_v7(k, a, m, start, end)
        return 0
    return ENOENT


def migrate_vma_collect_pmd_v7(
    k: Kernel, a: Actor, m: MigrateVma, idx: int, start: int, end: int
) -> Path:
    """``migrate_vma_collect_pmd()`` (7.0 mm/migrate_device.c 247) for [start, end) of
    PMD ``idx``: a huge or non-present PMD goes to ``migrate_vma_collect_huge_pmd``
    (again on -EAGAIN, done on 0); otherwise the PTEs under the PTL as v6's collect,
    except that a page of a large folio (present or device-private) drops the PTL and
    splits the folio (``migrate_vma_split_folio``), then walks again from the same
    address (``goto again``), or skips the rest of the range when the split fails; a
    page without a mapping is not collected."""
    site = "migrate_vma_collect_pmd"
    anon = vma_is_anonymous(k.s.vma_flags(m.mm, m.vma))
    fault_folio = page_folio(k, m.fault_page) if m.fault_page >= 0 else -1
    if "no-fault-folio-exception" in k.bugs:
        fault_folio = -1
    addr = start
    unmapped = 0
    while True:  # again:
        pmd = pm.pmdp_get(k, m.mm, idx)
        kind = pmd & PTE_TYPE_MASK
        if kind != pm.PMD_TABLE:
            ret = yield from migrate_vma_collect_huge_pmd(k, a, m, idx, start, end, fault_folio)
            if ret == EAGAIN:
                yield
                continue
            if ret == 0:
                return
        ptl = k.ptl_word(m.mm, addr)
        yield from k.spin_lock(a, ptl, "migrate_vma_collect_pmd:ptl")
        if pm.pmdp_get(k, m.mm, idx) & PTE_TYPE_MASK != pm.PMD_TABLE:
            k.spin_unlock(a, ptl, "migrate_vma_collect_pmd:ptl")  # pte_offset_map_lock() failed
            yield
            continue
        split = -1
        while addr < end:
            vpn = addr
            pte = k.pte_read(m.mm, vpn)
            kind = pte & PTE_TYPE_MASK
            mpfn = 0
            if kind == PTE_NONE:
                if anon:
                    mpfn = MIGRATE_PFN_MIGRATE
                    m.cpages += 1
                    k.outcome(m.kind, "hole_collected")
                _src_push(k, a, m, mpfn, site)
                addr += 1
                continue
            page = pte >> PTE_PFN_SHIFT
            if kind != PTE_PRESENT:
                if kind != PTE_DEVICE_PRIVATE or not (
                    m.flags & MIGRATE_VMA_SELECT_DEVICE_PRIVATE
                    and k.device_of(page) == m.pgmap_owner
                ):
                    _src_push(k, a, m, 0, site)
                    addr += 1
                    continue
            elif not _selected_present(k, m, page):
                _src_push(k, a, m, 0, site)
                addr += 1
                continue
            folio = page_folio(k, page)
            if k.flags(folio) & PG_head:  # folio_test_large(), inlined (hot: every page)
                split = folio
                break
            mpfn = migrate_pfn(page) | MIGRATE_PFN_MIGRATE
            if pte & PTE_WRITE:
                mpfn |= MIGRATE_PFN_WRITE
            if not k.words.load(k.lay.MAPPING + page) and not k.test_flag(page, PG_pagecache):
                _src_push(k, a, m, 0, site)  # !page->mapping
                addr += 1
                continue
            k.get_page(a, folio, "migrate_vma_collect_pmd:folio_get")
            if fault_folio == folio or k.trylock_page(a, folio, "migrate_vma_collect_pmd:folio_trylock"):
                anon_exclusive = k.test_flag(folio, PG_anon) and k.test_flag(page, PG_anon_exclusive)
                if anon_exclusive:
                    old = k.ptep_get_and_clear(m.mm, vpn)  # ptep_clear_flush
                    k.flush_tlb_range(m.mm, vpn, vpn + 1)
                    if not folio_try_share_anon_rmap_pte(k, a, page):
                        k.set_pte(m.mm, vpn, old)
                        if fault_folio != folio:
                            k.unlock_page(a, folio, "migrate_vma_collect_pmd:folio_unlock")
                        k.put_page(a, folio, "migrate_vma_collect_pmd:folio_put")
                        k.outcome(m.kind, "pinned")
                        _src_push(k, a, m, 0, site)
                        addr += 1
                        yield
                        continue
                else:
                    old = k.ptep_get_and_clear(m.mm, vpn)
                m.cpages += 1
                set_migration_entry(
                    k, a, m, vpn, page, old, anon_exclusive, "migrate_vma_collect_pmd:folio_put"
                )
                if old & PTE_TYPE_MASK == PTE_PRESENT:
                    unmapped += 1
            else:
                k.put_page(a, folio, "migrate_vma_collect_pmd:folio_put")
                k.outcome(m.kind, "lock_contended")
                mpfn = 0
            _src_push(k, a, m, mpfn, site)
            addr += 1
            yield
        if split >= 0:
            k.spin_unlock(a, ptl, "migrate_vma_collect_pmd:ptl")
            yield
            ret = yield from migrate_vma_split_folio(k, a, split, m.fault_page)
            if ret:
                if unmapped:
                    k.flush_tlb_range(m.mm, start, end)
                k.outcome(m.kind, "split_failed")
                migrate_vma_collect_skip_v7(k, a, m, addr, end)
                return
            continue  # goto again
        if unmapped:
            k.flush_tlb_range(m.mm, start, end)
        k.spin_unlock(a, ptl, "migrate_vma_collect_pmd:ptl")
        return


def migrate_vma_collect_v7(k: Kernel, a: Actor, m: MigrateVma) -> Path:
    """``migrate_vma_collect()`` (7.0): an ``MMU_NOTIFY_MIGRATE`` invalidation with the
    owner around ``walk_page_range``: per PMD range, a PMD that is none when the walker
    reads it is a hole (``pte_hole``, no lock), any other goes to
    ``migrate_vma_collect_pmd``. ``migrate->end`` is set from the pages collected."""
    rng = MmuNotifierRange(MMU_NOTIFY_MIGRATE, m.mm, m.start, m.end, m.pgmap_owner)
    yield from mmu_notifier_invalidate_range_start(k, a, rng)
    n = k.geo.hpage_pmd_nr
    vpn = m.start
    while vpn < m.end:
        idx = vpn // n
        nxt = min((idx + 1) * n, m.end)
        if pm.pmdp_get(k, m.mm, idx) & PTE_TYPE_MASK == PTE_NONE:
            migrate_vma_collect_hole_v7(k, a, m, vpn, nxt)
        else:
            yield from migrate_vma_collect_pmd_v7(k, a, m, idx, vpn, nxt)
        if "collect_pushes_extra_entry" in k.faults:  # test-only fault
            _src_push(k, a, m, 0, "migrate_vma_collect")
        vpn = nxt
        yield
    yield from mmu_notifier_invalidate_range_end(k, a, rng)
    m.end = m.start + m.npages


def migrate_vma_check_page_v7(k: Kernel, page: int, fault_page: int) -> bool:
    """``migrate_vma_check_page()`` (7.0) on the page's folio: one reference for the
    caller (isolation or collect), one for the fault page, one for ZONE_DEVICE; any
    beyond ``folio_mapcount`` is a pin. The catalog toggle ``check-ignores-pins`` drops
    it, as on v6."""
    if "check-ignores-pins" in k.bugs:
        return True
    folio = page_folio(k, page)
    extra = 1 + (1 if page == fault_page else 0)
    if k.is_zone_device(folio):
        extra += 1
    return not folio_ref_count(k, folio) - extra > folio_mapcount(k, folio)


def _remove_migration_ptes_v7(k: Kernel, a: Actor, src: int, dst: int) -> Path:
    """``remove_migration_ptes(src, dst, 0)`` for a folio of any order. Forwards: a
    plain function returning the walk's generator (no frame of its own)."""
    # folio_test_large() twice, inlined (hot: every page finalize restores or moves)
    if k.flags(src) & PG_head or k.flags(dst) & PG_head:
        return remove_migration_ptes_large(k, a, src, dst, locked=False)
    return remove_migration_ptes(k, a, src, dst)


def migrate_device_unmap_v7(
    k: Kernel, a: Actor, src: list[int], npages: int, fault_page: int, kind: str
) -> Path:
    """``migrate_device_unmap()`` (7.0 mm/migrate_device.c 566): as v6's, stepping by
    folio: a large folio's entry gets ``MIGRATE_PFN_COMPOUND`` and the walk skips its
    other pages; a mapped folio is unmapped with ``try_to_migrate`` (of any order), the
    check is on the folio, the restore removes the folio's migration entries (a PMD
    migration entry included) and drops its lock and reference. Returns the entries
    still marked ``MIGRATE``."""
    fault_folio = page_folio(k, fault_page) if fault_page >= 0 else -1
    restore = 0
    unmapped = 0
    allow_drain = True
    k.lru_add_drain(a, "migrate_device_unmap:lru_add_drain")
    i = 0
    while i < npages:
        # migrate_pfn_to_page(), inlined here and below (hot: every page of every step)
        page = src[i] >> MIGRATE_PFN_SHIFT if src[i] & MIGRATE_PFN_VALID else -1
        nr = 1
        if page < 0:
            if src[i] & MIGRATE_PFN_MIGRATE:
                unmapped += 1
            i += nr
            continue
        folio = page_folio(k, page)
        nr = folio_nr_pages(k, folio)
        if nr > 1:
            src[i] |= MIGRATE_PFN_COMPOUND
        if not k.is_zone_device(folio):
            if not k.test_flag(folio, PG_lru) and allow_drain:
                yield from k.lru_add_drain_all(a, "migrate_device_unmap:lru_add_drain_all")
                allow_drain = False
            if not folio_isolate_lru(k, a, folio):
                src[i] &= ~MIGRATE_PFN_MIGRATE
                restore += 1
                k.outcome(kind, "not_isolated")
                i += nr
                continue
            folio_put(k, a, folio, "migrate_device_unmap:folio_put")  # the reference collect took
        if folio_mapped(k, folio):
            if nr > 1:
                yield from try_to_migrate_large(k, a, folio, False, locked=False)
            else:
                yield from try_to_migrate(k, a, folio)
        if folio_mapped(k, folio) or not migrate_vma_check_page_v7(k, page, fault_page):
            if not k.is_zone_device(folio):
                k.get_page(a, folio, "migrate_device_unmap:folio_get")
                folio_putback_lru(k, a, folio, "migrate_device_unmap:putback")
            src[i] &= ~MIGRATE_PFN_MIGRATE
            restore += 1
            k.outcome(kind, "pinned")
            i += nr
            continue
        unmapped += nr if "unmap_counts_pages" in k.faults else 1  # test-only fault
        i += nr
        yield
    for i in range(npages):
        if not restore:
            break
        page = src[i] >> MIGRATE_PFN_SHIFT if src[i] & MIGRATE_PFN_VALID else -1
        if page < 0 or src[i] & MIGRATE_PFN_MIGRATE:
            continue
        folio = page_folio(k, page)
        yield from _remove_migration_ptes_v7(k, a, folio, folio)
        src[i] = 0
        if fault_folio != folio:
            k.unlock_page(a, folio, "migrate_device_unmap:folio_unlock")
        folio_put(k, a, folio, "migrate_device_unmap:restore_put")
        k.outcome(kind, "restored")
        restore -= 1
        yield
    return unmapped


def migrate_vma_setup_v7(k: Kernel, a: Actor, m: MigrateVma) -> Path:
    """``migrate_vma_setup()`` (7.0): the argument checks (v6's), ``memset(src, 0)``,
    collect, and unmap only if something was collected (``if (args->cpages)``)."""
    if bad_migrate_range(k, m):
        return EINVAL
    if m.fault_page >= 0 and not k.is_device_private(m.fault_page):
        return EINVAL
    if m.fault_page >= 0 and k.variant_checks_fault_page_locked() and not k.page_locked(
        page_folio(k, m.fault_page)
    ):
        return EINVAL
    for i in range(len(m.src)):
        m.src[i] = 0
    m.npages = 0
    m.cpages = 0
    yield from migrate_vma_collect_v7(k, a, m)
    if m.cpages:
        m.cpages = yield from migrate_device_unmap_v7(
            k, a, m.src, m.npages, m.fault_page, m.kind
        )
    check_collected(k, a, m.src, m.npages, m.cpages, "migrate_vma_setup")
    return 0


# -- pages (7.0) -------------------------------------------------------------------------
def migrate_vma_nr_pages(k: Kernel, mpfn: int) -> int:
    """``migrate_vma_nr_pages()``: HPAGE_PMD_NR for a compound entry, else 1."""
    return k.geo.hpage_pmd_nr if mpfn & MIGRATE_PFN_COMPOUND else 1


def _abort_compound(k: Kernel, a: Actor, m: MigrateVma, i: int) -> None:
    """The abort loop of ``migrate_vma_insert_huge_pmd_page``: ``src[0 ..
    HPAGE_PMD_NR)`` from the entry lose ``MIGRATE``; an index past the array is a
    KASAN out-of-bounds write."""
    for j in range(k.geo.hpage_pmd_nr):
        if i + j >= len(m.src):
            raise k.fail(
                FailureKind.BUG_ON,
                f"{a.name} cleared src[{i + j}] in migrate_vma_insert_huge_pmd_page, past the "
                f"{len(m.src)} entries of the migration's arrays (KASAN: slab-out-of-bounds)",
                actors=[a],
                sites=["migrate_vma_insert_huge_pmd_page:abort"],
            )
        m.src[i + j] &= ~MIGRATE_PFN_MIGRATE


def migrate_vma_insert_huge_pmd_page(k: Kernel, a: Actor, m: MigrateVma, i: int, page: int) -> Path:
    """``migrate_vma_insert_huge_pmd_page()`` (7.0 mm/migrate_device.c 793): map the
    driver's large folio at a PMD hole, as ``__do_huge_pmd_anonymous_page`` would: -EINVAL
    when the VMA cannot hold a PMD there; a device-private PMD (writable with
    ``VM_WRITE``) or a present huge PMD (writable and dirty with ``VM_WRITE``); under
    the PMD lock the PMD must still be none (no huge zero page in the model), else every
    entry of the range loses ``MIGRATE``. (``check_stable_address_space`` is the OOM
    reaper's, not modelled here.)"""
    n = k.geo.hpage_pmd_nr
    addr = m.start + i
    folio = page_folio(k, page)
    lo, hi = k.s.vma_bounds(m.mm, m.vma)
    if addr % n or addr < lo or addr + n > hi:
        return EINVAL  # !thp_vma_suitable_order()
    if folio_nr_pages(k, folio) != n:
        _abort_compound(k, a, m, i)  # the model's driver gives only PMD-order folios
        return 0
    k.set_flag(folio, PG_uptodate)
    vflags = k.s.vma_flags(m.mm, m.vma)
    write = bool(vflags & VM_WRITE)
    if k.is_device_private(folio):
        entry = pte_encode(PTE_DEVICE_PRIVATE, folio, PTE_WRITE if write else 0)
    elif k.is_zone_device(folio) and not k.is_device_coherent(folio):
        _abort_compound(k, a, m, i)
        return 0
    else:
        entry = pte_encode(
            PTE_PRESENT, folio, (PTE_WRITE | PTE_DIRTY | PTE_YOUNG) if write else PTE_YOUNG
        )
    idx = addr // n
    ptl = yield from pm.pmd_lock(k, a, m.mm, idx, "migrate_vma_insert_huge_pmd_page:pmd_lock")
    if pm.pmdp_get(k, m.mm, idx) & PTE_TYPE_MASK != PTE_NONE:
        k.spin_unlock(a, ptl, "migrate_vma_insert_huge_pmd_page:pmd_unlock")
        k.outcome(m.kind, "hole_populated")
        _abort_compound(k, a, m, i)
        return 0
    k.set_flag(folio, PG_anon)
    av, index = linear_page_index(k, m.mm, addr)
    folio_add_new_anon_rmap(k, folio, mapping_encode(av, index), exclusive=True, mm=m.mm)
    if not k.is_zone_device(folio):
        k.set_flag(folio, PG_lru)  # folio_add_lru_vma (as v6's insert_page: at once)
    k.get_page(a, folio, "migrate_vma_insert_huge_pmd_page:folio_get")
    pm.set_pmd_at(k, m.mm, idx, entry)
    k.spin_unlock(a, ptl, "migrate_vma_insert_huge_pmd_page:pmd_unlock")
    return 0


def migrate_vma_insert_page_v7(k: Kernel, a: Actor, m: MigrateVma, i: int) -> Path:
    """``migrate_vma_insert_page()`` (7.0): a compound destination goes to
    ``migrate_vma_insert_huge_pmd_page``; a PMD that is a huge leaf aborts; a missing
    PTE table is allocated (``pte_alloc``: ``PMD_TABLE`` under the PMD lock); then the
    PTE insertion of v6."""
    page = migrate_pfn_to_page(m.dst[i])
    if not vma_is_anonymous(k.s.vma_flags(m.mm, m.vma)):
        m.src[i] &= ~MIGRATE_PFN_MIGRATE
        return
    if m.dst[i] & MIGRATE_PFN_COMPOUND:
        ret = yield from migrate_vma_insert_huge_pmd_page(k, a, m, i, page)
        if ret:
            m.src[i] &= ~MIGRATE_PFN_MIGRATE
        return
    idx = (m.start + i) // k.geo.hpage_pmd_nr
    kind = pm.pmdp_get(k, m.mm, idx) & PTE_TYPE_MASK
    if kind not in (PTE_NONE, pm.PMD_TABLE):
        m.src[i] &= ~MIGRATE_PFN_MIGRATE  # pmd_trans_huge (not the zero page) or a leaf
        return
    if kind == PTE_NONE:  # pte_alloc() → pmd_install() under the PMD lock
        ptl = yield from pm.pmd_lock(k, a, m.mm, idx, "migrate_vma_insert_page:pmd_lock")
        if pm.pmdp_get(k, m.mm, idx) & PTE_TYPE_MASK == PTE_NONE:
            pm.set_pmd_at(k, m.mm, idx, pm.PMD_TABLE)
        k.spin_unlock(a, ptl, "migrate_vma_insert_page:pmd_unlock")
    yield from migrate_vma_insert_page(k, a, m, i, page)


def migrate_vma_split_unmapped_folio(
    k: Kernel, a: Actor, m: MigrateVma, idx: int, addr: int, folio: int
) -> Path:
    """``migrate_vma_split_unmapped_folio()`` (7.0 mm/migrate_device.c 908): the device
    refused the THP; take a reference, split the PMD migration entry into PTE migration
    entries (``split_huge_pmd_address(..., freeze)``) and split the unmapped folio to
    order 0, then give each page its own src entry. The reference it takes is the one
    the freeze split of the PMD migration entry drops (``if (freeze) put_page(page)``)."""
    k.get_page(a, folio, "migrate_vma_split_unmapped_folio:folio_get")
    yield from split_huge_pmd(k, a, m.mm, m.vma, addr, freeze=True)
    ret = folio_split_unmapped(k, a, folio, 0)
    if ret:
        return ret
    m.src[idx] &= ~MIGRATE_PFN_COMPOUND
    flags = m.src[idx] & ((1 << MIGRATE_PFN_SHIFT) - 1)
    pfn = m.src[idx] >> MIGRATE_PFN_SHIFT
    for j in range(1, k.geo.hpage_pmd_nr):
        if j + idx >= len(m.src):
            raise k.fail(
                FailureKind.BUG_ON,
                f"{a.name} wrote src[{j + idx}] in migrate_vma_split_unmapped_folio, past the "
                f"{len(m.src)} entries of the migration's arrays (KASAN: slab-out-of-bounds)",
                actors=[a],
                sites=["migrate_vma_split_unmapped_folio"],
            )
        m.src[j + idx] = migrate_pfn(pfn + j) | flags
    return 0


def migrate_device_pages_v7(
    k: Kernel, a: Actor, src: list[int], dst: list[int], npages: int, m: MigrateVma | None,
    kind: str,
) -> Path:
    """``__migrate_device_pages()`` (7.0 mm/migrate_device.c 1101): per entry, or per
    compound range: no destination → not migrated; a hole → inserted (a compound hole
    with a small destination becomes HPAGE_PMD_NR small insertions); a compound source
    with a small destination is split first (``migrate_vma_split_unmapped_folio``; not
    without a VMA: not migrated); a compound destination for a small source is refused;
    then ``folio_migrate_mapping`` page by page of the range."""
    fault_page = m.fault_page if m is not None else -1
    notified: MmuNotifierRange | None = None
    i = 0
    while i < npages:
        # migrate_pfn_to_page(), inlined here and below (hot: every page of every step)
        newpage = dst[i] >> MIGRATE_PFN_SHIFT if dst[i] & MIGRATE_PFN_VALID else -1
        page = src[i] >> MIGRATE_PFN_SHIFT if src[i] & MIGRATE_PFN_VALID else -1
        nr = 1
        if newpage < 0:
            if src[i] & MIGRATE_PFN_MIGRATE:
                k.outcome(kind, "no_destination")
            src[i] &= ~MIGRATE_PFN_MIGRATE
            i += nr
            continue
        if page < 0:
            if not src[i] & MIGRATE_PFN_MIGRATE:
                i += nr
                continue
            if m is None:
                raise k.fail(
                    FailureKind.BUG_ON,
                    "a hole in a migration without a VMA (VM_BUG_ON(!migrate))",
                    actors=[a],
                    sites=["migrate_device_pages"],
                )
            if notified is None:
                notified = MmuNotifierRange(
                    MMU_NOTIFY_MIGRATE, m.mm, m.start + i, m.end, m.pgmap_owner
                )
                yield from mmu_notifier_invalidate_range_start(k, a, notified)
            if src[i] & MIGRATE_PFN_COMPOUND and not dst[i] & MIGRATE_PFN_COMPOUND:
                nr = migrate_vma_nr_pages(k, src[i])
                src[i] &= ~MIGRATE_PFN_COMPOUND
            j = 0
            while j < nr and i + j < npages:
                src[i + j] |= MIGRATE_PFN_MIGRATE
                yield from migrate_vma_insert_page_v7(k, a, m, i + j)
                if src[i + j] & MIGRATE_PFN_MIGRATE:
                    k.outcome(kind, "migrated_hole")
                j += 1
            i += nr
            continue
        newfolio = page_folio(k, newpage)
        folio = page_folio(k, page)
        if src[i] & MIGRATE_PFN_MIGRATE and src[i] & MIGRATE_PFN_COMPOUND and not (
            dst[i] & MIGRATE_PFN_COMPOUND
        ):
            if m is None:
                src[i] &= ~(MIGRATE_PFN_MIGRATE | MIGRATE_PFN_COMPOUND)
                i += nr
                continue
            nr = 1 << folio_order(k, folio)
            r = yield from migrate_vma_split_unmapped_folio(k, a, m, i, m.start + i, folio)
            if r:
                src[i] &= ~(MIGRATE_PFN_MIGRATE | MIGRATE_PFN_COMPOUND)
                k.outcome(kind, "split_failed")
                i += nr
                continue
        elif src[i] & MIGRATE_PFN_MIGRATE and dst[i] & MIGRATE_PFN_COMPOUND and not (
            src[i] & MIGRATE_PFN_COMPOUND
        ):
            src[i] &= ~MIGRATE_PFN_MIGRATE
        if (
            m is not None
            and (k.is_device_private(newfolio) or k.is_device_coherent(newfolio))
            and k.s.vma_flags(m.mm, m.vma) & VM_SHARED
        ):
            # 7.0: "if (mapping) { /* For now only support anonymous memory migrating to
            # device private or coherent memory. */ if (!folio_test_anon(folio) || ...)"
            # A VM_SHARED page is shmem in the kernel (folio_mapping set, not anon), as
            # in v6's migrate_device_pages_common.
            src[i] &= ~MIGRATE_PFN_MIGRATE
            k.outcome(kind, "shared_mapping")
            i += nr
            continue
        if k.is_zone_device(newfolio) and not (
            k.is_device_private(newfolio) or k.is_device_coherent(newfolio)
        ):
            src[i] &= ~MIGRATE_PFN_MIGRATE
            i += nr
            continue
        extra = 1 if (m is not None and fault_page == page) else 0
        j = 0
        while j < nr and i + j < npages:
            sp = src[i + j] >> MIGRATE_PFN_SHIFT if src[i + j] & MIGRATE_PFN_VALID else -1
            dp = dst[i + j] >> MIGRATE_PFN_SHIFT if dst[i + j] & MIGRATE_PFN_VALID else -1
            if sp < 0 or dp < 0:
                j += 1
                continue
            f = page_folio(k, sp)
            nf = page_folio(k, dp)
            r = yield from folio_migrate_mapping(k, a, nf, f, extra)
            if r:
                src[i + j] &= ~MIGRATE_PFN_MIGRATE
                k.outcome(kind, "refcount_changed")
            else:
                folio_migrate_flags(k, nf, f)
            j += 1
        i += nr
        yield
    if notified is not None:
        yield from mmu_notifier_invalidate_range_end(k, a, notified)


# -- finalize (7.0) ------------------------------------------------------------------------
def migrate_device_finalize_v7(
    k: Kernel, a: Actor, src: list[int], dst: list[int], npages: int, fault_page: int,
    kind: str,
) -> Path:
    """``__migrate_device_finalize()`` (7.0 mm/migrate_device.c 1271), on folios: the
    destination (or, not migrated, the source again) takes the mappings back
    (``remove_migration_ptes``, PMD migration entries included), both are unlocked and
    put; a system-RAM destination goes on the LRU (``folio_add_lru``; set at once as
    v6's finalize does)."""
    fault_folio = page_folio(k, fault_page) if fault_page >= 0 else -1
    for i in range(npages):
        # migrate_pfn_to_page(), inlined (hot: every page of every step)
        newpage = dst[i] >> MIGRATE_PFN_SHIFT if dst[i] & MIGRATE_PFN_VALID else -1
        page = src[i] >> MIGRATE_PFN_SHIFT if src[i] & MIGRATE_PFN_VALID else -1
        d = page_folio(k, newpage) if newpage >= 0 else -1
        if page < 0:
            if d >= 0:
                k.unlock_page(a, d, "migrate_device_finalize:unlock_dst")
                folio_put(k, a, d, "migrate_device_finalize:put_dst")
            continue
        s = page_folio(k, page)
        if not src[i] & MIGRATE_PFN_MIGRATE or d < 0:
            if d >= 0:
                k.unlock_page(a, d, "migrate_device_finalize:unlock_dst")
                folio_put(k, a, d, "migrate_device_finalize:put_dst")
                k.outcome(kind, "restored")
            d = s
        else:
            k.outcome(kind, "migrated")
        if not k.is_zone_device(d):
            k.clear_flag(d, PG_isolated)
            k.set_flag(d, PG_lru)
        yield from _remove_migration_ptes_v7(k, a, s, d)
        check_no_migration_entries(k, a, s, "migrate_device_finalize")
        if fault_folio != s:
            k.unlock_page(a, s, "migrate_device_finalize:unlock_src")
        folio_put(k, a, s, "migrate_device_finalize:put_src")
        if d != s:
            k.unlock_page(a, d, "migrate_device_finalize:unlock_dst")
            folio_put(k, a, d, "migrate_device_finalize:put_dst")
        yield


# -- eviction without a VMA (7.0) ----------------------------------------------------------
def migrate_device_pfn_lock_v7(k: Kernel, a: Actor, pfn: int) -> int:
    """``migrate_device_pfn_lock()`` (7.0): ``folio_get_nontail_page`` (nothing for a
    tail page or a free one), then ``folio_trylock``."""
    if page_is_tail(k, pfn):
        return 0
    return migrate_device_pfn_lock(k, a, pfn)


def _src_mark_compound(k: Kernel, a: Actor, src: list[int], i: int, nr: int, site: str) -> None:
    """The compound step of 7.0's ``migrate_device_range`` / ``migrate_device_pfns`` loops:
    ``src_pfns[i] |= MIGRATE_PFN_COMPOUND`` and the folio's following entries zeroed,
    ``src_pfns[i + j] = 0``; past the array's end that is a KASAN slab-out-of-bounds
    write, a kernel failure."""
    src[i] |= MIGRATE_PFN_COMPOUND
    for j in range(1, nr):
        if i + j >= len(src):
            raise k.fail(
                FailureKind.BUG_ON,
                f"{a.name} wrote src_pfns[{i + j}] in {site}, past the "
                f"{len(src)} entries of the array (KASAN: slab-out-of-bounds)",
                actors=[a],
                sites=[site],
            )
        src[i + j] = 0


def migrate_device_range_v7(k: Kernel, a: Actor, src: list[int], start: int, npages: int) -> Path:
    """``migrate_device_range()`` (7.0 mm/migrate_device.c 1393): lock each device folio
    of the pfn range; a large one gets ``MIGRATE_PFN_COMPOUND`` and its other pages'
    entries are zeroed, ``src[i + j] = 0`` for every page of the folio, as 7.0 writes
    it (past the array when the range ends inside a folio: a KASAN out-of-bounds
    write). The folio is looked up before the reference is taken, as in 7.0."""
    i = 0
    pfn = start
    while i < npages:
        folio = page_folio(k, pfn)
        src[i] = migrate_device_pfn_lock_v7(k, a, pfn)
        nr = folio_nr_pages(k, folio)
        if nr > 1:
            _src_mark_compound(k, a, src, i, nr, "migrate_device_range")
            i += nr - 1
            pfn += nr - 1
        i += 1
        pfn += 1
        yield
    yield from migrate_device_unmap_v7(k, a, src, npages, -1, "evict")
    return 0


def migrate_device_pfns_v7(k: Kernel, a: Actor, src: list[int]) -> Path:
    """``migrate_device_pfns()`` (7.0): the same over a pre-populated array of pfns (a
    large folio's following entries are overwritten with 0, as 7.0 does)."""
    npages = len(src)
    i = 0
    while i < npages:
        folio = page_folio(k, src[i])
        src[i] = migrate_device_pfn_lock_v7(k, a, src[i])
        nr = folio_nr_pages(k, folio)
        if nr > 1:
            _src_mark_compound(k, a, src, i, nr, "migrate_device_pfns")
            i += nr - 1
        i += 1
        yield
    yield from migrate_device_unmap_v7(k, a, src, npages, -1, "evict")
    return 0


__all__ = [
    "MIGRATE_PFN_MIGRATE",
    "MIGRATE_PFN_VALID",
    "MIGRATE_PFN_WRITE",
    "PTE_MIGRATION",
    "MigrateVma",
    "migrate_vma_collect",
    "migrate_vma_finalize",
    "migrate_vma_pages",
    "migrate_vma_setup",
    "migrate_vma_setup_v6",
    "migrate_vma_split_folio",
]

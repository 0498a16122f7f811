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

XX: THP (``SELECT_COMPOUND``, ``migrate_vma_split_folio``) is not modelled: every folio
is a single page, as ``migrate_vma_check_page`` insisted until 6.x.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..machine.errors import FailureKind
from ..machine.folio import folio_put, page_folio
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
    VM_SPECIAL,
    VM_WRITE,
    PG_anon,
    PG_anon_exclusive,
    PG_dirty,
    PG_isolated,
    PG_lru,
    PG_swapcache,
    PG_uptodate,
    pte_encode,
)
from .huge_memory import split_folio
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

    Returns 0 or ``-EINVAL``. The caller holds ``mmap_read_lock``.
    """
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
    if kind == PTE_DEVICE_PRIVATE:
        if not (
            m.flags & MIGRATE_VMA_SELECT_DEVICE_PRIVATE
            and k.device_of(pfn) == m.pgmap_owner
        ):
            return 0
        mpfn = migrate_pfn(pfn) | device_flag | MIGRATE_PFN_MIGRATE
    elif kind == PTE_PRESENT and _selected_present(k, m, pfn):
        mpfn = migrate_pfn(pfn) | MIGRATE_PFN_MIGRATE
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
    anon = bool(vflags & VM_ANON)
    ppt = k.geo.ptes_per_table
    fault_folio = m.fault_folio
    if "no-fault-folio-exception" in k.bugs:
        fault_folio = -1
    site = "migrate_vma_collect_pmd"
    # 7.0: the walk is bracketed by an MMU_NOTIFY_MIGRATE invalidation with the
    # migration's pgmap_owner (a driver skips its own device's pages).
    rng = MmuNotifierRange(MMU_NOTIFY_MIGRATE, m.mm, m.start, m.end, m.pgmap_owner)
    yield from mmu_notifier_invalidate_range_start(k, a, rng)
    i = 0
    vpn = m.start
    while vpn < m.end:
        tab_end = min((vpn // ppt + 1) * ppt, m.end)
        ptl = k.ptl_word(m.mm, vpn)
        yield from k.spin_lock(a, ptl, site + ":ptl")
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
            k.get_page(a, pfn, site + ":folio_get")
            if fault_folio == pfn or k.trylock_page(a, pfn, site + ":folio_trylock"):
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
                            k.unlock_page(a, pfn, site + ":folio_unlock")
                        k.put_page(a, pfn, site + ":folio_put")
                        k.outcome(m.kind, "pinned")
                        m.src[i] = 0
                        i += 1
                        vpn += 1
                        yield
                        continue
                else:
                    old = k.ptep_get_and_clear(m.mm, vpn)
                set_migration_entry(k, a, m, vpn, pfn, old, anon_exclusive, site + ":folio_put")
                m.cpages += 1
            else:
                k.put_page(a, pfn, site + ":folio_put")
                k.outcome(m.kind, "lock_contended")
                mpfn = 0
            m.src[i] = mpfn
            m.dst[i] = 0
            i += 1
            vpn += 1
            yield
        k.flush_tlb_range(m.mm, lo, tab_end)
        k.spin_unlock(a, ptl, site + ":ptl")
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
    site = "migrate_device_unmap"
    allow_drain = True
    k.lru_add_drain(a, site + ":lru_add_drain")
    for i, mpfn in enumerate(src):
        pfn = migrate_pfn_to_page(mpfn)
        if pfn < 0:
            if mpfn & MIGRATE_PFN_MIGRATE:
                unmapped += 1
            continue
        if not k.is_zone_device(pfn):
            if not k.test_flag(pfn, PG_lru) and allow_drain:
                # Drain CPU's lru cache, with every collected folio locked.
                yield from k.lru_add_drain_all(a, site + ":lru_add_drain_all")
                allow_drain = False
            if not folio_isolate_lru(k, a, pfn):
                src[i] &= ~MIGRATE_PFN_MIGRATE
                restore += 1
                k.outcome(kind, "not_isolated")
                continue
            k.put_page(a, pfn, site + ":folio_put")  # the reference collect took
        if k.mapcount(pfn) > 0:
            yield from try_to_migrate(k, a, pfn)
        if k.mapcount(pfn) > 0 or not k.variant.check_page(k, pfn, fault_page):
            if not k.is_zone_device(pfn):
                k.get_page(a, pfn, site + ":folio_get")
                folio_putback_lru(k, a, pfn, site + ":putback")
            src[i] &= ~MIGRATE_PFN_MIGRATE
            restore += 1
            k.outcome(kind, "pinned")
            continue
        unmapped += 1
        yield
    yield from restore_unmoved(
        k, a, src, len(src), restore, fault_folio, kind,
        unlock=site + ":folio_unlock", put=site + ":restore_put",
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
        pfn = migrate_pfn_to_page(src[i])
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
    would, unless the entry changed meanwhile (then the hole is not migrated)."""
    s = k.s
    vpn = m.start + i
    vflags = s.vma_flags(m.mm, m.vma)
    if not vflags & VM_ANON:
        m.src[i] &= ~MIGRATE_PFN_MIGRATE
        return
    ptl = k.ptl_word(m.mm, vpn)
    yield from k.spin_lock(a, ptl, "migrate_vma_insert_page:ptl")
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
    k.set_flag(new, PG_uptodate)
    if f & PG_anon:
        k.set_flag(new, PG_anon)
    if f & PG_dirty:
        k.set_flag(new, PG_dirty)
    if f & PG_swapcache and "swapcache_moves" in k.faults:
        k.set_flag(new, PG_swapcache)


def migrate_device_pages_common(
    k: Kernel, a: Actor, src: list[int], dst: list[int], m: MigrateVma | None, kind: str
) -> Path:
    """``__migrate_device_pages()``: move each page's metadata from src to dst."""
    fault_page = m.fault_page if m is not None else -1
    notified: MmuNotifierRange | None = None
    for i in range(len(src)):
        new = migrate_pfn_to_page(dst[i])
        page = migrate_pfn_to_page(src[i])
        if new < 0:
            if src[i] & MIGRATE_PFN_MIGRATE:
                k.outcome(kind, "no_destination")
            src[i] &= ~MIGRATE_PFN_MIGRATE
            continue
        if page < 0:
            if not src[i] & MIGRATE_PFN_MIGRATE:
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
        if k.is_zone_device(new) and not (
            k.is_device_private(new) or k.is_device_coherent(new)
        ):
            src[i] &= ~MIGRATE_PFN_MIGRATE
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
    yield from migrate_device_pages_common(k, a, m.src, m.dst, m, m.kind)


def migrate_device_pages(k: Kernel, a: Actor, src: list[int], dst: list[int], kind: str) -> Path:
    """``migrate_device_pages()``: the same without a VMA (eviction)."""
    yield from migrate_device_pages_common(k, a, src, dst, None, kind)


# ------------------------------------------------------------------------------------
# finalize


def migrate_device_finalize_common(
    k: Kernel, a: Actor, src: list[int], dst: list[int], fault_folio: int, kind: str
) -> Path:
    """``__migrate_device_finalize()``: point the entries at the new pages (or back at
    the old ones), unlock both, put the old page back on the LRU or drop it."""
    site = "migrate_device_finalize"
    for i in range(len(src)):
        dpage = migrate_pfn_to_page(dst[i])
        spage = migrate_pfn_to_page(src[i])
        if spage < 0:
            if dpage >= 0:
                k.unlock_page(a, dpage, site + ":unlock_dst")
                k.put_page(a, dpage, site + ":put_dst")
            continue
        if not src[i] & MIGRATE_PFN_MIGRATE or dpage < 0:
            if dpage >= 0:
                k.unlock_page(a, dpage, site + ":unlock_dst")
                k.put_page(a, dpage, site + ":put_dst")
                k.outcome(kind, "restored")
            dpage = spage
        else:
            k.outcome(kind, "migrated")
        yield from remove_migration_ptes(k, a, spage, dpage)
        if spage != fault_folio:
            k.unlock_page(a, spage, site + ":unlock_src")
        if k.is_zone_device(spage):
            k.put_page(a, spage, site + ":put_src")
        else:
            folio_putback_lru(k, a, spage, site + ":putback_src")
        if dpage != spage:
            k.unlock_page(a, dpage, site + ":unlock_dst")
            if k.is_zone_device(dpage):
                k.put_page(a, dpage, site + ":put_dst")
            else:
                k.set_flag(dpage, PG_isolated)
                folio_putback_lru(k, a, dpage, site + ":putback_dst")
        yield


def migrate_vma_finalize(k: Kernel, a: Actor, m: MigrateVma) -> Path:
    """``migrate_vma_finalize()``."""
    yield from migrate_device_finalize_common(k, a, m.src, m.dst, m.fault_folio, m.kind)


def migrate_device_finalize(
    k: Kernel, a: Actor, src: list[int], dst: list[int], kind: str
) -> Path:
    """``migrate_device_finalize()``."""
    yield from migrate_device_finalize_common(k, a, src, dst, -1, kind)


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
    for i in range(npages):
        src[i] = migrate_device_pfn_lock(k, a, start + i)
        yield
    yield from migrate_device_unmap(k, a, src, -1, "evict")
    return 0


def migrate_device_pfns(k: Kernel, a: Actor, src: list[int]) -> Path:
    """``migrate_device_pfns()``: the same over a pre-populated array of pfns."""
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
    "migrate_vma_split_folio",
]

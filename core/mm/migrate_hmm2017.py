"""Device-memory migration as first merged: ``migrate_vma()`` with driver callbacks
(seed 004, "mm/migrate: new memory migration helper for use with device memory v4",
2017): the ``hmm-2017`` protocol, and the ``migrate_vma()`` driver entry that the
``v5.0`` protocol (seed 002) kept.

Both older generations expose one call, :func:`migrate_vma`, that runs

    collect → prepare → unmap → ops->alloc_and_copy() → pages → ops->finalize_and_map()
    → finalize

and returns early whenever no page is left (``if (!migrate.cpages) return 0``). The
variant object decides collect, prepare, unmap and the page check
(``core/variants.py``); pages and finalize are the shared steps of
``core/mm/migrate_device.py`` (their reference and lock bookkeeping is the same in all
three generations for the single-page folios the model has).

What hmm-2017 does that later kernels stopped doing, each in one function here:

- :func:`collect_2017`: only takes a reference on each present page; **holes come back
  as ``src = 0`` with no flags** (``migrate_vma_collect_hole``, seed 004 line 207; the
  ambiguity seed 003 asks about);
- :func:`prepare_2017`: **``lock_page()``** (blocking) on every collected page in index
  order, then LRU isolation and the pin check (seed 004 ``migrate_vma_prepare``): two
  migrations that meet shared pages in opposite order wait on each other;
- :func:`unmap_2017`: ``try_to_unmap()`` and the restore of the pages that stay mapped
  or pinned (seed 004 ``migrate_vma_unmap``), shared with v5.0 (seed 002 kept it).

Model adaptations, stated once:

- seed 004 (patch 12/15) skipped every non-present entry; the same series (HMM 14/15,
  merged together in 4.14) added device-private entries with ``MIGRATE_PFN_DEVICE``. The
  model has them, so the variant can migrate back to system memory at all.
- the fault entry (``do_swap_page``) is the variant's (``Variant.fault_entry``): here,
  as in 4.14-6.0, the driver's fault handler runs with neither a reference on nor the
  lock of the device page, so ``fault_folio`` is -1 and prepare locks the faulting page
  like any other. (v6's newer entries pass it locked; collect/prepare skip it then.)
- seed 004's first version could not populate a hole at all (``if (!page || !newpage)
  continue``); 4.14 added ``migrate_vma_insert_page``. The model lets the pages step
  populate an empty entry the driver gave a destination, so what decides whether holes
  move is only the driver's reading of ``src = 0``: the sample driver of seed 003
  allocates for it, a driver following the documented contract (catalog toggle
  ``holes-src-zero``) does not.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from ..machine.errors import FailureKind
from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
    PTE_DEVICE_PRIVATE,
    PTE_DIRTY,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_PFN_SHIFT,
    PTE_SOFT_DIRTY,
    PTE_TYPE_MASK,
    PTE_WRITE,
    VM_ANON,
    VM_WRITE,
    PG_dirty,
    PG_lru,
)
from .migrate_device import (
    EINVAL,
    MIGRATE_PFN_DEVICE,
    MIGRATE_PFN_LOCKED,
    MIGRATE_PFN_MIGRATE,
    MIGRATE_PFN_SHIFT,
    MIGRATE_PFN_VALID,
    MigrateVma,
    bad_migrate_range,
    collected_mpfn,
    folio_isolate_lru,
    folio_putback_lru,
    migrate_pfn_to_page,
    migrate_vma_finalize,
    migrate_vma_pages,
    page_refs_beyond_mappings,
    restore_unmoved,
)
from .rmap import invalid_migration_vma, map_pte, rmap_walk

Callback = Callable[[Kernel, Actor, MigrateVma], Path]


# ------------------------------------------------------------------------------------
# collect (seed 004 migrate_vma_collect_pmd / migrate_vma_collect_hole)


def collect_2017(k: Kernel, a: Actor, m: MigrateVma) -> Path:
    """``migrate_vma_collect()`` of seed 004: under the page-table lock, a reference on
    each selected page, ``src = migrate_pfn(pfn) | MIGRATE`` (``| DEVICE`` for a
    device-private entry, HMM 14/15); **a hole gets ``src = 0``, no flags**
    (``migrate_vma_collect_hole``, the behaviour seed 003 questions). No page is locked
    and no entry is changed here: that is prepare's and unmap's job.

    Records the indexes that were holes in an anonymous VMA as ``m.holes`` (the
    outcome oracle's list; the kernel did not keep it, which is the point).
    """
    s = k.s
    anon = bool(s.vma_flags(m.mm, m.vma) & VM_ANON)
    ppt = k.geo.ptes_per_table
    holes: list[int] = []
    i = 0
    vpn = m.start
    while vpn < m.end:
        tab_end = min((vpn // ppt + 1) * ppt, m.end)
        ptl = k.ptl_word(m.mm, vpn)
        yield from k.spin_lock(a, ptl, "migrate_vma_collect_pmd:ptl")
        while vpn < tab_end:
            pte = k.pte_read(m.mm, vpn)
            kind = pte & PTE_TYPE_MASK
            mpfn = 0
            pfn = pte >> PTE_PFN_SHIFT
            if kind == PTE_NONE:
                # seed 004 line 215: migrate->src[migrate->npages++] = 0;
                if anon:
                    holes.append(i)
            else:
                mpfn = collected_mpfn(k, m, pte, MIGRATE_PFN_DEVICE)
            if mpfn:
                # "By getting a reference on the page we pin it" (seed 004 line 260)
                k.get_page(a, pfn, "migrate_vma_collect_pmd:get_page")
                m.cpages += 1
            m.src[i] = mpfn
            m.dst[i] = 0
            i += 1
            vpn += 1
        k.spin_unlock(a, ptl, "migrate_vma_collect_pmd:ptl")
        yield
    m.npages = i
    m.holes = holes  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------
# the page check (seed 004 migrate_vma_check_page)


def check_page_2017(k: Kernel, pfn: int, fault_page: int) -> bool:
    """``migrate_vma_check_page()`` of seed 004: refcount minus the caller's reference
    must not exceed the mapcount. The model adds the ZONE_DEVICE reference (seed 004
    line 186 adds it in ``migrate_page_move_mapping``) and the fault handler's
    reference on its page: the test all generations share
    (:func:`page_refs_beyond_mappings`), without v6's and v5.0's catalog toggle.

    A device-private page always passes: HMM 14/15 ("mm/migrate: support un-addressable
    ZONE_DEVICE page in migration", merged with seed 004 in 4.14, the patch hmm-2017's
    device-private fault entry comes from) added the exemption, whose comment seed 002
    keeps (lines 2356-2368): "to avoid 2 racing thread trying to migrate back to CPU to
    enter infinite loop ... We always return true here". Without it, CPU faults on one
    device page each hold collect's reference and fail each other's check forever
    (``fault-storm`` livelocked on hmm-2017, pct seed 60)."""
    if k.is_device_private(pfn):
        return True  # HMM 14/15 (4.14); seed 002 line 2368
    return not page_refs_beyond_mappings(k, pfn, fault_page)


# ------------------------------------------------------------------------------------
# prepare (seed 004 migrate_vma_prepare): lock_page(), blocking


def prepare_2017(k: Kernel, a: Actor, m: MigrateVma) -> Path:
    """``migrate_vma_prepare()`` of seed 004: **``lock_page(page)``** on every collected
    page, in index order, sleeping until it is ours; then isolate it from the LRU
    (device pages are not on it), drop collect's reference, and back out of pages that
    fail isolation or the pin check.

    Departure kept (docs/generations.md, finding 001): seed 004 has no ``put_page``
    of collect's reference after ``isolate_lru_page()`` (lines 371-386) although its
    comment (344-345) says it drops it; as written every page leaks a reference and
    fails the check. The model follows the comment and the merged 4.14 code; the
    catalog toggle ``prepare-keeps-collect-ref`` runs the seed as written.

    The blocking lock is the hmm-2017-blocking-prepare entry of the catalog: two
    migrations over shared pages in opposite order each hold one page and sleep on the
    other's. v5.0 replaced it by ``trylock_page`` and back-off (``core/mm/migrate_v50.py``).
    """
    allow_drain = True
    k.lru_add_drain(a, "migrate_vma_prepare:lru_add_drain")
    src = m.src
    for i in range(m.npages):
        # migrate_pfn_to_page(), inlined (hot: every page of every step)
        pfn = src[i] >> MIGRATE_PFN_SHIFT if src[i] & MIGRATE_PFN_VALID else -1
        if pfn < 0:
            continue
        if pfn != m.fault_folio:
            yield from k.lock_page(a, pfn, "migrate_vma_prepare:lock_page")
        m.src[i] |= MIGRATE_PFN_LOCKED
        if not k.test_flag(pfn, PG_lru) and allow_drain:
            # Drain CPU's pagevec: seed 004 has no ZONE_DEVICE test here, so a device page
            # drains too, with every page before it locked.
            yield from k.lru_add_drain_all(a, "migrate_vma_prepare:lru_add_drain_all")
            allow_drain = False
        if not k.is_zone_device(pfn):
            if not folio_isolate_lru(k, a, pfn):
                prepare_back_out(k, a, m, i, pfn, False)
                m.cpages -= 1
                k.outcome(m.kind, "not_isolated")
                yield
                continue
            if "prepare-keeps-collect-ref" not in k.bugs:  # seed 004 as posted lacks it
                k.put_page(a, pfn, "migrate_vma_prepare:put_collect_ref")
        if not k.variant.check_page(k, pfn, m.fault_page):
            prepare_back_out(k, a, m, i, pfn, not k.is_zone_device(pfn))
            m.cpages -= 1
            k.outcome(m.kind, "pinned")
        yield


def prepare_back_out(k: Kernel, a: Actor, m: MigrateVma, i: int, pfn: int, putback: bool) -> None:
    """How seed 004's ``migrate_vma_prepare()`` (and seed 002's, for a page collect did
    not lock) gives up a page it locked that fails isolation or the pin check: no
    migration entry to remove yet, so ``src[i] = 0``, unlock (not the caller's
    ``fault_folio``) and drop the reference, back onto the LRU when ``putback`` (an
    isolated system page)."""
    m.src[i] = 0
    if pfn != m.fault_folio:
        k.unlock_page(a, pfn, "migrate_vma_prepare:unlock_page")
    if putback:
        folio_putback_lru(k, a, pfn, "migrate_vma_prepare:putback_lru_page")
    else:
        k.put_page(a, pfn, "migrate_vma_prepare:put_page")


# ------------------------------------------------------------------------------------
# unmap (seed 004 / seed 002 migrate_vma_unmap)


def try_to_unmap_migration(k: Kernel, a: Actor, pfn: int, site: str = "try_to_unmap_one") -> Path:
    """``try_to_unmap(page, TTU_MIGRATION | TTU_IGNORE_MLOCK | TTU_IGNORE_ACCESS)`` of
    4.14-5.0 (``mm/rmap.c`` ``try_to_unmap_one``; the seeds quote only its callers,
    004 line 413 and 002 line 2523): every mapping of the locked page, under its PTL,
    becomes a migration entry. Unlike today's ``try_to_migrate``
    (:func:`~pagerace.core.mm.rmap.try_to_migrate`, which the model shares with v6):

    - there is no ``PageAnonExclusive`` and no -EBUSY for a possibly pinned page (both
      5.19): the entry is always replaced; a pin is caught only afterwards, by
      ``migrate_vma_check_page``'s refcount test (and the refcount freeze);
    - a present entry: ``ptep_clear_flush``, "Move the dirty bit to the page"
      (``set_page_dirty``), then ``make_migration_entry(subpage, pte_write(pteval))`` plus
      soft-dirty: **no young, dirty or exclusive bit in the entry** (6.1 / 5.19 added
      those), so ``remove_migration_pte`` maps the page back old and clean;
    - a device-private entry (HMM 14/15's ``is_zone_device_page`` branch):
      ``ptep_get_and_clear`` and ``make_migration_entry(page, 0)``: **a read entry,
      whatever the device-private entry's write bit**, soft-dirty kept, no TLB flush
      ("it will synchronize on against the special swap migration pte");

    then ``page_remove_rmap`` and ``put_page``. Returns nothing: the caller looks at
    ``page_mapped()``.

    Forwards: a plain function returning the walk's generator (``try_to_unmap()`` is
    ``rmap_walk()`` with this callback; no frame of its own at each point of the walk).
    """
    ptl_site = site + ":ptl"  # once per walk, not per mapping

    def try_to_unmap_one(mm: int, vpn: int) -> Generator[Any, Any, bool]:
        old = yield from map_pte(k, a, mm, vpn, pfn, site)
        if old < 0:
            return True
        ptl = k.ptl_word(mm, vpn)
        kind = old & PTE_TYPE_MASK
        old = k.ptep_get_and_clear(mm, vpn)
        if kind == PTE_DEVICE_PRIVATE:
            bits = old & PTE_SOFT_DIRTY
        else:
            k.flush_tlb_range(mm, vpn, vpn + 1)  # ptep_clear_flush
            if old & PTE_DIRTY:
                k.set_flag(pfn, PG_dirty)
            bits = old & (PTE_WRITE | PTE_SOFT_DIRTY)
        # pte_encode(PTE_MIGRATION, pfn, bits), inlined (hot: every mapping unmapped;
        # bits are flag bits, so its PTE_FLAG_MASK changes nothing)
        k.set_pte(mm, vpn, (pfn << PTE_PFN_SHIFT) | bits | PTE_MIGRATION)
        k.mapcount_add(pfn, -1)
        k.put_page(a, pfn, site)
        k.spin_unlock(a, ptl, ptl_site)
        return True

    # 5.0 try_to_unmap(): rmap_walk() with rwc.done = page_mapcount_is_zero and
    # invalid_vma = invalid_migration_vma for TTU_MIGRATION, the anon_vma read-locked
    # (the walk machinery is 7.0's: rmap.py).
    return rmap_walk(
        k, a, pfn, try_to_unmap_one, "try_to_unmap",
        done=lambda: k.mapcount(pfn) <= 0,
        invalid_vma=invalid_migration_vma,
    )


def unmap_2017(k: Kernel, a: Actor, m: MigrateVma) -> Path:
    """``migrate_vma_unmap()`` (seed 004 line 400; seed 002 line 2509 is the same with
    device pages): ``try_to_unmap(page, TTU_MIGRATION)`` (:func:`try_to_unmap_migration`,
    4.14-5.0's) on each locked page still mapped, check it again for pins, and restore
    (``remove_migration_ptes(page, page)``, unlock, put back) every page that cannot
    move."""
    restore = 0
    src = m.src
    check_page = k.variant.check_page
    for i in range(m.npages):
        # migrate_pfn_to_page(), inlined (hot: every page of every step)
        s = src[i]
        pfn = s >> MIGRATE_PFN_SHIFT if s & MIGRATE_PFN_VALID else -1
        if pfn < 0 or not s & MIGRATE_PFN_MIGRATE:
            continue
        if k.mapcount(pfn) > 0:
            yield from try_to_unmap_migration(k, a, pfn)
        if k.mapcount(pfn) > 0 or not check_page(k, pfn, m.fault_page):
            m.src[i] &= ~MIGRATE_PFN_MIGRATE
            m.cpages -= 1
            restore += 1
            k.outcome(m.kind, "pinned")
        yield
    yield from restore_unmoved(
        k, a, m.src, m.npages, restore, m.fault_folio, m.kind,
        unlock="migrate_vma_unmap:unlock_page", put="migrate_vma_unmap:put_page",
        putback="migrate_vma_unmap:putback_lru_page",
    )


# ------------------------------------------------------------------------------------
# the driver side of the 2017 contract


def sample_driver_alloc_and_copy(k: Kernel, a: Actor, dev: Any, m: MigrateVma) -> Path:
    """The ``alloc_and_copy()`` callback of the 2017 sample driver (seed 003), migrating
    to the device: a locked device page with the source's content for each
    ``VALID | MIGRATE`` entry, and, as seed 003 describes the sample driver doing, a
    zeroed page for each entry with **no page at all** (``src == 0``: a hole, or an
    entry collect skipped; the pages step populates it only if it is still empty).

    Catalog toggles:

    - ``holes-src-zero``: the driver follows the documented contract ("only entries with
      MIGRATE_PFN_VALID and MIGRATE_PFN_MIGRATE"): holes are never populated.
    - ``callback-modifies-src``: a driver that runs out of room (it takes all but the
      last migratable entry) clears ``src[i]`` of what it will not migrate, instead of
      leaving ``dst[i]`` empty, which seed 004 forbids in capitals.
    """
    follows_contract = "holes-src-zero" in k.bugs
    write_vma = bool(k.s.vma_flags(m.mm, m.vma) & VM_WRITE)
    movable = [i for i, s in enumerate(m.src) if s & MIGRATE_PFN_VALID and s & MIGRATE_PFN_MIGRATE]
    room = len(movable) - 1 if "callback-modifies-src" in k.bugs else len(movable)
    for i, spfn in enumerate(m.src):
        # migrate_pfn_to_page(), inlined (every entry of every migration)
        spage = spfn >> MIGRATE_PFN_SHIFT if spfn & MIGRATE_PFN_VALID else -1
        if spage >= 0:
            if not spfn & MIGRATE_PFN_MIGRATE:
                continue
            if room <= 0:
                m.src[i] = 0  # callback-modifies-src: "BAD THINGS WILL HAPPEN"
                continue
            room -= 1
        elif spfn != 0 or follows_contract:
            continue
        # seed 004: the driver hands back its destination pages locked (| LOCKED).
        dst = yield from dev.device_dst(k, a, m, spfn, write_vma, MIGRATE_PFN_LOCKED, dma=False)
        if not dst:
            continue
        m.dst[i] = dst
        yield


def populate_empty_entries_2017(m: MigrateVma) -> None:
    """The hmm-2017 pages step treats an entry with no source page and a destination
    the driver allocated as a hole to populate (``migrate_vma_insert_page``, 4.14): it
    gets ``MIGRATE`` so the shared pages step tries the insertion, which refuses it
    unless the entry is still empty."""
    for i in range(m.npages):
        # migrate_pfn_to_page(dst[i]) >= 0, inlined (every entry of every migration)
        if m.src[i] == 0 and m.dst[i] & MIGRATE_PFN_VALID:
            m.src[i] = MIGRATE_PFN_MIGRATE


# ------------------------------------------------------------------------------------
# oracles of the callback API


def check_src_unchanged(k: Kernel, a: Actor, m: MigrateVma, before: list[int], cb: str) -> None:
    """The driver contract of seed 004: "THE alloc_and_copy() CALLBACK MUST NOT CHANGE
    ANY OF THE SRC ARRAY ENTRIES OR BAD THINGS WILL HAPPEN !"."""
    if m.src == before:  # the common case: one list compare, no per-entry loop
        return
    changed = [i for i in range(len(before)) if m.src[i] != before[i]]
    if changed:
        i = changed[0]
        raise k.fail(
            FailureKind.DRIVER_CONTRACT,
            f"{a.name}'s {cb}() changed src[] at {len(changed)} entr"
            f"{'y' if len(changed) == 1 else 'ies'} (first: index {i}, vpn {m.start + i}: "
            f"{before[i]:#x} -> {m.src[i]:#x}); seed 004 forbids it: the core would leave "
            "those pages locked",
            actors=[a],
            pages=[p for p in (migrate_pfn_to_page(before[j]) for j in changed) if p >= 0][:6],
            sites=[f"migrate_vma:{cb}"],
            indexes=changed[:16],
        )


def hole_indexes(m: MigrateVma) -> list[int]:
    """Indexes collect saw as holes of an anonymous VMA: recorded by the 2017 collect
    (``m.holes``), else the entries marked ``MIGRATE`` without a page (v5.0, v6)."""
    holes = getattr(m, "holes", None)
    if holes is not None:
        return list(holes)
    if MIGRATE_PFN_MIGRATE not in m.src:  # the common case: no hole, no per-entry loop
        return []
    return [i for i in range(m.npages) if m.src[i] == MIGRATE_PFN_MIGRATE]


def check_holes_populated(
    k: Kernel, a: Actor, m: MigrateVma, holes: list[int], alloc_failed: bool
) -> None:
    """Outcome oracle (catalog ``holes-src-zero``): a migration to the device over an
    anonymous VMA must give every hole a destination page, unless an allocation failed
    during the callback (then nothing is claimed). Holes that a concurrent fault filled
    meanwhile are still handed a destination (the pages step refuses it), so a correct
    protocol never trips this, whatever the interleaving."""
    if m.kind != "to_device" or alloc_failed or not holes:
        return
    if not k.s.vma_flags(m.mm, m.vma) & VM_ANON:
        # v5.0 marks holes MIGRATE in any VMA (seed 002 line 2105); only an anonymous
        # VMA's can be populated (migrate_vma_insert_page, line 2575).
        return
    left = [i for i in holes if migrate_pfn_to_page(m.dst[i]) < 0]
    if not left:
        return
    k.outcome(m.kind, "hole_not_populated", len(left))
    raise k.fail(
        FailureKind.OUTCOME,
        f"{a.name} migrated mm {m.mm} [{m.start}, {m.end}) to the device but "
        f"{len(left)} of its {len(holes)} holes got no destination page (vpn "
        f"{', '.join(str(m.start + i) for i in left[:6])}): src = 0 for holes, and a driver "
        "following the documented contract skips them; that part of the range silently "
        "stays in system memory",
        actors=[a],
        sites=["migrate_vma:alloc_and_copy"],
        holes=len(holes),
        unpopulated=len(left),
        migrated_fraction=round(1 - len(left) / len(holes), 3),
    )


# ------------------------------------------------------------------------------------
# migrate_vma(): the driver entry of hmm-2017 and v5.0


def migrate_vma(
    k: Kernel,
    a: Actor,
    m: MigrateVma,
    alloc_and_copy: Callback,
    finalize_and_map: Callback | None = None,
) -> Path:
    """``migrate_vma(ops, vma, start, end, src, dst, private)`` (seed 004 line 564,
    seed 002 line 2880): argument checks (-EINVAL), then collect / prepare / unmap
    (the variant's), ``ops->alloc_and_copy()``, pages, ``ops->finalize_and_map()``,
    finalize. Returns 0 (even when no page moved) or ``-EINVAL``; a ``VM_FAULT_*`` the
    model's callback returns is passed up for the fault handler.

    The caller holds ``mmap_read_lock``. The callbacks are checked against the driver
    contract: neither may change ``src[]``.
    """
    if bad_migrate_range(k, m):
        return EINVAL
    n = m.end - m.start
    m.src[:] = [0] * n  # memset(src, 0, ...)
    m.npages = 0
    m.cpages = 0
    v = k.variant
    yield from v.collect(k, a, m)
    holes = hole_indexes(m)
    if not m.cpages and not holes:
        return 0
    yield from v.prepare(k, a, m)
    if not m.cpages and not holes:
        return 0
    yield from v.unmap(k, a, m)
    if not m.cpages and not holes:
        return 0
    before = list(m.src)
    failed0 = k.outcomes.get((m.kind, "alloc_failed"), 0)
    ret = yield from alloc_and_copy(k, a, m)
    check_src_unchanged(k, a, m, before, "alloc_and_copy")
    check_holes_populated(
        k, a, m, holes, k.outcomes.get((m.kind, "alloc_failed"), 0) != failed0
    )
    v.before_pages(m)
    yield from migrate_vma_pages(k, a, m)
    if finalize_and_map is not None:
        before = list(m.src)
        yield from finalize_and_map(k, a, m)
        check_src_unchanged(k, a, m, before, "finalize_and_map")
    yield from migrate_vma_finalize(k, a, m)
    return ret or 0


__all__ = [
    "check_holes_populated",
    "check_page_2017",
    "collect_2017",
    "hole_indexes",
    "migrate_vma",
    "prepare_2017",
    "sample_driver_alloc_and_copy",
    "try_to_unmap_migration",
    "unmap_2017",
]

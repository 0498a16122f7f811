"""Device-memory migration of the v4.20 / v5.0 era (seed 002, ``mm/migrate.c``): the
``v5.0`` protocol.

The driver still calls one ``migrate_vma(ops, ...)`` (``core/mm/migrate_hmm2017.py``) and
unmap is seed 004's; what changed since 2017, each in one function here:

- :func:`collect_v50`: holes are marked ``MIGRATE_PFN_MIGRATE`` (seed 002 line 2105), and
  **"optimize for the common case where page is only mapped once in one process. If we
  can lock the page, then we can safely set up a special migration page table entry
  now"** (line 2252): a ``trylock_page`` under the page-table lock that installs the
  migration entry at once; a page it cannot lock stays collected for prepare;
- :func:`prepare_v50`: **"Make migrate_vma() a best effort thing and backoff for any page
  we can not lock right away"** (line 2421): ``trylock_page`` instead of ``lock_page``,
  so two migrations cannot wait on each other;
- :func:`check_page_v50`: ``migrate_vma_check_page()`` (line 2336) **always passes
  device-private pages** (a thread waiting on a migration entry holds a reference that
  looks like a pin, and two threads migrating back to the CPU would fail each other
  forever) and lets device-public pages through with their ZONE_DEVICE reference.
  Device-public memory is modelled by the device-coherent frames (CPU-addressable device
  memory, which replaced it in 5.x).

Holes are populated by the shared ``migrate_vma_insert_page`` (seed 002 line 2556), which
the pages step of ``core/mm/migrate_device.py`` calls for an entry with ``MIGRATE`` and no
page.
"""

from __future__ import annotations

from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
    PTE_DEVICE_PRIVATE,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_SOFT_DIRTY,
    PTE_TYPE_MASK,
    PTE_WRITE,
    VM_WRITE,
    Z_DEVICE,
    Z_DEVICE_COHERENT,
    Z_DEVICE_PRIVATE,
    PG_lru,
    pte_encode,
)
from .migrate_device import (
    MIGRATE_PFN_DEVICE,
    MIGRATE_PFN_LOCKED,
    MIGRATE_PFN_MIGRATE,
    MIGRATE_PFN_SHIFT,
    MIGRATE_PFN_VALID,
    MigrateVma,
    collected_mpfn,
    folio_isolate_lru,
    folio_putback_lru,
    migrate_vma_check_page,
)
from .migrate_hmm2017 import prepare_back_out


def collect_v50(k: Kernel, a: Actor, m: MigrateVma) -> Path:
    """``migrate_vma_collect_pmd()`` of seed 002 (line 2129): under the page-table lock,
    **every** hole gets ``MIGRATE`` and is counted in ``cpages`` (lines 2105 and 2196;
    whatever the VMA: refusing to populate a hole of a non-anonymous VMA is
    ``migrate_vma_insert_page``'s job, line 2575 — skipping such holes in collect is
    a later kernel's ``migrate_vma_collect_hole``), each selected page a reference, and
    a page that ``trylock_page`` locks gets its migration entry now (``| LOCKED``); the
    single-mapping optimisation of line 2252. The TLB range is flushed only when a
    present entry was replaced ("Only flush the TLB if we actually modified any
    entries", line 2289). v5.0's fault entry holds neither a reference nor the lock
    (``V50.fault_entry``), so the faulting page is trylocked like any other: there is
    no ``fault_folio`` exception (that is 6.15's)."""
    ppt = k.geo.ptes_per_table
    mm, src, dst = m.mm, m.src, m.dst
    i = 0
    vpn = m.start
    while vpn < m.end:
        tab_end = min((vpn // ppt + 1) * ppt, m.end)
        ptl = k.ptl_word(mm, vpn)
        yield from k.spin_lock(a, ptl, "migrate_vma_collect_pmd:ptl")
        lo = vpn
        unmapped = 0
        while vpn < tab_end:
            pte = k.pte_read(mm, vpn)
            kind = pte & PTE_TYPE_MASK
            pfn = pte >> PTE_PFN_SHIFT
            if kind == PTE_NONE:
                m.cpages += 1
                k.outcome(m.kind, "hole_collected")
                src[i] = MIGRATE_PFN_MIGRATE  # line 2197
                dst[i] = 0
                i += 1
                vpn += 1
                continue
            mpfn = collected_mpfn(k, m, pte, MIGRATE_PFN_DEVICE)
            if not mpfn:
                src[i] = 0
                i += 1
                vpn += 1
                continue
            k.get_page(a, pfn, "migrate_vma_collect_pmd:get_page")
            m.cpages += 1
            if k.trylock_page(a, pfn, "migrate_vma_collect_pmd:trylock_page"):  # line 2256
                mpfn |= MIGRATE_PFN_LOCKED
                k.ptep_get_and_clear(mm, vpn)
                collect_migration_entry_v50(k, a, m, vpn, pfn, pte, "migrate_vma_collect_pmd:put_page")
                if kind == PTE_PRESENT:  # line 2278: if (pte_present(pte)) unmapped++;
                    unmapped += 1
            src[i] = mpfn
            dst[i] = 0
            i += 1
            vpn += 1
            yield
        if unmapped:  # line 2290
            k.flush_tlb_range(mm, lo, tab_end)
        k.spin_unlock(a, ptl, "migrate_vma_collect_pmd:ptl")
        yield
    m.npages = i


def collect_migration_entry_v50(
    k: Kernel, a: Actor, m: MigrateVma, vpn: int, pfn: int, pte: int, put_site: str
) -> None:
    """Seed 002 lines 2256-2276, once ``trylock_page`` succeeded and the entry was
    cleared: ``make_migration_entry(page, mpfn & MIGRATE_PFN_WRITE)``, the soft-dirty
    bit carried over (``pte_swp_mksoft_dirty``), ``page_remove_rmap`` and ``put_page``.

    As written there: **the PTE's dirty bit goes nowhere**. It is not moved to the page
    (``set_page_dirty``; 6.1's fd35ca3d12cc "mm/migrate_device.c: copy pte dirty bit to
    page" added that) and the entry cannot carry it (young / dirty migration entries are
    6.1's too), so a migration that then fails restores a clean mapping of a page whose
    last write exists nowhere else: a swap-backed page with a valid swap copy can be
    dropped as clean. v6 (:func:`~pagerace.core.mm.migrate_device.set_migration_entry`)
    has the fix."""
    bits = pte & (PTE_WRITE | PTE_SOFT_DIRTY)
    # pte_encode(PTE_MIGRATION, pfn, bits), inlined (hot: every page collect locks;
    # bits are flag bits, so its PTE_FLAG_MASK changes nothing)
    k.set_pte(m.mm, vpn, (pfn << PTE_PFN_SHIFT) | bits | PTE_MIGRATION)
    k.mapcount_add(pfn, -1)
    k.put_page(a, pfn, put_site)


def check_page_v50(k: Kernel, pfn: int, fault_page: int) -> bool:
    """``migrate_vma_check_page()`` of seed 002 (line 2336): device-private pages always
    pass (the comment's "Sadly there is no way to differentiate a regular pin from
    migration wait ... We always return true here"); device-public pages (modelled by
    device-coherent frames) count their ZONE_DEVICE reference; other device pages are
    refused. The rest is v6's check (:func:`migrate_vma_check_page`, with the catalog
    toggle ``check-ignores-pins`` that drops the refcount test)."""
    # is_zone_device / is_device_private / is_device_coherent, inlined: one read of the
    # frame's flags word (its zone bits never change; hot: every page prepare and unmap
    # check)
    f = k.flags(pfn)
    if f & Z_DEVICE:
        if f & Z_DEVICE_PRIVATE:
            return True  # seed 002 line 2368
        if not f & Z_DEVICE_COHERENT:
            return False
    return migrate_vma_check_page(k, pfn, fault_page)


def prepare_v50(k: Kernel, a: Actor, m: MigrateVma) -> Path:
    """``migrate_vma_prepare()`` of seed 002 (line 2399): a page collect could not lock
    is **trylocked, and given up if that fails** ("best effort ... backoff for any page
    we can not lock right away"); then isolation from the LRU, dropping collect's
    reference, and the pin check. A page locked in collect already has its migration
    entry (``remap``): when it cannot move it is restored at its one address
    (:func:`remove_migration_pte_v50`, line 2489)."""
    restore = 0
    allow_drain = True
    k.lru_add_drain(a, "migrate_vma_prepare:lru_add_drain")  # 5.0 mm/migrate.c, before the loop
    src = m.src
    check_page = k.variant.check_page
    for i in range(m.npages):
        if not m.cpages:
            break
        # migrate_pfn_to_page(), inlined here and below (hot: every page of every step)
        s = src[i]
        pfn = s >> MIGRATE_PFN_SHIFT if s & MIGRATE_PFN_VALID else -1
        if pfn < 0:
            continue
        remap = True
        if not s & MIGRATE_PFN_LOCKED:
            remap = False
            if not k.trylock_page(a, pfn, "migrate_vma_prepare:trylock_page"):
                m.src[i] = 0
                m.cpages -= 1
                k.put_page(a, pfn, "migrate_vma_prepare:put_page")
                k.outcome(m.kind, "lock_contended")
                yield
                continue
            m.src[i] |= MIGRATE_PFN_LOCKED
        if not k.is_zone_device(pfn):
            if not k.test_flag(pfn, PG_lru) and allow_drain:
                # Drain CPU's pagevec (seed 002 line 2436)
                yield from k.lru_add_drain_all(a, "migrate_vma_prepare:lru_add_drain_all")
                allow_drain = False
            if not folio_isolate_lru(k, a, pfn):
                m.cpages -= 1
                if remap:
                    m.src[i] &= ~MIGRATE_PFN_MIGRATE
                    restore += 1
                else:
                    prepare_back_out(k, a, m, i, pfn, False)
                k.outcome(m.kind, "not_isolated")
                yield
                continue
            # "Drop the reference we took in collect"
            k.put_page(a, pfn, "migrate_vma_prepare:put_collect_ref")
        if not check_page(k, pfn, m.fault_page):
            m.cpages -= 1
            if remap:
                m.src[i] &= ~MIGRATE_PFN_MIGRATE
                restore += 1
                if not k.is_zone_device(pfn):
                    k.get_page(a, pfn, "migrate_vma_prepare:get_page")
                    folio_putback_lru(k, a, pfn, "migrate_vma_prepare:putback_lru_page")
            else:
                prepare_back_out(k, a, m, i, pfn, not k.is_zone_device(pfn))
            k.outcome(m.kind, "pinned")
        yield
    # lines 2483-2495: restore each page collect unmapped that cannot move, at its one
    # address: remove_migration_pte(page, migrate->vma, addr, page), not the rmap walk.
    for i in range(m.npages):
        if not restore:
            break
        s = src[i]
        pfn = s >> MIGRATE_PFN_SHIFT if s & MIGRATE_PFN_VALID else -1
        if pfn < 0 or s & MIGRATE_PFN_MIGRATE:
            continue
        yield from remove_migration_pte_v50(k, a, m.mm, m.vma, m.start + i, pfn)
        m.src[i] = 0
        k.unlock_page(a, pfn, "migrate_vma_prepare:unlock_page")
        k.put_page(a, pfn, "migrate_vma_prepare:put_page")
        k.outcome(m.kind, "restored")
        restore -= 1
        yield


def remove_migration_pte_v50(k: Kernel, a: Actor, mm: int, vma: int, vpn: int, pfn: int) -> Path:
    """``remove_migration_pte(page, vma, addr, page)`` of seed 002 (lines 203-282) at one
    address, as v5.0's prepare calls it (line 2489): under the PTL
    (``page_vma_mapped_walk``, ``PVMW_MIGRATION``), a migration entry naming ``pfn``
    becomes ``pte_mkold(mk_pte(page))`` — **old and clean** — soft-dirty from the entry,
    writable only for a write entry in a ``VM_WRITE`` VMA (``maybe_mkwrite``, "Recheck
    VMA as permissions can change since migration started"); a device-private page gets
    ``make_device_private_entry(new, pte_write(pte))``; then ``get_page`` and
    ``page_add_anon_rmap``. v5.0 has no ``PageAnonExclusive`` (5.19): the page's flag is
    left as it was (collect did not clear it)."""
    site = "remove_migration_pte"
    ptl = k.ptl_word(mm, vpn)
    yield from k.spin_lock(a, ptl, "remove_migration_pte:ptl")
    old = k.pte_read(mm, vpn)
    if old & PTE_TYPE_MASK == PTE_MIGRATION and old >> PTE_PFN_SHIFT == pfn:
        k.get_page(a, pfn, site)
        bits = old & PTE_SOFT_DIRTY
        if old & PTE_WRITE and k.s.vma_flags(mm, vma) & VM_WRITE:
            bits |= PTE_WRITE
        kind = PTE_DEVICE_PRIVATE if k.is_device_private(pfn) else PTE_PRESENT
        k.mapcount_add(pfn, 1)
        k.set_pte(mm, vpn, pte_encode(kind, pfn, bits))
    k.spin_unlock(a, ptl, "remove_migration_pte:ptl")
    yield


__all__ = [
    "check_page_v50",
    "collect_migration_entry_v50",
    "collect_v50",
    "prepare_v50",
    "remove_migration_pte_v50",
]

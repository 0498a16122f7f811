"""Oracles for large folios and the PMD level (issue 15, the ``v7`` generation).

- **after every split, each folio agrees with its mappings** (:func:`check_split`,
  called by ``__folio_freeze_and_split_unmapped`` right after the unfreeze, the moment
  7.0 hands the new folios out): every folio of the range is well formed (a head with
  ``PG_head`` and its order, tails naming it with refcount 0 and no lock), its refcount
  is the caches' plus the one reference each new folio starts with
  (``folio_cache_ref_count + 1``), each page's mapcount and the folio's whole-folio
  counts equal the PTE and PMD entries that map it (none: the folio is unmapped while it
  is split), and each new folio is locked exactly when the original was, by the same
  holder: ``refcount_mismatch`` / ``mapcount_mismatch`` / ``bad_unlock``.
- **no PMD or PTE migration entry is left after finalize** (:func:`check_no_migration_entries`,
  at the end of ``__migrate_device_finalize`` for v7): no entry of the migration's mm,
  PMD or PTE, is a migration entry naming a page of a folio the migration had collected:
  ``migration_entry_left``. (The quiet-point invariant checks PTEs only, and only when
  every actor is idle.)
- **``src`` / ``dst`` of fixed length**: every write of v7's collect, insertion and split
  past the driver's arrays is a kernel failure naming the index (KASAN's
  slab-out-of-bounds), in ``core/mm/migrate_device.py``, never a pagerace internal error.

- **the driver's count agrees with ``src``** (:func:`check_collected`, at the end of
  v7's ``migrate_vma_setup``): ``cpages`` equals the entries still marked ``MIGRATE``,
  and each entry's ``MIGRATE_PFN_COMPOUND`` span equals its folio's pages, lies inside
  the range and covers only empty entries (a per-4K recount): ``driver_contract``.

In the parallel engine the split and finalize checks run through
:func:`in_stopped_world`: a failure counts only if it is still there with every other
worker between steps (docs/parallel.md, "Which checks run where").

Each is proven by a test-only fault (``core/faults.py``: ``split_unfreeze_extra_ref``,
``split_drops_lock``, ``finalize_skips_pmd_restore``, ``collect_pushes_extra_entry``,
``unmap_counts_pages``) in tests/unit/test_folio_oracles.py and
tests/unit/test_mirror_thp.py, and silent without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..machine import folio as fo
from ..machine.errors import FailureKind, InvariantViolation
from ..machine.kernel import Actor, Kernel
from ..machine.layout import (
    ENTIRELY_MAPPED,
    F_MAP,
    F_OWNER,
    F_REF,
    FO_HEAD,
    PMD_INVALID,
    PTE_DEVICE_EXCLUSIVE,
    PTE_DEVICE_PRIVATE,
    PTE_MIGRATION,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    Z_DEVICE_PRIVATE,
    PG_allocated,
    PG_anon,
    PG_head,
    PG_locked,
    PG_swapcache,
    pmd_describe,
)

_MAPPING_KINDS = (PTE_PRESENT, PTE_DEVICE_PRIVATE, PTE_DEVICE_EXCLUSIVE)


def _pte_maps(k: Kernel, lo: int, hi: int) -> np.ndarray:
    """How many PTEs (present, device-private, device-exclusive) map each frame of
    [lo, hi), over every mm."""
    pte = k.s.pte
    kind = pte & PTE_TYPE_MASK
    live = np.isin(kind, _MAPPING_KINDS)
    pfn = pte >> PTE_PFN_SHIFT
    sel = live & (pfn >= lo) & (pfn < hi)
    return np.bincount((pfn[sel] - lo).ravel(), minlength=hi - lo)


def _pmd_maps(k: Kernel, head: int) -> int:
    """How many PMD leaves (huge present or device-private) map the folio at ``head``."""
    pmd = k.s.pmd
    kind = pmd & PTE_TYPE_MASK
    live = (kind == PTE_PRESENT) | (kind == PTE_DEVICE_PRIVATE)
    return int(np.count_nonzero(live & ((pmd >> PTE_PFN_SHIFT) == head)))


def in_stopped_world(k: Kernel, check: Callable[..., None], *args: Any) -> None:
    """Run an in-step ``check`` that reads other actors' state where it is valid.

    In the deterministic engine nothing else runs during a step: the check runs here,
    as it always did. The parallel engine installs ``k.hooks["stop_machine"]``
    (``harness/parallel/worker.py`` ``StopMachine``: every other worker waits between
    steps while it is held). The check first runs while the others run on; if it
    passes, that is the answer (most calls: a stop costs the other workers a wait). If
    it fails, it runs again with the world stopped, where it sees every other actor at
    a preemption point as the deterministic engine does, and only that verdict counts
    (the first may have read another worker's step half done). A real failure is state
    the check finds again; one it saw only mid-step is counted as
    ``in_step_check_unconfirmed``. If the run stops hard while waiting, the check is
    skipped: the run's outcome is no longer its."""
    stop = k.hooks.get("stop_machine")
    if stop is None:
        check(k, *args)
        return
    try:
        check(k, *args)
        return
    except InvariantViolation:
        pass
    with stop() as ok:
        if ok:
            check(k, *args)
            k.count("in_step_check_unconfirmed")


def check_split(k: Kernel, a: Actor, head: int, nr: int, locked_by: int, site: str) -> None:
    """The folios of [head, head + nr) right after a split's unfreeze (see the module
    docstring). ``locked_by``: the lock owner word (actor + 1) the original folio had,
    0 if it was unlocked. It reads every mm's entries and the new folios' counts, which
    other actors may change once the folios are unfrozen (:func:`in_stopped_world`)."""
    in_stopped_world(k, _check_split, a, head, nr, locked_by, site)


def _check_split(k: Kernel, a: Actor, head: int, nr: int, locked_by: int, site: str) -> None:
    words = k.words
    maps = _pte_maps(k, head, head + nr)
    p = head
    while p < head + nr:
        f = k.flags(p)
        order = fo.folio_order(k, p)
        n = 1 << order
        if fo.page_is_tail(k, p) or (order and not f & PG_head) or p + n > head + nr:
            raise k.fail(
                FailureKind.MAPCOUNT_MISMATCH,
                f"after the split at {site}, page {p} is not the head of a folio inside the "
                f"split range [{head}, {head + nr}) (order {order})",
                actors=[a], pages=[p], sites=[site],
            )
        cache = 0 if f & PG_anon and not f & PG_swapcache else n
        ref = words.load(k.fw(p, F_REF))
        if ref != cache + 1:
            raise k.fail(
                FailureKind.REFCOUNT_MISMATCH,
                f"after the split at {site}, folio {p} (order {order}) has refcount {ref}, "
                f"expected {cache + 1} (folio_cache_ref_count + 1)",
                actors=[a], pages=[p], sites=[site],
            )
        pmds = _pmd_maps(k, p) if order else 0
        for q in range(p, p + n):
            if q != p:
                if words.load(fo.fo_w(k, q, FO_HEAD)) != p + 1 or words.load(k.fw(q, F_REF)):
                    raise k.fail(
                        FailureKind.REFCOUNT_MISMATCH,
                        f"after the split at {site}, tail {q} of folio {p} does not name its "
                        f"head or holds references",
                        actors=[a], pages=[q], sites=[site],
                    )
                if k.flags(q) & PG_locked:
                    raise k.fail(
                        FailureKind.BAD_UNLOCK,
                        f"after the split at {site}, tail {q} of folio {p} is locked",
                        actors=[a], pages=[q], sites=[site],
                    )
            if k.mapcount(q) != int(maps[q - head]):
                raise k.fail(
                    FailureKind.MAPCOUNT_MISMATCH,
                    f"after the split at {site}, page {q} has mapcount {k.mapcount(q)} but "
                    f"{int(maps[q - head])} PTEs map it",
                    actors=[a], pages=[q], sites=[site],
                )
        if order and (
            fo.folio_entire_mapcount(k, p) != pmds
            or fo.folio_large_mapcount(k, p) != pmds + int(maps[p - head : p - head + n].sum())
        ):
            raise k.fail(
                FailureKind.MAPCOUNT_MISMATCH,
                f"after the split at {site}, folio {p} counts {fo.folio_large_mapcount(k, p)} "
                f"mappings ({fo.folio_entire_mapcount(k, p)} by PMD), its entries "
                f"{pmds + int(maps[p - head : p - head + n].sum())} ({pmds} by PMD)",
                actors=[a], pages=[p], sites=[site],
            )
        owner = words.load(k.fw(p, F_OWNER)) if f & PG_locked else 0
        if owner != locked_by:
            raise k.fail(
                FailureKind.BAD_UNLOCK,
                f"after the split at {site}, folio {p} is "
                f"{'locked by actor ' + str(owner - 1) if owner else 'unlocked'} but the "
                f"folio it came from was "
                f"{'locked by actor ' + str(locked_by - 1) if locked_by else 'unlocked'}",
                actors=[a], pages=[p], sites=[site], locks=[f"page:{p}"],
            )
        p += n


def check_no_migration_entries(k: Kernel, a: Actor, head: int, site: str) -> None:
    """No PTE or PMD of any mm is a migration entry naming a page of the folio at
    ``head`` once finalize has removed its migration entries. Called while the folio is
    still locked: nobody else can have made a migration entry for it since collect.
    It reads every mm's tables, which other actors change meanwhile (in the parallel
    engine even between numpy's two reads of one entry): :func:`in_stopped_world`."""
    in_stopped_world(k, _check_no_migration_entries, a, head, site)


def _check_no_migration_entries(k: Kernel, a: Actor, head: int, site: str) -> None:
    s = k.s
    n = fo.folio_nr_pages(k, head) if k.flags(head) & PG_head else 1
    tables = [(s.pte, "PTE", 1)]
    if k.geo.thp:
        tables.append((s.pmd, "PMD", k.geo.hpage_pmd_nr))
    for table, what, per in tables:
        mig = (table & PTE_TYPE_MASK) == PTE_MIGRATION
        if not mig.any():  # the common case: no migration entry anywhere
            continue
        pfn = table >> PTE_PFN_SHIFT
        hit = np.argwhere(mig & (pfn >= head) & (pfn < head + n))
        if hit.size:
            mm, i = (int(x) for x in hit[0])
            raise k.fail(
                FailureKind.MIGRATION_ENTRY_LEFT,
                f"after {site}, the {what} of mm {mm} at page {i * per} is still a migration "
                f"entry to page {int(pfn[mm, i])} of folio {head}",
                actors=[a], pages=[int(pfn[mm, i])], sites=[site], mm=mm, vpn=i * per,
            )




# -- the global invariants with large folios and PMDs (thp geometries) -----------------
# core/oracles/invariants.py calls these only when the geometry has thp, so the older
# generations' checks are the same code as before.
def effective_ptes(k: Kernel) -> np.ndarray:
    """Every mm's entries as the CPU sees them, one word per virtual page: the PTE, or,
    under a PMD leaf (huge present, device-private or migration), that leaf's entry for
    the page (``head + i``, the leaf's bits)."""
    pte = k.s.pte
    pmd = k.s.pmd
    n = k.geo.hpage_pmd_nr
    kind = pmd & PTE_TYPE_MASK
    leaf = (kind == PTE_PRESENT) | (kind == PTE_DEVICE_PRIVATE) | (kind == PTE_MIGRATION)
    if leaf.any():
        pte = pte.copy()
        ppm = k.geo.pages_per_mm
        for mm, idx in zip(*np.nonzero(leaf)):
            w = int(pmd[mm, idx])
            lo = int(idx) * n
            hi = min(lo + n, ppm)
            head_word = w & ~PMD_INVALID
            offs = np.arange(hi - lo, dtype=np.int64) << PTE_PFN_SHIFT
            pte[mm, lo:hi] = head_word + offs
    return pte


def check_pmds(k: Kernel) -> None:
    """With every actor idle: no PMD lock held, no PMD migration entry or invalidated
    PMD left, every PMD leaf names the allocated head of a PMD-sized folio of the right
    zone, and the folio's whole-folio counts agree with the PMD leaves and PTEs that map
    it."""
    s = k.s
    if (s.pmd_ptl != 0).any():
        mm, t = np.nonzero(s.pmd_ptl)
        raise k.fail(
            FailureKind.LOCK_BALANCE,
            f"PMD lock of mm {int(mm[0])} table {int(t[0])} held at a quiet point",
            sites=["global_invariants"],
        )
    pmd = s.pmd
    kind = pmd & PTE_TYPE_MASK
    if (kind == PTE_MIGRATION).any() or (pmd & PMD_INVALID).any():
        mm, i = np.argwhere((kind == PTE_MIGRATION) | ((pmd & PMD_INVALID) != 0))[0]
        raise k.fail(
            FailureKind.MIGRATION_ENTRY_LEFT,
            f"PMD {int(i)} of mm {int(mm)} is {pmd_describe(int(pmd[mm, i]))} after every "
            "migration and split finished",
            pages=[int(pmd[mm, i] >> PTE_PFN_SHIFT)],
            sites=["global_invariants"],
        )
    n = k.geo.hpage_pmd_nr
    leaf = (kind == PTE_PRESENT) | (kind == PTE_DEVICE_PRIVATE)
    heads = (pmd >> PTE_PFN_SHIFT)[leaf]
    for mm, i in zip(*np.nonzero(leaf)):
        h = int(pmd[mm, i] >> PTE_PFN_SHIFT)
        f = k.flags(h) if 0 <= h < k.geo.frames else 0
        bad = (
            not f & PG_allocated
            or fo.page_is_tail(k, h)
            or fo.folio_nr_pages(k, h) != n
            or bool(f & Z_DEVICE_PRIVATE) != (int(kind[mm, i]) == PTE_DEVICE_PRIVATE)
        )
        if bad:
            raise k.fail(
                FailureKind.BAD_MAPPING if f & PG_allocated else FailureKind.USE_AFTER_FREE,
                f"PMD {int(i)} of mm {int(mm)} ({pmd_describe(int(pmd[mm, i]))}) does not name "
                "the allocated head of a PMD-sized folio of its zone",
                pages=[h], sites=["global_invariants"],
            )
    big = np.flatnonzero((s.frames[:, 0] & PG_head) != 0)
    if not big.size:
        return
    maps = _pte_maps(k, 0, k.geo.frames)
    pmd_count = np.bincount(heads, minlength=k.geo.frames) if heads.size else np.zeros(
        k.geo.frames, dtype=np.int64
    )
    for h in big.tolist():
        nr = fo.folio_nr_pages(k, h)
        ptes = int(maps[h : h + nr].sum())
        pmds = int(pmd_count[h])
        mapped_pages = int(np.count_nonzero(maps[h : h + nr]))
        want = (pmds + ptes, pmds, mapped_pages + (ENTIRELY_MAPPED if pmds else 0))
        got = (
            fo.folio_large_mapcount(k, h),
            fo.folio_entire_mapcount(k, h),
            fo.folio_nr_pages_mapped(k, h),
        )
        if got != want:
            raise k.fail(
                FailureKind.MAPCOUNT_MISMATCH,
                f"folio {h} (order {fo.folio_order(k, h)}) counts (large, entire, "
                f"nr_pages_mapped) = {got}, its entries say {want}",
                pages=[h], sites=["global_invariants"],
            )
    # _mm_ids (7.0 CONFIG_MM_ID): a folio two mms map must be "maybe mapped shared", or
    # __wp_can_reuse_large_anon_folio may hand one mm's write to the other's page.
    pte = s.pte
    pfn = pte >> PTE_PFN_SHIFT
    live = np.isin(pte & PTE_TYPE_MASK, _MAPPING_KINDS)
    pmd_head = pmd >> PTE_PFN_SHIFT
    for h in big.tolist():
        nr = fo.folio_nr_pages(k, h)
        by_mm = np.any(live & (pfn >= h) & (pfn < h + nr), axis=1) | np.any(
            leaf & (pmd_head == h), axis=1
        )
        if np.count_nonzero(by_mm) >= 2 and not fo.folio_maybe_mapped_shared(k, h):
            mms = [int(m) for m in np.flatnonzero(by_mm)]
            raise k.fail(
                FailureKind.MAPCOUNT_MISMATCH,
                f"folio {h} (order {fo.folio_order(k, h)}) is mapped by mms {mms} but not "
                "marked maybe-mapped-shared (_mm_ids)",
                pages=[h], sites=["global_invariants"],
            )


def thp_expected_refs(k: Kernel, expected: np.ndarray, alloc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The refcount each frame must have with large folios: a large folio's references
    are its head's (every page's PTE mappings, its PMD mappings, its pins counted one
    each in ``_pincount``, the swap cache's one per page, and the extra references of
    the frame-level hooks); a tail has none. ``expected`` is the order-0 formula of
    ``check_counts``. Returns (expected, the frames that must have a reference: heads
    and order-0 frames)."""
    s = k.s
    fr = s.frames
    nframes = fr.shape[0]
    head_of_tail = s.folio[:, FO_HEAD]
    is_tail = head_of_tail != 0
    big = (fr[:, 0] & PG_head) != 0
    if not big.any():
        return expected, alloc
    exp = expected.copy()
    maps = _pte_maps(k, 0, nframes)
    pmd = s.pmd
    kind = pmd & PTE_TYPE_MASK
    leaf = (kind == PTE_PRESENT) | (kind == PTE_DEVICE_PRIVATE)
    pmd_count = np.bincount((pmd >> PTE_PFN_SHIFT)[leaf], minlength=nframes)[:nframes]
    for h in np.flatnonzero(big).tolist():
        nr = fo.folio_nr_pages(k, h)
        base = int(expected[h]) - int(fr[h, F_MAP])  # the head's pins, swap cache, hooks
        if fr[h, 0] & PG_swapcache:
            base += nr - 1
        exp[h] = base + int(maps[h : h + nr].sum()) + int(pmd_count[h]) + fo.folio_pincount(k, h)
    exp[is_tail] = 0
    return exp, alloc & ~is_tail


# include/linux/migrate.h of 7.0 (core/mm/migrate_device.py imports this module)
_PFN_VALID = 1 << 0
_PFN_MIGRATE = 1 << 1
_PFN_COMPOUND = 1 << 4
_PFN_SHIFT = 6


def check_collected(
    k: Kernel, a: Actor, src: list[int], npages: int, cpages: int, site: str
) -> None:
    """The driver's view of what ``migrate_vma_setup`` collected agrees with a per-4K
    recount of ``src`` (issue 15 item 6). The driver is handed ``cpages`` (7.0 counts
    one per entry still marked ``MIGRATE``: ``migrate_device_unmap``'s ``unmapped``)
    and reads each entry's span from ``MIGRATE_PFN_COMPOUND`` (``migrate_vma_nr_pages``:
    ``HPAGE_PMD_NR`` or 1). The recount walks ``src`` 4K page by 4K page: an entry with
    a page covers the pages of its folio (``folio_nr_pages``), a hole the span its flag
    says; every page a span covers after its first has an empty entry and lies inside
    ``npages``; the number of covering entries must equal ``cpages``. Any disagreement
    is ``driver_contract``: the driver would allocate, copy or count for pages that
    were not collected, or miss some that were."""
    n = k.geo.hpage_pmd_nr
    entries = 0
    pages = 0
    i = 0
    while i < npages:
        s = src[i]
        if not s & _PFN_MIGRATE:
            i += 1
            continue
        entries += 1
        driver_span = n if s & _PFN_COMPOUND else 1
        span = driver_span
        if s & _PFN_VALID:
            span = fo.folio_nr_pages(k, fo.page_folio(k, s >> _PFN_SHIFT))
        bad = ""
        if span != driver_span:
            bad = f"names a folio of {span} pages but the driver reads a span of {driver_span}"
        elif i + span > npages:
            bad = f"spans {span} pages past the {npages} collected"
        else:
            inner = [j for j in range(i + 1, i + span) if src[j]]
            if inner:
                bad = f"spans {span} pages but entry {inner[0]} inside it is {src[inner[0]]:#x}"
        if bad:
            raise k.fail(
                FailureKind.DRIVER_CONTRACT,
                f"{a.name}: after {site}, src[{i}] ({s:#x}) {bad}",
                actors=[a], sites=[site], indexes=[i],
            )
        pages += span
        i += span
    if entries != cpages:
        raise k.fail(
            FailureKind.DRIVER_CONTRACT,
            f"{a.name}: after {site}, the driver is handed cpages = {cpages} but src holds "
            f"{entries} collected entries ({pages} pages of 4K)",
            actors=[a], sites=[site],
        )


__all__ = [
    "check_collected", "check_no_migration_entries", "check_pmds", "check_split",
    "effective_ptes", "thp_expected_refs",
]

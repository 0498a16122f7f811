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

Each is proven by a test-only fault (``core/faults.py``: ``split_unfreeze_extra_ref``,
``split_drops_lock``, ``finalize_skips_pmd_restore``, ``collect_pushes_extra_entry``) in
tests/unit/test_folio_oracles.py, and silent without it.
"""

from __future__ import annotations

import numpy as np

from ..machine import folio as fo
from ..machine.errors import FailureKind
from ..machine.kernel import Actor, Kernel
from ..machine.layout import (
    F_OWNER,
    F_REF,
    FO_HEAD,
    PTE_DEVICE_EXCLUSIVE,
    PTE_DEVICE_PRIVATE,
    PTE_MIGRATION,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    PG_anon,
    PG_head,
    PG_locked,
    PG_swapcache,
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


def check_split(k: Kernel, a: Actor, head: int, nr: int, locked_by: int, site: str) -> None:
    """The folios of [head, head + nr) right after a split's unfreeze (see the module
    docstring). ``locked_by``: the lock owner word (actor + 1) the original folio had,
    0 if it was unlocked."""
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
    still locked: nobody else can have made a migration entry for it since collect."""
    s = k.s
    n = fo.folio_nr_pages(k, head) if k.flags(head) & PG_head else 1
    tables = [(s.pte, "PTE", 1)]
    if k.geo.thp:
        tables.append((s.pmd, "PMD", k.geo.hpage_pmd_nr))
    for table, what, per in tables:
        kind = table & PTE_TYPE_MASK
        pfn = table >> PTE_PFN_SHIFT
        hit = np.argwhere((kind == PTE_MIGRATION) & (pfn >= head) & (pfn < head + n))
        if hit.size:
            mm, i = (int(x) for x in hit[0])
            raise k.fail(
                FailureKind.MIGRATION_ENTRY_LEFT,
                f"after {site}, the {what} of mm {mm} at page {i * per} is still a migration "
                f"entry to page {int(pfn[mm, i])} of folio {head}",
                actors=[a], pages=[int(pfn[mm, i])], sites=[site], mm=mm, vpn=i * per,
            )


__all__ = ["check_no_migration_entries", "check_split"]

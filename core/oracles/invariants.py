"""Global invariants over the whole model, vectorized over the numpy views.

Run at quiet points (every actor between operations) and at the end of every run. When
all is well this is an expensive no-op, like Hypothesis's ``check_valid()``; when not, it
raises :class:`InvariantViolation` naming the pages and entries involved.

What must hold with every actor idle:

- no page lock, page-table lock, mmap_lock or anon_vma rwsem is held;
- no migration entry is left in any page table;
- every present entry points at an allocated frame of system RAM or device-coherent
  memory, every device-private entry at an allocated device-private frame;
- each frame's mapcount is the number of entries that map it;
- each frame's refcount is its mapcount + pins × GUP_PIN_COUNTING_BIAS + 1 if it is in the
  swap cache (+ holds the workload's extra-reference hooks declare);
- an allocated frame that nothing maps, pins or caches has leaked; a free frame has no
  references, no mappings, and nothing points at it;
- each zone's free count is its number of free frames;
- every virtual page still holds the last value written to it (no lost write).
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

import numpy as np

from ..machine.errors import FailureKind, InvariantViolation
from ..machine.kernel import Kernel
from ..machine.layout import (
    DYNAMIC_MASK,
    F_DATA,
    F_FLAGS,
    F_MAP,
    F_PIN,
    F_PRIV,
    F_REF,
    FRAME_WORDS,
    GUP_PIN_COUNTING_BIAS,
    MMF_UNSTABLE,
    PTE_DEVICE_EXCLUSIVE,
    PTE_DEVICE_PRIVATE,
    PTE_MIGRATION,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_SWAP,
    PTE_TYPE_MASK,
    S_DATA,
    S_USED,
    SHADOW_REAPED,
    Z_DEVICE,
    Z_DEVICE_PRIVATE,
    Z_FREE,
    PG_allocated,
    PG_locked,
    PG_swapcache,
    pte_describe,
)
from ..machine.words import _AtomicWords, count_nonzero
from .folio import check_pmds, effective_ptes, thp_expected_refs
from .world import check_device_pages, check_dirty, check_swap_counts

_MAX_LISTED = 6


def _fail(k: Kernel, kind: FailureKind, msg: str, pages: list[int], **details: Any) -> None:
    raise InvariantViolation(
        k.fail(
            kind, msg, (), pages[:_MAX_LISTED], ["global_invariants"], (), **details
        ).failure
    )


def _where(mask: np.ndarray) -> list[int]:
    return [int(x) for x in np.flatnonzero(mask)[:_MAX_LISTED]]


def check_locks(k: Kernel) -> None:
    s = k.s
    locked = (s.frames[:, F_FLAGS] & PG_locked) != 0
    if locked.any():
        pages = _where(locked)
        owners = [int(s.frames[p, 4]) - 1 for p in pages]
        _fail(
            k,
            FailureKind.LOCK_BALANCE,
            f"page lock held at a quiet point: pages {pages} (owners {owners})",
            pages,
        )
    if (s.ptl != 0).any():
        mm, tab = np.nonzero(s.ptl)
        _fail(
            k,
            FailureKind.LOCK_BALANCE,
            f"page-table lock held at a quiet point: mm {int(mm[0])} table {int(tab[0])}",
            [],
        )
    if (s.mm[:, 0] != 0).any():
        held = int(np.flatnonzero(s.mm[:, 0])[0])
        _fail(k, FailureKind.LOCK_BALANCE, f"mmap_lock of mm {held} held at a quiet point", [])
    if (s.anon_vma[:, 0] != 0).any():
        held = int(np.flatnonzero(s.anon_vma[:, 0])[0])
        _fail(k, FailureKind.LOCK_BALANCE, f"anon_vma rwsem of mm {held} held at a quiet point", [])


def check_entries(k: Kernel) -> None:
    s = k.s
    pte = s.pte
    types = pte & PTE_TYPE_MASK
    pfns = pte >> PTE_PFN_SHIFT
    mig = types == PTE_MIGRATION
    if mig.any():
        mm, vpn = np.nonzero(mig)
        ents = [
            f"mm {int(m)} page {int(v)}: {pte_describe(int(pte[m, v]))}"
            for m, v in list(zip(mm, vpn))[:_MAX_LISTED]
        ]
        _fail(
            k,
            FailureKind.MIGRATION_ENTRY_LEFT,
            "migration entries left after every migration finished: " + "; ".join(ents),
            [int(pfns[m, v]) for m, v in zip(mm, vpn)],
        )
    flags = s.frames[:, F_FLAGS]
    nframes = flags.shape[0]
    mapped = (types == PTE_PRESENT) | (types == PTE_DEVICE_PRIVATE) | (types == PTE_DEVICE_EXCLUSIVE)
    bad_pfn = mapped & ((pfns < 0) | (pfns >= nframes))
    if bad_pfn.any():
        mm, vpn = np.nonzero(bad_pfn)
        _fail(k, FailureKind.BAD_MAPPING, f"entry at mm {int(mm[0])} page {int(vpn[0])} names "
              f"frame {int(pfns[mm[0], vpn[0]])} beyond the {nframes} frames", [])
    safe = np.where(mapped, pfns, 0)
    fl = flags[safe]
    free_target = mapped & ((fl & PG_allocated) == 0)
    if free_target.any():
        mm, vpn = np.nonzero(free_target)
        pages = [int(pfns[m, v]) for m, v in zip(mm, vpn)]
        _fail(
            k,
            FailureKind.USE_AFTER_FREE,
            f"mm {int(mm[0])} page {int(vpn[0])} maps frame {pages[0]}, which is free",
            pages,
        )
    is_priv = (fl & Z_DEVICE_PRIVATE) != 0
    wrong = ((types == PTE_PRESENT) & is_priv) | ((types == PTE_DEVICE_PRIVATE) & ~is_priv)
    if wrong.any():
        mm, vpn = np.nonzero(wrong)
        _fail(
            k,
            FailureKind.BAD_MAPPING,
            f"mm {int(mm[0])} page {int(vpn[0])}: {pte_describe(int(pte[mm[0], vpn[0]]))} "
            "points at a frame of the wrong zone",
            [int(pfns[mm[0], vpn[0]])],
        )


def check_counts(k: Kernel) -> None:
    s = k.s
    pte = s.pte
    types = pte & PTE_TYPE_MASK
    pfns = pte >> PTE_PFN_SHIFT
    mapped = (types == PTE_PRESENT) | (types == PTE_DEVICE_PRIVATE) | (types == PTE_DEVICE_EXCLUSIVE)
    nframes = s.frames.shape[0]
    maps = np.bincount(pfns[mapped].ravel(), minlength=nframes)[:nframes]
    fr = s.frames
    alloc = (fr[:, F_FLAGS] & PG_allocated) != 0
    bad_map = fr[:, F_MAP] != maps
    if bad_map.any():
        pages = _where(bad_map)
        p = pages[0]
        _fail(
            k,
            FailureKind.MAPCOUNT_MISMATCH,
            f"frame {p} has mapcount {int(fr[p, F_MAP])} but {int(maps[p])} entries map it",
            pages,
        )
    extra = k.extra_refs() if hasattr(k, "extra_refs") else None
    expected = (
        fr[:, F_MAP]
        + fr[:, F_PIN] * GUP_PIN_COUNTING_BIAS
        + ((fr[:, F_FLAGS] & PG_swapcache) != 0)
    )
    if extra is not None:
        expected = expected + extra
    has_refs = alloc
    if k.geo.thp:  # large folios: a folio's references are its head's (oracles/folio.py)
        expected, has_refs = thp_expected_refs(k, expected, alloc)
    ref = fr[:, F_REF]
    bad_free = ~alloc & ((ref != 0) | (fr[:, F_MAP] != 0))
    if bad_free.any():
        pages = _where(bad_free)
        p = pages[0]
        _fail(
            k,
            FailureKind.REFCOUNT_MISMATCH,
            f"free frame {p} has refcount {int(ref[p])} and mapcount {int(fr[p, F_MAP])}",
            pages,
        )
    leaked = has_refs & (expected == 0)
    if leaked.any():
        pages = _where(leaked)
        p = pages[0]
        _fail(
            k,
            FailureKind.LEAK,
            f"frame {p} is allocated (refcount {int(ref[p])}) but nothing maps, pins or "
            "caches it: leaked",
            pages,
        )
    bad_ref = alloc & (ref != expected)
    if bad_ref.any():
        pages = _where(bad_ref)
        p = pages[0]
        kind = FailureKind.LEAK if ref[p] > expected[p] else FailureKind.REFCOUNT_MISMATCH
        _fail(
            k,
            kind,
            f"frame {p} has refcount {int(ref[p])}, expected {int(expected[p])} "
            f"(mapcount {int(fr[p, F_MAP])}, pins {int(fr[p, F_PIN])})",
            pages,
        )
    for zone in range(k.geo.zones):
        lo, hi = k.lay.zone_range(zone)
        free = int((~alloc[lo:hi]).sum())
        if free != int(s.zones[zone, Z_FREE]):
            _fail(
                k,
                FailureKind.LEAK,
                f"zone {zone} counts {int(s.zones[zone, Z_FREE])} free frames but {free} are free",
                [],
            )


def check_contents(k: Kernel) -> None:
    """No lost write: every written virtual page still reads its last written token."""
    s = k.s
    pte = effective_ptes(k) if k.geo.thp else s.pte  # pages under a PMD leaf too
    types = pte & PTE_TYPE_MASK
    pfns = pte >> PTE_PFN_SHIFT
    shadow = s.shadow
    nframes = s.frames.shape[0]
    mapped = (types == PTE_PRESENT) | (types == PTE_DEVICE_PRIVATE) | (types == PTE_DEVICE_EXCLUSIVE)
    data = s.frames[np.where(mapped, np.clip(pfns, 0, nframes - 1), 0), F_DATA]
    swapped = types == PTE_SWAP
    if swapped.any():
        nslots = s.swap.shape[0]
        sdata = s.swap[np.where(swapped, np.clip(pfns, 0, nslots - 1), 0), S_DATA]
        # A slot whose page is in the swap cache reads from that page (swap-in finds it
        # first); frames in the swap cache keep slot + 1 in F_PRIV (core/mm/swapfile.py).
        fr = s.frames
        cached = np.flatnonzero((fr[:, F_FLAGS] & PG_swapcache) != 0)
        if cached.size:
            by_slot = np.full(nslots, -1, dtype=np.int64)
            by_slot[np.clip(fr[cached, F_PRIV] - 1, 0, nslots - 1)] = cached
            hit = by_slot[np.where(swapped, np.clip(pfns, 0, nslots - 1), 0)]
            sdata = np.where(hit >= 0, fr[np.clip(hit, 0, nframes - 1), F_DATA], sdata)
        data = np.where(swapped, sdata, data)
    have = mapped | swapped
    lost = (shadow != 0) & (~have | (data != shadow))
    # The OOM reaper zaps without clearing the shadow, marking it SHADOW_REAPED
    # (core/mm/oom_kill.py): a page the reaper zapped in an OOM-reaped mm
    # (MMF_UNSTABLE), which nothing mapped again, is gone by design, not a lost write.
    # Every other page of that mm, and every other mm, is judged in full.
    unstable = (s.views["mm_flags"] & MMF_UNSTABLE) != 0
    if unstable.any():
        reaped = (shadow & SHADOW_REAPED) != 0
        lost &= ~(unstable[:, None] & reaped & ~have)
    if lost.any():
        mm, vpn = np.nonzero(lost)
        m, v = int(mm[0]), int(vpn[0])
        where = pte_describe(int(pte[m, v]))
        _fail(
            k,
            FailureKind.LOST_WRITE,
            f"mm {m} page {v} last had token {int(shadow[m, v]):#x} written, but its "
            f"entry {where} now holds {int(data[m, v]) if have[m, v] else 'nothing'}"
            f" ({int(lost.sum())} pages lost)",
            [int(pfns[m, v])] if have[m, v] else [],
            mm=m,
            vpn=v,
        )


CHECKS = [check_locks, check_entries, check_counts, check_contents]


# --------------------------------------------------------------------------------------
# The clean path of check_all: one decoding of the page tables and the frames, shared by
# quick tests that prove a check passes. A check not proven runs in full (it raises its
# own failure, with its own message, or passes): the failures and their order are those
# of running every check in turn, and a state that breaks nothing (every run's end)
# costs a third of the numpy calls. Each quick test is exact or errs towards "not
# proven"; tests/unit/test_check_all_quick.py compares check_all with the checks run one
# by one over corrupted states.

# Entry types that map a frame (check_entries, check_counts, check_contents).
_MAPPED = np.zeros(PTE_TYPE_MASK + 1, dtype=bool)
_MAPPED[[PTE_PRESENT, PTE_DEVICE_PRIVATE, PTE_DEVICE_EXCLUSIVE]] = True
# What the frame an entry of each type maps must be (check_entries): allocated, and
# device-private exactly for a device-private entry (a device-exclusive entry maps
# either kind): frame flags & _NEED_MASK[type] == _NEED_VAL[type].
_NEED_MASK = np.zeros(PTE_TYPE_MASK + 1, dtype=np.int64)
_NEED_VAL = np.zeros(PTE_TYPE_MASK + 1, dtype=np.int64)
_NEED_MASK[[PTE_PRESENT, PTE_DEVICE_PRIVATE]] = PG_allocated | Z_DEVICE_PRIVATE
_NEED_MASK[PTE_DEVICE_EXCLUSIVE] = PG_allocated
_NEED_VAL[[PTE_PRESENT, PTE_DEVICE_EXCLUSIVE]] = PG_allocated
_NEED_VAL[PTE_DEVICE_PRIVATE] = PG_allocated | Z_DEVICE_PRIVATE


# What AtomicWords.proven_clean (the C extension) returns: bit i proves _PROVEN_BITS[i].
_PROVEN_BITS = (
    check_locks, check_dirty, check_swap_counts, check_device_pages, check_entries,
    check_counts, check_contents,
)
# Every set of proven checks it can return, by its bits (a lookup, not a set a call).
_PROVEN_SETS = tuple(
    frozenset(c for i, c in enumerate(_PROVEN_BITS) if bits >> i & 1)
    for bits in range(1 << len(_PROVEN_BITS))
)
# The C pass is there (an extension built from this tree: an older build lacks it).
_C_PASS = hasattr(_AtomicWords, "proven_clean")
# The kernel's own extra-reference hook, which the C pass counts itself.
_LRU_BATCH_REFS = Kernel.lru_batch_refs
# The last layout's parameters of AtomicWords.proven_clean: (layout, params or None).
_QUICK: tuple[Any, tuple[int, ...] | None] | None = None


def _quick_params(k: Kernel) -> tuple[int, ...] | None:
    """The tables' places and the constants AtomicWords.proven_clean takes, in its order
    (core/machine/_atomicwords.c, ``PC_*``), for ``k``'s layout; None for a layout it
    does not fit (then the numpy pass runs)."""
    global _QUICK
    lay = k.lay
    q = _QUICK
    if q is not None and q[0] is lay:
        return q[1]
    g = k.geo
    t = lay.tables
    fr, ptl, mm, av = t["frames"], t["ptl"], t["mm"], t["anon_vma"]
    pte, shadow, swap, zones = t["pte"], t["shadow"], t["swap"], t["zones"]
    lru = t["lru_batch"]
    params: tuple[int, ...] | None = None
    if (
        fr.shape == (g.frames, FRAME_WORDS)
        and shadow.size == pte.size
        and swap.shape[0] >= g.swap_slots
        and zones.shape[0] == g.zones
        and PTE_TYPE_MASK == 7
    ):
        params = (
            fr.offset, g.frames, FRAME_WORDS, F_FLAGS, F_REF, F_MAP, F_PIN, F_DATA,
            ptl.offset, ptl.size, mm.offset, mm.shape[0], mm.shape[1],
            av.offset, av.shape[0], av.shape[1],
            pte.offset, pte.size, shadow.offset,
            swap.offset, g.swap_slots, swap.shape[1], S_USED,
            zones.offset, g.zones, zones.shape[1], Z_FREE, g.sys_frames, g.dev_frames,
            PG_locked, PG_swapcache, PG_allocated, Z_DEVICE, DYNAMIC_MASK,
            PTE_TYPE_MASK, PTE_PFN_SHIFT, PTE_SWAP, PTE_MIGRATION, GUP_PIN_COUNTING_BIAS,
            sum(1 << int(ty) for ty in np.flatnonzero(_MAPPED)),
            lru.offset, lru.shape[0], lru.shape[1],
            *_NEED_MASK.tolist(), *_NEED_VAL.tolist(),
        )
    _QUICK = (lay, params)
    return params


def _proven_clean(k: Kernel) -> Set[Any]:
    """The checks (of CHECKS and of the world's extra checks) that certainly pass on
    ``k``'s state, for a geometry without the PMD level (v7's checks see PMDs): in one
    call of the C extension over the state's words (``AtomicWords.proven_clean``), else
    by the numpy pass; the same set either way."""
    words = k.s.words
    if _C_PASS and type(words) is _AtomicWords:
        params = _quick_params(k)
        if params is not None:
            xr = getattr(k, "extra_refs", None)
            if getattr(xr, "__func__", None) is _LRU_BATCH_REFS and xr.__self__ is k:  # type: ignore[union-attr]
                extra: Any = True  # the kernel's own hook: the C counts the batches
            else:
                extra = xr() if xr is not None else None
            if extra is None or extra is True or (
                type(extra) is np.ndarray
                and extra.dtype == np.int64
                and extra.shape == (params[1],)
                and extra.flags.c_contiguous
            ):
                bits = words.proven_clean(params, extra)  # type: ignore[attr-defined]
                if bits >= 0:
                    return _PROVEN_SETS[bits]
    return _proven_clean_arrays(k)


def _proven_clean_arrays(k: Kernel) -> set[Any]:
    """The numpy pass of :func:`_proven_clean`."""
    s = k.s
    cnz = count_nonzero  # np.count_nonzero(a) calls it: no Python wrapper per count
    proven: set[Any] = set()
    fr = s.frames
    fl = fr[:, F_FLAGS]
    if not (cnz(fl & PG_locked) or cnz(s.ptl) or cnz(s.mm[:, 0]) or cnz(s.anon_vma[:, 0])):
        proven.add(check_locks)
    n_sc = cnz(fl & PG_swapcache)
    if not n_sc:
        proven.add(check_dirty)  # it judges swap-cache pages only
    pte = s.pte
    types = pte & PTE_TYPE_MASK
    per_type = np.bincount(types.ravel(), minlength=PTE_TYPE_MASK + 1).tolist()
    n_swap = per_type[PTE_SWAP]
    nslots = k.geo.swap_slots
    if not nslots or (not n_swap and not n_sc and not cnz(s.swap[:nslots, S_USED])):
        proven.add(check_swap_counts)  # no swap entry, no swap-cache page: every count 0
    nframes = fr.shape[0]
    mapc = fr[:, F_MAP]
    ref = fr[:, F_REF]
    pin = fr[:, F_PIN]
    dev_free = (fl & (Z_DEVICE | PG_allocated)) == Z_DEVICE
    if not cnz(((fl & DYNAMIC_MASK) | ref | mapc | pin)[dev_free]):
        proven.add(check_device_pages)
    if per_type[PTE_MIGRATION]:
        return proven  # check_entries fails; the later checks run in full after it
    mapped = _MAPPED[types]
    pfns = (pte >> PTE_PFN_SHIFT)[mapped]  # row-major, as the checks list them
    try:
        maps = np.bincount(pfns, minlength=nframes)
    except ValueError:  # a negative frame number
        return proven
    if maps.shape[0] != nframes:  # a frame number beyond the frames
        return proven
    mtypes = types[mapped]
    if cnz((fl[pfns] & _NEED_MASK[mtypes]) != _NEED_VAL[mtypes]):
        return proven  # an entry maps a free frame, or one of the wrong zone
    proven.add(check_entries)
    # check_counts. With the entries proven, no entry maps a free frame, so a free frame
    # whose mapcount is its mapping count has none; a free frame's refcount must be 0,
    # an allocated one's the expected count, which must not be 0 (a leak).
    alloc = (fl & PG_allocated) != 0
    expected = mapc + pin * GUP_PIN_COUNTING_BIAS
    if n_sc:
        expected = expected + ((fl & PG_swapcache) != 0)
    extra = k.extra_refs() if hasattr(k, "extra_refs") else None
    if extra is not None:
        expected = expected + extra
    expected = expected * alloc
    if (
        not cnz(maps != mapc)
        and not cnz(ref != expected)
        and cnz(expected) == cnz(alloc)
        and _zones_free_ok(k, alloc)
    ):
        proven.add(check_counts)
    # check_contents: every written page is mapped (not swapped out, not gone) and its
    # frame holds the token; the OOM reaper's exemption only removes pages from the lost.
    shadow = s.shadow
    written = shadow[mapped]
    if cnz(shadow) == cnz(written) and not cnz(written[fr[pfns, F_DATA] != written]):
        proven.add(check_contents)
    return proven


def _zones_free_ok(k: Kernel, alloc: np.ndarray) -> bool:
    """Each zone's free count is its number of free frames (check_counts)."""
    free = k.s.zones[:, Z_FREE].tolist()
    lay = k.lay
    for zone in range(k.geo.zones):
        lo, hi = lay.zone_range(zone)
        if hi - lo - count_nonzero(alloc[lo:hi]) != free[zone]:
            return False
    return True


def check_all(k: Kernel, final: bool = True) -> None:
    """Every global invariant. Raises :class:`InvariantViolation` on the first broken one:
    the checks of CHECKS in order, v7's PMD checks, then ``k.extra_checks`` in order;
    those the shared quick tests prove clean are skipped (:func:`_proven_clean`)."""
    proven = _proven_clean(k) if not k.geo.thp else ()
    for check in CHECKS:
        if check not in proven:
            check(k)
    if k.geo.thp:
        check_pmds(k)  # PMD locks, PMD entries, whole-folio counts (oracles/folio.py)
    for extra_check in k.extra_checks:
        if extra_check not in proven:
            extra_check(k, final)

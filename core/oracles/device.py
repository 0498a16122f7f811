"""Oracles for the driver's side of the mirror: what a device reads and writes through
its own page table (``core/lib/test_hmm.py``'s ``dmirror->pt``).

- **device read sees the last write** (:func:`device_access`, at every
  ``dmirror_do_read`` / ``dmirror_do_write`` page): a device read returns the last value
  written at that virtual address by a CPU or by a device (the shadow covers both:
  a device write stores a fresh token into the page its entry names and into the
  shadow, in one step, as a CPU store does): ``stale_read``.
- **no device entry names a freed or reused page** (:func:`device_access` at each use,
  :func:`check_device_pt` at every quiet point): the xarray holds no page reference
  and relies on the notifier to clear an entry before its page can go; an entry whose
  frame is free, or was freed and allocated again since the entry was stored (its
  generation moved), is a device-side use after free: ``use_after_free``.
- **no device entry uses a device-private page as ordinary memory**
  (:func:`device_access`): ``memcpy_from_page`` / ``memcpy_to_page`` on the
  ``struct page`` of device-private memory, which the CPU cannot address (its entries
  must name the backing page, ``BACKING_PAGE(dpage)``): ``bad_mapping``.

- **device-exclusive access is exclusive** (:func:`cpu_access_check` at every CPU load
  or store, :func:`device_access` at every device access through an ATOMIC entry,
  :func:`check_exclusive` at quiet points): while a device holds a page atomically (an
  ATOMIC entry of its page table), the CPU maps that address by a device-exclusive entry
  naming that page, so no CPU access reaches the page without first restoring the entry,
  which revokes the device's access; and a CPU load or store of a page a mirror of its
  mm holds atomically at that address bypassed the device: ``exclusive_bypass``.
- **device-exclusive entries are well formed** (:func:`check_exclusive`, quiet points):
  each lies inside a VMA (it never survives a zap), and names an allocated, anonymous,
  anon-exclusive page that is not device-private (system RAM, or device-coherent memory,
  which GUP returns like any other page) mapped once (``make_device_exclusive`` only
  converts the one writable mapping of such a page; fork must restore it before it
  shares the page): ``bad_mapping`` (a freed page: ``check_entries``' ``use_after_free``).

Each is proven by a test-only fault of ``core/faults.py`` (``dmirror_skip_invalidate``,
``dmirror_stale_token``, ``dmirror_do_fault_no_backing``, ``exclusive_restore_skips_notifier``,
``fork_copies_exclusive``, ``zap_exclusive_keeps_entry``... see tests/unit/test_mirror.py and
tests/unit/test_exclusive.py).
"""

from __future__ import annotations

import numpy as np

from ..machine import folio as fo
from ..machine.errors import FailureKind
from ..machine.kernel import Actor, Kernel
from ..machine.layout import (
    DM_MM,
    DM_WORDS,
    DPT_BACKING,
    DPT_PFN_SHIFT,
    DPT_TAG_ATOMIC,
    DPT_TAG_WRITE,
    F_FLAGS,
    F_GEN,
    F_MAP,
    F_REF,
    FRAME_WORDS,
    PTE_DEVICE_EXCLUSIVE,
    PTE_PFN_SHIFT,
    PTE_TYPE_MASK,
    V_END,
    V_FLAGS,
    V_START,
    VM_LIVE,
    Z_DEVICE_PRIVATE,
    PG_allocated,
    PG_anon,
    PG_anon_exclusive,
    pte_describe,
)


def dpt_entry_pfn(entry: int) -> int:
    """The frame a device page-table entry names (-1 for none)."""
    return (entry >> DPT_PFN_SHIFT) - 1


def _check_live(k: Kernel, a: Actor | None, mi: int, vpn: int, entry: int, gen: int, site: str) -> int:
    pfn = dpt_entry_pfn(entry)
    base = k.lay.FRAMES + pfn * FRAME_WORDS
    flags = k.words.load(base + F_FLAGS)
    now = k.words.load(base + F_GEN)
    if not flags & PG_allocated or now != gen:
        what = "a free frame" if not flags & PG_allocated else "a frame freed and reused since"
        raise k.fail(
            FailureKind.USE_AFTER_FREE,
            f"dmirror {mi}'s device page table maps page {vpn} to frame {pfn}, {what} "
            f"(generation {gen} when stored, {now} now): the notifier did not clear it "
            f"before the page was freed ({site})",
            actors=[a] if a is not None else [],
            pages=[pfn],
            sites=[site],
            mirror=mi,
            vpn=vpn,
        )
    return pfn


def device_access(
    k: Kernel, a: Actor, mi: int, vpn: int, entry: int, gen: int, write: bool, site: str
) -> None:
    """One page of a device read or write through ``entry`` of dmirror ``mi``'s page
    table: the three checks above, then the copy (``memcpy_from_page`` /
    ``memcpy_to_page``)."""
    pfn = _check_live(k, a, mi, vpn, entry, gen, site)
    if k.words.load(k.lay.FRAMES + pfn * FRAME_WORDS + F_FLAGS) & Z_DEVICE_PRIVATE and not (
        entry & DPT_BACKING
    ):
        raise k.fail(
            FailureKind.BAD_MAPPING,
            f"{a.name}: dmirror {mi} {'wrote' if write else 'read'} page {vpn} through "
            f"device-private frame {pfn} as if it were memory (the entry names the struct "
            f"page of device memory, not its backing page) at {site}",
            actors=[a],
            pages=[pfn],
            sites=[site],
            mirror=mi,
            vpn=vpn,
        )
    mm = k.words.load(k.lay.DMIRROR + mi * DM_WORDS + DM_MM)
    if is_atomic(entry):
        _check_atomic_view(k, a, mi, mm, vpn, pfn, site)
    hw = k.hw_lock  # the parallel engine's: the copy and the shadow are one step, as a
    if hw is None:  # CPU's load or store is (core/mm/memory.py)
        _copy(k, a, mi, mm, vpn, pfn, write, site)
        return
    hw.acquire(mm, vpn)
    try:
        _copy(k, a, mi, mm, vpn, pfn, write, site, gen)
    finally:
        hw.release(mm, vpn)


def _freed_meanwhile(k: Kernel, pfn: int, gen: int) -> str:
    """The parallel engine only: why frame ``pfn`` is no longer the live page the
    device's entry (stored at generation ``gen``) named, or "" if it still is. Its
    folio's refcount at zero with the frame still allocated is a free in progress
    (``free_folio`` clears the data, then the generation, then the flags, in one step
    of another worker)."""
    base = k.lay.FRAMES + pfn * FRAME_WORDS
    words = k.words
    now = words.load(base + F_GEN)
    if not words.load(base + F_FLAGS) & PG_allocated:
        return f"freed (generation {gen} when stored, {now} now)"
    if now != gen:
        return f"freed and reused (generation {gen} when stored, {now} now)"
    head = fo.page_folio(k, pfn)
    if not words.load(k.lay.FRAMES + head * FRAME_WORDS + F_REF):
        return f"being freed (its folio {head} has refcount 0)"
    return ""


def _copy(
    k: Kernel, a: Actor, mi: int, mm: int, vpn: int, pfn: int, write: bool, site: str,
    gen: int = -1,
) -> None:
    if write:
        tok = k.new_token(a)
        k.set_data(pfn, tok)
        k.set_shadow(mm, vpn, tok)
        alias = k.hooks.get("shadow_write")  # MAP_SHARED aliases (core/oracles/world.py)
        if alias is not None:
            alias(k, mm, vpn, pfn, tok)
        k.count("device_writes")
        return
    got = k.data(pfn)
    if "dmirror_stale_token" in k.faults:
        got ^= 1  # test-only: the device returns something else than the page holds
    want = k.shadow(mm, vpn)
    k.count("device_reads")
    if got != want and gen >= 0:
        # The parallel engine: the liveness check above and this copy are not one step
        # there, so a CPU fault in another worker (finding 006: its xa_erase without
        # the mutex) can free the page in between, and the copy reads the cleared frame.
        # In the deterministic engine that free comes before the check, which reports
        # it as use_after_free; report the same here instead of a stale read.
        why = _freed_meanwhile(k, pfn, gen)
        if why:
            raise k.fail(
                FailureKind.USE_AFTER_FREE,
                f"dmirror {mi}'s device page table maps page {vpn} to frame {pfn}, {why} "
                f"while the device copied from it: the notifier did not clear it before "
                f"the page was freed ({site})",
                actors=[a],
                pages=[pfn],
                sites=[site],
                mirror=mi,
                vpn=vpn,
            )
    if got != want:
        raise k.fail(
            FailureKind.STALE_READ,
            f"{a.name}: dmirror {mi} read mm {mm} page {vpn} from frame {pfn} and got "
            f"token {got:#x}, but the last write there stored {want:#x} ({site})",
            actors=[a],
            pages=[pfn],
            sites=[site],
            mirror=mi,
            mm=mm,
            vpn=vpn,
        )


def check_device_pt(k: Kernel, final: bool) -> None:
    """At quiet points: every device page-table entry names a live frame of the same
    generation as when it was stored."""
    dpt = k.s.views["dpt"]
    if not dpt.size:
        return
    gens = k.s.views["dpt_gen"]
    for mi, vpn in zip(*np.nonzero(dpt), strict=True):
        _check_live(k, None, int(mi), int(vpn), int(dpt[mi, vpn]), int(gens[mi, vpn]), "quiet point")


def is_atomic(entry: int) -> bool:
    """The entry is tagged ``DPT_XA_TAG_ATOMIC`` (``xa_pointer_tag(entry) == ATOMIC``)."""
    return bool(entry) and entry & (DPT_TAG_ATOMIC | DPT_TAG_WRITE) == DPT_TAG_ATOMIC


def _check_atomic_view(
    k: Kernel, a: Actor | None, mi: int, mm: int, vpn: int, pfn: int, site: str
) -> None:
    pte = k.pte_read(mm, vpn)
    if pte & PTE_TYPE_MASK == PTE_DEVICE_EXCLUSIVE and pte >> PTE_PFN_SHIFT == pfn:
        return
    raise k.fail(
        FailureKind.EXCLUSIVE_BYPASS,
        f"dmirror {mi} holds mm {mm} page {vpn} (frame {pfn}) atomically, but the CPU "
        f"entry there is {pte_describe(pte)}: the device's exclusive access was not "
        f"revoked before the CPU mapping changed ({site})",
        actors=[a] if a is not None else [],
        pages=[pfn],
        sites=[site],
        mirror=mi,
        mm=mm,
        vpn=vpn,
    )


def cpu_access_check(k: Kernel, a: Actor, mm: int, vpn: int, pfn: int, write: bool) -> None:
    """At every CPU load or store of frame ``pfn`` at (``mm``, ``vpn``): no mirror of
    ``mm`` holds that page atomically there (the ``cpu_access`` hook of
    ``core/mm/memory.py``; installed with the mirrors)."""
    dm = k.lay.DMIRROR
    for mi in range(len(k.geo.dmirrors)):
        if k.words.load(dm + mi * DM_WORDS + DM_MM) != mm:
            continue
        entry = k.words.load(k.lay.DPT + mi * k.geo.pages_per_mm + vpn)
        if is_atomic(entry) and dpt_entry_pfn(entry) == pfn:
            raise k.fail(
                FailureKind.EXCLUSIVE_BYPASS,
                f"{a.name} {'wrote' if write else 'read'} mm {mm} page {vpn} (frame {pfn}) "
                f"while dmirror {mi} holds it atomically: the CPU reached the page without "
                "the device-exclusive entry being restored (and the device's access "
                "revoked) first",
                actors=[a],
                pages=[pfn],
                sites=["cpu_access"],
                mirror=mi,
                mm=mm,
                vpn=vpn,
            )


def check_exclusive(k: Kernel, final: bool = True) -> None:
    """At quiet points: every ATOMIC device entry is backed by the CPU's device-exclusive
    entry for that page, and every device-exclusive entry lies in a VMA and names an
    allocated anonymous anon-exclusive system page mapped once."""
    dpt = k.s.views["dpt"]
    if dpt.size:
        atomic = (dpt != 0) & ((dpt & (DPT_TAG_ATOMIC | DPT_TAG_WRITE)) == DPT_TAG_ATOMIC)
        for mi, vpn in zip(*np.nonzero(atomic), strict=True):
            mm = k.words.load(k.lay.DMIRROR + int(mi) * DM_WORDS + DM_MM)
            pfn = dpt_entry_pfn(int(dpt[mi, vpn]))
            _check_atomic_view(k, None, int(mi), mm, int(vpn), pfn, "quiet point")
    pte = k.s.pte
    excl = (pte & PTE_TYPE_MASK) == PTE_DEVICE_EXCLUSIVE
    if not excl.any():
        return
    vma = k.s.vma
    fr = k.s.frames
    for mm, vpn in zip(*np.nonzero(excl), strict=True):
        m, v = int(mm), int(vpn)
        pfn = int(pte[m, v]) >> PTE_PFN_SHIFT
        rows = vma[m]
        inside = bool(
            ((rows[:, V_FLAGS] & VM_LIVE != 0) & (rows[:, V_START] <= v) & (v < rows[:, V_END])).any()
        )
        why = ""
        if not inside:
            why = "lies outside every VMA (it survived a zap)"
        elif not 0 <= pfn < fr.shape[0]:
            why = "names no frame"
        else:
            f = int(fr[pfn, F_FLAGS])
            if f & PG_allocated == 0:
                continue  # check_entries reports the use after free
            if f & Z_DEVICE_PRIVATE:
                why = "names device-private memory"  # not addressable: never a CPU mapping
            elif f & PG_anon == 0 or f & PG_anon_exclusive == 0:
                why = "names a page that is not anonymous and anon-exclusive"
            elif int(fr[pfn, F_MAP]) != 1:
                why = f"names a page mapped {int(fr[pfn, F_MAP])} times"
        if why:
            raise k.fail(
                FailureKind.BAD_MAPPING,
                f"mm {m} page {v}: device-exclusive entry {pte_describe(int(pte[m, v]))} {why}",
                pages=[pfn],
                sites=["quiet point"],
                mm=m,
                vpn=v,
            )


__all__ = [
    "check_device_pt",
    "check_exclusive",
    "cpu_access_check",
    "device_access",
    "dpt_entry_pfn",
    "is_atomic",
]

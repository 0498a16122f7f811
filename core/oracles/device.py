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

Each is proven by a test-only fault of ``core/faults.py`` (``dmirror_skip_invalidate``,
``dmirror_stale_token``, ``dmirror_do_fault_no_backing``... see tests/unit/test_mirror.py).
"""

from __future__ import annotations

import numpy as np

from ..machine.errors import FailureKind
from ..machine.kernel import Actor, Kernel
from ..machine.layout import (
    DM_MM,
    DM_WORDS,
    DPT_BACKING,
    DPT_PFN_SHIFT,
    F_FLAGS,
    F_GEN,
    FRAME_WORDS,
    Z_DEVICE_PRIVATE,
    PG_allocated,
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
    hw = k.hw_lock  # the parallel engine's: the copy and the shadow are one step, as a
    if hw is None:  # CPU's load or store is (core/mm/memory.py)
        _copy(k, a, mi, mm, vpn, pfn, write, site)
        return
    hw.acquire(mm, vpn)
    try:
        _copy(k, a, mi, mm, vpn, pfn, write, site)
    finally:
        hw.release(mm, vpn)


def _copy(k: Kernel, a: Actor, mi: int, mm: int, vpn: int, pfn: int, write: bool, site: str) -> None:
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


__all__ = ["check_device_pt", "device_access", "dpt_entry_pfn"]

"""Eviction liveness: every page of a removed chunk is eventually freed.

``memunmap_pages`` (``core/mm/memremap.py``) sleeps until the pagemap's reference count
reaches zero, that is until every device page of the chunk has been freed. Whether that
ever happens is a liveness question, answered without a timeout by the engine's own
hang detection: when no live actor can run and one of them still sleeps in
``memunmap_pages``, nothing in the model can free the pages it waits for. The engine
then asks :func:`explain_all_blocked` (``Kernel.hooks["all_blocked"]``), which turns
the generic "every live actor is blocked" report into ``eviction_stuck``, naming each
device page still allocated: its refcount, mapcount, lock owner and the entries that
name it. A waits-for cycle through ``devmem_lock`` and a page lock is still reported
as the deadlock it is (``deadlock``, with the cycle); a fault that loops forever on a
page the eviction waits for is the livelock oracle's.

The parallel engine's watchdog reports the same state as ``deadlock`` (``blocked``):
one failure family (``hang``), so replay and shrinking treat them alike.
"""

from __future__ import annotations

from typing import Any

from ..machine.errors import Failure, FailureKind
from ..machine.kernel import Kernel
from ..machine.layout import (
    DC_REF,
    DC_WORDS,
    F_MAP,
    F_OWNER,
    F_REF,
    FRAME_WORDS,
    PTE_PFN_SHIFT,
    PTE_TYPE_MASK,
    PG_allocated,
    PG_locked,
)


def _entries_naming(k: Kernel, pfn: int) -> list[str]:
    """Page-table entries (any type but none) of any mm that name ``pfn``."""
    out = []
    g = k.geo
    for mm in range(g.mms):
        for vpn in range(g.pages_per_mm):
            pte = k.pte_read(mm, vpn)
            if pte & PTE_TYPE_MASK and pte >> PTE_PFN_SHIFT == pfn:
                out.append(f"mm {mm} page {vpn}")
    return out


def held_device_pages(k: Kernel, dev: int) -> list[str]:
    """One line per allocated frame of device ``dev``: what still holds it."""
    lo, hi = k.lay.zone_range(1 + dev)
    words = k.words
    out = []
    for pfn in range(lo, hi):
        base = k.lay.FRAMES + pfn * FRAME_WORDS
        f = words.load(base)
        if not f & PG_allocated:
            continue
        owner = words.load(base + F_OWNER) - 1 if f & PG_locked else -1
        locked = f", locked by {k.actors[owner].name}" if 0 <= owner < len(k.actors) else (
            ", locked" if f & PG_locked else ""
        )
        names = _entries_naming(k, pfn)
        where = f", named by {', '.join(names)}" if names else ", no entry names it"
        out.append(
            f"page {pfn} (refcount {words.load(base + F_REF)}, mapcount "
            f"{words.load(base + F_MAP)}{locked}{where})"
        )
    return out


def explain_all_blocked(k: Kernel, waits: dict[str, Any], failure: Failure) -> Failure:
    """``failure`` (every live actor blocked), or ``eviction_stuck`` when an actor sleeps
    in ``memunmap_pages``. ``waits``: actor name → the Block it is parked on."""
    stuck = [(name, req) for name, req in waits.items() if req is not None and req.kind == "pgmap"]
    if not stuck:
        return failure
    parts = []
    pages: list[int] = list(failure.pages)
    for name, req in stuck:
        dev = req.target
        ref = k.words.load(k.lay.DEVMEM + dev * DC_WORDS + DC_REF)
        held = held_device_pages(k, dev)
        parts.append(
            f"{name} waits in memunmap_pages for device {dev}'s pages to be freed "
            f"(pgmap ref {ref}) and nothing left can free them: "
            + ("; ".join(held) if held else "no device page is allocated (a leaked pagemap reference)")
        )
        for line in held:
            pfn = int(line.split()[1])
            if pfn not in pages:
                pages.append(pfn)
    return Failure(
        kind=FailureKind.EVICTION_STUCK,
        message="eviction never ends: " + " / ".join(parts) + f" [{failure.message}]",
        step=failure.step,
        actors=failure.actors,
        pages=tuple(pages),
        sites=failure.sites,
        locks=failure.locks,
        details=dict(failure.details, eviction=parts),
    )


def install(k: Kernel) -> None:
    """Plug the eviction-liveness explanation into ``k`` (a geometry with chunks)."""
    k.hooks["all_blocked"] = explain_all_blocked


__all__ = ["explain_all_blocked", "held_device_pages", "install"]

"""Oracles for the memory-management world around device migration: pins, TLBs, swap
dirtiness, device-page lifetime.

Local checks raise at the step that breaks the rule, naming the actors, pages,
addresses and call sites; global checks join :func:`~pagerace.core.oracles.invariants.check_all`
through ``k.extra_checks``. :func:`install` plugs them (and the swap-in fault path) into a
kernel; ``harness/runner.py`` calls it for every run it builds.

- **pin coherency** (:func:`check_pin`): a page pinned by GUP is the page mapped at the
  pinned address, when the pin is taken and for as long as it is held. A migration entry
  or a swap entry whose swap-cache page is the pinned page still names it; an empty entry
  means the range was unmapped after the pin, which is allowed (the DMA then writes a
  page nobody maps), and so does a zap of the address (``gup.pins_unmapped``: a refault
  there maps another page, legitimately); mremap moves the pin's address with the page.
  A pin on a page that is not mapped at its address at the moment GUP returns is a
  failure: GUP-fast must back off (B4).
- **stale TLB** (:func:`tlb_hit_check`, called on every TLB hit): a CPU must not use a
  cached translation once the entry changed and its page-table lock was released, since
  every path that changes an entry flushes the TLBs before it unlocks. A write through
  a stale entry is the classic lost write.
- **dirty conservation** (:func:`check_drop_clean`, :func:`check_dirty`): a page whose
  content differs from its swap copy is never treated as clean: reclaim never drops it,
  and a swap-cache page that is not dirty (no ``PG_dirty``, no dirty entry mapping it)
  holds exactly its swap copy.
- **swap accounting** (:func:`check_swap_counts`): every slot's count is its swap
  entries plus the swap cache; a slot nobody holds is free.
- **device page lifetime** (:func:`device_free_check`, :func:`check_device_pages`): a
  device page is freed only when no entry (device-private or migration) names it; a free
  device page has refcount zero, no mapping, no pin and no dynamic flag until it is
  allocated again (touching it meanwhile is a use after free, ``Kernel.touch``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..machine import pmd as pm
from ..machine.errors import FailureKind, InvariantViolation
from ..machine.kernel import Actor, Kernel
from ..machine.layout import (
    DYNAMIC_MASK,
    F_DATA,
    F_FLAGS,
    F_MAP,
    F_PIN,
    F_PRIV,
    F_REF,
    PMD_INVALID,
    PTE_DEVICE_EXCLUSIVE,
    PTE_DEVICE_PRIVATE,
    PTE_DIRTY,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_SWAP,
    PTE_TYPE_MASK,
    PTE_WRITE,
    S_DATA,
    S_USED,
    SWAP_HAS_CACHE,
    SWAP_WORDS,
    VM_SHARED,
    Z_DEVICE,
    PG_allocated,
    PG_dirty,
    PG_swapcache,
    PG_writeback,
    pmd_describe,
    pte_describe,
)
from ..machine.words import _KernelFields


def _addr(mm: int, vpn: int) -> str:
    return f"mm {mm} page {vpn}"


# --------------------------------------------------------------------------------------
# Pin coherency


def swapcache_page(k: Kernel, slot: int) -> int:
    """The frame in the swap cache for swap slot ``slot``, or -1 (a lookup of the swap
    address space; frames keep ``slot + 1`` in their private word)."""
    fr = k.s.frames
    hit = np.flatnonzero(((fr[:, F_FLAGS] & PG_swapcache) != 0) & (fr[:, F_PRIV] == slot + 1))
    return int(hit[0]) if hit.size else -1


def _entry_at(k: Kernel, mm: int, vpn: int) -> int:
    """The entry that maps (mm, vpn): on ``v7``, a huge leaf PMD (present, migration or
    device-private) read as the 4K entry of the page at ``vpn`` (the folio's head +
    ``vpn``'s offset in the PMD; ``PMD_INVALID`` dropped: a split in progress still
    maps the page), else the PTE."""
    if k.geo.thp:
        n = k.geo.ptes_per_table
        pmd = k.words.load(k.lay.PMD + mm * k.geo.tables_per_mm + vpn // n)
        if pmd & PTE_TYPE_MASK in (PTE_PRESENT, PTE_MIGRATION, PTE_DEVICE_PRIVATE):
            return (pmd & ~PMD_INVALID) + ((vpn % n) << PTE_PFN_SHIFT)
    return k.pte_read(mm, vpn)


def check_pin(k: Kernel, a: Actor, rec: Any, when: str) -> bool:
    """Pin coherency at ``when`` (``pin``, ``dma``, ``unpin``) for a pin record.

    Returns whether the pinned address still maps the page (so a DMA write there is
    what the program sees); raises ``PIN_COHERENCY`` when it maps another page.
    """
    if rec.detached:
        return False  # the address was unmapped after the pin: nothing to compare
    pte = _entry_at(k, rec.mm, rec.vpn)
    kind = pte & PTE_TYPE_MASK
    target = pte >> PTE_PFN_SHIFT
    if (
        kind in (PTE_PRESENT, PTE_MIGRATION, PTE_DEVICE_PRIVATE, PTE_DEVICE_EXCLUSIVE)
        and target == rec.pfn
    ):
        return True  # (device-exclusive: the address still maps the page, for the device)
    if kind == PTE_SWAP and swapcache_page(k, target) == rec.pfn:
        return True
    if kind == PTE_NONE and when != "pin":
        rec.detached = True
        return False  # unmapped after the pin: allowed
    what = "pinned" if rec.pin else "got a reference to"
    raise k.fail(
        FailureKind.PIN_COHERENCY,
        f"{a.name} {what} frame {rec.pfn} at {_addr(rec.mm, rec.vpn)} ({rec.site}), but at "
        f"{when} that address maps {pte_describe(pte)}: the pin no longer refers to the "
        "mapped page",
        actors=[a],
        pages=[rec.pfn] + ([target] if kind != PTE_NONE else []),
        sites=[f"gup:{when}", rec.site],
        mm=rec.mm,
        vpn=rec.vpn,
    )


def dma_read_check(k: Kernel, a: Actor, rec: Any) -> None:
    """A device read through a pin sees the last value written at the address."""
    got = k.data(rec.pfn)
    want = k.shadow(rec.mm, rec.vpn)
    if got != want:
        raise k.fail(
            FailureKind.STALE_READ,
            f"{a.name} read frame {rec.pfn} through its pin of {_addr(rec.mm, rec.vpn)} and "
            f"got token {got:#x}, but the last write there stored {want:#x}",
            actors=[a],
            pages=[rec.pfn],
            sites=["gup:dma_read"],
            mm=rec.mm,
            vpn=rec.vpn,
        )


# --------------------------------------------------------------------------------------
# Stale TLB


def tlb_hit_check(k: Kernel, a: Actor, mm: int, vpn: int, t: int, write: bool) -> None:
    """A TLB hit of ``a`` at (mm, vpn) with cached ``(pfn << 1) | writable``: the entry
    must still map that frame (writably, for a write), unless its page-table lock is
    held, i.e. the change is in progress and its flush is still to come."""
    pte = k.pte_read(mm, vpn)
    pfn = t >> 1
    if (
        pte & PTE_TYPE_MASK == PTE_PRESENT
        and pte >> PTE_PFN_SHIFT == pfn
        and (not write or pte & PTE_WRITE)
    ):
        return
    if k.words.load(k.ptl_word(mm, vpn)) != 0:
        return
    if k.geo.thp and k.words.load(pm.pmd_lockptr(k, mm, vpn // k.geo.ptes_per_table)) != 0:
        return  # v7: a change under the PMD lock (move_normal_pmd, a split) flushes before it unlocks
    k.count("stale_tlb_hit")
    raise k.fail(
        FailureKind.STALE_TLB,
        f"{a.name} {'wrote' if write else 'read'} {_addr(mm, vpn)} through a stale TLB entry "
        f"for frame {pfn}{' (writable)' if t & 1 else ''}; the entry is now "
        f"{pte_describe(pte)} and its page-table lock was released without a flush",
        actors=[a],
        pages=[pfn],
        sites=["cpu_access:tlb_hit"],
        locks=[k.lock_name(k.ptl_word(mm, vpn))],
        mm=mm,
        vpn=vpn,
    )


def htlb_hit_check(k: Kernel, a: Actor, mm: int, vpn: int, t: int, write: bool) -> None:
    """A hit of ``a`` in the huge TLB (v7, ``geometry.thp``) for page ``vpn`` with cached
    ``(head << 1) | writable``: the PMD must still be a present huge leaf mapping that
    folio (writably, for a write), unless its PMD lock is held (the change is in
    progress and its ``flush_pmd_tlb_range`` / ``flush_tlb_range`` is still to come).
    A PMD that was split, zapped, moved or turned into a migration entry without that
    flush leaves the CPU using the old 2M translation: the 4K oracle above cannot see
    it, the huge TLB is looked up first."""
    idx = vpn // k.geo.ptes_per_table
    pmd = pm.pmdp_get(k, mm, idx)
    head = t >> 1
    if (
        pmd & PTE_TYPE_MASK == PTE_PRESENT
        and not pmd & PMD_INVALID
        and pm.pmd_pfn(pmd) == head
        and (not write or pmd & PTE_WRITE)
    ):
        return
    lock = pm.pmd_lockptr(k, mm, idx)
    if k.words.load(lock) != 0:
        return
    k.count("stale_tlb_hit")
    raise k.fail(
        FailureKind.STALE_TLB,
        f"{a.name} {'wrote' if write else 'read'} {_addr(mm, vpn)} through a stale huge TLB "
        f"entry for the folio at frame {head}{' (writable)' if t & 1 else ''}; PMD {idx} is "
        f"now {pmd_describe(pmd)} and its PMD lock was released without a flush",
        actors=[a],
        pages=[head + vpn % k.geo.ptes_per_table],
        sites=["cpu_access:htlb_hit"],
        locks=[k.lock_name(lock)],
        mm=mm,
        vpn=vpn,
    )


# --------------------------------------------------------------------------------------
# Dirty conservation


def check_drop_clean(k: Kernel, a: Actor, pfn: int, slot: int, site: str) -> None:
    """Reclaim is about to drop ``pfn`` as clean: its content must be its swap copy, if
    a reader can still reach it (a swap entry names the slot; the page is unmapped). An
    orphaned swap-cache page (the last entry went: a COW copy or a zap replaced the last
    mapping, whose dirty bit an anonymous folio never gets back) holds data no one reads."""
    data = k.data(pfn)
    copy = k.words.load(k.lay.SWAP + slot * SWAP_WORDS + S_DATA)
    entries = k.words.load(k.lay.SWAP + slot * SWAP_WORDS + S_USED) & ~SWAP_HAS_CACHE
    if data != copy and (entries > 0 or k.mapcount(pfn) > 0):
        raise k.fail(
            FailureKind.DIRTY_CONSERVATION,
            f"{a.name} dropped frame {pfn} at {site} as clean, but it holds token {data:#x} "
            f"and its swap copy in slot {slot} holds {copy:#x}: data newer than the swap "
            "copy is lost",
            actors=[a],
            pages=[pfn],
            sites=[site],
            slot=slot,
        )


def check_dirty(k: Kernel, final: bool) -> None:
    """Global: a clean swap-cache page that a reader can reach (it is mapped, or a swap
    entry still names its slot) holds exactly its swap copy. An orphaned swap-cache
    page (no mapping, no swap entry: only reclaim will ever see it again, and drops it)
    holds data no one can read, so it is not judged."""
    s = k.s
    fr = s.frames
    cached = (fr[:, F_FLAGS] & (PG_swapcache | PG_allocated)) == (PG_swapcache | PG_allocated)
    if not cached.any():
        return
    pte = s.pte
    types = pte & PTE_TYPE_MASK
    dirty_map = np.zeros(fr.shape[0], dtype=bool)
    dm = (types == PTE_PRESENT) & ((pte & PTE_DIRTY) != 0)
    if dm.any():
        dirty_map[np.unique(pte[dm] >> PTE_PFN_SHIFT)] = True
    clean = cached & ((fr[:, F_FLAGS] & (PG_dirty | PG_writeback)) == 0) & ~dirty_map
    slots = np.clip(fr[:, F_PRIV] - 1, 0, s.swap.shape[0] - 1)
    entries = (s.swap[slots, S_USED] & ~SWAP_HAS_CACHE) > 0
    clean &= (fr[:, F_MAP] > 0) | entries  # reachable by a reader
    bad = clean & (fr[:, F_DATA] != s.swap[slots, S_DATA])
    if bad.any():
        p = int(np.flatnonzero(bad)[0])
        raise InvariantViolation(
            k.fail(
                FailureKind.DIRTY_CONSERVATION,
                f"frame {p} is a clean swap-cache page of slot {int(slots[p])} but holds token "
                f"{int(fr[p, F_DATA]):#x} while its swap copy holds "
                f"{int(s.swap[slots[p], S_DATA]):#x}",
                pages=[p],
                sites=["global_invariants:dirty"],
            ).failure
        )


# --------------------------------------------------------------------------------------
# Device page lifetime


# Entry types that name a page frame (a device-coherent page may be made exclusive).
_NAMES_A_PAGE = frozenset((PTE_DEVICE_PRIVATE, PTE_MIGRATION, PTE_PRESENT, PTE_DEVICE_EXCLUSIVE))


_NAMES_A_PAGE_MASK = sum(1 << t for t in _NAMES_A_PAGE)
# KernelFields.pte_naming is there (an extension built from this tree: an older build
# lacks it, and the numpy pass runs).
_C_NAMING = hasattr(_KernelFields, "pte_naming")


def _entry_naming(k: Kernel, pfn: int) -> tuple[int, int, int] | None:
    """The first entry, row-major, whose pfn field is ``pfn`` and whose type names a
    page, as (mm, vpn, entry), or None: numpy's pass over the pfn fields, then the type
    of the few entries that name ``pfn``, in the same row-major order as one combined
    mask (what ``KernelFields.pte_naming`` does in one C loop)."""
    pte = k.s.pte
    for mm_, vpn_ in zip(*np.nonzero((pte >> PTE_PFN_SHIFT) == pfn)):
        # One read of the entry for both tests: in the parallel engine another worker
        # may replace it between numpy's pass and this one (a fault mapping a new page
        # there), and the two reads would describe two different entries.
        w = int(pte[mm_, vpn_])
        if w >> PTE_PFN_SHIFT == pfn and w & PTE_TYPE_MASK in _NAMES_A_PAGE:
            return (int(mm_), int(vpn_), w)
    return None


def device_free_check(k: Kernel, a: Actor, pfn: int) -> None:
    """A device page is being freed (``folio_free``): no entry may still name it.

    Over the C extension's words one ``KernelFields.pte_naming`` call (each entry loaded
    once, tested for both), else :func:`_entry_naming`."""
    fields = getattr(k, "_fields", None)
    if fields is not None and _C_NAMING:
        hit = fields.pte_naming(pfn, _NAMES_A_PAGE_MASK)
    else:
        hit = _entry_naming(k, pfn)
    if hit is not None:
        mm, vpn, entry = hit
        raise k.fail(
            FailureKind.DEVICE_PAGE_LIFETIME,
            f"device page {pfn} was freed by {a.name} (refcount reached zero, at {a.site or a.op}) "
            f"while {_addr(mm, vpn)} still holds {pte_describe(entry)}",
            actors=[a],
            pages=[pfn],
            sites=["folio_free", a.site],
            mm=mm,
            vpn=vpn,
        )


def check_device_pages(k: Kernel, final: bool) -> None:
    """Global: free device pages carry no count, mapping, pin or dynamic flag."""
    fr = k.s.frames
    dev = (fr[:, F_FLAGS] & Z_DEVICE) != 0
    free = dev & ((fr[:, F_FLAGS] & PG_allocated) == 0)
    bad = free & (
        (fr[:, F_REF] != 0)
        | (fr[:, F_MAP] != 0)
        | (fr[:, F_PIN] != 0)
        | ((fr[:, F_FLAGS] & DYNAMIC_MASK) != 0)
    )
    if bad.any():
        p = int(np.flatnonzero(bad)[0])
        raise InvariantViolation(
            k.fail(
                FailureKind.DEVICE_PAGE_LIFETIME,
                f"free device page {p} has refcount {int(fr[p, F_REF])}, mapcount "
                f"{int(fr[p, F_MAP])}, pins {int(fr[p, F_PIN])}, "
                f"flags {int(fr[p, F_FLAGS]) & DYNAMIC_MASK:#x}",
                pages=[p],
                sites=["global_invariants:device_pages"],
            ).failure
        )


def check_swap_counts(k: Kernel, final: bool) -> None:
    """Global: each swap slot's ``swap_map`` count is the number of swap entries naming
    it, plus ``SWAP_HAS_CACHE`` while a swap-cache page holds it; a slot nobody holds is
    free (no swap-space leak at teardown)."""
    s = k.s
    nslots = k.geo.swap_slots
    if not nslots:
        return
    pte = s.pte
    sw = (pte & PTE_TYPE_MASK) == PTE_SWAP
    refs = np.bincount((pte[sw] >> PTE_PFN_SHIFT).ravel(), minlength=nslots)[:nslots]
    fr = s.frames
    cached = ((fr[:, F_FLAGS] & (PG_swapcache | PG_allocated)) == (PG_swapcache | PG_allocated))
    has = np.zeros(nslots, dtype=np.int64)
    slots = fr[cached, F_PRIV] - 1
    has[slots[(slots >= 0) & (slots < nslots)]] = SWAP_HAS_CACHE
    used = s.swap[:nslots, S_USED]
    bad = used != refs + has
    if bad.any():
        slot = int(np.flatnonzero(bad)[0])
        kind = FailureKind.LEAK if used[slot] > refs[slot] + has[slot] else FailureKind.REFCOUNT_MISMATCH
        raise InvariantViolation(
            k.fail(
                kind,
                f"swap slot {slot} counts {int(used[slot]) & (SWAP_HAS_CACHE - 1)} entries"
                f"{' + cache' if int(used[slot]) & SWAP_HAS_CACHE else ''}, but {int(refs[slot])} "
                f"swap entries name it{' and a swap-cache page holds it' if has[slot] else ''}",
                sites=["global_invariants:swap"],
                slot=slot,
            ).failure
        )


def check_no_pins_left(k: Kernel, final: bool) -> None:
    """Global, at quiet points: no actor is between its pin and its unpin."""
    t = k.hooks.get("gup.pins") or {}
    held = [(aid, r) for aid in sorted(t) for r in t[aid]]
    if held:
        aid, r = held[0]
        raise InvariantViolation(
            k.fail(
                FailureKind.LEAK,
                f"actor {aid} still holds its pin of frame {r.pfn} ({r.site}) with every actor "
                "idle: a pin leaked past its operation",
                pages=[r.pfn],
                sites=["global_invariants:pins"],
            ).failure
        )


def shared_shadow_write(k: Kernel, mm: int, vpn: int, pfn: int, tok: int) -> None:
    """A store to a page of a ``MAP_SHARED`` mapping is seen at every address that maps
    the page in a shared VMA (the shadow is per address; a shared page has several)."""
    s = k.s
    row = s.find_vma(mm, vpn)
    if row < 0 or not s.vma_flags(mm, row) & VM_SHARED:
        return
    pte = s.pte
    types = pte & PTE_TYPE_MASK
    hit = ((types == PTE_PRESENT) | (types == PTE_DEVICE_PRIVATE) | (types == PTE_MIGRATION)) & (
        (pte >> PTE_PFN_SHIFT) == pfn
    )
    for m, v in zip(*np.nonzero(hit)):
        m, v = int(m), int(v)
        r = s.find_vma(m, v)
        if (m, v) != (mm, vpn) and r >= 0 and s.vma_flags(m, r) & VM_SHARED:
            k.set_shadow(m, v, tok)


__all__ = [
    "check_device_pages",
    "check_dirty",
    "check_drop_clean",
    "check_no_pins_left",
    "check_pin",
    "check_swap_counts",
    "device_free_check",
    "dma_read_check",
    "htlb_hit_check",
    "swapcache_page",
    "tlb_hit_check",
]

"""The PMD level of every page table (issue 15, the ``v7`` generation).

Each mm has one PMD word per PTE table (per ``ptes_per_table`` = HPAGE_PMD_NR pages),
in the ``pmd`` table (``core/machine/layout.py``): none, a PTE table (``PMD_TABLE``),
or a leaf mapping the whole folio: a huge present PMD (``PTE_PRESENT``,
``pmd_trans_huge``), a device-private PMD (``PTE_DEVICE_PRIVATE``) or a PMD migration
entry (``PTE_MIGRATION``), with the PTE's write / dirty / young / soft-dirty / uffd-wp /
exclusive bits. The PMD lock (``pmd_lockptr``: the split PMD lock of the PMD table
page, ``USE_SPLIT_PMD_PTLOCKS``) is a spinlock word of its own in ``pmd_ptl``, one per
PMD table of ``ptes_per_table`` PMD entries, distinct from the PTE-table locks
(``pte_lockptr``, the ``ptl`` table). Huge translations are cached in their own TLB
(``htlb``), and :func:`hw_translate` is the hardware walk through both levels.

The tables exist only in geometries with ``thp``. In the others every PMD is
implicitly a PTE table (the older generations' model has no PMD level).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .layout import (
    HTLB_SLOTS,
    PMD_INVALID,
    PMD_TABLE,
    PTE_DIRTY,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    PTE_WRITE,
    PTE_YOUNG,
)

if TYPE_CHECKING:
    from .kernel import Actor, Kernel, Path


def pmd_index(k: Kernel, vpn: int) -> int:
    """``pmd_index()``: which PMD of the mm maps page ``vpn``."""
    return vpn // k.geo.ptes_per_table


def pmd_w(k: Kernel, mm: int, idx: int) -> int:
    """Word index of PMD ``idx`` of ``mm``."""
    return k.lay.PMD + mm * k.geo.tables_per_mm + idx


def pmdp_get(k: Kernel, mm: int, idx: int) -> int:
    """``pmdp_get()`` / ``pmdp_get_lockless()``: READ_ONCE of the PMD."""
    return k.words.load(k.lay.PMD + mm * k.geo.tables_per_mm + idx)


def set_pmd_at(k: Kernel, mm: int, idx: int, pmd: int) -> None:
    """``set_pmd_at()`` (also ``pmd_populate`` with ``PMD_TABLE``)."""
    k.words.store(k.lay.PMD + mm * k.geo.tables_per_mm + idx, pmd)


def pmdp_huge_get_and_clear(k: Kernel, mm: int, idx: int) -> int:
    """``pmdp_huge_get_and_clear()`` / ``pmdp_huge_clear_flush()`` (the entry part):
    atomically read and clear the PMD."""
    return k.words.xchg(k.lay.PMD + mm * k.geo.tables_per_mm + idx, 0)


def pmd_none(pmd: int) -> bool:
    return pmd & PTE_TYPE_MASK == 0


def pmd_is_table(pmd: int) -> bool:
    """``pmd_present() && !pmd_leaf()``: a PTE table hangs here."""
    return pmd & PTE_TYPE_MASK == PMD_TABLE


def pmd_trans_huge(pmd: int) -> bool:
    """``pmd_trans_huge()``: a present huge PMD."""
    return pmd & PTE_TYPE_MASK == PTE_PRESENT


def pmdp_invalidate(k: Kernel, mm: int, idx: int) -> int:
    """``pmdp_invalidate()``: mark the huge PMD not present to the hardware (it stays
    ``pmd_trans_huge`` for the kernel) atomically, then ``flush_pmd_tlb_range``; returns
    the old PMD (with the accessed / dirty bits the hardware set until then)."""
    old = k.words.fetch_or(pmd_w(k, mm, idx), PMD_INVALID)
    flush_pmd_tlb_range(k, mm, idx)
    return old


def pmd_pfn(pmd: int) -> int:
    """``pmd_pfn()`` / ``softleaf_to_pfn()`` of a PMD leaf: the folio's head."""
    return pmd >> PTE_PFN_SHIFT


def pmd_addr_start(k: Kernel, idx: int) -> int:
    """The first virtual page PMD ``idx`` maps (``haddr``)."""
    return idx * k.geo.ptes_per_table


# -- the PMD lock (include/linux/mm.h pmd_lockptr / pmd_lock) ------------------------------
def pmd_lockptr(k: Kernel, mm: int, idx: int) -> int:
    """``pmd_lockptr()``: the lock word of the PMD table holding PMD ``idx`` of ``mm``."""
    g = k.geo
    return k.lay.PMD_PTL + mm * g.pmd_tables_per_mm + idx // g.ptes_per_table


def pmd_lock(k: Kernel, a: Actor, mm: int, idx: int, site: str) -> Path:
    """``pmd_lock()``: ``spin_lock(pmd_lockptr())``; returns the lock word (the kernel
    returns the ``spinlock_t *``)."""
    ptl = pmd_lockptr(k, mm, idx)
    yield from k.spin_lock(a, ptl, site)
    return ptl


def is_pmd_lock_word(k: Kernel, word: int) -> bool:
    """Whether ``word`` is a PMD lock (for lock names and the waits-for graph)."""
    lay = k.lay
    return lay.PMD_PTL <= word < lay.HTLB and k.geo.thp


def pmd_lock_name(k: Kernel, word: int) -> str:
    """``pmd:<mm>:<pmd table>``."""
    off = word - k.lay.PMD_PTL
    n = k.geo.pmd_tables_per_mm
    return f"pmd:{off // n}:{off % n}"


# -- huge TLB entries and the hardware walk -------------------------------------------------
def _htlb_slot(k: Kernel, aid: int, key: int) -> int:
    return k.lay.HTLB + (aid * HTLB_SLOTS + key % HTLB_SLOTS) * 2


def htlb_lookup(k: Kernel, a: Actor, mm: int, idx: int) -> int:
    """The cached huge translation ``(head << 1) | writable`` of PMD ``idx``, or -1."""
    key = mm * k.geo.tables_per_mm + idx + 1
    w = _htlb_slot(k, a.id, key)
    if k.words.load(w) == key:
        return k.words.load(w + 1)
    return -1


def htlb_fill(k: Kernel, a: Actor, mm: int, idx: int, head: int, writable: bool) -> None:
    key = mm * k.geo.tables_per_mm + idx + 1
    w = _htlb_slot(k, a.id, key)
    k.words.store(w, key)
    k.words.store(w + 1, (head << 1) | int(writable))


def flush_pmd_tlb_range(k: Kernel, mm: int, idx: int) -> None:
    """``flush_pmd_tlb_range()`` of one PMD: drop its huge translation on every CPU.
    Under the parallel engine it waits, page by page, for a hardware access in flight
    in the range (the IPI), as ``Kernel.flush_tlb_range`` does. The 4K translations of
    the range are ``Kernel.flush_tlb_range``'s (a PMD split flushes both)."""
    if "no_tlb_flush" in k.faults or "no_pmd_tlb_flush" in k.faults:
        return
    words = k.words
    key = mm * k.geo.tables_per_mm + idx + 1
    hw = k.hw_lock
    start = pmd_addr_start(k, idx)
    for vpn in range(start, start + k.geo.ptes_per_table):
        if hw is not None:
            hw.acquire(mm, vpn)
        for aid in range(k.geo.actors):
            w = _htlb_slot(k, aid, key)
            if words.load(w) == key:
                words.store(w, 0)
        if hw is not None:
            hw.release(mm, vpn)


def hw_translate(k: Kernel, a: Actor, mm: int, vpn: int, write: bool) -> int:
    """The CPU's translation of ``vpn`` for a load (``write`` False) or a store: the huge
    TLB, the 4K TLB, then the hardware walk: the PMD, and through a PMD table the PTE.
    A walk that succeeds sets accessed (and dirty for a store) in the leaf it used, with
    a compare-and-swap as the hardware does, and fills the matching TLB. Returns the
    pfn, or -1 when the access traps (none, a PMD or PTE migration / device-private
    entry, or a store through a read-only leaf). The caller holds ``k.hw_lock`` for
    ``(mm, vpn)`` under the parallel engine, as ``cpu_access`` does."""
    n = k.geo.ptes_per_table
    idx = vpn // n
    t = htlb_lookup(k, a, mm, idx)
    if t >= 0 and (not write or t & 1):
        return (t >> 1) + vpn % n
    t = k.tlb_lookup(a, mm, vpn)
    if t >= 0 and (not write or t & 1):
        return t >> 1
    words = k.words
    pw = pmd_w(k, mm, idx)
    while True:
        pmd = words.load(pw)
        kind = pmd & PTE_TYPE_MASK
        if kind == PMD_TABLE:
            pte = k.pte_read(mm, vpn)
            if pte & PTE_TYPE_MASK != PTE_PRESENT or (write and not pte & PTE_WRITE):
                return -1
            new = pte | PTE_YOUNG | (PTE_DIRTY if write else 0)
            if new != pte and not words.cas(k.pte_w(mm, vpn), pte, new):
                continue
            pfn = pte >> PTE_PFN_SHIFT
            k.tlb_fill(a, mm, vpn, pfn, write)
            return pfn
        if kind != PTE_PRESENT or pmd & PMD_INVALID or (write and not pmd & PTE_WRITE):
            return -1  # not present to the hardware (an invalidated PMD traps too)
        new = pmd | PTE_YOUNG | (PTE_DIRTY if write else 0)
        if new != pmd and not words.cas(pw, pmd, new):
            continue
        head = pmd >> PTE_PFN_SHIFT
        htlb_fill(k, a, mm, idx, head, write)
        return head + vpn % n


__all__ = [
    "flush_pmd_tlb_range",
    "htlb_fill",
    "htlb_lookup",
    "hw_translate",
    "is_pmd_lock_word",
    "pmd_addr_start",
    "pmd_index",
    "pmd_is_table",
    "pmd_lock",
    "pmd_lock_name",
    "pmd_lockptr",
    "pmd_none",
    "pmd_pfn",
    "pmd_trans_huge",
    "pmd_w",
    "pmdp_get",
    "pmdp_huge_get_and_clear",
    "pmdp_invalidate",
    "set_pmd_at",
]

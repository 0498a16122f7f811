"""``hmm_range_fault()``: ``mm/hmm.c`` (7.0) and the ``HMM_PFN_*`` flags of
``include/linux/hmm.h``.

A driver fills its device page table from the CPU's with ``hmm_range_fault(range)``
under ``mmap_read_lock``, inside an ``mmu_interval_read_begin`` / ``read_retry``
section (``core/mm/mmu_notifier.py``). The walk reads each entry without the page-table
lock (``hmm_vma_walk_pmd`` uses ``pte_offset_map``, not ``_lock``), so each entry is a
preemption point. An entry that does not give what the range asks (``HMM_PFN_REQ_FAULT``
and ``HMM_PFN_REQ_WRITE``, per page or by ``default_flags``) is faulted in through
``handle_mm_fault`` for the rest of the page table (``hmm_vma_fault``), after which the
walk restarts from there (``-EBUSY`` inside ``hmm_range_fault``); a migration entry is
waited on and restarts the walk the same way. The range is abandoned with ``-EBUSY``
when the notifier's sequence moved (``mmu_interval_check_retry``): the driver's retry
loop (``dmirror_range_fault``) starts again.

Device-private entries of ``dev_private_owner`` are reported as they are (their pfn,
``VALID``, ``WRITE`` if writable) and never faulted; other owners' are faulted back to
system memory when the range asks for a fault.

v7 (``geometry.thp``): each page table's PMD is read first (``hmm_vma_walk_pmd``): a
none PMD is a hole, a PMD migration entry is waited on, a device-private PMD of the
owner is reported page by page with ``HMM_PFN_ORDER`` of the PMD, a huge present PMD
likewise (or faulted through ``handle_mm_fault``, e.g. the write to a read-only one),
and only a PTE table goes on to the entries. The older generations have no PMD level.

The model has no PUDs, no zero page (a read fault maps a private page), no
``VM_IO`` / ``VM_PFNMAP`` VMAs (``hmm_vma_walk_test``: an unreadable VMA gives
``HMM_PFN_ERROR``) and no P2P or DMA-mapped flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..machine import pmd as pm
from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
    F_GEN,
    PTE_DEVICE_PRIVATE,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    PTE_WRITE,
    VM_READ,
    VM_WRITE,
)
from .huge_memory import pmd_migration_entry_wait
from .memory import (
    VM_FAULT_OOM,
    VM_FAULT_SIGBUS,
    VM_FAULT_SIGSEGV,
    handle_mm_fault_locked,
    migration_entry_wait,
)
from .mmu_notifier import mmu_interval_check_retry

# enum hmm_pfn_flags (include/linux/hmm.h), on 62-bit words: output flags high, pfn low.
HMM_PFN_VALID = 1 << 61
HMM_PFN_WRITE = 1 << 60
HMM_PFN_ERROR = 1 << 59
HMM_PFN_REQ_FAULT = HMM_PFN_VALID
HMM_PFN_REQ_WRITE = HMM_PFN_WRITE
# HMM_PFN_ORDER_SHIFT = BITS_PER_LONG - 11 (hmm_pfn_to_map_order: 5 bits); the flags are
# every bit from there up, so hmm_pfn_to_page drops the order too (7.0).
HMM_PFN_ORDER_SHIFT = 62 - 11
HMM_PFN_FLAGS = ((1 << 62) - 1) & ~((1 << HMM_PFN_ORDER_SHIFT) - 1)
HMM_PFN_INOUT_FLAGS = 0  # HMM_PFN_DMA_MAPPED | HMM_PFN_P2PDMA...: not modelled

HMM_NEED_FAULT = 1 << 0
HMM_NEED_WRITE_FAULT = 1 << 1

EBUSY = -16
EFAULT = -14
EPERM = -1

VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV


def hmm_pfn_to_page(hmm_pfn: int) -> int:
    """``hmm_pfn_to_page()``: the pfn of an output entry (the caller checked VALID)."""
    return hmm_pfn & ~HMM_PFN_FLAGS


@dataclass
class HmmRange:
    """``struct hmm_range``: ``notifier`` is an interval notifier slot
    (``core/mm/mmu_notifier.py``), ``notifier_seq`` the value of ``read_begin``,
    ``hmm_pfns`` one word per page of ``[start, end)`` (input request flags, output pfn
    and flags), ``dev_private_owner`` a device id or -1."""

    notifier: int
    mm: int
    start: int
    end: int
    default_flags: int = 0
    pfn_flags_mask: int = 0
    dev_private_owner: int = -1
    notifier_seq: int = 0
    hmm_pfns: list[int] = field(default_factory=list)
    # Model only: the generation of each reported frame when the walk saw it, so that a
    # driver storing a stale result can be told from one storing a live page (the
    # kernel's struct page pointer names the frame, whoever owns it by then).
    gens: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.hmm_pfns:
            self.hmm_pfns = [0] * max(self.end - self.start, 0)
        if not self.gens:
            self.gens = [0] * max(self.end - self.start, 0)


def hmm_pfn_flags_order(order: int) -> int:
    """``hmm_pfn_flags_order()``: the order bits of an output entry."""
    return order << HMM_PFN_ORDER_SHIFT


def hmm_pfn_to_map_order(hmm_pfn: int) -> int:
    """``hmm_pfn_to_map_order()``: the order of the CPU mapping an entry came from."""
    return (hmm_pfn >> HMM_PFN_ORDER_SHIFT) & 0x1F


def pmd_order(k: Kernel) -> int:
    """``PMD_SHIFT - PAGE_SHIFT`` of the model's geometry (``ptes_per_table`` pages)."""
    return k.geo.ptes_per_table.bit_length() - 1


def hmm_pte_need_fault(r: HmmRange, pfn_req_flags: int, cpu_flags: int) -> int:
    """``hmm_pte_need_fault()``."""
    pfn_req_flags &= r.pfn_flags_mask
    pfn_req_flags |= r.default_flags
    if not pfn_req_flags & HMM_PFN_REQ_FAULT:
        return 0
    if pfn_req_flags & HMM_PFN_REQ_WRITE and not cpu_flags & HMM_PFN_WRITE:
        return HMM_NEED_FAULT | HMM_NEED_WRITE_FAULT
    if not cpu_flags & HMM_PFN_VALID:
        return HMM_NEED_FAULT
    return 0


def hmm_range_need_fault(r: HmmRange, i: int, npages: int, cpu_flags: int) -> int:
    """``hmm_range_need_fault()`` over ``hmm_pfns[i:i + npages]``."""
    if not (r.default_flags | r.pfn_flags_mask) & HMM_PFN_REQ_FAULT:
        return 0
    required = 0
    for j in range(i, i + npages):
        required |= hmm_pte_need_fault(r, r.hmm_pfns[j], cpu_flags)
        if required == HMM_NEED_FAULT | HMM_NEED_WRITE_FAULT:
            return required
    return required


def hmm_pfns_fill(k: Kernel, r: HmmRange, vpn: int, end: int, cpu_flags: int) -> int:
    """``hmm_pfns_fill()``: the same flags (no pfn) for every page of ``[vpn, end)``."""
    for j in range(vpn - r.start, end - r.start):
        r.hmm_pfns[j] = (r.hmm_pfns[j] & HMM_PFN_INOUT_FLAGS) | cpu_flags
    return 0


class _Walk:
    """``struct hmm_vma_walk``: the range and ``last``, where a restart begins."""

    __slots__ = ("last", "range")

    def __init__(self, r: HmmRange) -> None:
        self.range = r
        self.last = r.start


def hmm_vma_fault(
    k: Kernel, a: Actor, w: _Walk, vpn: int, end: int, required_fault: int, vflags: int
) -> Path:
    """``hmm_vma_fault()``: fault in ``[vpn, end)`` (``FAULT_FLAG_REMOTE``, ``WRITE``
    when a write fault is required) and ask for a restart from ``vpn``."""
    w.last = vpn
    write = bool(required_fault & HMM_NEED_WRITE_FAULT)
    if write and not vflags & VM_WRITE:
        return EPERM
    for v in range(vpn, end):
        ret = yield from handle_mm_fault_locked(k, a, w.range.mm, v, write)
        if ret & VM_FAULT_ERROR:
            return EFAULT
    k.count("hmm_vma_fault")
    return EBUSY


def hmm_vma_handle_pte(k: Kernel, a: Actor, w: _Walk, vpn: int, end: int, vflags: int) -> Path:
    """``hmm_vma_handle_pte()`` for the entry of ``vpn``; ``end`` is the end of this
    page table's part of the walk. Returns 0, or -EBUSY / -EFAULT / -EPERM."""
    r = w.range
    i = vpn - r.start
    pte = k.pte_read(r.mm, vpn)  # ptep_get(), no page-table lock
    pfn_req_flags = r.hmm_pfns[i]
    kind = pte & PTE_TYPE_MASK
    new_pfn_flags = 0
    if kind == PTE_NONE:
        required = hmm_pte_need_fault(r, pfn_req_flags, 0)
        if required:
            return (yield from hmm_vma_fault(k, a, w, vpn, end, required, vflags))
    elif kind != PTE_PRESENT:
        pfn = pte >> PTE_PFN_SHIFT
        if kind == PTE_DEVICE_PRIVATE and k.device_of(pfn) == r.dev_private_owner:
            # Don't fault in device private pages owned by the caller, just report the PFN.
            cpu_flags = HMM_PFN_VALID | (HMM_PFN_WRITE if pte & PTE_WRITE else 0)
            new_pfn_flags = pfn | cpu_flags
        else:
            required = hmm_pte_need_fault(r, pfn_req_flags, 0)
            if required:
                if kind == PTE_MIGRATION:
                    w.last = vpn
                    yield from migration_entry_wait(k, a, r.mm, vpn)
                    return EBUSY
                # swap, device-private of another owner, device-exclusive: fault.
                return (yield from hmm_vma_fault(k, a, w, vpn, end, required, vflags))
    else:
        cpu_flags = HMM_PFN_VALID | (HMM_PFN_WRITE if pte & PTE_WRITE else 0)
        required = hmm_pte_need_fault(r, pfn_req_flags, cpu_flags)
        if required:
            return (yield from hmm_vma_fault(k, a, w, vpn, end, required, vflags))
        new_pfn_flags = (pte >> PTE_PFN_SHIFT) | cpu_flags
    r.hmm_pfns[i] = (r.hmm_pfns[i] & HMM_PFN_INOUT_FLAGS) | new_pfn_flags
    if new_pfn_flags & HMM_PFN_VALID:
        r.gens[i] = k.words.load(k.fw(hmm_pfn_to_page(new_pfn_flags), F_GEN))
    return 0


def _fill_pfns(k: Kernel, r: HmmRange, vpn: int, end: int, pfn: int, cpu_flags: int) -> None:
    """The per-4K loop of ``hmm_vma_handle_pmd`` / ``hmm_vma_handle_absent_pmd``: one
    entry per page, consecutive pfns from ``pfn``, each with ``cpu_flags`` (which carry
    the PMD's order)."""
    for j in range(vpn - r.start, end - r.start):
        r.hmm_pfns[j] = (r.hmm_pfns[j] & HMM_PFN_INOUT_FLAGS) | pfn | cpu_flags
        r.gens[j] = k.words.load(k.fw(pfn, F_GEN))
        pfn += 1


def hmm_vma_walk_hole(k: Kernel, a: Actor, w: _Walk, vpn: int, end: int, vflags: int) -> Path:
    """``hmm_vma_walk_hole()`` inside a VMA (a none PMD): fault ``[vpn, end)`` when the
    range asks for it, else report no pfn."""
    r = w.range
    required = hmm_range_need_fault(r, vpn - r.start, end - vpn, 0)
    if required:
        return (yield from hmm_vma_fault(k, a, w, vpn, end, required, vflags))
    return hmm_pfns_fill(k, r, vpn, end, 0)


def hmm_vma_handle_pmd(
    k: Kernel, a: Actor, w: _Walk, vpn: int, end: int, pmd: int, vflags: int
) -> Path:
    """``hmm_vma_handle_pmd()`` (7.0 mm/hmm.c 197): a huge present PMD gives every page
    of ``[vpn, end)`` its pfn with ``pmd_to_hmm_pfn_flags`` (VALID, WRITE if the PMD is
    writable, the PMD's order), or faults the whole part through ``hmm_vma_fault``
    when the range asks for more (a write to a read-only PMD). No NUMA hinting
    (``pmd_protnone``)."""
    r = w.range
    cpu_flags = (HMM_PFN_VALID | (HMM_PFN_WRITE if pmd & PTE_WRITE else 0)) | hmm_pfn_flags_order(
        pmd_order(k)
    )
    required = hmm_range_need_fault(r, vpn - r.start, end - vpn, cpu_flags)
    if required:
        return (yield from hmm_vma_fault(k, a, w, vpn, end, required, vflags))
    _fill_pfns(k, r, vpn, end, pm.pmd_pfn(pmd) + vpn % k.geo.ptes_per_table, cpu_flags)
    return 0


def hmm_vma_handle_absent_pmd(
    k: Kernel, a: Actor, w: _Walk, vpn: int, end: int, pmd: int, vflags: int
) -> Path:
    """``hmm_vma_handle_absent_pmd()`` (7.0 mm/hmm.c 335, ``CONFIG_ARCH_ENABLE_THP_MIGRATION``):
    a device-private PMD of ``dev_private_owner`` is reported page by page (VALID, WRITE
    if the entry is writable, the PMD's order: "fully populate the PFN list"); another
    owner's is faulted when the range asks for it; any other non-present PMD is
    -EFAULT when a fault is asked, else ``HMM_PFN_ERROR``."""
    r = w.range
    kind = pmd & PTE_TYPE_MASK
    pfn = pm.pmd_pfn(pmd)
    if kind == PTE_DEVICE_PRIVATE and k.device_of(pfn) == r.dev_private_owner:
        cpu_flags = HMM_PFN_VALID | hmm_pfn_flags_order(pmd_order(k))
        if pmd & PTE_WRITE:
            cpu_flags |= HMM_PFN_WRITE
        _fill_pfns(k, r, vpn, end, pfn + vpn % k.geo.ptes_per_table, cpu_flags)
        return 0
    required = hmm_range_need_fault(r, vpn - r.start, end - vpn, 0)
    if required:
        if kind == PTE_DEVICE_PRIVATE:
            return (yield from hmm_vma_fault(k, a, w, vpn, end, required, vflags))
        return EFAULT
    return hmm_pfns_fill(k, r, vpn, end, HMM_PFN_ERROR)


# hmm_vma_walk_pmd's answer when the PMD holds a PTE table: go on entry by entry.
_PTE_LEVEL = 1


def hmm_vma_walk_pmd_v7(k: Kernel, a: Actor, w: _Walk, vpn: int, end: int, vflags: int) -> Path:
    """The PMD part of ``hmm_vma_walk_pmd()`` (7.0 mm/hmm.c 396-456), v7 only: the PMD is
    read without its lock (``pmdp_get_lockless``; a split racing the walk is the
    notifier's to report). Returns 0 / -EBUSY / -EFAULT / -EPERM, or ``_PTE_LEVEL`` when
    a PTE table hangs here (the caller walks the entries, ``pte_offset_map``)."""
    r = w.range
    idx = vpn // k.geo.ptes_per_table
    while True:  # again:
        pmd = pm.pmdp_get(k, r.mm, idx)
        kind = pmd & PTE_TYPE_MASK
        if kind == PTE_NONE:
            return (yield from hmm_vma_walk_hole(k, a, w, vpn, end, vflags))
        if kind == PTE_MIGRATION:  # thp_migration_supported() && pmd_is_migration_entry
            if hmm_range_need_fault(r, vpn - r.start, end - vpn, 0):
                w.last = vpn
                yield
                yield from pmd_migration_entry_wait(k, a, r.mm, idx)
                return EBUSY
            return hmm_pfns_fill(k, r, vpn, end, 0)
        if kind == pm.PMD_TABLE:
            return _PTE_LEVEL  # pmd_bad() never holds in the model
        if kind != PTE_PRESENT:  # !pmd_present()
            return (yield from hmm_vma_handle_absent_pmd(k, a, w, vpn, end, pmd, vflags))
        # pmd_trans_huge: no pmd_lock, read again and check it is still huge.
        yield
        pmd = pm.pmdp_get(k, r.mm, idx)
        if not pm.pmd_trans_huge(pmd):
            k.count("hmm_walk_pmd_again")
            continue
        return (yield from hmm_vma_handle_pmd(k, a, w, vpn, end, pmd, vflags))


def walk_page_range(k: Kernel, a: Actor, w: _Walk) -> Path:
    """``walk_page_range(mm, last, end, &hmm_walk_ops)``: per VMA (``hmm_vma_walk_test``:
    an unreadable VMA reports ``HMM_PFN_ERROR``, or ``-EFAULT`` when a fault is
    asked), holes between VMAs (``hmm_vma_walk_hole``: the same), then each page table
    (``hmm_vma_walk_pmd``), one entry at a time."""
    r = w.range
    ppt = k.geo.ptes_per_table
    vpn = w.last
    while vpn < r.end:
        row = k.s.find_vma(r.mm, vpn)
        i = vpn - r.start
        if row < 0 or not k.s.vma_flags(r.mm, row) & VM_READ:
            if hmm_pte_need_fault(r, r.hmm_pfns[i], 0):
                return EFAULT
            r.hmm_pfns[i] = HMM_PFN_ERROR
            vpn += 1
            continue
        vflags = k.s.vma_flags(r.mm, row)
        _vs, ve = k.s.vma_bounds(r.mm, row)
        tab_end = min((vpn // ppt + 1) * ppt, r.end, ve)
        if k.geo.thp:  # v7: the PMD first (hmm_vma_walk_pmd)
            ret = yield from hmm_vma_walk_pmd_v7(k, a, w, vpn, tab_end, vflags)
            if ret != _PTE_LEVEL:
                if ret:
                    return ret
                vpn = tab_end
                yield
                continue
        while vpn < tab_end:
            ret = yield from hmm_vma_handle_pte(k, a, w, vpn, tab_end, vflags)
            if ret:
                return ret
            vpn += 1
            yield
    return 0


def hmm_range_fault(k: Kernel, a: Actor, r: HmmRange) -> Path:
    """``hmm_range_fault()``: walk until the walk stops asking for a restart; -EBUSY when
    the notifier's sequence moved. The caller holds ``mmap_read_lock``."""
    w = _Walk(r)
    while True:
        if mmu_interval_check_retry(k, r.notifier, r.notifier_seq):
            k.count("hmm_range_fault_busy")
            return EBUSY
        ret = yield from walk_page_range(k, a, w)
        if ret != EBUSY:
            return ret


__all__ = [
    "HMM_PFN_ERROR",
    "HMM_PFN_ORDER_SHIFT",
    "HMM_PFN_REQ_FAULT",
    "HMM_PFN_REQ_WRITE",
    "HMM_PFN_VALID",
    "HMM_PFN_WRITE",
    "HmmRange",
    "hmm_pfn_to_map_order",
    "hmm_pfn_to_page",
    "hmm_range_fault",
]

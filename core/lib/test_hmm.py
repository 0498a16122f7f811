"""The device driver: ``lib/test_hmm.c`` (dmirror), the kernel's own HMM test driver.

A :class:`Dmirror` is one device with a pool of ZONE_DEVICE frames (zone ``1 + id``).
Its operations are the ioctls the selftests use and the ``dev_pagemap_ops`` callbacks:

- :meth:`migrate_to_device`: ``HMM_DMIRROR_MIGRATE_TO_DEV`` (``dmirror_migrate_to_device``
  → ``migrate_vma_setup`` → ``dmirror_migrate_alloc_and_copy`` → ``migrate_vma_pages`` →
  ``dmirror_migrate_finalize_and_map`` → ``migrate_vma_finalize``);
- :meth:`migrate_to_system`: ``HMM_DMIRROR_MIGRATE_TO_SYS``;
- :meth:`migrate_to_ram`: ``dmirror_devmem_fault``, the ``migrate_to_ram`` callback a CPU
  fault on a device-private entry calls;
- :meth:`release`: ``HMM_DMIRROR_RELEASE`` (``dmirror_device_evict_chunk`` →
  ``migrate_device_range`` → copy → ``migrate_device_pages`` → ``migrate_device_finalize``);
- :meth:`folio_free`: ``dmirror_devmem_free``.

The device's own page table (the xarray) is not modelled: the oracles judge what the
CPU sees. Fault injection follows ``HMM_DMIRROR_FLAG_FAIL_ALLOC``: every ``fail_alloc``-th
allocation fails (0: never), deterministically.
"""

from __future__ import annotations

from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import VM_WRITE
from ..mm.memory import VM_FAULT_OK, VM_FAULT_OOM, VM_FAULT_SIGBUS
from ..mm.migrate_device import (
    EINVAL,
    MIGRATE_PFN_MIGRATE,
    MIGRATE_PFN_VALID,
    MIGRATE_PFN_WRITE,
    MIGRATE_VMA_SELECT_DEVICE_COHERENT,
    MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
    MIGRATE_VMA_SELECT_SYSTEM,
    MigrateVma,
    migrate_device_finalize,
    migrate_device_pages,
    migrate_device_range,
    migrate_pfn,
    migrate_pfn_to_page,
)


class Dmirror:
    """One dmirror device.

    Args:
        dev: device id (its pgmap owner); its frames are zone ``1 + dev``.
        coherent: DEVICE_COHERENT memory instead of DEVICE_PRIVATE.
        fail_alloc: make every n-th allocation fail (``HMM_DMIRROR_FLAG_FAIL_ALLOC``).
        fault_range: pages migrated back around a faulting page (1: just the page).
        fault_work: preemption points of driver work in ``migrate_to_ram`` before it
            calls ``migrate_vma_setup`` (range lookups, locks, DMA setup in a real GPU
            driver such as Xe), during which the fault path holds its reference.
        copy_work: preemption points each page copy takes (the DMA), during which the
            source is unmapped behind migration entries and CPUs pile up on them.
    """

    def __init__(
        self,
        dev: int,
        coherent: bool = False,
        fail_alloc: int = 0,
        fault_range: int = 1,
        fault_work: int = 0,
        copy_work: int = 0,
    ) -> None:
        self.dev = dev
        self.zone = 1 + dev
        self.coherent = coherent
        self.fail_alloc = fail_alloc
        self.fault_range = max(1, fault_range)
        self.fault_work = max(0, fault_work)
        self.copy_work = max(0, copy_work)
        self.allocs = 0
        self.freed = 0

    # -- allocation -------------------------------------------------------------------
    def _alloc(self, k: Kernel, a: Actor, zone: int, site: str) -> int:
        self.allocs += 1
        if self.fail_alloc and self.allocs % self.fail_alloc == 0:
            k.count("dmirror_fail_alloc")
            return -1
        return k.alloc_page(a, zone, site)

    def _copy_fails(self, k: Kernel) -> bool:
        """Every ``copy_error``-th copy back to system memory fails (the ``copy_error``
        fault of ``core/faults.py``: every second one), deterministically."""
        every = getattr(self, "copy_error", 0) or (2 if "copy_error" in k.faults else 0)
        if not every:
            return False
        self.copies = getattr(self, "copies", 0) + 1
        return self.copies % every == 0

    def _dma(self, k: Kernel) -> Path:
        """The copy engine's time for one page (``copy_work`` preemption points)."""
        for _ in range(self.copy_work):
            yield

    def folio_free(self, k: Kernel, a: Actor, pfn: int) -> None:
        """``dmirror_devmem_free()``: the page goes back to the device's free list."""
        check = k.hooks.get("device_page_free")  # device-page lifetime oracle (core/oracles/world.py)
        if check is not None:
            check(k, a, pfn)
        self.freed += 1

    # -- the callbacks each variant's migrate_range() calls (variants.py) ---------------
    def _to_device_cb(self, k: Kernel, a: Actor, m: MigrateVma) -> Path:
        return (yield from k.variant.driver_alloc_and_copy(k, a, self, m))

    def _to_ram_cb(self, k: Kernel, a: Actor, m: MigrateVma) -> Path:
        return (yield from self.alloc_and_copy_to_ram(k, a, m))

    # -- HMM_DMIRROR_MIGRATE_TO_DEV -----------------------------------------------------
    def alloc_and_copy_to_device(self, k: Kernel, a: Actor, m: MigrateVma) -> Path:
        """``dmirror_migrate_alloc_and_copy()``: a locked device page per MIGRATE entry,
        with the source's content; holes get a zeroed page."""
        write_vma = bool(k.s.vma_flags(m.mm, m.vma) & VM_WRITE)
        for i, spfn in enumerate(m.src):
            if not spfn & MIGRATE_PFN_MIGRATE:
                continue
            dst = yield from self.device_dst(k, a, m, spfn, write_vma, 0, dma=True)
            if not dst:
                continue
            m.dst[i] = dst
            yield

    def device_dst(
        self, k: Kernel, a: Actor, m: MigrateVma, spfn: int, write_vma: bool, flags: int,
        dma: bool,
    ) -> Path:
        """The destination of one entry migrating to the device, as every generation's
        driver makes it (``dmirror_migrate_alloc_and_copy``; seed 003's sample driver): a
        device page (``dmirror_devmem_alloc_page``), locked, with the source page's
        content (a hole's stays zeroed); returns its dst word (``| flags``, ``| WRITE``
        for a writable source, or for a hole of a writable VMA), or 0 when the
        allocation failed (outcome ``alloc_failed``). ``dma``: the copy engine's time
        (:meth:`_dma`) follows the copy; the 2017 sample driver's copy has none."""
        spage = migrate_pfn_to_page(spfn)
        dpage = self._alloc(k, a, self.zone, "dmirror_devmem_alloc_page")
        if dpage < 0:
            k.outcome(m.kind, "alloc_failed")
            return 0
        yield from k.lock_page(a, dpage, "dmirror_migrate_alloc_and_copy:lock_dst")
        if spage >= 0:
            k.touch(a, spage, "dmirror_migrate_alloc_and_copy:copy")
            k.set_data(dpage, k.data(spage))
            if dma:
                yield from self._dma(k)
        dst = migrate_pfn(dpage) | flags
        if spfn & MIGRATE_PFN_WRITE or (spage < 0 and write_vma):
            dst |= MIGRATE_PFN_WRITE
        return dst

    def migrate_to_device(self, k: Kernel, a: Actor, mm: int, start: int, end: int) -> Path:
        """``dmirror_migrate_to_device()``: returns 0 or a negative errno."""
        yield from k.mmap_read_lock(a, mm, "dmirror_migrate_to_device:mmap_read_lock")
        try:
            row = k.s.find_vma(mm, start)
            if row < 0:
                return EINVAL
            flags = MIGRATE_VMA_SELECT_SYSTEM
            m = MigrateVma(mm, row, start, end, flags, self.dev, kind="to_device")
            rc = yield from k.variant.migrate_range(k, a, m, self._to_device_cb)
            if rc:
                return rc
            k.count("migrate_to_device")
            return 0
        finally:
            k.mmap_read_unlock(a, mm, "dmirror_migrate_to_device:mmap_read_unlock")

    # -- HMM_DMIRROR_MIGRATE_TO_SYS and the fault callback ------------------------------
    def alloc_and_copy_to_ram(self, k: Kernel, a: Actor, m: MigrateVma) -> Path:
        """``dmirror_devmem_fault_alloc_and_copy()``: a locked system page per entry.

        Returns ``VM_FAULT_SIGBUS`` when an injected copy error hit (``copy_error``),
        ``VM_FAULT_OOM`` when an allocation fails (either way the caller finalizes,
        leaving that entry on the device), else 0.
        """
        ret = 0
        for i, spfn in enumerate(m.src):
            if not (spfn & MIGRATE_PFN_MIGRATE and spfn & MIGRATE_PFN_VALID):
                continue
            spage = migrate_pfn_to_page(spfn)
            dpage = self._alloc(k, a, 0, "dmirror_devmem_fault_alloc_and_copy:alloc")
            if dpage < 0:
                k.outcome(m.kind, "alloc_failed")
                ret = ret or VM_FAULT_OOM
                continue
            yield from k.lock_page(a, dpage, "dmirror_devmem_fault_alloc_and_copy:lock_dst")
            k.touch(a, spage, "dmirror_devmem_fault_alloc_and_copy:copy")
            if self._copy_fails(k):
                # Injected copy error (MIGRATE_PFN_ERROR): the entry stays on the device
                # and the faulting process gets SIGBUS (expected: an error was injected).
                k.unlock_page(a, dpage, "dmirror_devmem_fault_alloc_and_copy:unlock_dst")
                k.put_page(a, dpage, "dmirror_devmem_fault_alloc_and_copy:put_dst")
                k.outcome(m.kind, "copy_error")
                k.count("dmirror_copy_error")
                ret = VM_FAULT_SIGBUS
                continue
            k.set_data(dpage, k.data(spage))
            yield from self._dma(k)
            m.dst[i] = migrate_pfn(dpage)
            if spfn & MIGRATE_PFN_WRITE:
                m.dst[i] |= MIGRATE_PFN_WRITE
            yield
        return ret

    def migrate_to_system(self, k: Kernel, a: Actor, mm: int, start: int, end: int) -> Path:
        """``dmirror_migrate_to_system()``: returns 0 or a negative errno."""
        yield from k.mmap_read_lock(a, mm, "dmirror_migrate_to_system:mmap_read_lock")
        try:
            row = k.s.find_vma(mm, start)
            if row < 0:
                return EINVAL
            sel = (
                MIGRATE_VMA_SELECT_DEVICE_COHERENT
                if self.coherent
                else MIGRATE_VMA_SELECT_DEVICE_PRIVATE
            )
            m = MigrateVma(mm, row, start, end, sel, self.dev, kind="to_system")
            rc = yield from k.variant.migrate_range(
                k, a, m, self._to_ram_cb, finalize_on_error=False
            )
            if rc < 0:
                return rc
            k.count("migrate_to_system")
            return 0
        finally:
            k.mmap_read_unlock(a, mm, "dmirror_migrate_to_system:mmap_read_unlock")

    def migrate_to_ram(
        self, k: Kernel, a: Actor, mm: int, vpn: int, pfn: int, locked: bool
    ) -> Path:
        """``dmirror_devmem_fault()``: migrate the faulting page (and, with
        ``fault_range`` > 1, its aligned neighbourhood) back to system memory.

        ``locked`` says whether the fault path holds the page lock (6.15+); the page is
        passed as ``fault_page`` whenever the fault path holds a reference (6.1+).
        """
        if k.variant.fault_reads_page_data:
            k.touch(a, pfn, "dmirror_devmem_fault:zone_device_data")
        for _ in range(self.fault_work):
            yield
        row = k.s.find_vma(mm, vpn)
        if row < 0:
            return VM_FAULT_SIGBUS
        vstart, vend = k.s.vma_bounds(mm, row)
        lo = max(vstart, vpn - vpn % self.fault_range)
        hi = min(vend, lo + self.fault_range)
        fault_page = pfn if (locked or "fault-ref-no-trylock" in k.bugs) else -1
        m = MigrateVma(
            mm,
            row,
            lo,
            hi,
            MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
            self.dev,
            fault_page=fault_page,
            kind="fault",
            fault_folio=pfn if locked else -1,
        )
        rc = yield from k.variant.migrate_range(k, a, m, self._to_ram_cb)
        if rc < 0:
            return VM_FAULT_SIGBUS
        return rc or VM_FAULT_OK

    # -- HMM_DMIRROR_RELEASE ---------------------------------------------------------
    def release(self, k: Kernel, a: Actor) -> Path:
        """``dmirror_device_evict_chunk()`` over all of the device's memory."""
        lo, hi = k.lay.zone_range(self.zone)
        n = hi - lo
        src = [0] * n
        dst = [0] * n
        yield from migrate_device_range(k, a, src, lo, n)
        for i, spfn in enumerate(src):
            if not spfn & MIGRATE_PFN_MIGRATE:
                continue
            spage = migrate_pfn_to_page(spfn)
            dpage = k.alloc_page(a, 0, "dmirror_device_evict_chunk:alloc")
            if dpage < 0:
                k.outcome("evict", "alloc_failed")
                continue
            yield from k.lock_page(a, dpage, "dmirror_device_evict_chunk:lock_dst")
            k.touch(a, spage, "dmirror_device_evict_chunk:copy")
            k.set_data(dpage, k.data(spage))
            yield from self._dma(k)
            dst[i] = migrate_pfn(dpage)
            yield
        yield from migrate_device_pages(k, a, src, dst, "evict")
        yield from migrate_device_finalize(k, a, src, dst, "evict")
        k.count("evict")
        return 0

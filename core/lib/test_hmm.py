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

The mirror itself (``struct dmirror``: one open file of the device, bound to one mm) is
the second half of this module, from 7.0's ``lib/test_hmm.c``: its device page table
(``dmirror->pt``), its interval notifier and ``dmirror_interval_invalidate``,
``dmirror->mutex``, ``dmirror_range_fault`` / ``dmirror_do_fault`` around
``hmm_range_fault`` (``core/mm/hmm.py``), ``HMM_DMIRROR_READ`` / ``WRITE`` /
``SNAPSHOT``, ``EXCLUSIVE`` / ``CHECK_EXCLUSIVE`` (``dmirror_exclusive``,
``dmirror_atomic_map``, ``dmirror_check_atomic``, around ``make_device_exclusive``:
``core/mm/device_exclusive.py``) and the mirror's own ``MIGRATE_TO_DEV`` /
``MIGRATE_TO_SYS`` (``dmirror_migrate_finalize_and_map``, the ``xa_erase`` of
``dmirror_devmem_fault_alloc_and_copy``). All of it lives in words
(``Layout`` tables ``dmirror``, ``dpt``, ``dpt_gen``, ``dpage_mirror``, ``mni``), so the
parallel engine shares it. A :class:`Dmirror` is the device (``struct
dmirror_device``); the mirrors are numbered 0.. in the order the workload opens them.
Device accesses run on ``v6`` only: ``test_hmm.c`` (5.7+) has had this code since
6.x, and hmm-2017 / v5.0 had no mirror driver of this shape.

Allocation failures: the device's ``fail_alloc`` makes every n-th allocation of the
driver fail (0: never), deterministically: the model's memory pressure, in every
generation (no generation's driver had such a knob: the seeds have none). The count is
the device's, in the ``dev_counters`` words, so the parallel engine's workers share it. 7.0's own
injection, ``HMM_DMIRROR_FLAGS`` with ``HMM_DMIRROR_FLAG_FAIL_ALLOC``, is per mirror and
one-shot (``dmirror->flags``, the op ``dmirror_flags``): the next allocation attempt
through that mirror fails and clears the flag (:func:`dmirror_fail_alloc_once`).
"""

from __future__ import annotations

import numpy as np

from ..actors import register_op
from ..machine.errors import FailureKind
from ..machine.folio import folio_alloc, folio_nr_pages, folio_order, folio_test_large, page_folio
from ..machine.kernel import S_ACQUIRED, S_CONTENDED, S_TRY, S_TRY_FAIL, Actor, Kernel, Path
from ..machine.layout import (
    DC_COUNT,
    DC_LOCK,
    DC_REF,
    DC_REMOVE,
    DM_DEV,
    DM_FLAGS,
    DM_MM,
    DM_MUTEX,
    DM_WORDS,
    DPT_BACKING,
    DPT_PFN_SHIFT,
    DPT_TAG_ATOMIC,
    DPT_TAG_WRITE,
    DVC_ALLOCS,
    DVC_COPIES,
    DVC_WORDS,
    F_GEN,
    FRAME_WORDS,
    MN_HAS_ITREE,
    MN_SEQ,
    MNI_END,
    MNI_IN_TREE,
    MNI_MIRROR,
    MNI_MM,
    MNI_OPS,
    MNI_SEQ,
    MNI_START,
    MNI_STATE,
    MNI_WORDS,
    VM_READ,
    VM_WRITE,
    PG_allocated,
)
from ..machine.state import State
from ..mm.device_exclusive import make_device_exclusive
from ..mm.hmm import (
    EBUSY,
    EFAULT,
    HMM_PFN_ERROR,
    HMM_PFN_REQ_FAULT,
    HMM_PFN_REQ_WRITE,
    HMM_PFN_VALID,
    HMM_PFN_WRITE,
    HmmRange,
    hmm_pfn_to_map_order,
    hmm_pfn_to_page,
    hmm_range_fault,
    pmd_order,
)
from ..mm.memory import VM_FAULT_OK, VM_FAULT_OOM, VM_FAULT_SIGBUS
from ..mm.memremap import (
    devmem_word,
    has_chunks,
    memremap_pages,
    memunmap_pages,
    pgmap_get,
    pgmap_put,
)
from ..mm.migrate_device import (
    EINVAL,
    MIGRATE_PFN_COMPOUND,
    MIGRATE_PFN_MIGRATE,
    MIGRATE_PFN_SHIFT,
    MIGRATE_PFN_VALID,
    MIGRATE_PFN_WRITE,
    MIGRATE_VMA_SELECT_COMPOUND,
    MIGRATE_VMA_SELECT_DEVICE_COHERENT,
    MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
    MIGRATE_VMA_SELECT_SYSTEM,
    MigrateVma,
    migrate_device_finalize,
    migrate_device_pages,
    migrate_device_range,
    migrate_pfn,
    migrate_pfn_to_page,
    migrate_vma_finalize,
    migrate_vma_pages,
    migrate_vma_setup,
)
from ..mm.mmu_notifier import (
    MMU_NOTIFY_MIGRATE,
    OPS_DMIRROR,
    OPS_SNAPSHOT,
    MmuNotifierRange,
    mmu_interval_notifier_insert,
    mmu_interval_notifier_remove,
    mmu_interval_read_begin,
    mmu_interval_read_retry,
    mmu_interval_set_seq,
)
from ..oracles.device import check_device_pt, check_exclusive, cpu_access_check, device_access
from .drm_pagemap import POLICY_ALL_OR_NOTHING, drm_pagemap_populate_mm

ENOENT = -2
EPERM = -1
HMM_DMIRROR_FLAG_FAIL_ALLOC = 1 << 0  # lib/test_hmm_uapi.h (7.0)


def driver_70(k: Kernel) -> bool:
    """Whether ``k`` runs 7.0's ``lib/test_hmm.c`` error paths (``v6`` and later; the
    older generations keep the driver behaviour of their time)."""
    return k.variant.name not in ("hmm-2017", "v5.0")


def dmirror_fail_alloc_once(k: Kernel, mi: int) -> bool:
    """7.0 (lines 705 and 975): ``if (dmirror->flags & HMM_DMIRROR_FLAG_FAIL_ALLOC)
    { dmirror->flags &= ~HMM_DMIRROR_FLAG_FAIL_ALLOC; dpage = NULL; }``: the one-shot
    flag of mirror ``mi`` fails this allocation attempt and clears itself. Without a
    lock, as 7.0 (two allocations through one mirror at once may both see it)."""
    w = k.lay.DMIRROR + mi * DM_WORDS + DM_FLAGS
    f = k.words.load(w)
    if not f & HMM_DMIRROR_FLAG_FAIL_ALLOC:
        return False
    k.words.store(w, f & ~HMM_DMIRROR_FLAG_FAIL_ALLOC)
    k.count("dmirror_fail_alloc_flag")
    return True


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
        policy: how the driver migrates to the device: ``dmirror`` (lib/test_hmm.c:
            whatever was collected) or ``all_or_nothing`` (drm_pagemap: only a fully
            collected range, else release and retry; ``core/lib/drm_pagemap.py``).
        migrate_retries: the all-or-nothing driver's attempts per migration.
    """

    def __init__(
        self,
        dev: int,
        coherent: bool = False,
        fail_alloc: int = 0,
        fault_range: int = 1,
        fault_work: int = 0,
        copy_work: int = 0,
        policy: str = "dmirror",
        migrate_retries: int = 3,
    ) -> None:
        self.dev = dev
        self.zone = 1 + dev
        self.coherent = coherent
        self.fail_alloc = fail_alloc
        self.fault_range = max(1, fault_range)
        self.fault_work = max(0, fault_work)
        self.copy_work = max(0, copy_work)
        self.policy = policy
        self.migrate_retries = max(1, migrate_retries)
        self.allocs = 0  # the counts of :meth:`_tick` when there are no dev_counters words
        self.copies = 0
        self.freed = 0

    # -- allocation -------------------------------------------------------------------
    def _tick(self, k: Kernel, which: int) -> int:
        """The device's allocation (``DVC_ALLOCS``) or copy back (``DVC_COPIES``) count,
        this one included: a ``fetch_add`` on the device's ``dev_counters`` word, shared by
        the parallel engine's workers (the count is the device's, as its memory pressure
        is); a Python count only when the geometry has no such words (no ``fail_alloc`` /
        ``copy_error`` in the workload: the test-only ``copy_error`` fault, deterministic
        engine)."""
        if k.lay.tables["dev_counters"].size:
            return k.words.fetch_add(k.lay.DEV_COUNTERS + self.dev * DVC_WORDS + which, 1) + 1
        if which == DVC_ALLOCS:
            self.allocs += 1
            return self.allocs
        self.copies += 1
        return self.copies

    def _alloc(self, k: Kernel, a: Actor, zone: int, site: str) -> int:
        allocs = self._tick(k, DVC_ALLOCS)
        if self.fail_alloc and allocs % self.fail_alloc == 0:
            k.count("dmirror_fail_alloc")
            return -1
        return k.alloc_page(a, zone, site)

    def _copy_fails(self, k: Kernel) -> bool:
        """Every ``copy_error``-th copy back to system memory fails (the ``copy_error``
        fault of ``core/faults.py``: every second one), deterministically."""
        every = getattr(self, "copy_error", 0) or (2 if "copy_error" in k.faults else 0)
        if not every:
            return False
        return self._tick(k, DVC_COPIES) % every == 0

    def _dma(self, k: Kernel) -> Path:
        """The copy engine's time for one page (``copy_work`` preemption points)."""
        for _ in range(self.copy_work):
            yield

    def folio_free(self, k: Kernel, a: Actor, pfn: int) -> None:
        """``dmirror_devmem_free()``: the page goes back to the device's free list
        (unless its chunk is being removed: ``chunk->remove``, which the model's
        allocator checks, :meth:`alloc_device_page`); then ``free_zone_device_folio``
        drops the page's pagemap reference (:func:`pgmap_put`)."""
        check = k.hooks.get("device_page_free")  # device-page lifetime oracle (core/oracles/world.py)
        if check is not None:
            check(k, a, pfn)
        # v7: a large device folio goes whole (7.0: __free_pages(rpage, order), cfree +=
        # 1 << order, percpu_ref_put_many(nr)); order 0 everywhere else
        nr = folio_nr_pages(k, pfn) if k.variant.large_folios else 1
        if k.geo.dmirrors:
            for p in range(pfn, pfn + nr):
                k.words.store(k.lay.DPAGE_MIRROR + p, 0)  # rpage->zone_device_data
        self.freed += nr
        if has_chunks(k):
            pgmap_put(k, self.dev, nr)

    def folio_split(self, k: Kernel, a: Actor, head: int, tail: int) -> None:
        """``dmirror_devmem_folio_split()`` (7.0 lib/test_hmm.c 1689), the pgmap's
        ``folio_split`` op, which ``zone_device_private_split_cb`` calls for each new
        folio ``tail`` of a device-private folio split at ``head`` and once more with
        ``tail`` = -1 (NULL) at the end. 7.0 splits the backing folio ``rpage`` with it:
        the tail's ``zone_device_data`` becomes the backing page at the same offset,
        which takes ``rpage->zone_device_data`` (the mirror); the final call resets the
        backing folio's order. The model keeps a device-private page's backing store in
        its own frame (``DPT_BACKING``): what is left is the mirror each backing page
        names (``dpage_mirror``), which the tail takes from the head, so that a later
        fault on the tail (``dmirror_devmem_fault``: ``rpage->zone_device_data``) finds
        the mirror whose entries it must erase. ``if (!rpage)``: never in the model
        (every allocated device page has its frame as backing)."""
        if not k.geo.dmirrors or tail < 0:
            return  # folio_reset_order(rfolio) etc.: the backing folio's own words
        words = k.words
        words.store(k.lay.DPAGE_MIRROR + tail, words.load(k.lay.DPAGE_MIRROR + head))
        k.count("dmirror_folio_split")

    def alloc_device_page(self, k: Kernel, a: Actor, site: str, order: int = 0) -> Path:
        """``dmirror_devmem_alloc_page()`` with chunks (the geometry's ``chunks``): under
        ``mdevice->lock`` (one step here) a page from the free list, which is empty
        while the chunk is being removed and after it was; then
        ``dmirror_allocate_chunk`` takes ``devmem_lock`` (it sleeps behind a removal in
        progress) and maps a new chunk (``memremap_pages``) if the device has none. The
        page takes a pagemap reference (``zone_device_page_init``). Without chunks,
        :meth:`_alloc` (no preemption point). Returns the pfn or -1. v7: ``order`` > 0
        is 7.0's ``is_large`` (a free folio, ``1 << order`` references); the caller
        counts it against ``fail_alloc``."""
        if not has_chunks(k):
            if order:
                return folio_alloc(k, a, self.zone, order, site)
            return self._alloc(k, a, self.zone, site)
        words = k.words
        if words.load(devmem_word(k, self.dev, DC_REMOVE)) or not words.load(
            devmem_word(k, self.dev, DC_COUNT)
        ):
            lock = devmem_word(k, self.dev, DC_LOCK)
            yield from k.mutex_lock(a, lock, "dmirror_allocate_chunk:devmem_lock")
            if not words.load(devmem_word(k, self.dev, DC_COUNT)):
                memremap_pages(k, self.dev)
                words.store(devmem_word(k, self.dev, DC_REMOVE), 0)
            k.mutex_unlock(a, lock, "dmirror_allocate_chunk:devmem_unlock")
            if words.load(devmem_word(k, self.dev, DC_REMOVE)):
                return -1
        pfn = folio_alloc(k, a, self.zone, order, site) if order else self._alloc(
            k, a, self.zone, site
        )
        if pfn >= 0:
            pgmap_get(k, self.dev, 1 << order)
        return pfn

    # -- the callbacks each variant's migrate_range() calls (variants.py) ---------------
    # The two callbacks forward: plain methods returning the path (no frame of their own).
    def _to_device_cb(self, k: Kernel, a: Actor, m: MigrateVma) -> Path:
        return k.variant.driver_alloc_and_copy(k, a, self, m)

    def _to_ram_cb(self, k: Kernel, a: Actor, m: MigrateVma) -> Path:
        return self.alloc_and_copy_to_ram(k, a, m)

    # -- HMM_DMIRROR_MIGRATE_TO_DEV -----------------------------------------------------
    def alloc_and_copy_to_device(self, k: Kernel, a: Actor, m: MigrateVma) -> Path:
        """``dmirror_migrate_alloc_and_copy()``: a locked device page per MIGRATE entry,
        with the source's content; holes get a zeroed page."""
        if k.variant.large_folios:  # v7: 7.0's large device folios
            yield from self.alloc_and_copy_to_device_v7(k, a, m)
            return
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
        # migrate_pfn_to_page(spfn) and migrate_pfn(dpage), inlined (hot)
        spage = spfn >> MIGRATE_PFN_SHIFT if spfn & MIGRATE_PFN_VALID else -1
        mi = getattr(m, "mirror", -1)
        if mi >= 0 and dmirror_fail_alloc_once(k, mi):
            dpage = -1  # 7.0 dmirror_migrate_alloc_and_copy: the flag, then "goto next"
        else:
            dpage = yield from self.alloc_device_page(k, a, "dmirror_devmem_alloc_page")
        if dpage < 0:
            k.outcome(m.kind, "alloc_failed")
            return 0
        yield from k.lock_page(a, dpage, "dmirror_migrate_alloc_and_copy:lock_dst")
        if spage >= 0:
            k.touch(a, spage, "dmirror_migrate_alloc_and_copy:copy")
            k.set_data(dpage, k.data(spage))
            if dma and self.copy_work:  # no DMA time: no generator to run (hot)
                yield from self._dma(k)
        dst = (dpage << MIGRATE_PFN_SHIFT) | MIGRATE_PFN_VALID | flags
        if spfn & MIGRATE_PFN_WRITE or (spage < 0 and write_vma):
            dst |= MIGRATE_PFN_WRITE
        return dst

    def migrate_to_device(self, k: Kernel, a: Actor, mm: int, start: int, end: int) -> Path:
        """``dmirror_migrate_to_device()``: returns 0 or a negative errno. A device with
        the ``all_or_nothing`` policy runs drm_pagemap's instead
        (:func:`~pagerace.core.lib.drm_pagemap.drm_pagemap_populate_mm`)."""
        if self.policy == POLICY_ALL_OR_NOTHING:
            return (yield from drm_pagemap_populate_mm(k, a, self, mm, start, end))
        yield from k.mmap_read_lock(a, mm, "dmirror_migrate_to_device:mmap_read_lock")
        try:
            row = k.s.find_vma(mm, start)
            if row < 0:
                return EINVAL
            flags = MIGRATE_VMA_SELECT_SYSTEM
            if k.variant.large_folios:
                flags |= MIGRATE_VMA_SELECT_COMPOUND  # 7.0 dmirror_migrate_to_device
            m = MigrateVma(mm, row, start, end, flags, self.dev, kind="to_device")
            rc = yield from k.variant.migrate_range(k, a, m, self._to_device_cb)
            if rc:
                return rc
            k.count("migrate_to_device")
            return 0
        finally:
            k.mmap_read_unlock(a, mm, "dmirror_migrate_to_device:mmap_read_unlock")

    # -- v7: large device folios (lib/test_hmm.c of 7.0) ------------------------------
    def _null_deref(self, k: Kernel, a: Actor, site: str) -> Exception:
        return k.fail(
            FailureKind.BUG_ON,
            f"{a.name}: NULL pointer dereference at {site}: the allocation it does not "
            "check failed (7.0 lib/test_hmm.c)",
            actors=[a],
            sites=[site],
        )

    def alloc_and_copy_to_device_v7(self, k: Kernel, a: Actor, m: MigrateVma) -> Path:
        """``dmirror_migrate_alloc_and_copy()`` of 7.0: a compound entry gets a large
        device folio (``dmirror_devmem_alloc_page(is_large)``) and its pages are copied
        one by one; when the large allocation fails (or ``fail_alloc`` hits) each page of
        the range gets an order-0 device page instead, allocated without a NULL check
        (an exhausted device is a NULL dereference, reported as a kernel failure); a
        small entry is v6's."""
        write_vma = bool(k.s.vma_flags(m.mm, m.vma) & VM_WRITE)
        i = 0
        while i < m.npages:
            spfn = m.src[i]
            if not spfn & MIGRATE_PFN_MIGRATE:
                i += 1
                continue
            if not spfn & MIGRATE_PFN_COMPOUND:
                dst = yield from self.device_dst(k, a, m, spfn, write_vma, 0, dma=True)
                if dst:
                    m.dst[i] = dst
                i += 1
                yield
                continue
            spage = migrate_pfn_to_page(spfn)
            write = MIGRATE_PFN_WRITE if spfn & MIGRATE_PFN_WRITE or (
                spage < 0 and write_vma) else 0
            n = k.geo.hpage_pmd_nr
            order = n.bit_length() - 1
            allocs = self._tick(k, DVC_ALLOCS)
            mi = getattr(m, "mirror", -1)
            if mi >= 0 and dmirror_fail_alloc_once(k, mi):
                dpage = -1  # 7.0: HMM_DMIRROR_FLAG_FAIL_ALLOC, then the small-page loop
            elif self.fail_alloc and allocs % self.fail_alloc == 0:
                k.count("dmirror_fail_alloc")
                dpage = -1
            else:
                dpage = yield from self.alloc_device_page(
                    k, a, "dmirror_migrate_alloc_and_copy:alloc_large", order
                )
            if dpage < 0:
                k.outcome(m.kind, "large_alloc_failed")
                nr = n if spage < 0 else folio_nr_pages(k, page_folio(k, spage))
                for j in range(nr):
                    if i + j >= m.npages:
                        break
                    d = k.alloc_page(a, self.zone, "dmirror_migrate_alloc_and_copy:alloc_small")
                    if d < 0:
                        raise self._null_deref(k, a, "dmirror_migrate_alloc_and_copy:BACKING_PAGE(dpage)")
                    if has_chunks(k):
                        pgmap_get(k, self.dev)  # zone_device_page_init
                    yield from k.lock_page(a, d, "dmirror_migrate_alloc_and_copy:lock_dst")
                    if spage >= 0:
                        k.touch(a, spage + j, "dmirror_migrate_alloc_and_copy:copy")
                        k.set_data(d, k.data(spage + j))
                    m.dst[i + j] = migrate_pfn(d) | write
                i += nr
                yield
                continue
            yield from k.lock_page(a, dpage, "dmirror_migrate_alloc_and_copy:lock_dst")
            for j in range(n):
                if spage >= 0:
                    k.touch(a, spage + j, "dmirror_migrate_alloc_and_copy:copy")
                    k.set_data(dpage + j, k.data(spage + j))
                if self.copy_work:  # no DMA time: no generator to run (hot)
                    yield from self._dma(k)
            m.dst[i] = migrate_pfn(dpage) | write | MIGRATE_PFN_COMPOUND
            i += n
            yield

    def _large_to_ram_v7(
        self, k: Kernel, a: Actor, m: MigrateVma, i: int, spage: int, erase_mirror: int
    ) -> Path:
        """``dmirror_devmem_fault_alloc_and_copy()`` of 7.0 for a page of a large device
        folio: ``*dst = MIGRATE_PFN_COMPOUND`` and a large folio from
        ``vma_alloc_folio(order)``; ``fail_alloc`` (``HMM_DMIRROR_FLAG_FAIL_ALLOC``) or a
        failed large allocation takes "smaller pages": an order-0 page per page of the
        folio (``alloc_page_vma``, unchecked: a failure is a NULL dereference in
        ``lock_page``, reported as a kernel failure), each its own dst entry."""
        site = "dmirror_devmem_fault_alloc_and_copy"
        head = page_folio(k, spage)
        order = folio_order(k, head)
        dst = MIGRATE_PFN_COMPOUND if order else 0
        if m.src[i] & MIGRATE_PFN_WRITE:
            dst |= MIGRATE_PFN_WRITE
        allocs = self._tick(k, DVC_ALLOCS)
        if self.fail_alloc and allocs % self.fail_alloc == 0:
            k.count("dmirror_fail_alloc")
            dst &= ~MIGRATE_PFN_COMPOUND
            dpage = -1
        else:
            dpage = folio_alloc(k, a, 0, order, "dmirror_devmem_fault_alloc_and_copy:vma_alloc_folio")
        if dpage >= 0:
            yield from k.lock_page(a, dpage, "dmirror_devmem_fault_alloc_and_copy:lock_dst")
            m.dst[i] = dst | migrate_pfn(dpage)
        else:
            k.outcome(m.kind, "large_alloc_failed")
        for j in range(1 << order):
            if dpage < 0:  # "Try with smaller pages if large allocation fails"
                if i + j >= len(m.dst):
                    raise k.fail(
                        FailureKind.BUG_ON,
                        f"{a.name} wrote dst[{i + j}] at {site}, past the {len(m.dst)} "
                        "entries of the migration's arrays (KASAN: slab-out-of-bounds)",
                        actors=[a], sites=[site],
                    )
                d = k.alloc_page(a, 0, "dmirror_devmem_fault_alloc_and_copy:alloc_page_vma")
                if d < 0:
                    raise self._null_deref(k, a, "dmirror_devmem_fault_alloc_and_copy:lock_page")
                yield from k.lock_page(a, d, "dmirror_devmem_fault_alloc_and_copy:lock_dst")
                m.dst[i + j] = migrate_pfn(d)
                target = d
            else:
                target = dpage + j
            if erase_mirror >= 0:
                dpt_erase(k, erase_mirror, m.start + i + j)
            k.touch(a, spage + j, "dmirror_devmem_fault_alloc_and_copy:copy")
            k.set_data(target, k.data(spage + j))
        if self.copy_work:  # no DMA time: no generator to run (hot)
            yield from self._dma(k)
        return 0

    def _evict_large_v7(
        self, k: Kernel, a: Actor, src: list[int], dst: list[int], i: int, spage: int
    ) -> Path:
        """``dmirror_device_evict_chunk()`` of 7.0 for a compound entry: a large system
        folio of the same order (``folio_alloc``, unchecked: a failure is a NULL
        dereference in ``lock_page``), locked, the whole folio copied."""
        order = folio_order(k, page_folio(k, spage))
        dpage = folio_alloc(k, a, 0, order, "dmirror_device_evict_chunk:folio_alloc")
        if dpage < 0:
            raise self._null_deref(k, a, "dmirror_device_evict_chunk:lock_page")
        yield from k.lock_page(a, dpage, "dmirror_device_evict_chunk:lock_dst")
        for j in range(1 << order):
            k.touch(a, spage + j, "dmirror_device_evict_chunk:copy")
            k.set_data(dpage + j, k.data(spage + j))
        if self.copy_work:  # no DMA time: no generator to run (hot)
            yield from self._dma(k)
        dst[i] = migrate_pfn(dpage) | (MIGRATE_PFN_COMPOUND if order else 0)

    # -- HMM_DMIRROR_MIGRATE_TO_SYS and the fault callback ------------------------------
    def alloc_and_copy_to_ram(
        self, k: Kernel, a: Actor, m: MigrateVma, erase_mirror: int = -1
    ) -> Path:
        """``dmirror_devmem_fault_alloc_and_copy()``: a locked system page per entry.

        ``erase_mirror``: the dmirror whose device page table loses the entry of each
        page copied (7.0: ``xa_erase(&dmirror->pt, addr)``, without ``dmirror->mutex``;
        the caller's dmirror for ``MIGRATE_TO_SYS``, the one that allocated the faulting
        page for a fault), -1 for none (migrations started without a mirror).

        Returns ``VM_FAULT_SIGBUS`` when an injected copy error hit (``copy_error``), or
        ``VM_FAULT_OOM`` when an allocation fails, else 0. On ``v6`` (7.0, line ~987)
        the first failed allocation returns ``VM_FAULT_OOM`` at once, the one-shot
        ``HMM_DMIRROR_FLAG_FAIL_ALLOC`` of ``erase_mirror`` failing it first (line 975);
        the older generations' drivers go on with the next entry.
        """
        ret = 0
        oom_returns = driver_70(k)
        for i, spfn in enumerate(m.src):
            if not (spfn & MIGRATE_PFN_MIGRATE and spfn & MIGRATE_PFN_VALID):
                continue
            spage = spfn >> MIGRATE_PFN_SHIFT  # migrate_pfn_to_page (VALID tested above)
            if k.variant.large_folios and folio_test_large(k, page_folio(k, spage)):
                # v7: a large device folio comes back as a large folio (7.0
                # dmirror_devmem_fault_alloc_and_copy: vma_alloc_folio(order))
                r = yield from self._large_to_ram_v7(k, a, m, i, spage, erase_mirror)
                ret = ret or r
                continue
            if oom_returns and erase_mirror >= 0 and dmirror_fail_alloc_once(k, erase_mirror):
                dpage = -1
            else:
                dpage = self._alloc(k, a, 0, "dmirror_devmem_fault_alloc_and_copy:alloc")
            if dpage < 0:
                k.outcome(m.kind, "alloc_failed")
                if oom_returns:
                    return VM_FAULT_OOM  # if (!dpage && !order) return VM_FAULT_OOM;
                ret = ret or VM_FAULT_OOM
                continue
            yield from k.lock_page(a, dpage, "dmirror_devmem_fault_alloc_and_copy:lock_dst")
            if erase_mirror >= 0:
                dpt_erase(k, erase_mirror, m.start + i)
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
            if self.copy_work:  # no DMA time: no generator to run (hot)
                yield from self._dma(k)
            m.dst[i] = (dpage << MIGRATE_PFN_SHIFT) | MIGRATE_PFN_VALID  # migrate_pfn, inlined
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
            if k.variant.large_folios:
                sel |= MIGRATE_VMA_SELECT_COMPOUND  # 7.0 dmirror_migrate_to_system
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
        self, k: Kernel, a: Actor, mm: int, vpn: int, pfn: int, locked: bool,
        pmd: bool = False,
    ) -> Path:
        """``dmirror_devmem_fault()``: migrate the faulting page (and, with
        ``fault_range`` > 1, its aligned neighbourhood) back to system memory.

        ``locked`` says whether the fault path holds the page lock (6.15+); the page is
        passed as ``fault_page`` whenever the fault path holds a reference (6.1+).
        ``pmd``: the fault came through a device-private PMD
        (``do_huge_pmd_device_private``: ``vmf->pte`` is NULL); then, as 7.0 writes it,
        the range is the whole folio (``ALIGN_DOWN(address, PAGE_SIZE << order)``) and
        ``MIGRATE_VMA_SELECT_COMPOUND`` is selected when the order is not 0 (v7 only).
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
        sel = MIGRATE_VMA_SELECT_DEVICE_PRIVATE
        if pmd and k.variant.large_folios:
            nr = folio_nr_pages(k, page_folio(k, pfn))  # order = folio_order(vmf->page)
            if nr > 1:
                lo = vpn - vpn % nr
                hi = lo + nr
                sel |= MIGRATE_VMA_SELECT_COMPOUND
        fault_page = pfn if (locked or "fault-ref-no-trylock" in k.bugs) else -1
        # dmirror = rpage->zone_device_data: the mirror that allocated the page. 7.0:
        # rpage = folio_zone_device_data(page_folio(vmf->page)), the folio's head's
        # (v7: a tail of a large device folio names no mirror of its own).
        head = page_folio(k, pfn) if k.variant.large_folios else pfn
        owner = k.words.load(k.lay.DPAGE_MIRROR + head) - 1 if k.geo.dmirrors else -1
        m = MigrateVma(
            mm,
            row,
            lo,
            hi,
            sel,
            self.dev,
            fault_page=fault_page,
            kind="fault",
            fault_folio=page_folio(k, pfn) if locked else -1,
        )
        # 7.0 dmirror_devmem_fault: "ret = dmirror_devmem_fault_alloc_and_copy(); if (ret)
        # goto err;": neither migrate_vma_pages nor migrate_vma_finalize after an
        # allocation failure (transcribed as written: finding 010).
        oom = {"oom_skips_finalize": True} if driver_70(k) else {}
        if owner >= 0:

            def cb(k: Kernel, a: Actor, m: MigrateVma) -> Path:
                # forwards: returns the copy's generator (no frame of its own)
                return self.alloc_and_copy_to_ram(k, a, m, owner)

            rc = yield from k.variant.migrate_range(k, a, m, cb, **oom)
        else:
            rc = yield from k.variant.migrate_range(k, a, m, self._to_ram_cb, **oom)
        if rc < 0:
            return VM_FAULT_SIGBUS
        return rc or VM_FAULT_OK

    # -- HMM_DMIRROR_RELEASE ---------------------------------------------------------
    def release(self, k: Kernel, a: Actor) -> Path:
        """``dmirror_device_evict_chunk()`` over all of the device's memory (the op
        ``evict``: the eviction alone; :meth:`remove_chunks` is the whole ioctl)."""
        lo, hi = k.lay.zone_range(self.zone)
        n = hi - lo
        src = [0] * n
        dst = [0] * n
        yield from migrate_device_range(k, a, src, lo, n)
        skip = "evict_skips_page" in k.faults  # test-only: one page gets no destination
        for i, spfn in enumerate(src):
            if not spfn & MIGRATE_PFN_MIGRATE:
                continue
            if skip:
                skip = False
                continue
            # migrate_pfn_to_page(), inlined (every page evicted)
            spage = spfn >> MIGRATE_PFN_SHIFT if spfn & MIGRATE_PFN_VALID else -1
            if spfn & MIGRATE_PFN_COMPOUND:  # v7: 7.0 evicts a large folio whole
                yield from self._evict_large_v7(k, a, src, dst, i, spage)
                continue
            dpage = k.alloc_page(a, 0, "dmirror_device_evict_chunk:alloc")
            if dpage < 0:
                k.outcome("evict", "alloc_failed")
                continue
            yield from k.lock_page(a, dpage, "dmirror_device_evict_chunk:lock_dst")
            k.touch(a, spage, "dmirror_device_evict_chunk:copy")
            k.set_data(dpage, k.data(spage))
            if self.copy_work:  # no DMA time: no generator to run (hot)
                yield from self._dma(k)
            dst[i] = (dpage << MIGRATE_PFN_SHIFT) | MIGRATE_PFN_VALID  # migrate_pfn, inlined
            yield
        yield from migrate_device_pages(k, a, src, dst, "evict")
        yield from migrate_device_finalize(k, a, src, dst, "evict")
        k.count("evict")
        return 0

    def remove_chunks(self, k: Kernel, a: Actor) -> Path:
        """``dmirror_device_remove_chunks()`` (7.0; ``HMM_DMIRROR_RELEASE`` and driver
        unload): under ``devmem_lock``, for the device's chunk: ``remove = true`` and
        ``dmirror_remove_free_pages`` under ``mdevice->lock`` (one step: the model's
        allocator refuses the chunk's frames from then on), ``dmirror_device_evict_chunk``
        (:meth:`release`), ``memunmap_pages`` (sleeps until every device page of the
        chunk is freed), then ``devmem_count = 0``. A later allocation maps a new chunk
        (:meth:`alloc_device_page`). Needs the geometry's ``chunks``."""
        words = k.words
        lock = devmem_word(k, self.dev, DC_LOCK)
        yield from k.mutex_lock(a, lock, "dmirror_device_remove_chunks:devmem_lock")
        try:
            if words.load(devmem_word(k, self.dev, DC_COUNT)):
                words.store(devmem_word(k, self.dev, DC_REMOVE), 1)
                yield
                yield from self.release(k, a)
                yield from memunmap_pages(k, a, self.dev)
                words.store(devmem_word(k, self.dev, DC_COUNT), 0)
                k.count("remove_chunks")
        finally:
            k.mutex_unlock(a, lock, "dmirror_device_remove_chunks:devmem_unlock")
        return 0


# ------------------------------------------------------------------------------------
# The mirror (struct dmirror), lib/test_hmm.c of 7.0. ``mi`` is the mirror's number.

DMIRROR_RANGE_PAGES = 32  # unsigned long pfns[32] of dmirror_fault / dmirror_snapshot

# enum of lib/test_hmm_uapi.h: HMM_DMIRROR_PROT_*
HMM_DMIRROR_PROT_ERROR = 0xFF
HMM_DMIRROR_PROT_NONE = 0x00
HMM_DMIRROR_PROT_READ = 0x01
HMM_DMIRROR_PROT_WRITE = 0x02
HMM_DMIRROR_PROT_PMD = 0x04
HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL = 0x20
HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE = 0x30


def setup_dmirrors(s: State) -> None:
    """``dmirror_fops_open()`` of every mirror the geometry lists, before the run: the
    mirror's words, and its interval notifier over the whole address space
    (``mmu_interval_notifier_insert(.., 0, ULONG_MAX & PAGE_MASK, &dmirror_min_ops)``)
    inserted with no invalidation in flight: its seq is one below the subscriptions'
    (which ``__mmu_notifier_register`` starts at 2)."""
    g = s.geo
    if not g.dmirrors:
        return
    mn = s.views["mn"]
    mn[:, MN_SEQ] = 2
    mni = s.views["mni"]
    dm = s.views["dmirror"]
    for mi, (dev, mm) in enumerate(g.dmirrors):
        dm[mi, DM_DEV] = dev
        dm[mi, DM_MM] = mm
        mni[mi, MNI_STATE] = MNI_IN_TREE
        mni[mi, MNI_SEQ] = 1
        mni[mi, MNI_START] = 0
        mni[mi, MNI_END] = g.pages_per_mm
        mni[mi, MNI_MM] = mm
        mni[mi, MNI_OPS] = OPS_DMIRROR
        mni[mi, MNI_MIRROR] = mi
        mn[mm, MN_HAS_ITREE] = 1


def setup_devmem(s: State) -> None:
    """``dmirror_allocate_chunk()`` at device creation (``dmirror_device_init``), before
    the run, when the geometry has ``chunks``: each device has one chunk, mapped
    (``devmem_count`` 1), whose pagemap holds its initial reference and one per device
    page the initial picture allocated."""
    g = s.geo
    if not g.chunks:
        return
    dm = s.views["devmem"]
    frames = s.views["frames"]
    for dev in range(g.devices):
        lo = g.sys_frames + dev * g.dev_frames
        used = int(np.count_nonzero(frames[lo : lo + g.dev_frames, 0] & PG_allocated))
        dm[dev, DC_REF] = 1 + used
        dm[dev, DC_COUNT] = 1


def install(k: Kernel) -> None:
    """Plug the mirrors' notifier callbacks, the device page-table checks and the
    device-exclusive checks (``core/oracles/device.py``) into ``k``."""
    k.hooks["mni_invalidate"] = mni_invalidate
    k.hooks["cpu_access"] = cpu_access_check
    if check_device_pt not in k.extra_checks:
        k.extra_checks.append(check_device_pt)
    if check_exclusive not in k.extra_checks:
        k.extra_checks.append(check_exclusive)


def mutex_trylock(k: Kernel, a: Actor, word: int, site: str) -> bool:
    """``mutex_trylock()`` on a mutex word (0 free, owner + 1 held), for the callbacks
    of a non-blockable invalidation. Kept here (the only caller) rather than among the
    kernel's primitives: the lock is recorded as held (lock balance, waits-for graph)
    exactly as :meth:`Kernel.mutex_lock` records it."""
    st = k._stat(site)
    st[S_TRY] += 1
    if not k.words.cas(word, 0, a.id + 1):
        st[S_TRY_FAIL] += 1
        st[S_CONTENDED] += 1
        return False
    st[S_ACQUIRED] += 1
    k._acquired(a, word, site)
    return True


def dm_word(k: Kernel, mi: int, field: int) -> int:
    return k.lay.DMIRROR + mi * DM_WORDS + field


def dmirror_dev(k: Kernel, mi: int) -> int:
    return k.words.load(dm_word(k, mi, DM_DEV))


def dmirror_mm(k: Kernel, mi: int) -> int:
    return k.words.load(dm_word(k, mi, DM_MM))


def dpt_load(k: Kernel, mi: int, vpn: int) -> tuple[int, int]:
    """``xa_load(&dmirror->pt, vpn)``: the entry and the generation stored with it."""
    off = mi * k.geo.pages_per_mm + vpn
    return k.words.load(k.lay.DPT + off), k.words.load(k.lay.DPT_GEN + off)


def dpt_erase(k: Kernel, mi: int, vpn: int) -> None:
    """``xa_erase(&dmirror->pt, vpn)``."""
    k.words.store(k.lay.DPT + mi * k.geo.pages_per_mm + vpn, 0)


def dpt_store(k: Kernel, mi: int, vpn: int, pfn: int, tags: int = 0, gen: int = -1) -> None:
    """``xa_store(&dmirror->pt, vpn, xa_tag_pointer(page, tags))``. ``gen``: the frame's
    generation when the driver learnt of the page (an ``hmm_range_fault`` result), by
    default its generation now (the driver holds the page: a migration's)."""
    off = mi * k.geo.pages_per_mm + vpn
    if gen < 0:
        gen = k.words.load(k.lay.FRAMES + pfn * FRAME_WORDS + F_GEN)
    k.words.store(k.lay.DPT_GEN + off, gen)
    k.words.store(k.lay.DPT + off, ((pfn + 1) << DPT_PFN_SHIFT) | tags)


def dmirror_do_update(k: Kernel, mi: int, start: int, end: int) -> None:
    """``dmirror_do_update()``: clear the entries of ``[start, end)`` (the xarray holds
    no page references: it relies on the notifier)."""
    if "dmirror_skip_invalidate" in k.faults:
        return  # test-only: the callback forgets the device page table
    base = k.lay.DPT + mi * k.geo.pages_per_mm
    for vpn in range(max(start, 0), min(end, k.geo.pages_per_mm)):
        k.words.store(base + vpn, 0)


def dmirror_interval_invalidate(
    k: Kernel, a: Actor, slot: int, r: MmuNotifierRange, cur_seq: int
) -> Path:
    """``dmirror_interval_invalidate()``: ignore a migration this device started (the
    migration updates the device page table itself), else under ``dmirror->mutex``
    set the sequence and clear the range. A range that may not block (the OOM
    reaper's) only trylocks the mutex and fails (returns False) when it is held."""
    mi = k.words.load(k.lay.MNI + slot * MNI_WORDS + MNI_MIRROR)
    if r.event == MMU_NOTIFY_MIGRATE and r.owner == dmirror_dev(k, mi):
        return True
    mutex = dm_word(k, mi, DM_MUTEX)
    if r.blockable:
        yield from k.mutex_lock(a, mutex, "dmirror_interval_invalidate:mutex_lock")
    elif not mutex_trylock(k, a, mutex, "dmirror_interval_invalidate:mutex_trylock"):
        return False
    mmu_interval_set_seq(k, slot, cur_seq)
    dmirror_do_update(k, mi, r.start, r.end)
    k.mutex_unlock(a, mutex, "dmirror_interval_invalidate:mutex_unlock")
    return True


def dmirror_snapshot_invalidate(
    k: Kernel, a: Actor, slot: int, r: MmuNotifierRange, cur_seq: int
) -> Path:
    """``dmirror_snapshot_invalidate()``: only the sequence, under the mutex."""
    mi = k.words.load(k.lay.MNI + slot * MNI_WORDS + MNI_MIRROR)
    mutex = dm_word(k, mi, DM_MUTEX)
    if r.blockable:
        yield from k.mutex_lock(a, mutex, "dmirror_snapshot_invalidate:mutex_lock")
    elif not mutex_trylock(k, a, mutex, "dmirror_snapshot_invalidate:mutex_trylock"):
        return False
    mmu_interval_set_seq(k, slot, cur_seq)
    k.mutex_unlock(a, mutex, "dmirror_snapshot_invalidate:mutex_unlock")
    return True


def mni_invalidate(k: Kernel, a: Actor, slot: int, r: MmuNotifierRange, cur_seq: int) -> Path:
    """``interval_sub->ops->invalidate()``: the callback the notifier's ops name."""
    if k.words.load(k.lay.MNI + slot * MNI_WORDS + MNI_OPS) == OPS_SNAPSHOT:
        return (yield from dmirror_snapshot_invalidate(k, a, slot, r, cur_seq))
    return (yield from dmirror_interval_invalidate(k, a, slot, r, cur_seq))


def dmirror_do_fault(k: Kernel, a: Actor, mi: int, rng: HmmRange) -> int:
    """``dmirror_do_fault()``: store each page ``hmm_range_fault`` returned (the page
    itself, tagged WRITE when writable), under ``dmirror->mutex``."""
    for i, hp in enumerate(rng.hmm_pfns):
        if hp & HMM_PFN_ERROR or not hp & HMM_PFN_VALID:
            raise k.fail(
                FailureKind.BUG_ON,
                f"{a.name}: hmm_range_fault returned 0 but page {rng.start + i} has no "
                "valid pfn (WARN_ON in dmirror_do_fault)",
                actors=[a],
                sites=["dmirror_do_fault"],
            )
        page = hmm_pfn_to_page(hp)
        tags = 0
        if hp & HMM_PFN_WRITE:
            tags = DPT_TAG_WRITE
        elif rng.default_flags & HMM_PFN_WRITE:
            return EFAULT
        if "dmirror_do_fault_backing" in k.faults and k.is_device_private(page):
            tags |= DPT_BACKING  # test-only: pretend 7.0 stored BACKING_PAGE(page)
        dpt_store(k, mi, rng.start + i, page, tags, rng.gens[i])
    return 0


def dmirror_range_fault(k: Kernel, a: Actor, mi: int, rng: HmmRange) -> Path:
    """``dmirror_range_fault()``: the retry loop every HMM driver writes:
    ``read_begin``, ``hmm_range_fault`` under ``mmap_read_lock`` (again on -EBUSY),
    then under ``dmirror->mutex`` ``read_retry`` (again on a collision), and only then
    the device page table. The 1 s timeout (``HMM_RANGE_DEFAULT_TIMEOUT``) is not
    modelled: a loop that never ends is the livelock oracle's."""
    mm = dmirror_mm(k, mi)
    mutex = dm_word(k, mi, DM_MUTEX)
    while True:
        rng.notifier_seq = yield from mmu_interval_read_begin(k, a, rng.notifier)
        yield
        yield from k.mmap_read_lock(a, mm, "dmirror_range_fault:mmap_read_lock")
        ret = yield from hmm_range_fault(k, a, rng)
        k.mmap_read_unlock(a, mm, "dmirror_range_fault:mmap_read_unlock")
        yield
        if ret:
            if ret == EBUSY:
                k.count("dmirror_range_fault_retry")
                continue
            return ret
        yield from k.mutex_lock(a, mutex, "dmirror_range_fault:mutex_lock")
        if mmu_interval_read_retry(k, rng.notifier, rng.notifier_seq) and (
            "dmirror_no_read_retry" not in k.faults
        ):
            k.mutex_unlock(a, mutex, "dmirror_range_fault:mutex_unlock")
            k.count("dmirror_range_fault_retry")
            yield
            continue
        break
    ret = dmirror_do_fault(k, a, mi, rng)
    k.mutex_unlock(a, mutex, "dmirror_range_fault:mutex_unlock")
    return ret


def dmirror_fault(k: Kernel, a: Actor, mi: int, start: int, end: int, write: bool) -> Path:
    """``dmirror_fault()``: ``dmirror_range_fault`` over ``[start, end)``, 32 pages at a
    time, faulting (for write when ``write``), device-private pages of this device
    reported as they are."""
    ret = 0
    addr = start
    while addr < end:
        rng = HmmRange(
            notifier=mi,
            mm=dmirror_mm(k, mi),
            start=addr,
            end=min(addr + DMIRROR_RANGE_PAGES, end),
            default_flags=HMM_PFN_REQ_FAULT | (HMM_PFN_REQ_WRITE if write else 0),
            dev_private_owner=dmirror_dev(k, mi),
        )
        ret = yield from dmirror_range_fault(k, a, mi, rng)
        if ret:
            break
        addr = rng.end
    return ret


def dmirror_do_access(
    k: Kernel, a: Actor, mi: int, start: int, end: int, done: list[int], write: bool
) -> Path:
    """``dmirror_do_read()`` / ``dmirror_do_write()`` (under ``dmirror->mutex``): each
    page through its device page-table entry (a write needs the WRITE tag), -ENOENT at
    the first page without one. ``done`` counts ``bounce->cpages``."""
    site = "dmirror_do_write" if write else "dmirror_do_read"
    for vpn in range(start, end):
        entry, gen = dpt_load(k, mi, vpn)
        if not entry or (write and entry & 3 != DPT_TAG_WRITE):
            return ENOENT
        # xa_load, then memcpy_from_page / memcpy_to_page: the mutex keeps the notifier
        # out, but not this device's own migrations (their invalidation is skipped, and
        # the fault's xa_erase takes no lock): the kernel can be interleaved here.
        yield
        if "dmirror_lock_page_under_mutex" in k.faults:
            # test-only: a driver that takes the folio lock under its mutex, the inverse
            # of the notifier's order (folio lock held → invalidate → mutex)
            pfn = (entry >> DPT_PFN_SHIFT) - 1
            yield from k.lock_page(a, pfn, site + ":lock_page")
            device_access(k, a, mi, vpn, entry, gen, write, site)
            k.unlock_page(a, pfn, site + ":unlock_page")
        else:
            device_access(k, a, mi, vpn, entry, gen, write, site)
        done[0] += 1
    return 0


def dmirror_rw(k: Kernel, a: Actor, mi: int, start: int, npages: int, write: bool) -> Path:
    """``dmirror_read()`` / ``dmirror_write()``: copy under the mutex; on -ENOENT fault
    the rest in with ``dmirror_fault`` and try again from the first page not copied."""
    mutex = dm_word(k, mi, DM_MUTEX)
    end = start + npages
    done = [0]
    addr = start
    name = "dmirror_write" if write else "dmirror_read"
    while True:
        yield from k.mutex_lock(a, mutex, name + ":mutex_lock")
        ret = yield from dmirror_do_access(k, a, mi, addr, end, done, write)
        k.mutex_unlock(a, mutex, name + ":mutex_unlock")
        yield
        if ret != ENOENT:
            break
        addr = start + done[0]
        ret = yield from dmirror_fault(k, a, mi, addr, end, write)
        if ret:
            break
        k.count("dmirror_faults")
    return ret


def dmirror_mkentry(k: Kernel, mi: int, hp: int) -> int:
    """``dmirror_mkentry()``: the permission byte a snapshot reports for one page."""
    if hp & HMM_PFN_ERROR:
        return HMM_DMIRROR_PROT_ERROR
    if not hp & HMM_PFN_VALID:
        return HMM_DMIRROR_PROT_NONE
    page = hmm_pfn_to_page(hp)
    perm = HMM_DMIRROR_PROT_NONE
    if k.is_device_private(page):
        local = k.device_of(page) == dmirror_dev(k, mi)
        perm = HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL if local else HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE
    perm |= HMM_DMIRROR_PROT_WRITE if hp & HMM_PFN_WRITE else HMM_DMIRROR_PROT_READ
    # 7.0: the page came from a PMD mapping (hmm_pfn_to_map_order == PMD_SHIFT -
    # PAGE_SHIFT; only v7's walk reports an order). No PUDs in the model.
    if k.geo.thp and hmm_pfn_to_map_order(hp) == pmd_order(k):
        perm |= HMM_DMIRROR_PROT_PMD
    return perm


def dmirror_snapshot(k: Kernel, a: Actor, mi: int, start: int, npages: int) -> Path:
    """``dmirror_snapshot()`` → ``dmirror_range_snapshot()`` per 32 pages: a temporary
    interval notifier (``dmirror_mrn_ops``) over the range, ``hmm_range_fault``
    without faulting, ``read_retry`` under the mutex, the permission bytes, and the
    notifier removed again (which waits for an invalidation in flight). Returns 0 or
    the error; the bytes go to the count ``snapshot_<perm>``."""
    mm = dmirror_mm(k, mi)
    mutex = dm_word(k, mi, DM_MUTEX)
    slot = len(k.geo.dmirrors) + a.id  # this actor's struct dmirror_interval
    end = start + npages
    addr = start
    ret = 0
    while addr < end and not ret:
        nxt = min(addr + DMIRROR_RANGE_PAGES, end)
        rng = HmmRange(notifier=slot, mm=mm, start=addr, end=nxt, dev_private_owner=dmirror_dev(k, mi))
        ret = yield from mmu_interval_notifier_insert(k, a, slot, mm, addr, nxt - addr, OPS_SNAPSHOT, mi)
        if ret:
            break
        while True:
            rng.notifier_seq = yield from mmu_interval_read_begin(k, a, slot)
            yield
            yield from k.mmap_read_lock(a, mm, "dmirror_range_snapshot:mmap_read_lock")
            ret = yield from hmm_range_fault(k, a, rng)
            k.mmap_read_unlock(a, mm, "dmirror_range_snapshot:mmap_read_unlock")
            yield
            if ret:
                if ret == EBUSY:
                    continue
                break
            yield from k.mutex_lock(a, mutex, "dmirror_range_snapshot:mutex_lock")
            if mmu_interval_read_retry(k, slot, rng.notifier_seq):
                k.mutex_unlock(a, mutex, "dmirror_range_snapshot:mutex_unlock")
                yield
                continue
            for hp in rng.hmm_pfns:
                k.count(f"snapshot_{dmirror_mkentry(k, mi, hp):#04x}")
            k.mutex_unlock(a, mutex, "dmirror_range_snapshot:mutex_unlock")
            break
        yield from mmu_interval_notifier_remove(k, a, slot)
        addr = nxt
    return ret


class DmirrorMigrate(MigrateVma):
    """A migration a mirror started (its ``dmirror`` for the callbacks: ``mirror``)."""

    mirror: int = -1


def dmirror_migrate_finalize_and_map(k: Kernel, a: Actor, mi: int, m: MigrateVma) -> Path:
    """``dmirror_migrate_finalize_and_map()``: under the mutex, map each migrated page
    into the device page table: ``BACKING_PAGE(dpage)`` (the model keeps a
    device-private page's backing store in its own frame: ``DPT_BACKING``), tagged
    WRITE when the destination is writable."""
    mutex = dm_word(k, mi, DM_MUTEX)
    yield from k.mutex_lock(a, mutex, "dmirror_migrate_finalize_and_map:mutex_lock")
    for i, spfn in enumerate(m.src):
        if not spfn & MIGRATE_PFN_MIGRATE:
            continue
        # migrate_pfn_to_page(), inlined (every page migrated)
        dpage = m.dst[i] >> MIGRATE_PFN_SHIFT if m.dst[i] & MIGRATE_PFN_VALID else -1
        if dpage < 0:
            continue
        tags = DPT_BACKING if k.is_device_private(dpage) else 0
        if m.dst[i] & MIGRATE_PFN_WRITE:
            tags |= DPT_TAG_WRITE
        # v7 (7.0): a compound destination maps each 4K page of its folio,
        # folio_page(page_folio(rpage), i) at pfn + i ("WARN_ON_ONCE(end_pfn < start_pfn
        # + nr)": the model stops at the range's end, where xa_store would not)
        nr = 1
        if m.dst[i] & MIGRATE_PFN_COMPOUND:
            nr = folio_nr_pages(k, page_folio(k, dpage))
        for j in range(min(nr, m.npages - i)):
            dpt_store(k, mi, m.start + i + j, dpage + j, tags)
    k.mutex_unlock(a, mutex, "dmirror_migrate_finalize_and_map:mutex_unlock")


def dmirror_migrate_to_device(k: Kernel, a: Actor, mi: int, start: int, end: int) -> Path:
    """``dmirror_migrate_to_device()`` (7.0): under ``mmap_read_lock``, VMA by VMA over
    ``[start, end)`` (-EINVAL at an address without a readable VMA, after the VMAs
    before it migrated; ``PTRS_PER_PTE`` pieces are one here): setup,
    ``dmirror_migrate_alloc_and_copy`` (each device page remembers its mirror:
    ``rpage->zone_device_data = dmirror``), pages, ``dmirror_migrate_finalize_and_map``,
    finalize; then the verification read (``dmirror_do_read`` under the mutex, whose
    -ENOENT for a page that did not move is the ioctl's return)."""
    dev = k.devices[dmirror_dev(k, mi)]
    mm = dmirror_mm(k, mi)
    yield from k.mmap_read_lock(a, mm, "dmirror_migrate_to_device:mmap_read_lock")
    try:
        addr = start
        while addr < end:
            row = k.s.find_vma(mm, addr)
            if row < 0 or not k.s.vma_flags(mm, row) & VM_READ:
                return EINVAL
            _vs, ve = k.s.vma_bounds(mm, row)
            flags = MIGRATE_VMA_SELECT_SYSTEM
            if k.variant.large_folios:
                flags |= MIGRATE_VMA_SELECT_COMPOUND  # 7.0: "| MIGRATE_VMA_SELECT_COMPOUND"
            m = DmirrorMigrate(mm, row, addr, min(end, ve), flags, dev.dev, kind="to_device")
            m.mirror = mi
            rc = yield from migrate_vma_setup(k, a, m)
            if rc:
                return rc
            yield from dev.alloc_and_copy_to_device(k, a, m)
            for d in m.dst:
                # migrate_pfn_to_page(), inlined (every page migrated)
                dpage = d >> MIGRATE_PFN_SHIFT if d & MIGRATE_PFN_VALID else -1
                if dpage >= 0:
                    k.words.store(k.lay.DPAGE_MIRROR + dpage, mi + 1)
            yield from migrate_vma_pages(k, a, m)
            yield from dmirror_migrate_finalize_and_map(k, a, mi, m)
            yield from migrate_vma_finalize(k, a, m)
            k.count("migrate_to_device")
            addr = m.end
    finally:
        k.mmap_read_unlock(a, mm, "dmirror_migrate_to_device:mmap_read_unlock")
    yield
    mutex = dm_word(k, mi, DM_MUTEX)
    yield from k.mutex_lock(a, mutex, "dmirror_migrate_to_device:mutex_lock")
    ret = yield from dmirror_do_access(k, a, mi, start, end, [0], False)
    k.mutex_unlock(a, mutex, "dmirror_migrate_to_device:mutex_unlock")
    return ret


def dmirror_migrate_to_system(k: Kernel, a: Actor, mi: int, start: int, end: int) -> Path:
    """``dmirror_migrate_to_system()`` (7.0): VMA by VMA as above, setup selecting this
    device's pages with this device as owner (its own mirrors ignore the notifier), the
    copy back erasing this mirror's entries (its return ignored, as 7.0), pages,
    finalize."""
    dev = k.devices[dmirror_dev(k, mi)]
    mm = dmirror_mm(k, mi)
    yield from k.mmap_read_lock(a, mm, "dmirror_migrate_to_system:mmap_read_lock")
    try:
        addr = start
        while addr < end:
            row = k.s.find_vma(mm, addr)
            if row < 0 or not k.s.vma_flags(mm, row) & VM_READ:
                return EINVAL
            _vs, ve = k.s.vma_bounds(mm, row)
            sel = (
                MIGRATE_VMA_SELECT_DEVICE_COHERENT
                if dev.coherent
                else MIGRATE_VMA_SELECT_DEVICE_PRIVATE
            )
            m = DmirrorMigrate(mm, row, addr, min(end, ve), sel, dev.dev, kind="to_system")
            m.mirror = mi
            rc = yield from migrate_vma_setup(k, a, m)
            if rc:
                return rc
            yield from dev.alloc_and_copy_to_ram(k, a, m, mi)
            yield from migrate_vma_pages(k, a, m)
            yield from migrate_vma_finalize(k, a, m)
            k.count("migrate_to_system")
            addr = m.end
        return 0
    finally:
        k.mmap_read_unlock(a, mm, "dmirror_migrate_to_system:mmap_read_unlock")


def dmirror_atomic_map(k: Kernel, a: Actor, mi: int, vpn: int, page: int) -> Path:
    """``dmirror_atomic_map()`` (7.0): under ``dmirror->mutex``, the page the device
    now holds exclusively into the device page table, tagged ATOMIC. No
    ``mmu_interval_read_begin`` / ``_read_retry`` brackets it (docs/findings/008)."""
    mutex = dm_word(k, mi, DM_MUTEX)
    yield from k.mutex_lock(a, mutex, "dmirror_atomic_map:mutex_lock")
    dpt_store(k, mi, vpn, page, DPT_TAG_ATOMIC)
    k.mutex_unlock(a, mutex, "dmirror_atomic_map:mutex_unlock")
    return 0


def dmirror_exclusive(k: Kernel, a: Actor, mi: int, start: int, npages: int) -> Path:
    """``dmirror_exclusive()``: ``HMM_DMIRROR_EXCLUSIVE`` (7.0 lib/test_hmm.c). Under
    ``mmap_read_lock``, per page: ``make_device_exclusive(mm, addr, NULL, &folio)``
    (owner NULL: every mirror's notifier clears the page, this one's too),
    ``dmirror_atomic_map``, ``folio_unlock``, ``folio_put``; stop at the first error.
    Then the verification read (``dmirror_do_read`` under the mutex: -ENOENT when a
    CPU took a page back meanwhile). Returns 0 or a negative errno."""
    mm = dmirror_mm(k, mi)
    end = start + npages
    ret = 0
    yield from k.mmap_read_lock(a, mm, "dmirror_exclusive:mmap_read_lock")
    try:
        for vpn in range(start, end):
            page = yield from make_device_exclusive(k, a, mm, vpn)
            if page < 0:
                ret = page
                break
            yield  # returned with the folio locked; the mutex is not taken yet
            ret = yield from dmirror_atomic_map(k, a, mi, vpn, page)
            k.unlock_page(a, page, "dmirror_exclusive:folio_unlock")
            k.put_page(a, page, "dmirror_exclusive:folio_put")
            if ret:
                break
            yield
    finally:
        k.mmap_read_unlock(a, mm, "dmirror_exclusive:mmap_read_unlock")
    if ret:
        k.count("dmirror_exclusive_error")
        return ret
    yield
    mutex = dm_word(k, mi, DM_MUTEX)
    yield from k.mutex_lock(a, mutex, "dmirror_exclusive:mutex_lock")
    ret = yield from dmirror_do_access(k, a, mi, start, end, [0], False)
    k.mutex_unlock(a, mutex, "dmirror_exclusive:mutex_unlock")
    k.count("dmirror_exclusive" if not ret else "dmirror_exclusive_enoent")
    return ret


def dmirror_check_atomic(k: Kernel, a: Actor, mi: int, start: int, npages: int) -> int:
    """``dmirror_check_atomic()``: ``HMM_DMIRROR_CHECK_EXCLUSIVE``: -EPERM if the device
    still holds any page of the range atomically (``xa_load`` without the mutex)."""
    for vpn in range(start, start + npages):
        entry, _gen = dpt_load(k, mi, vpn)
        if entry and entry & (DPT_TAG_ATOMIC | DPT_TAG_WRITE) == DPT_TAG_ATOMIC:
            return EPERM
    return 0


__all__ = [
    "Dmirror",
    "dmirror_atomic_map",
    "dmirror_check_atomic",
    "dmirror_exclusive",
    "dmirror_fault",
    "dmirror_interval_invalidate",
    "dmirror_migrate_to_device",
    "dmirror_migrate_to_system",
    "dmirror_range_fault",
    "dmirror_rw",
    "dmirror_snapshot",
    "install",
    "setup_devmem",
    "setup_dmirrors",
]


# -- the mirror's ioctls as operations (workloads/_kinds_hmm.py builds them) ----------


def op_device_read(k: Kernel, a: Actor, mi: int, start: int, npages: int) -> Path:
    """``HMM_DMIRROR_READ`` of ``npages`` pages from ``start`` through mirror ``mi``."""
    return (yield from dmirror_rw(k, a, mi, start, npages, False))


def op_device_write(k: Kernel, a: Actor, mi: int, start: int, npages: int) -> Path:
    """``HMM_DMIRROR_WRITE``: fresh tokens into ``npages`` pages from ``start``."""
    return (yield from dmirror_rw(k, a, mi, start, npages, True))


def op_snapshot(k: Kernel, a: Actor, mi: int, start: int, npages: int) -> Path:
    """``HMM_DMIRROR_SNAPSHOT``."""
    return (yield from dmirror_snapshot(k, a, mi, start, npages))


def op_mirror_to_device(k: Kernel, a: Actor, mi: int, start: int, end: int) -> Path:
    """``HMM_DMIRROR_MIGRATE_TO_DEV`` through mirror ``mi``."""
    return (yield from dmirror_migrate_to_device(k, a, mi, start, end))


def op_mirror_to_system(k: Kernel, a: Actor, mi: int, start: int, end: int) -> Path:
    """``HMM_DMIRROR_MIGRATE_TO_SYS`` through mirror ``mi``."""
    return (yield from dmirror_migrate_to_system(k, a, mi, start, end))


def op_dmirror_flags(k: Kernel, a: Actor, mi: int, flags: int) -> Path:
    """``HMM_DMIRROR_FLAGS`` through mirror ``mi``: ``dmirror->flags = cmd.npages``
    (7.0; ``HMM_DMIRROR_FLAG_FAIL_ALLOC`` = 1 fails the next allocation attempt)."""
    k.words.store(dm_word(k, mi, DM_FLAGS), flags)
    k.count("dmirror_flags")
    return 0
    yield  # pragma: no cover


def op_release(k: Kernel, a: Actor, dev: int) -> Path:
    """``HMM_DMIRROR_RELEASE`` (and driver unload): ``dmirror_device_remove_chunks`` of
    device ``dev``."""
    return (yield from k.devices[dev].remove_chunks(k, a))


register_op("dmirror_flags", op_dmirror_flags)
register_op("release", op_release)


def op_exclusive(k: Kernel, a: Actor, mi: int, start: int, npages: int) -> Path:
    """``HMM_DMIRROR_EXCLUSIVE`` of ``npages`` pages from ``start`` through mirror ``mi``."""
    return (yield from dmirror_exclusive(k, a, mi, start, npages))


def op_check_exclusive(k: Kernel, a: Actor, mi: int, start: int, npages: int) -> Path:
    """``HMM_DMIRROR_CHECK_EXCLUSIVE``: the result goes to the counts
    ``check_exclusive_atomic`` (-EPERM: the device still holds a page) or
    ``check_exclusive_revoked``."""
    ret = dmirror_check_atomic(k, a, mi, start, npages)
    k.count("check_exclusive_atomic" if ret else "check_exclusive_revoked")
    yield
    return ret


register_op("device_read", op_device_read)
register_op("exclusive", op_exclusive)
register_op("check_exclusive", op_check_exclusive)
register_op("device_write", op_device_write)
register_op("snapshot", op_snapshot)
register_op("mirror_to_device", op_mirror_to_device)
register_op("mirror_to_system", op_mirror_to_system)

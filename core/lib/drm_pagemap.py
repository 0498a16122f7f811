"""A second driver policy: ``drm_pagemap``'s all-or-nothing migration to device memory
(``drivers/gpu/drm/drm_pagemap.c`` of 7.0, the migration helper of Xe's SVM), on the
model's dmirror device.

``lib/test_hmm.c`` migrates whatever ``migrate_vma_setup`` collected and leaves the rest
in system memory. ``drm_pagemap_migrate_to_devmem`` instead migrates a range only when
every 4K page of it was collected (``migrate.cpages == npages``: "we want to migrate
all or nothing"); otherwise it releases what it collected through
``migrate_vma_pages`` with no destination and ``migrate_vma_finalize`` (the
``err_aborted_migration`` label), returns ``-EBUSY``, and its caller retries a bounded
number of times (Xe's ``xe_svm_handle_pagefault``: ``migrate_try_count``, 3 for a fault
that needs device memory) before falling back to system memory. After the pages step
it checks that everything it meant to migrate did (``Raced while finalizing
migration``: a page whose reference count changed between unmap and the move keeps its
place, and the call still returns ``-EBUSY`` though the other pages moved).

Selected per device in a workload (``[[device]] policy = "all_or_nothing"``,
``migrate_retries``); the driver actor's ``to_device`` operations then run
:func:`drm_pagemap_populate_mm` instead of dmirror's ``migrate_to_device``. It uses the
``migrate_vma_setup`` / ``pages`` / ``finalize`` API (5.4+): ``v6`` (``Variant.provides``:
``drm_pagemap``).

Transcribed for order-0 folios (``drm_pagemap_cpages`` then equals ``cpages``); left
out: peer-to-peer migration between pagemaps (``source_peer_migrates``: no second
drm_pagemap), the zdd reference counting (the device page's owner is the device), DMA
mapping, the timeslice, and the fault side (``__drm_pagemap_migrate_to_ram``: the
device's ``migrate_to_ram`` stays dmirror's).
"""

from __future__ import annotations

from typing import Any

from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import VM_ANON, VM_WRITE
from ..mm.migrate_device import (
    EBUSY,
    EINVAL,
    ENOENT,
    ENOMEM,
    MIGRATE_PFN_MIGRATE,
    MIGRATE_PFN_WRITE,
    MIGRATE_VMA_SELECT_DEVICE_COHERENT,
    MIGRATE_VMA_SELECT_SYSTEM,
    MigrateVma,
    migrate_pfn,
    migrate_pfn_to_page,
    migrate_vma_finalize,
    migrate_vma_pages,
    migrate_vma_setup,
)

POLICY_DMIRROR = "dmirror"
POLICY_ALL_OR_NOTHING = "all_or_nothing"
POLICIES = (POLICY_DMIRROR, POLICY_ALL_OR_NOTHING)


def drm_pagemap_migration_unlock_put_pages(k: Kernel, a: Actor, dst: list[int]) -> None:
    """``drm_pagemap_migration_unlock_put_pages()``: unlock and put every destination
    page, and clear its entry."""
    for i, d in enumerate(dst):
        if not d:
            continue
        page = migrate_pfn_to_page(d)
        k.unlock_page(a, page, "drm_pagemap_migration_unlock_put_page:unlock")
        k.put_page(a, page, "drm_pagemap_migration_unlock_put_page:put")
        dst[i] = 0


def drm_pagemap_migrate_to_devmem(k: Kernel, a: Actor, dev: Any, mm: int, start: int, end: int) -> Path:
    """``drm_pagemap_migrate_to_devmem()`` (7.0), the caller holding ``mmap_read_lock``.

    In the kernel's order: the VMA checks (``-ENOENT``, ``-EINVAL``, ``-EBUSY`` for a
    VMA that is not anonymous); ``migrate_vma_setup`` selecting system and
    device-coherent memory (7.0's FIXME leaves device-private pages out); nothing
    collected: ``-EBUSY`` with nothing to release; some but not all: ``-EBUSY`` through
    ``err_aborted_migration``; the pages already in this pagemap (``own_pages``: all
    of them, "Migration wasn't necessary", 0; some, "aborted due to fragmentation",
    ``-EBUSY``, as ``can_migrate_same_pagemap`` is off); ``populate_devmem_pfn`` (a
    device page per entry); each destination initialized and locked
    (``drm_pagemap_get_devmem_page``: ``zone_device_page_init``); the copy; then
    ``migrate_vma_pages``, the "Raced while finalizing migration" count, and
    ``migrate_vma_finalize``."""
    row = k.s.find_vma(mm, start)
    if row < 0:
        return ENOENT
    vs, ve = k.s.vma_bounds(mm, row)
    if end > ve or start < vs:
        return EINVAL
    vflags = k.s.vma_flags(mm, row)
    if not vflags & VM_ANON:
        return EBUSY
    npages = end - start
    m = MigrateVma(
        mm, row, start, end, MIGRATE_VMA_SELECT_SYSTEM | MIGRATE_VMA_SELECT_DEVICE_COHERENT,
        dev.dev, kind="to_device",
    )
    err = yield from migrate_vma_setup(k, a, m)
    if err:
        return err
    if not m.cpages:
        # "No pages to migrate. Raced or unknown device pages."
        k.count("aon_nothing_collected")
        return EBUSY
    own_pages = 0
    if m.cpages != npages:
        # "Some pages to migrate. But we want to migrate all or nothing. Raced or
        # unknown device pages."
        err = EBUSY
        k.count("aon_partial_collect")
    else:
        for s in m.src:
            src_page = migrate_pfn_to_page(s)
            if src_page >= 0 and k.is_zone_device(src_page) and k.device_of(src_page) == dev.dev:
                own_pages += 1
        if own_pages == npages:
            err = 0  # "Migration wasn't necessary."
            k.count("aon_not_necessary")
        elif own_pages:
            err = EBUSY  # "Migration aborted due to fragmentation."
            k.count("aon_fragmented")
        else:
            err = yield from _populate_and_copy(k, a, dev, m)
            if err:  # err_finalize:
                drm_pagemap_migration_unlock_put_pages(k, a, m.dst)
    # err_aborted_migration:
    yield from migrate_vma_pages(k, a, m)
    migrated = sum(1 for s in m.src if s & MIGRATE_PFN_MIGRATE)
    if not err and migrated < npages - own_pages:
        k.count("aon_raced_finalizing")
        err = EBUSY
    yield from migrate_vma_finalize(k, a, m)
    return err


def _populate_and_copy(k: Kernel, a: Actor, dev: Any, m: MigrateVma) -> Path:
    """``populate_devmem_pfn`` → the destination loop (``drm_pagemap_get_devmem_page``)
    → ``copy_to_devmem`` (``drm_pagemap_migrate_sys_to_dev``), and the ``err_finalize``
    label's release of the destinations on an error. Returns 0 or an errno."""
    # ops->populate_devmem_pfn(): the pfns of the device memory allocation, one per page.
    pfns: list[int] = []
    for _ in range(len(m.src)):
        page = dev._alloc(k, a, dev.zone, "drm_pagemap_populate_devmem_pfn")
        if page < 0:
            # The devmem allocation could not back the range: release what we took
            # (the kernel's allocation is a buffer object; the model's frames go back).
            for p in pfns:
                k.put_page(a, p, "drm_pagemap_populate_devmem_pfn:put")
            k.outcome("to_device", "alloc_failed")
            return ENOMEM
        pfns.append(page)
    write_vma = bool(k.s.vma_flags(m.mm, m.vma) & VM_WRITE)
    for i, page in enumerate(pfns):
        # migrate.dst[i] = migrate_pfn(migrate.dst[i]); drm_pagemap_get_devmem_page():
        # zone_device_page_init() (refcount 1, folio locked).
        yield from k.lock_page(a, page, "drm_pagemap_get_devmem_page:lock")
        m.dst[i] = migrate_pfn(page)
        if m.src[i] & MIGRATE_PFN_WRITE or (migrate_pfn_to_page(m.src[i]) < 0 and write_vma):
            m.dst[i] |= MIGRATE_PFN_WRITE
    # ops->copy_to_devmem(): every page of the range in one go (holes stay zeroed).
    for i, page in enumerate(pfns):
        spage = migrate_pfn_to_page(m.src[i])
        if spage >= 0:
            k.touch(a, spage, "drm_pagemap_migrate_sys_to_dev:copy")
            k.set_data(page, k.data(spage))
            yield from dev._dma(k)
        yield
    return 0


def drm_pagemap_populate_mm(k: Kernel, a: Actor, dev: Any, mm: int, start: int, end: int) -> Path:
    """The caller's bounded retry around :func:`drm_pagemap_migrate_to_devmem` (Xe
    ``xe_svm_handle_pagefault`` → ``xe_svm_alloc_vram`` → ``drm_pagemap_populate_mm``,
    which takes ``mmap_read_lock`` around each attempt): up to ``dev.migrate_retries``
    attempts while one fails; then the range stays in system memory. Returns the last
    attempt's result."""
    err = 0
    for attempt in range(max(1, dev.migrate_retries)):
        if attempt:
            k.count("aon_retry")
            yield
        yield from k.mmap_read_lock(a, mm, "drm_pagemap_populate_mm:mmap_read_lock")
        try:
            err = yield from drm_pagemap_migrate_to_devmem(k, a, dev, mm, start, end)
        finally:
            k.mmap_read_unlock(a, mm, "drm_pagemap_populate_mm:mmap_read_unlock")
        if not err:
            k.count("migrate_to_device")
            return 0
    k.count("aon_gave_up")
    return err


__all__ = [
    "POLICIES",
    "POLICY_ALL_OR_NOTHING",
    "POLICY_DMIRROR",
    "drm_pagemap_migrate_to_devmem",
    "drm_pagemap_populate_mm",
]

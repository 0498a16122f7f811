"""Protocol variants: the three generations of device migration, side by side.

A variant differs from another only where the kernel did. Each difference is one
method here, with a comment naming the seed and the kernel behaviour it follows; the
shared steps (pages, finalize, the rmap walks) stay in ``core/mm/migrate_device.py``.

- ``v6`` (seed 000, today's ``mm/migrate_device.c``): folio trylock in collect with the
  ``fault_folio`` exception, migration entries installed at once, the page check with
  extra references for the fault page and ZONE_DEVICE, ``migrate_vma_setup`` refusing
  an unlocked fault page.
- ``v5.0`` (seed 002, ``mm/migrate.c`` of v4.20/v5.0): one ``migrate_vma(ops)`` call
  with driver callbacks; collect trylocks and installs migration entries at once,
  prepare trylocks and backs off, the page check passes device-private pages
  unchecked; device-public pages (``core/mm/migrate_v50.py``).
- ``hmm-2017`` (seed 004, the first ``migrate_vma``): the same callback API; collect
  only takes references and leaves holes as ``src = 0``, prepare takes a blocking
  ``lock_page()`` on every page (``core/mm/migrate_hmm2017.py``).

The driver-facing difference (one ``migrate_vma()`` with callbacks before 5.4, the
setup / pages / finalize split after) is :meth:`Variant.migrate_range`, which
``core/lib/test_hmm.py`` calls for every migration it starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from .machine.kernel import Actor, Kernel, Path
from .mm.memory import FAULT_ENTRY_LOCKED, FAULT_ENTRY_NO_REF, FAULT_ENTRY_REF, VM_FAULT_OOM
from .mm.migrate_device import (
    MigrateVma,
    migrate_device_unmap_v7,
    migrate_vma_check_page,
    migrate_vma_check_page_v7,
    migrate_vma_collect,
    migrate_vma_collect_v7,
    migrate_vma_finalize,
    migrate_vma_pages,
    migrate_vma_setup,
    migrate_vma_unmap,
)
from .mm.migrate_hmm2017 import (
    check_holes_populated,
    check_page_2017,
    collect_2017,
    hole_indexes,
    migrate_vma,
    populate_empty_entries_2017,
    prepare_2017,
    sample_driver_alloc_and_copy,
    unmap_2017,
)
from .mm.migrate_v50 import check_page_v50, collect_v50, prepare_v50

# A driver callback: dmirror's alloc_and_copy / finalize_and_map, bound to the device.
Callback = Callable[[Kernel, Actor, MigrateVma], Path]


class Variant:
    """The hooks a protocol generation provides. Subclasses override what changed."""

    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    seed: ClassVar[str] = ""
    # Paths this variant has; a workload that needs another is refused with a reason.
    provides: ClassVar[frozenset[str]] = frozenset()
    # Whether the driver's fault handler reads per-page driver data of the faulting
    # device page (dmirror_devmem_fault: vmf->page->zone_device_data, a field of 5.3+,
    # which dmirror_devmem_free reuses as the free-list link), so using a freed page is
    # a use after free. Before 5.3 the handler reached the driver through page->pgmap
    # (hmm_devmem_fault: page->pgmap->data), which stays valid for a free page while the
    # device lives: a fault that raced with the page's migration only finds the entry
    # changed.
    fault_reads_page_data: ClassVar[bool] = True
    # Whether try_to_unmap(TTU_MIGRATION) is 4.14-5.0's (no PageAnonExclusive, no -EBUSY
    # for a maybe-pinned page, plain write/read migration entries; migrate_hmm2017.py
    # try_to_unmap_migration) rather than 5.19+'s try_to_migrate (rmap.py). The generic
    # migration (migrate.py) asks; migrate_vma's unmap of the older generations calls the
    # old one directly.
    old_try_to_unmap: ClassVar[bool] = False

    # The page wait-queue code of the generation's kernel (core/machine/kernel.py):
    # "5.9" (folio_wait_bit_common: wake-ups as events, the fair lock hand-off) or
    # "4.14" (wait_on_page_bit_common of 4.14-5.8: woken waiters re-check and sleep
    # again, no hand-off).
    page_wait: ClassVar[str] = "5.9"
    # Large folios and the PMD level (the v7 generation): the model is built with the
    # geometry's thp tables, and the device-migration entry points run 7.0's compound
    # paths (core/mm/migrate_device.py ``*_v7``).
    large_folios: ClassVar[bool] = False

    # Where the generation's kernel calls check_stable_address_space() (include/linux/
    # oom.h; core/mm/memory.py): do_anonymous_page since 4.15 (3f70dc38cec2, "mm: make
    # sure that kthreads will not refault oom reaped memory"), migrate_vma_insert_page
    # since 5.6 ("mm/migrate: add stable check in migrate_vma_insert_page()"). Seed 004
    # (4.14) has neither; seed 002 (v4.20/v5.0, lines 2639-2660) only the fault's.
    stable_check_fault: ClassVar[bool] = True
    stable_check_insert: ClassVar[bool] = True

    # Which reuse rule do_wp_page() has for an anonymous page (core/mm/memory.py):
    # False: 7.0's (wp_can_reuse_anon_folio: PageAnonExclusive, or mapcount and refcount
    # 1; 5.8/5.9's 09854ba94c6a + 5.19's PageAnonExclusive); True: 4.14-5.0's (the page
    # lock, reuse_swap_page(): mapcount + swap count <= 1 whatever the refcount, the swap
    # cache freed and the page dirtied; do_wp_page_anon_414). Seeds 004 and 002.
    wp_reuse_by_mapcount: ClassVar[bool] = False

    def collect(self, k: Kernel, a: Actor, m: MigrateVma) -> Path:
        raise NotImplementedError

    def unmap(self, k: Kernel, a: Actor, m: MigrateVma) -> Path:
        raise NotImplementedError

    def check_page(self, k: Kernel, pfn: int, fault_page: int) -> bool:
        raise NotImplementedError

    def fault_entry(self, k: Kernel) -> str:
        """Which device-private fault entry ``do_swap_page()`` has (``core/mm/memory.py``,
        ``do_swap_page_device``): ``FAULT_ENTRY_NO_REF`` (4.14-6.0: the driver's fault
        handler runs with neither a reference on nor the lock of the device page),
        ``FAULT_ENTRY_REF`` (6.1-6.14: a reference, no lock) or ``FAULT_ENTRY_LOCKED``
        (6.15+: ``folio_trylock`` under the PTL and a reference, else wait for the
        unlock without one). The driver learns from it whether it gets a ``fault_page``
        (a reference) and a ``fault_folio`` (the lock)."""
        raise NotImplementedError

    def checks_fault_page_locked(self, k: Kernel) -> bool:
        return False

    def prepare(self, k: Kernel, a: Actor, m: MigrateVma) -> Path:
        """``migrate_vma_prepare()`` (lock and isolate): hmm-2017 and v5.0 only; v6 folds
        it into collect and ``migrate_device_unmap``."""
        raise NotImplementedError
        yield  # pragma: no cover

    def before_pages(self, m: MigrateVma) -> None:
        """What the core does to ``src[]`` between the driver's copy and the pages step
        (nothing, except in hmm-2017)."""

    def driver_alloc_and_copy(self, k: Kernel, a: Actor, dev: Any, m: MigrateVma) -> Path:
        """The driver's allocate-and-copy step to the device, between setup and pages (v6
        calls it directly; hmm-2017 and v5.0 pass it as the ``alloc_and_copy``
        callback of ``migrate_vma``)."""
        return dev.alloc_and_copy_to_device(k, a, m)  # forwards: no frame of its own

    def migrate_range(
        self,
        k: Kernel,
        a: Actor,
        m: MigrateVma,
        alloc_and_copy: Callback,
        finalize_on_error: bool = True,
        oom_skips_finalize: bool = False,
    ) -> Path:
        """How a driver migrates ``m`` (the caller holds ``mmap_read_lock``). v6 (5.4+):
        ``migrate_vma_setup()``, the driver's copy, ``migrate_vma_pages()``, its page
        table update, ``migrate_vma_finalize()``. Returns 0, a negative errno from
        setup, or the ``VM_FAULT_*`` the copy returned (then only finalize runs;
        ``finalize_on_error=False``: pages runs anyway, as ``dmirror_migrate_to_system``
        does; ``oom_skips_finalize``: after ``VM_FAULT_OOM`` neither runs, as 7.0's
        ``dmirror_devmem_fault`` writes it: ``if (ret) goto err;``)."""
        rc = yield from migrate_vma_setup(k, a, m)
        if rc:
            return rc
        holes = hole_indexes(m)
        failed0 = k.outcomes.get((m.kind, "alloc_failed"), 0)
        ret = yield from alloc_and_copy(k, a, m)
        check_holes_populated(
            k, a, m, holes, k.outcomes.get((m.kind, "alloc_failed"), 0) != failed0
        )
        if ret and oom_skips_finalize and ret == VM_FAULT_OOM:
            k.count("devmem_fault_oom_no_finalize")
            return ret
        if ret and finalize_on_error:
            yield from migrate_vma_finalize(k, a, m)
            return ret
        yield from migrate_vma_pages(k, a, m)
        yield from migrate_vma_finalize(k, a, m)
        return 0 if finalize_on_error else ret or 0


class V6(Variant):
    """Today's protocol (``mm/migrate_device.c``, seed 000)."""

    name = "v6"
    description = (
        "mm/migrate_device.c today: folio_trylock in collect with the fault_folio "
        "exception, migrate_vma_setup/pages/finalize, migrate_device_range/pfns, "
        "device-coherent folios"
    )
    seed = "000_50ce908311638d57.txt"
    provides = frozenset(
        {
            "migrate_vma", "migrate_to_ram", "migrate_device_range", "device_coherent",
            "hmm_range_fault", "drm_pagemap", "device_exclusive",
        }
    )

    # The hooks are the paths themselves (static: no forwarding call of their own; a
    # subclass may still override them with methods, as docs/examples/my_patch.py does).
    collect = staticmethod(migrate_vma_collect)
    unmap = staticmethod(migrate_vma_unmap)
    check_page = staticmethod(migrate_vma_check_page)

    def fault_entry(self, k: Kernel) -> str:
        # 6.15+ (1afaeb8293c9, seed 000 era): trylock the device page under the PTL. The
        # catalog puts the older entries back: before 6.1 (CVE-2022-3523 fix) neither a
        # reference nor the lock, 6.1-6.14 a reference only.
        if "fault-without-ref" in k.bugs:
            return FAULT_ENTRY_NO_REF
        if "fault-ref-no-trylock" in k.bugs:
            return FAULT_ENTRY_REF
        return FAULT_ENTRY_LOCKED

    def checks_fault_page_locked(self, k: Kernel) -> bool:
        # 1afaeb8293c9 (6.15): fault_page must be locked. The older fault protocols the
        # catalog restores passed it unlocked (or not at all).
        return self.fault_entry(k) == FAULT_ENTRY_LOCKED


class V7(V6):
    """Linux 7.0's device migration with large folios (``mm/migrate_device.c`` of 7.0,
    /work/shared/kernel-7.0/; issue 15): device-private THP, PMD migration entries,
    ``MIGRATE_VMA_SELECT_COMPOUND`` / ``MIGRATE_PFN_COMPOUND``, the split of PTE-mapped
    large folios during collect. Everything else is v6's, which already follows 7.0 for
    single pages."""

    name = "v7"
    description = (
        "mm/migrate_device.c of Linux 7.0: v6 plus large folios and the PMD level "
        "(migrate_vma_collect_huge_pmd, PMD migration entries, MIGRATE_PFN_COMPOUND, "
        "migrate_vma_split_folio, compound pages/finalize, folio split with refcount freeze)"
    )
    seed = "kernel-7.0/mm/migrate_device.c"
    provides = V6.provides | frozenset({"thp"})
    large_folios = True

    collect = staticmethod(migrate_vma_collect_v7)  # the path itself: no call of its own

    def unmap(self, k: Kernel, a: Actor, m: MigrateVma) -> Path:
        m.cpages = yield from migrate_device_unmap_v7(k, a, m.src, m.npages, m.fault_page, m.kind)

    def check_page(self, k: Kernel, pfn: int, fault_page: int) -> bool:
        return migrate_vma_check_page_v7(k, pfn, fault_page)

    def driver_alloc_and_copy(self, k: Kernel, a: Actor, dev: Any, m: MigrateVma) -> Path:
        # 7.0's dmirror_migrate_alloc_and_copy with large device folios, called directly:
        # dmirror's alloc_and_copy_to_device would only forward there (a frame at each
        # point of the copy).
        return dev.alloc_and_copy_to_device_v7(k, a, m)  # forwards: no frame of its own


class _MigrateVmaOps(Variant):
    """What the two callback-API generations (hmm-2017, seed 004; v5.0, seed 002) share:
    the fault entry, seed 004's unmap (seed 002 kept it) and the one ``migrate_vma(ops,
    ...)`` driver entry. Each subclass keeps only what changed between them."""

    page_wait = "4.14"  # the page wait queue of 4.14-5.8 (seeds 004 and 002)
    stable_check_insert = False  # seed 002 lines 2639-2660; seed 004 (4.14)
    wp_reuse_by_mapcount = True  # 4.14-5.0 do_wp_page / reuse_swap_page

    fault_reads_page_data = False  # hmm_devmem_fault(): page->pgmap->data
    old_try_to_unmap = True  # mm/rmap.c try_to_unmap_one of 4.14-5.0

    def fault_entry(self, k: Kernel) -> str:
        # 4.14 mm/memory.c do_swap_page() (HMM 14/15, merged with seed 004) and still
        # v4.20/v5.0: is_device_private_entry() → device_private_entry_fault() →
        # pgmap->page_fault(), with neither a reference on nor the lock of the device
        # page (until 6.1); migrate_vma() has no fault_page, so the faulting page is
        # locked (hmm-2017 prepare) or trylocked (v5.0 collect) like any other.
        return FAULT_ENTRY_NO_REF

    # seed 004 line 400: try_to_unmap and restore; seed 002 line 2509 kept it. (The
    # hooks of the older generations are the paths themselves: static, no call of their
    # own.)
    unmap = staticmethod(unmap_2017)

    def migrate_range(
        self,
        k: Kernel,
        a: Actor,
        m: MigrateVma,
        alloc_and_copy: Callback,
        finalize_on_error: bool = True,
        oom_skips_finalize: bool = False,
    ) -> Path:
        # seed 004 line 564, seed 002 line 2880: one migrate_vma(ops, ...) call with
        # driver callbacks. Forwards: returns migrate_vma's generator (a plain method,
        # no frame of its own at each point of the migration).
        return migrate_vma(k, a, m, alloc_and_copy, _finalize_and_map)


class V50(_MigrateVmaOps):
    """The v4.20 / v5.0 protocol (seed 002, ``mm/migrate.c``)."""

    name = "v5.0"
    description = (
        "mm/migrate.c of v4.20/v5.0: migrate_vma(ops) with alloc_and_copy/finalize_and_map "
        "callbacks, trylock in collect (migration entries at once) and in prepare "
        "(back off), check_page passing device-private pages, device-public pages"
    )
    seed = "002_5db1c0419ed679d4.txt"
    # No migrate_device_range (driver eviction arrived in 6.x) and no device-coherent
    # folios; device-public pages are its CPU-addressable device memory.
    provides = frozenset({"migrate_vma", "migrate_to_ram", "device_public"})

    # seed 002 line 2252: trylock and a migration entry at once.
    collect = staticmethod(collect_v50)
    # seed 002 line 2421: trylock_page and back off ("best effort").
    prepare = staticmethod(prepare_v50)
    # seed 002 line 2368: device-private pages always pass.
    check_page = staticmethod(check_page_v50)


class HMM2017(_MigrateVmaOps):
    """The first protocol (seed 004, "mm/migrate: new memory migration helper for use
    with device memory v4", 2017). The catalog entry ``hmm-2017-blocking-prepare`` is
    this variant itself."""

    name = "hmm-2017"
    description = (
        "seed 004 (2017): migrate_vma(ops) with alloc_and_copy/finalize_and_map "
        "callbacks, collect leaving holes src=0, prepare with blocking lock_page and LRU "
        "isolation, try_to_unmap and restore"
    )
    seed = "004_30e669ba7cbf7ee3.txt"
    provides = frozenset({"migrate_vma", "migrate_to_ram"})
    stable_check_fault = False  # 4.14: check_stable_address_space() arrived in 4.15

    # seed 004 line 207/268: references only; holes src = 0.
    collect = staticmethod(collect_2017)
    # seed 004 line 362: lock_page(page), blocking.
    prepare = staticmethod(prepare_2017)
    # seed 004 line 315: refcount against mapcount for every page.
    check_page = staticmethod(check_page_2017)

    def before_pages(self, m: MigrateVma) -> None:
        # 4.14's migrate_vma_insert_page for entries the driver gave a page.
        populate_empty_entries_2017(m)

    def driver_alloc_and_copy(self, k: Kernel, a: Actor, dev: Any, m: MigrateVma) -> Path:
        # seed 003: the sample driver allocates for src == 0 entries too.
        return sample_driver_alloc_and_copy(k, a, dev, m)  # forwards: no frame of its own


def _finalize_and_map(k: Kernel, a: Actor, m: MigrateVma) -> Path:
    """dmirror's ``finalize_and_map()`` callback: the device page table is not modelled,
    so it only reads the arrays (the contract check around it still runs)."""
    k.count(f"finalize_and_map_{m.kind}")
    return
    yield  # pragma: no cover


VARIANTS: dict[str, type[Variant]] = {"v6": V6, "v5.0": V50, "hmm-2017": HMM2017, "v7": V7}


def get_variant(name: str) -> Variant:
    """The variant object for ``name``.

    Raises:
        KeyError: ``name`` is not a known variant (the caller turns it into bad input).
    """
    return VARIANTS[name]()

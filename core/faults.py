"""Test-only fault injection: names that break exactly one kernel path each.

A fault is not a catalog bug: it is not a historical kernel race, it is a deliberate
breakage the test suite switches on to prove that one oracle can fire (a check that
cannot fail proves nothing). Each entry names the path it breaks and the
:class:`~pagerace.core.machine.errors.FailureKind` the oracle must report. The paths test
``name in k.faults`` at the one place they break, so ``grep`` for the name finds it.

Two names are not breakages but injected errors a workload may ask for
(``copy_error``, ``alloc_fail_sys``): with them SIGBUS is an expected outcome
(:meth:`Kernel.sigbus_expected`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .machine.errors import FailureKind, InvalidOption


@dataclass(frozen=True)
class FaultEntry:
    name: str
    path: str  # the kernel function it breaks
    breaks: str  # what it changes
    oracle: FailureKind  # what must fire


FAULTS: dict[str, FaultEntry] = {
    e.name: e
    for e in [
        FaultEntry(
            "evict_skips_page",
            "dmirror_device_evict_chunk",
            "the eviction gives the first page it locked no destination: the page stays "
            "on the device, mapped, and memunmap_pages waits for it forever",
            FailureKind.EVICTION_STUCK,
        ),
        FaultEntry(
            "dmirror_skip_invalidate",
            "dmirror_do_update",
            "the mirror's invalidate callback sets the sequence but leaves the device "
            "page table as it is: entries outlive the pages they name",
            FailureKind.USE_AFTER_FREE,
        ),
        FaultEntry(
            "dmirror_no_read_retry",
            "dmirror_range_fault",
            "the driver ignores mmu_interval_read_retry() and stores what hmm_range_fault "
            "returned even after an invalidation collided with it",
            FailureKind.USE_AFTER_FREE,
        ),
        FaultEntry(
            "dmirror_lock_page_under_mutex",
            "dmirror_do_read",
            "the driver locks each page it copies while holding dmirror->mutex, against the "
            "order of a notifier called with the folio locked (try_to_migrate_one)",
            FailureKind.DEADLOCK,
        ),
        FaultEntry(
            "dmirror_stale_token",
            "dmirror_do_read",
            "a device read returns something other than what the page holds",
            FailureKind.STALE_READ,
        ),
        FaultEntry(
            "dmirror_do_fault_backing",
            "dmirror_do_fault",
            "test-only repair: dmirror_do_fault stores a device-private page as if it "
            "were its backing page, silencing the device-private-as-memory check",
            FailureKind.BAD_MAPPING,
        ),
        FaultEntry(
            "no_tlb_flush",
            "flush_tlb_range",
            "flush_tlb_range() does nothing: CPUs keep stale translations after an entry "
            "changed and its page-table lock was released",
            FailureKind.STALE_TLB,
        ),
        FaultEntry(
            "no_pmd_tlb_flush",
            "flush_pmd_tlb_range",
            "flush_pmd_tlb_range() does nothing (v7): CPUs keep a huge translation after "
            "its PMD was split, zapped, moved or made a migration entry and the PMD lock "
            "was released",
            FailureKind.STALE_TLB,
        ),
        FaultEntry(
            "move_pmd_no_flush",
            "move_normal_pmd",
            "move_normal_pmd() moves a PTE table without flush_tlb_range() of the old "
            "range (v7): CPUs keep the old addresses' 4K translations",
            FailureKind.STALE_TLB,
        ),
        FaultEntry(
            "gup_fast_no_recheck",
            "gup_fast_pte_range",
            "GUP-fast skips B4 (re-read the entry after the pin) and B5 (back off from a "
            "read-only entry of a page that is not anon-exclusive)",
            FailureKind.PIN_COHERENCY,
        ),
        FaultEntry(
            "fork_ignores_pins",
            "folio_try_dup_anon_rmap_pte",
            "fork shares an anon-exclusive page even when it may be pinned, instead of "
            "failing with -EBUSY and copying it for the child",
            FailureKind.PIN_COHERENCY,
        ),
        FaultEntry(
            "mm_ids_no_shared",
            "folio_add_return_large_mapcount",
            "a second mm taking _mm_ids slot 1 does not set FOLIO_MM_IDS_SHARED_BIT: the "
            "folio two mms map looks exclusive to folio_maybe_mapped_shared",
            FailureKind.MAPCOUNT_MISMATCH,
        ),
        FaultEntry(
            "mm_ids_ignore_shared",
            "__wp_can_reuse_large_anon_folio",
            "the write fault ignores FOLIO_MM_IDS_SHARED (folio_maybe_mapped_shared): a "
            "large folio the parent shares with its child after fork is reused in place, "
            "and the child sees the parent's store",
            FailureKind.STALE_READ,
        ),
        FaultEntry(
            "zap_no_put",
            "zap_pte_range",
            "zap drops the mapcount of an unmapped page but not the mapping's reference",
            FailureKind.LEAK,
        ),
        FaultEntry(
            "zap_swap_no_free",
            "zap_pte_range",
            "zap clears a swap entry without dropping its slot's count "
            "(free_swap_and_cache): the slot leaks",
            FailureKind.LEAK,
        ),
        FaultEntry(
            "zap_device_keeps_entry",
            "zap_nonpresent_ptes",
            "zap drops a device-private page's mapping and reference but leaves the entry "
            "in the page table, so the device page is freed while an entry names it",
            FailureKind.DEVICE_PAGE_LIFETIME,
        ),
        FaultEntry(
            "zap_exclusive_keeps_entry",
            "zap_nonpresent_ptes",
            "zap drops a device-exclusive page's mapping and reference but leaves the "
            "entry: it survives the zap (outside any VMA after munmap, or naming a page "
            "that is freed)",
            FailureKind.BAD_MAPPING,
        ),
        FaultEntry(
            "exclusive_restore_skips_notifier",
            "remove_device_exclusive_entry",
            "the CPU fault restores a device-exclusive entry without the MMU_NOTIFY_CLEAR "
            "invalidation: the device keeps its atomic mapping while the CPU uses the page",
            FailureKind.EXCLUSIVE_BYPASS,
        ),
        FaultEntry(
            "exclusive_drops_dirty",
            "make_device_exclusive",
            "make_device_exclusive nukes a dirty entry without moving its dirty bit to the "
            "folio (the device-exclusive entry is clean for core-mm): reclaim can drop a "
            "swap-cache page whose CPU write is newer than its swap copy",
            FailureKind.DIRTY_CONSERVATION,
        ),
        FaultEntry(
            "fork_copies_exclusive",
            "copy_nonpresent_pte",
            "fork copies a device-exclusive entry into the child as it is (as it does a "
            "device-private one) instead of restoring it first: two exclusive entries "
            "share a page that is no longer anon-exclusive",
            FailureKind.BAD_MAPPING,
        ),
        FaultEntry(
            "reclaim_drops_dirty",
            "shrink_folio_list",
            "reclaim treats a dirty page as clean and drops it without writing it to swap",
            FailureKind.DIRTY_CONSERVATION,
        ),
        FaultEntry(
            "swapin_spurious_sigbus",
            "do_swap_page",
            "swap-in returns VM_FAULT_SIGBUS although no I/O error was injected",
            FailureKind.SIGBUS,
        ),
        FaultEntry(
            "no_stable_check",
            "check_stable_address_space",
            "check_stable_address_space() always passes: a fault on an OOM-reaped mm maps "
            "a fresh zeroed page where the program's data was (the bug 4.15's "
            "3f70dc38cec2 fixed)",
            FailureKind.STALE_READ,
        ),
        FaultEntry(
            "oom_reap_not_unstable",
            "__oom_reap_task_mm",
            "the OOM reaper zaps the victim without setting MMF_UNSTABLE: the data it drops "
            "is lost from an mm nobody was told about (the oracle excuses only unstable mms)",
            FailureKind.LOST_WRITE,
        ),
        FaultEntry(
            "split_unfreeze_extra_ref",
            "__folio_freeze_and_split_unmapped",
            "the split unfreezes each new folio after the first with one reference too "
            "many (v7)",
            FailureKind.REFCOUNT_MISMATCH,
        ),
        FaultEntry(
            "split_drops_lock",
            "__split_folio_to_order",
            "the new folios do not inherit PG_locked: the split hands the caller unlocked "
            "folios it believes it holds (v7)",
            FailureKind.BAD_UNLOCK,
        ),
        FaultEntry(
            "finalize_skips_pmd_restore",
            "remove_migration_ptes",
            "removing a large folio's migration entries skips its PMD migration entry (v7)",
            FailureKind.MIGRATION_ENTRY_LEFT,
        ),
        FaultEntry(
            "unmap_counts_pages",
            "migrate_device_unmap",
            "the unmap counts every 4K page of a large folio it unmapped instead of one "
            "per entry: cpages disagrees with src's compound entries (v7)",
            FailureKind.DRIVER_CONTRACT,
        ),
        FaultEntry(
            "collect_pushes_extra_entry",
            "migrate_vma_collect",
            "collect appends one entry more than each PMD range has pages: a write past "
            "the driver's src/dst arrays (v7)",
            FailureKind.BUG_ON,
        ),
        FaultEntry(
            "copy_error",
            "dmirror_devmem_fault_alloc_and_copy",
            "injected error (not a breakage): copies back to system memory fail with "
            "MIGRATE_PFN_ERROR; the process gets SIGBUS, which is then expected",
            FailureKind.SIGBUS,
        ),
        FaultEntry(
            "alloc_fail_sys",
            "alloc_page",
            "injected error (not a breakage): system-memory allocations for migration "
            "fail; SIGBUS is then expected",
            FailureKind.SIGBUS,
        ),
    ]
}

# Faults that inject an error the kernel must handle, rather than break a path.
INJECTED_ERRORS = frozenset({"copy_error", "alloc_fail_sys"})


def validate_faults(names: tuple[str, ...] | list[str]) -> None:
    """Refuse an unknown fault name.

    Raises:
        InvalidOption: naming the bad value and the valid choices.
    """
    for n in names:
        if n not in FAULTS and n != "swapcache_moves":
            raise InvalidOption(
                f"unknown fault {n!r}; valid faults: {', '.join(sorted(FAULTS))}"
            )


__all__ = ["FAULTS", "INJECTED_ERRORS", "FaultEntry", "validate_faults"]

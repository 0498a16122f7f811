"""The bug catalog: known historical races, as toggles that put each back.

Each :class:`BugEntry` names the protocol variants it applies to, what the toggle
changes, the kernel fix that removed it and the oracle that must catch it
(``../shared/BUGS.md``). The toggles themselves are plain ``if name in k.bugs`` tests at
the one place in a path where the old kernel differed, so ``grep`` for the name finds
the change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BugEntry:
    name: str
    variants: tuple[str, ...]
    changes: str
    goes_wrong: str
    fix: str
    oracle: tuple[str, ...]  # FailureKind values that count as finding it
    workload: str  # the workload the quality tier hunts it on
    intrinsic: bool = False  # the variant itself has the bug (no toggle needed)


CATALOG: dict[str, BugEntry] = {
    e.name: e
    for e in [
        BugEntry(
            # Real, but not through fork + mremap: an AB-BA needs two migrations that
            # lock the same pages in opposite orders, and anonymous pages keep their
            # pgoff order in every VMA that maps them (the rmap's vma_address rule). Only
            # KSM maps one page at unrelated addresses; opposite-order's reversed share
            # is built as KSM pages (core/machine/setup.py, docs/internals.md
            # "Deliberate simplifications"), which seed 004's collect does take.
            "hmm-2017-blocking-prepare",
            ("hmm-2017",),
            "migrate_vma_prepare() takes lock_page() on each collected page, blocking (seed 004)",
            "two migrations over shared pages in opposite order wait on each other: AB-BA "
            "deadlock",
            "v5.0 turned it into trylock-and-back-off (seed 002, 'best effort')",
            ("deadlock",),
            "opposite-order",
            intrinsic=True,
        ),
        BugEntry(
            "prepare-keeps-collect-ref",
            # Seed 004 as posted (HMM 12/15 v4); hmm-2017 runs the merged line by default
            # (docs/generations.md, docs/findings/001-hmm2017-v4-collect-reference-leak.md).
            ("hmm-2017",),
            "migrate_vma_prepare() isolates each page from the LRU but never drops the "
            "reference collect took (seed 004 lines 371-386), although its comment says "
            "it does",
            "every mapped page then has two references beyond its mappings and fails "
            "migrate_vma_check_page(); collect's reference is never put: every page a "
            "migration touches leaks one reference",
            "'/* Drop the reference we took in collect */ put_page(page);' in the merged "
            "version, 8763cb45ab96 (4.14); seed 002 line 2456",
            ("leak",),
            "migrate",
        ),
        BugEntry(
            "fault-without-ref",
            ("v6",),
            "do_swap_page() calls migrate_to_ram() without a reference on, or the lock of, "
            "the device page",
            "a concurrent eviction frees the device page while the fault still uses it: "
            "use after free",
            "CVE-2022-3523 fix, 'mm/memory.c: fix race when faulting a device private page' "
            "(6.1)",
            ("use_after_free",),
            "evict-vs-fault",
        ),
        BugEntry(
            "fault-ref-no-trylock",
            ("v6",),
            "every faulting CPU takes a reference and calls migrate_to_ram(); nobody "
            "trylocks the page first",
            "each migration sees the other faulters' references and fails; all retry "
            "forever: livelock",
            "'mm/migrate: Trylock device page in do_swap_page' (1afaeb8293c9, 6.15)",
            ("livelock",),
            "fault-storm-many",
        ),
        BugEntry(
            "waiter-takes-ref",
            # Not v6: every kernel whose migration_entry_wait() took a reference (before
            # 5.17) also had the pre-6.1 fault entry. v6's 6.15+ entry trylocks the device
            # page under the PTL and sleeps WITHOUT a reference when that fails, so a
            # fault storm's waiters hold no reference; only a CPU that reads the entry
            # after collect installed the migration entry takes one. Such late readers
            # fail one migration, but they are all asleep on the page lock for the retry
            # (tests/unit/test_waiter_takes_ref.py): the hybrid never livelocks.
            ("hmm-2017", "v5.0"),
            "migration_entry_wait() takes get_page_unless_zero() before sleeping on the "
            "page lock (before 5.17); the fault entry of the same era calls the driver "
            "without a reference or the lock, so every CPU that finds a migration entry "
            "of a page moving back to the CPU adds a reference",
            "waiters' references make migration back to the CPU fail: hmm-2017 (seed 004) "
            "refuses the page in migrate_vma_check_page(); v5.0 (seed 002) passes "
            "device-private pages there (its comment's workaround for exactly this loop) "
            "but migrate_page_move_mapping() still finds page_count != expected and "
            "returns -EAGAIN. The pages are restored, the faults retry, the next "
            "migration meets the next waiters: livelock (no pin is involved, so the pin "
            "oracle has nothing to see)",
            "'mm/migrate.c: rework migration_entry_wait() to not take a pageref' "
            "(ffa65753c431, 5.17), which also removed v5.0's device-private exemption",
            ("livelock",),
            "waiter-storm",
        ),
        BugEntry(
            "no-fault-folio-exception",
            ("v6",),
            "collect trylocks the fault page too, instead of "
            "fault_folio == folio || folio_trylock(folio) (seed 000)",
            "the fault handler already holds that lock, so the trylock always fails: the "
            "page is never migrated back and the fault retries forever",
            "the fault_folio exception in migrate_vma_collect_pmd() (with 1afaeb8293c9, 6.15)",
            ("livelock", "deadlock"),
            "fault-storm",
        ),
        BugEntry(
            "check-ignores-pins",
            ("v5.0", "v6"),
            "migrate_vma_check_page() does not compare the refcount with the mapcount",
            "a page pinned by GUP for DMA is migrated; the device keeps writing the old "
            "page: lost writes, and the pin no longer refers to the mapped page",
            "the refcount check in migrate_vma_check_page() (present since 4.14; the toggle "
            "removes it)",
            ("pin_coherency", "lost_write"),
            "migrate-vs-pin",
        ),
        BugEntry(
            "callback-modifies-src",
            ("hmm-2017",),
            "the driver's alloc_and_copy() rewrites src[] entries, which seed 004 forbids",
            "migration state and page locks go out of step: pages left locked, or unlocked "
            "twice",
            "driver contract (seed 004 documentation); the v6 API split removed the callbacks",
            ("driver_contract", "lock_balance", "bad_unlock"),
            "default",
        ),
        BugEntry(
            "holes-src-zero",
            ("hmm-2017",),
            "holes come back as src = 0 with no flags (seed 003) and the driver follows the "
            "documented contract",
            "drivers never populate holes: part of the range silently stays in system memory",
            "later kernels mark holes MIGRATE_PFN_MIGRATE",
            ("outcome",),
            "holes",
        ),
        BugEntry(
            "async-blocking-lock",
            ("v5.0",),
            "__unmap_and_move() with MIGRATE_ASYNC uses lock_page() instead of giving up "
            "when trylock_page() fails (seed 002 comment)",
            "an allocation made while holding a page lock enters direct compaction and waits "
            "for the lock it holds: self-deadlock",
            "the MIGRATE_ASYNC trylock in __unmap_and_move() (seed 002)",
            ("deadlock",),
            "compaction",
        ),
        BugEntry(
            "move-mapping-no-freeze",
            ("v5.0", "v6"),
            "migrate_page_move_mapping() checks the expected refcount but does not freeze it",
            "a speculative reference lands between the check and the switch; its holder "
            "keeps using the old page: a lost write or a stale read",
            "page_ref_freeze() in migrate_page_move_mapping() (seed 002)",
            ("lost_write", "stale_read", "pin_coherency", "use_after_free"),
            # The kernel really had it for a page with a mapping (the page-cache case
            # this workload hunts, frozen under xa_lock since seed 002); for an order-0
            # anonymous folio without a mapping 7.0's __folio_migrate_mapping only
            # compares the count, as the model now does (core/mm/migrate_device.py
            # folio_migrate_mapping); there the toggle only adds a preemption point.
            # Through GUP-fast the window is harmless (its PTE re-check drops the
            # reference); a page-cache lookup re-checks the SLOT, which still names the
            # old page, and a buffered read copies it without the page lock: stale_read
            # (core/mm/filemap.py). Writers lock the page and re-check its mapping.
            "pagecache-vs-compaction",
        ),
        BugEntry(
            "insert-no-stable-check",
            ("v6",),
            "migrate_vma_insert_page() maps a page at a hole without "
            "check_stable_address_space() (before 5.6; seed 002 lines 2639-2660)",
            "a migration of an OOM-reaped range collects the reaped entries as holes and "
            "maps zeroed device pages where the program's data was: a reader gets zeroes "
            "instead of SIGBUS (finding 015 on the older generations)",
            "'mm/migrate: add stable check in migrate_vma_insert_page()' (Ralph Campbell, "
            "2020, the 5.6 cycle)",
            ("stale_read", "lost_write"),
            "oom-vs-migrate",
        ),
    ]
}

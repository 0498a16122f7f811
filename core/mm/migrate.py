"""Generic page migration, as compaction and NUMA balancing use it: ``mm/migrate.c`` of
the v4.20 / v5.0 era (seed 002) and ``mm/compaction.c`` around it.

- :func:`migrate_pages` (seed 002 line 1362): up to ten passes over a list of isolated
  pages, retrying each page that returned ``-EAGAIN``; from the third pass on
  ``force`` is set;
- :func:`unmap_and_move` (line 1138): a target page from ``get_new_page``, the
  "page was freed from under us" shortcut, the put-back afterwards;
- :func:`__unmap_and_move` (line 981): **``trylock_page`` and give up for
  ``MIGRATE_ASYNC``** (and for direct compaction, ``PF_MEMALLOC``: "It's not safe for
  direct compaction to call lock_page"), ``lock_page`` otherwise; then
  ``try_to_unmap`` (today's ``try_to_migrate`` under v6; 4.14-5.0's
  ``try_to_unmap_migration`` under hmm-2017 and v5.0), :func:`move_to_new_page`,
  ``remove_migration_ptes``;
- :func:`move_to_new_page` → ``migrate_page`` → ``migrate_page_move_mapping`` (line 439,
  the refcount frozen at the expected count; the catalog toggle
  ``move-mapping-no-freeze`` checks without freezing, ``core/mm/migrate_device.py``) and
  the copy of content and flags. A page-cache page (``PG_pagecache``: it has a mapping)
  goes through the mapping case, ``core/mm/filemap.py``'s
  :func:`~pagerace.core.mm.filemap.migrate_page_move_mapping` (the slot is switched to
  the new page with the count frozen), and its old page's ``mapping`` is cleared while
  it is still locked.

Two operations use it (registered with :func:`~pagerace.core.actors.register_op`):

- ``compact``: kcompactd / ``compact_zone()``: isolate the anonymous LRU pages of system
  memory (``isolate_migratepages``) and migrate them to fresh pages;
- ``readahead``: ``page_cache_ra_unbounded()``-style: pages are allocated, **added to the
  LRU locked**, and each allocation after the first may enter direct compaction
  (``__alloc_pages_direct_compact``, ``MIGRATE_ASYNC``, ``PF_MEMALLOC``) while the
  earlier pages are still locked; "IO completion" unlocks them and the cache drops them.
  This is the scenario of the seed 002 comment: with the catalog toggle
  ``async-blocking-lock`` the compaction ``lock_page()``s a page its own caller holds:
  a cycle of one in the waits-for graph.
"""

from __future__ import annotations

from ..actors import register_op
from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import Z_FREE, ZONE_WORDS, PG_anon, PG_isolated, PG_lru, PG_pagecache, PG_uptodate
from .migrate_device import (
    EAGAIN,
    ENOMEM,
    folio_migrate_flags,
    folio_migrate_mapping,
    folio_putback_lru,
)
from .migrate_hmm2017 import try_to_unmap_migration
from .rmap import remove_migration_ptes, try_to_migrate

# enum migrate_mode (include/linux/migrate_mode.h)
MIGRATE_ASYNC = 0
MIGRATE_SYNC_LIGHT = 1
MIGRATE_SYNC = 2
MODE_NAMES = {MIGRATE_ASYNC: "async", MIGRATE_SYNC_LIGHT: "sync_light", MIGRATE_SYNC: "sync"}

MIGRATEPAGE_SUCCESS = 0
EBUSY = -16
PASSES = 10  # migrate_pages(): "for(pass = 0; pass < 10 && retry; pass++)"


def move_to_new_page(k: Kernel, a: Actor, new: int, page: int, mode: int) -> Path:
    """``move_to_new_page()`` → ``migrate_page()``: ``migrate_page_move_mapping()``
    (the refcount must be exactly the isolation reference, frozen for the switch),
    then ``migrate_page_copy()``: content and page state. A page-cache page takes the
    mapping case (:func:`pagecache.migrate_page_move_mapping`), and on success its old
    page's ``mapping`` is cleared ("old pagecache page->mapping must be cleared before
    page is freed")."""
    from . import filemap as pagecache

    file_page = k.test_flag(page, PG_pagecache)
    if file_page:
        rc = yield from pagecache.migrate_page_move_mapping(k, a, new, page, 0)
    else:
        rc = yield from folio_migrate_mapping(k, a, new, page, 0)
    if rc:
        return rc
    k.touch(a, page, "migrate_page_copy")
    k.set_data(new, k.data(page))
    folio_migrate_flags(k, new, page)
    if file_page:
        pagecache.clear_page_mapping(k, page)
    return MIGRATEPAGE_SUCCESS


def __unmap_and_move(
    k: Kernel, a: Actor, page: int, new: int, force: bool, mode: int, direct: bool
) -> Path:
    """``__unmap_and_move()`` (seed 002 line 981). Returns 0 or ``-EAGAIN``."""
    if not k.trylock_page(a, page, "__unmap_and_move:trylock_page"):
        if "async-blocking-lock" not in k.bugs:
            # seed 002 line 990: "if (!force || mode == MIGRATE_ASYNC) goto out;"
            if not force or mode == MIGRATE_ASYNC:
                k.outcome("compact", "lock_contended")
                return EAGAIN
            # line 1006: "avoid the use of lock_page for direct compaction altogether"
            if direct:
                k.outcome("compact", "lock_contended")
                return EAGAIN
        # catalog async-blocking-lock: the page lock is taken blocking, even in async
        # (direct) compaction, which may be waiting on a lock its own caller holds.
        yield from k.lock_page(a, page, "__unmap_and_move:lock_page")
    rc = EAGAIN
    if not k.trylock_page(a, new, "__unmap_and_move:trylock_newpage"):
        k.unlock_page(a, page, "__unmap_and_move:unlock_page")
        return EAGAIN
    was_mapped = False
    if k.mapcount(page) > 0:
        if k.variant.old_try_to_unmap:  # hmm-2017 / v5.0: 4.14-5.0's try_to_unmap_one
            yield from try_to_unmap_migration(k, a, page)
        else:
            yield from try_to_migrate(k, a, page, "try_to_unmap_one")
        was_mapped = True
    if k.mapcount(page) == 0:
        rc = yield from move_to_new_page(k, a, new, page, mode)
    if was_mapped:
        yield from remove_migration_ptes(k, a, page, new if rc == MIGRATEPAGE_SUCCESS else page)
    k.unlock_page(a, new, "__unmap_and_move:unlock_newpage")
    k.unlock_page(a, page, "__unmap_and_move:unlock_page")
    yield
    return rc


def unmap_and_move(
    k: Kernel, a: Actor, page: int, force: bool, mode: int, direct: bool
) -> Path:
    """``unmap_and_move()`` (seed 002 line 1138): a new page (``compaction_alloc``); the
    page freed from under us (only the isolation reference left, nothing maps it) is
    done; afterwards the migrated page's isolation reference is dropped (it is freed),
    a failed one is put back unless it will be retried (``-EAGAIN``)."""
    new = k.alloc_page(a, 0, "compaction_alloc")
    if new < 0:
        return ENOMEM
    if k.ref_count(page) == 1 and k.mapcount(page) == 0 and k.test_flag(page, PG_anon):
        # "page was freed from under us. So we are done."
        folio_putback_lru(k, a, page, "unmap_and_move:put_page")
        k.put_page(a, new, "unmap_and_move:put_new_page")
        k.outcome("compact", "freed_under_us")
        return MIGRATEPAGE_SUCCESS
    rc = yield from __unmap_and_move(k, a, page, new, force, mode, direct)
    if rc == MIGRATEPAGE_SUCCESS:
        k.clear_flag(page, PG_lru)
        k.put_page(a, page, "unmap_and_move:put_page")  # frees the old page
        folio_putback_lru(k, a, new, "unmap_and_move:putback_newpage")
        k.outcome("compact", "migrated")
    else:
        if rc != EAGAIN:
            folio_putback_lru(k, a, page, "unmap_and_move:putback_lru_page")
        k.put_page(a, new, "unmap_and_move:put_new_page")
    return rc


def migrate_pages(k: Kernel, a: Actor, pages: list[int], mode: int, direct: bool) -> Path:
    """``migrate_pages()`` (seed 002 line 1362): up to ten passes, retrying ``-EAGAIN``
    pages, ``force`` from the third pass; what is left is put back
    (``putback_movable_pages``). Returns the number of pages not migrated."""
    todo = list(pages)
    failed = 0
    for npass in range(PASSES):
        if not todo:
            break
        retry: list[int] = []
        for page in todo:
            rc = yield from unmap_and_move(k, a, page, npass > 2, mode, direct)
            if rc == EAGAIN:
                retry.append(page)
            elif rc == ENOMEM:
                retry.append(page)
                failed += len(retry)
                for p in retry + todo[todo.index(page) + 1 :]:
                    folio_putback_lru(k, a, p, "putback_movable_pages")
                k.outcome("compact", "no_target_page")
                return failed
            elif rc != MIGRATEPAGE_SUCCESS:
                failed += 1
            yield
        todo = retry
    for page in todo:
        folio_putback_lru(k, a, page, "putback_movable_pages")
        k.outcome("compact", "retries_exhausted")
    return failed + len(todo)


def isolate_migratepages(k: Kernel, a: Actor, limit: int) -> Path:
    """``isolate_migratepages()`` / ``isolate_migratepages_block()`` (7.0
    mm/compaction.c): the anonymous and page-cache LRU pages of system memory, lowest pfn
    first, up to ``limit``. Compaction holds no reference on the pages it scans, so it
    takes one first (``folio_get_nontail_page``: ``get_page_unless_zero``, which fails
    on a page whose last reference is being dropped), then ``folio_test_clear_lru``
    (``isolate_fail_put`` when another isolation won); the reference it took is the
    isolation's. (``folio_isolate_lru``, which takes a reference after the flag, is for
    callers that hold one already.)"""
    lo, hi = k.lay.zone_range(0)
    out: list[int] = []
    for pfn in range(lo, hi):
        if len(out) >= limit:
            break
        f = k.flags(pfn)
        if not (f & PG_lru and f & (PG_anon | PG_pagecache)):
            continue
        if not k.get_page_unless_zero(a, pfn):  # folio_get_nontail_page
            k.count("compact_isolate_ref_zero")
        elif k.test_clear_flag(pfn, PG_lru):  # folio_test_clear_lru
            k.set_flag(pfn, PG_isolated)
            out.append(pfn)
        else:
            k.put_page(a, pfn, "isolate_migratepages_block:isolate_fail_put")
        yield
    return out


def compact_zone(k: Kernel, a: Actor, mode: int, direct: bool, limit: int) -> Path:
    """``compact_zone()`` of system memory: isolate, then :func:`migrate_pages`."""
    pages = yield from isolate_migratepages(k, a, limit)
    if not pages:
        return 0
    k.count("compact_isolated", len(pages))
    return (yield from migrate_pages(k, a, pages, mode, direct))


def op_compact(k: Kernel, a: Actor, mode: int, limit: int) -> Path:
    """kcompactd: compact system memory in ``mode`` (0 async, 1 sync-light, 2 sync),
    migrating at most ``limit`` pages."""
    r = yield from compact_zone(k, a, mode, False, limit)
    k.count("compact_runs")
    return r


def _free_frames(k: Kernel) -> int:
    return k.words.load(k.lay.ZONES + 0 * ZONE_WORDS + Z_FREE)


def op_readahead(k: Kernel, a: Actor, npages: int, watermark: int, limit: int) -> Path:
    """Readahead into the page cache: ``npages`` pages allocated one at a time, each
    locked and added to the LRU before the IO is queued; an allocation made while free
    memory is below ``watermark`` enters direct compaction (``MIGRATE_ASYNC``,
    ``PF_MEMALLOC``) with the earlier pages still locked. Then the IO completes (unlock)
    and the cache drops the pages.

    The model's page-cache pages are unmapped anonymous frames: compaction isolates them
    like any LRU page, and its refcount check refuses to move one the cache still holds.
    """
    held: list[int] = []
    for i in range(npages):
        if i and _free_frames(k) < watermark:
            yield from compact_zone(k, a, MIGRATE_ASYNC, True, limit)
            k.count("direct_compact")
        pfn = k.alloc_page(a, 0, "readahead:alloc")
        if pfn < 0:
            k.outcome("readahead", "alloc_failed")
            break
        k.trylock_page(a, pfn, "readahead:lock_new")  # __SetPageLocked on a fresh page
        k.set_flag(pfn, PG_anon | PG_lru | PG_uptodate)
        held.append(pfn)
        yield
    for pfn in held:
        k.unlock_page(a, pfn, "readahead:io_done_unlock")
        yield
    for pfn in held:
        k.clear_flag(pfn, PG_lru)  # delete_from_page_cache + lru removal
        k.put_page(a, pfn, "readahead:drop")
        yield
    return 0


register_op("compact", op_compact)
register_op("readahead", op_readahead)

__all__ = [
    "MIGRATE_ASYNC",
    "MIGRATE_SYNC",
    "MIGRATE_SYNC_LIGHT",
    "compact_zone",
    "migrate_pages",
    "move_to_new_page",
    "unmap_and_move",
]

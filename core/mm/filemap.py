"""A minimal page cache: ``mm/filemap.c`` lookups, buffered reads and writes, and the
mapping case of ``migrate_page_move_mapping()`` (``mm/migrate.c``, seed 002 lines
470-570) that compaction uses to move a page-cache page.

The model: ``geometry.files`` files of ``geometry.pages_per_file`` pages. Each file's
``mapping->i_pages`` is one row of the ``pcache`` table (slot = pfn + 1, or 0 when the
page is not cached), guarded for writers by the file's ``xa_lock`` word
(``pcache_lock``); lookups are lockless, as since 2.6.27's speculative page cache.
A cached page has ``PG_pagecache`` (``page->mapping``), ``F_PRIV`` = slot + 1
(``page->index``), is not anonymous, and the cache holds one reference on it, so
``migrate_page_move_mapping()`` expects 1 (isolation) + 1 (cache) references on an
unmapped page. The oracle's ``fshadow`` holds the last token written to each file page.

Paths (each a generator; every ``yield`` a preemption point):

- :func:`filemap_get_entry`: ``find_get_entry()`` (5.0) / ``filemap_get_entry()`` (6.x):
  ``xas_load``, ``get_page_unless_zero`` / ``folio_try_get``, then the re-check
  ``page != xas_reload(&xas)`` of the SLOT (not of a page-table entry);
- :func:`filemap_read`: ``generic_file_buffered_read()`` (5.0) / ``filemap_read()`` →
  ``filemap_get_pages()`` (6.x): look up (a batch of pages on 6.x), wait for a locked
  page that is not up to date, then copy an up-to-date page WITHOUT the page lock
  (``copy_page_to_iter``); the copy is checked against ``fshadow``: ``stale_read``;
- :func:`generic_perform_write`: ``grab_cache_page_write_begin()`` →
  ``pagecache_get_page(FGP_LOCK | FGP_WRITE | FGP_CREAT)``: lookup, ``lock_page``, the
  ``page->mapping != mapping`` re-check (truncated or migrated away: retry), then the
  copy of a fresh token, ``set_page_dirty``, unlock;
- :func:`add_to_page_cache` (``page_cache_sync_readahead`` / ``FGP_CREAT`` on a miss):
  a fresh locked page inserted under ``xa_lock``, ``-EEXIST`` when another got there first;
- :func:`migrate_page_move_mapping`: with the ``xa_lock`` held, the expected count and
  the slot are checked, the count is **frozen** (``page_ref_freeze``), the new page takes
  the mapping, index, dirty bit and the cache reference, the slot is switched, and the
  old page is unfrozen to one less reference. The catalog toggle
  ``move-mapping-no-freeze`` checks the count without freezing it: a lockless lookup's
  ``get_page_unless_zero`` lands in the window, its ``xas_reload`` still sees the old page
  (the switch has not happened), and the reader keeps copying from the old page after a
  newer write went to the new one.

A write cannot be lost that way: the writer locks the page it found, and migration holds
the old page's lock until it has cleared ``page->mapping`` (``move_to_new_page``), so the
writer's mapping re-check sends it back to the lookup. The no-lost-write invariant
(:func:`check_pagecache`) still checks every cached page against ``fshadow``.

Pages never leave the cache except by migration (no truncation, no reclaim of file
pages), so a miss only happens on a page never read or written: its "disk" content is 0.
"""

from __future__ import annotations

import numpy as np

from ..actors import register_op
from ..machine.errors import FailureKind, InvalidWorkload, InvariantViolation
from ..machine.kernel import Actor, Kernel, Path
from ..machine.layout import (
    F_DATA,
    F_FLAGS,
    F_PRIV,
    PG_allocated,
    PG_dirty,
    PG_lru,
    PG_pagecache,
    PG_uptodate,
)
from .memory import ACCESS_OK, cpu_access

EAGAIN = -11
EEXIST = -17
ENOMEM = -12
PAGEVEC = 15  # filemap_get_read_batch(): a folio_batch of PAGEVEC_SIZE (15)
# Variants whose buffered read looks up one page at a time (generic_file_buffered_read,
# before 5.11's filemap_get_pages batching).
_ONE_PAGE_AT_A_TIME = ("v5.0", "hmm-2017")


# --------------------------------------------------------------------------------------
# The XArray of one file, and page->mapping / page->index.
def xa_load(k: Kernel, f: int, index: int) -> int:
    """``xas_load()``: the page in the slot, or -1."""
    return k.words.load(k.s.pcache_word(f, index)) - 1


def page_mapping_index(k: Kernel, pfn: int) -> tuple[int, int]:
    """(file, index) of a page-cache page (``page->mapping``, ``page->index``), or (-1, -1)
    when its mapping is NULL (never cached, truncated or migrated away)."""
    if not k.test_flag(pfn, PG_pagecache):
        return -1, -1
    slot = k.words.load(k.fw(pfn, F_PRIV)) - 1
    ppf = k.geo.pages_per_file
    return slot // ppf, slot % ppf


def fshadow(k: Kernel, f: int, index: int) -> int:
    return k.words.load(k.s.fshadow_word(f, index))


def _check_file(k: Kernel, a: Actor, f: int, index: int, op: str) -> None:
    """A file page an operation names must exist in the geometry (bad workload input)."""
    g = k.geo
    if not (0 <= f < g.files and 0 <= index < g.pages_per_file):
        raise InvalidWorkload(
            f"{a.name}: {op} names file {f} page {index}; valid: files 0..{g.files - 1}, "
            f"pages 0..{g.pages_per_file - 1} (geometry.files, geometry.pages_per_file)"
        )


# --------------------------------------------------------------------------------------
# Lookup and insertion.
def filemap_get_entry(k: Kernel, a: Actor, f: int, index: int, site: str) -> Path:
    """``find_get_entry()`` (5.0, mm/filemap.c) / ``filemap_get_entry()`` (6.x): a
    lockless lookup. ``xas_load``; ``get_page_unless_zero`` (``folio_try_get``) fails
    on a free or frozen page: ``goto repeat``; then ``page != xas_reload(&xas)``: the
    slot changed under us, drop the reference and repeat. Returns the page with a
    reference, or -1 when the slot is empty."""
    while True:
        pfn = xa_load(k, f, index)
        if pfn < 0:
            return -1
        yield  # between xas_load and the speculative reference
        if not k.get_page_unless_zero(a, pfn):
            k.count("pagecache_get_speculative_failed")
            yield  # goto repeat
            continue
        yield  # between the speculative reference and xas_reload
        if xa_load(k, f, index) != pfn:
            k.put_page(a, pfn, site + ":xas_reload_put_page")
            k.count("pagecache_reload_retry")
            yield  # goto repeat
            continue
        return pfn


def add_to_page_cache(k: Kernel, a: Actor, f: int, index: int, site: str) -> Path:
    """``__page_cache_alloc()`` + ``add_to_page_cache_lru()`` (``__filemap_add_folio``):
    a fresh page, locked (``__SetPageLocked``), takes the cache reference and is stored
    in the empty slot under ``xa_lock``; ``-EEXIST`` (page freed) when the slot is taken.
    Returns the page, locked and not up to date, with the caller's (allocation)
    reference, or ``EEXIST`` / ``ENOMEM``."""
    pfn = k.alloc_page(a, 0, site + ":page_cache_alloc")
    if pfn < 0:
        return ENOMEM
    k.trylock_page(a, pfn, site + ":__SetPageLocked")  # a fresh page: never contended
    lockw = k.s.pcache_lock_word(f)
    yield from k.spin_lock(a, lockw, site + ":xa_lock")
    if xa_load(k, f, index) >= 0:
        k.spin_unlock(a, lockw, site + ":xa_unlock")
        k.unlock_page(a, pfn, site + ":unlock_page")
        k.put_page(a, pfn, site + ":put_page")  # frees it
        k.count("pagecache_add_eexist")
        return EEXIST
    k.get_page(a, pfn, site + ":cache_ref")
    k.words.store(k.fw(pfn, F_PRIV), f * k.geo.pages_per_file + index + 1)
    k.set_flag(pfn, PG_pagecache)
    k.words.store(k.s.pcache_word(f, index), pfn + 1)
    k.spin_unlock(a, lockw, site + ":xa_unlock")
    k.set_flag(pfn, PG_lru)  # lru_cache_add
    k.count("pagecache_add")
    yield
    return pfn


def page_cache_sync_readahead(k: Kernel, a: Actor, f: int, index: int) -> Path:
    """``page_cache_sync_readahead()`` → ``read_pages()`` for one missing page: insert it,
    read it (``->readpage``: the "disk" content, 0 for a page never cached), mark it up
    to date, unlock, and drop the allocation reference. Returns 0, ``EEXIST`` or
    ``ENOMEM``."""
    site = "page_cache_sync_readahead"
    pfn = yield from add_to_page_cache(k, a, f, index, site)
    if pfn < 0:
        return pfn
    yield  # the read IO
    k.set_data(pfn, 0)
    k.set_flag(pfn, PG_uptodate)
    k.unlock_page(a, pfn, site + ":unlock_page")  # end of IO
    k.put_page(a, pfn, site + ":put_page")
    return 0


# --------------------------------------------------------------------------------------
# Buffered read and write.
def _copy_page_to_iter(k: Kernel, a: Actor, pfn: int, f: int, index: int) -> None:
    """``copy_page_to_iter()`` from an up-to-date page, without the page lock; the oracle
    compares what is copied with the last token written to that file page:
    ``stale_read`` (in the parallel engine, only from a page the slot no longer names)."""
    k.touch(a, pfn, "copy_page_to_iter")
    got = k.data(pfn)
    want = fshadow(k, f, index)
    in_slot = xa_load(k, f, index)
    # A writer's token and fshadow are two stores: in the parallel engine (hw_lock set) a
    # reader can see between them, so there only a page the slot no longer names counts
    # (a reader's reference keeps its page in the slot unless the freeze is missing).
    # The deterministic engine never sees a write half done: any difference counts.
    racy = k.hw_lock is not None
    if got != want and not (racy and in_slot == pfn):
        raise k.fail(
            FailureKind.STALE_READ,
            f"{a.name} read file {f} page {index} from page {pfn} and got token {got:#x}, "
            f"but the last write put {want:#x} (in page {in_slot}, which the page cache "
            f"now names)",
            actors=[a],
            pages=[pfn, in_slot],
            sites=["filemap_read:copy_page_to_iter"],
            file=f,
            index=index,
        )
    k.count("file_read_copied")


def _filemap_get_page(k: Kernel, a: Actor, f: int, index: int) -> Path:
    """One page of ``filemap_get_pages()`` / the ``find_page:`` step of
    ``generic_file_buffered_read()``: look it up, read it in on a miss, and repeat."""
    site = "filemap_get_pages"
    while True:
        pfn = yield from filemap_get_entry(k, a, f, index, site)
        if pfn >= 0:
            return pfn
        rc = yield from page_cache_sync_readahead(k, a, f, index)
        if rc == ENOMEM:
            return ENOMEM
        yield  # goto find_page


def _filemap_update_page(k: Kernel, a: Actor, pfn: int) -> Path:
    """A page found not up to date (``filemap_update_page()`` / the
    ``page_not_up_to_date:`` path of 5.0): wait for its lock; if still not up to date,
    lock it and check ``page->mapping`` (truncated or migrated away: drop it, repeat the
    lookup). Returns True when the page is up to date and may be copied."""
    site = "filemap_update_page"
    yield from k.wait_on_page_locked(a, pfn, site + ":wait_on_page_locked")
    if k.test_flag(pfn, PG_uptodate):
        return True
    yield from k.lock_page(a, pfn, site + ":lock_page")
    if not k.test_flag(pfn, PG_pagecache):
        # "Did it get truncated before we got the lock?"
        k.unlock_page(a, pfn, site + ":unlock_page")
        k.put_page(a, pfn, site + ":put_page")
        k.count("file_read_mapping_gone")
        return False
    ok = k.test_flag(pfn, PG_uptodate)  # "Did somebody else fill it already?"
    k.unlock_page(a, pfn, site + ":unlock_page")
    if not ok:
        # ->readpage is not modelled: every cached page is read in before it unlocks.
        k.put_page(a, pfn, site + ":put_page")
        k.count("file_read_not_uptodate")
    return ok


def filemap_read(
    k: Kernel, a: Actor, f: int, start: int, npages: int, mm: int = -1, vpn: int = -1
) -> Path:
    """``filemap_read()`` (6.x; ``generic_file_buffered_read()`` in 5.0): read pages
    ``[start, start + npages)`` of file ``f``. 6.x looks up a batch of pages
    (``filemap_get_pages`` → ``filemap_get_read_batch``, references on all of them) and
    then copies them one by one; 5.0 looks up and copies one page at a time. Up-to-date
    pages are copied without the page lock.

    With a user buffer (``mm``, ``vpn`` >= 0), each copy is ``copy_page_to_iter`` →
    ``copy_to_user`` into that page: a store that faults when the buffer page is not
    mapped (``handle_mm_fault``, which may sleep), and only then reads the page-cache
    page. The store is the model's CPU store (``core/mm/memory.py`` ``cpu_access``: a fresh
    token in the buffer, the anonymous shadow follows it); the token read from the page
    cache is what the oracle checks. A buffer the fault path cannot serve is
    ``-EFAULT``: the read stops."""
    site = "filemap_read"
    for i in range(npages):
        _check_file(k, a, f, start + i, site)
    batch = 1 if k.variant_name in _ONE_PAGE_AT_A_TIME else PAGEVEC
    index = start
    end = start + npages
    while index < end:
        got: list[tuple[int, int]] = []
        while index < end and len(got) < batch:
            pfn = yield from _filemap_get_page(k, a, f, index)
            if pfn < 0:
                k.outcome("file_read", "no_memory")
                for p, _ in got:
                    k.put_page(a, p, site + ":put_page")
                return ENOMEM
            yield  # mark_page_accessed, readahead checks
            if not k.test_flag(pfn, PG_uptodate):
                ok = yield from _filemap_update_page(k, a, pfn)
                if not ok:
                    yield
                    continue  # the same index again
            got.append((pfn, index))
            index += 1
        for j, (pfn, idx) in enumerate(got):
            yield  # copying the earlier pages of the batch
            if mm >= 0:
                r = yield from cpu_access(k, a, mm, vpn, True)  # copy_to_user may fault
                if r != ACCESS_OK:
                    for p, _ in got[j:]:
                        k.put_page(a, p, site + ":put_page")
                    k.outcome("file_read", "efault")
                    return r
            _copy_page_to_iter(k, a, pfn, f, idx)
            k.put_page(a, pfn, site + ":put_page")
    k.outcome("file_read", "done")
    return 0


def grab_cache_page_write_begin(k: Kernel, a: Actor, f: int, index: int) -> Path:
    """``grab_cache_page_write_begin()`` → ``pagecache_get_page(FGP_LOCK | FGP_WRITE |
    FGP_CREAT)``: find the page and lock it; ``page->mapping != mapping`` after the lock
    (truncated, or migrated away: ``move_to_new_page`` cleared it) → unlock, put, repeat;
    a miss creates the page. Returns the page locked with a reference, or ``ENOMEM``."""
    site = "pagecache_get_page"
    while True:
        pfn = yield from filemap_get_entry(k, a, f, index, site)
        if pfn >= 0:
            yield from k.lock_page(a, pfn, site + ":lock_page")
            if page_mapping_index(k, pfn) != (f, index):
                k.unlock_page(a, pfn, site + ":unlock_page")
                k.put_page(a, pfn, site + ":put_page")
                k.count("file_write_mapping_changed")
                yield  # goto repeat
                continue
            return pfn
        pfn = yield from add_to_page_cache(k, a, f, index, site)
        if pfn == ENOMEM:
            return ENOMEM
        if pfn >= 0:
            return pfn
        yield  # -EEXIST: goto repeat


def generic_perform_write(k: Kernel, a: Actor, f: int, index: int) -> Path:
    """``generic_perform_write()`` of one whole page: ``->write_begin``
    (:func:`grab_cache_page_write_begin`), the copy of a fresh token into the locked page
    (the oracle's ``fshadow`` follows it), ``->write_end`` (``SetPageUptodate``,
    ``set_page_dirty``, ``unlock_page``, ``put_page``)."""
    site = "generic_perform_write"
    _check_file(k, a, f, index, site)
    pfn = yield from grab_cache_page_write_begin(k, a, f, index)
    if pfn < 0:
        k.outcome("file_write", "no_memory")
        return ENOMEM
    yield  # iov_iter_fault_in_readable, flush_dcache_page
    k.touch(a, pfn, site + ":copy_from_iter")
    tok = k.new_token(a)
    k.set_data(pfn, tok)
    k.words.store(k.s.fshadow_word(f, index), tok)
    k.set_flag(pfn, PG_uptodate | PG_dirty)
    k.unlock_page(a, pfn, site + ":unlock_page")
    k.put_page(a, pfn, site + ":put_page")
    k.outcome("file_write", "done")
    return 0


# --------------------------------------------------------------------------------------
# Migration of a page-cache page.
def migrate_page_move_mapping(k: Kernel, a: Actor, new: int, page: int, extra: int) -> Path:
    """``migrate_page_move_mapping()`` for a page with a mapping (seed 002 lines 470-570):
    under ``xas_lock_irq``, ``page_count(page) != expected_count || xas_load(&xas) !=
    page`` → ``-EAGAIN``; ``page_ref_freeze(page, expected_count)``; the new page takes
    ``index`` and ``mapping``, the cache reference (``page_ref_add``) and the dirty bit
    ("while page refs frozen and newpage not yet exposed"); ``xas_store(&xas,
    newpage)``; ``page_ref_unfreeze(page, expected_count - 1)`` ("Drop cache reference
    from old page by unfreezing to one less reference").

    Catalog ``move-mapping-no-freeze``: the count is checked but not frozen; a lockless
    lookup takes its reference in the window, and after the switch the old page's cache
    reference is dropped with ``put_page``.
    """
    site = "migrate_page_move_mapping"
    f, index = page_mapping_index(k, page)
    expected = 1 + extra + 1  # isolation (+ extra) + the page cache
    lockw = k.s.pcache_lock_word(f)
    yield from k.spin_lock(a, lockw, site + ":xas_lock_irq")
    if k.ref_count(page) != expected or xa_load(k, f, index) != page:
        k.spin_unlock(a, lockw, site + ":xas_unlock_irq")
        k.outcome("compact", "file_page_busy")
        return EAGAIN
    frozen = "move-mapping-no-freeze" not in k.bugs
    if frozen and not k.page_ref_freeze(page, expected):
        k.spin_unlock(a, lockw, site + ":xas_unlock_irq")
        k.outcome("compact", "file_page_busy")
        return EAGAIN
    yield  # "No turning back from here": frozen, nobody can take a reference
    k.words.store(k.fw(new, F_PRIV), k.words.load(k.fw(page, F_PRIV)))
    k.set_flag(new, PG_pagecache)
    k.get_page(a, new, site + ":page_ref_add")  # the cache reference
    if k.test_clear_flag(page, PG_dirty):
        k.set_flag(new, PG_dirty)
    k.words.store(k.s.pcache_word(f, index), new + 1)  # xas_store(&xas, newpage)
    if frozen:
        k.page_ref_unfreeze(page, expected - 1)
    else:
        k.put_page(a, page, site + ":put_page")  # drop the cache reference
    k.spin_unlock(a, lockw, site + ":xas_unlock")
    k.count("pagecache_migrated")
    return 0


def clear_page_mapping(k: Kernel, page: int) -> None:
    """``move_to_new_page()`` on success, old page still locked: "old pagecache
    page->mapping must be cleared before page is freed"."""
    k.clear_flag(page, PG_pagecache)
    k.words.store(k.fw(page, F_PRIV), 0)


# --------------------------------------------------------------------------------------
# Operations and oracles.
def op_file_read(
    k: Kernel, a: Actor, f: int, start: int, npages: int, mm: int = -1, vpn: int = -1
) -> Path:
    """A ``read(2)`` of ``npages`` pages of file ``f`` from page ``start``, into the user
    buffer at ``mm`` page ``vpn`` (-1: no user buffer, a kernel copy)."""
    return (yield from filemap_read(k, a, f, start, npages, mm, vpn))


def op_file_write(k: Kernel, a: Actor, f: int, index: int) -> Path:
    """A ``write(2)`` of page ``index`` of file ``f`` (a fresh token)."""
    return (yield from generic_perform_write(k, a, f, index))


register_op("file_read", op_file_read)
register_op("file_write", op_file_write)


def _cached(k: Kernel) -> tuple[np.ndarray, np.ndarray]:
    """(slot numbers, pfns) of every cached file page."""
    flat = k.s.pcache.reshape(-1)
    slots = np.flatnonzero(flat)
    return slots, flat[slots] - 1


def pagecache_refs(k: Kernel) -> np.ndarray:
    """Per frame: the page cache's references (1 for each slot that names the frame)."""
    n = k.s.frames.shape[0]
    _slots, pfns = _cached(k)
    return np.bincount(np.clip(pfns, 0, n - 1), minlength=n)[:n].astype(np.int64)


def _fail(k: Kernel, kind: FailureKind, msg: str, pages: list[int]) -> None:
    raise InvariantViolation(
        k.fail(kind, msg, pages=pages, sites=["global_invariants:pagecache"]).failure
    )


def check_pagecache(k: Kernel, final: bool) -> None:
    """Global, at quiet points: no ``xa_lock`` held; each slot names an allocated page
    whose ``mapping`` / ``index`` are that slot; every page with a mapping is in its slot;
    and no lost write: the page a slot names holds the last token written to it."""
    s = k.s
    if (s.pcache_lock != 0).any():
        f = int(np.flatnonzero(s.pcache_lock)[0])
        _fail(k, FailureKind.LOCK_BALANCE, f"xa_lock of file {f} held at a quiet point", [])
    fr = s.frames
    n = fr.shape[0]
    slots, pfns = _cached(k)
    ppf = k.geo.pages_per_file
    if slots.size:
        if ((pfns < 0) | (pfns >= n)).any():
            i = int(np.flatnonzero((pfns < 0) | (pfns >= n))[0])
            _fail(k, FailureKind.BAD_MAPPING, f"page-cache slot {int(slots[i])} names frame "
                  f"{int(pfns[i])} beyond the {n} frames", [])
        fl = fr[pfns, F_FLAGS]
        bad = ((fl & PG_allocated) == 0) | ((fl & PG_pagecache) == 0) | (
            fr[pfns, F_PRIV] != slots + 1
        )
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            p = int(pfns[i])
            _fail(k, FailureKind.BAD_MAPPING if fl[i] & PG_allocated else FailureKind.USE_AFTER_FREE,
                  f"file {int(slots[i]) // ppf} page {int(slots[i]) % ppf} is cached in frame "
                  f"{p}, which is not that page-cache page (flags {int(fl[i]):#x}, index "
                  f"{int(fr[p, F_PRIV]) - 1})", [p])
        want = s.fshadow.reshape(-1)[slots]
        lost = fr[pfns, F_DATA] != want
        if lost.any():
            i = int(np.flatnonzero(lost)[0])
            p = int(pfns[i])
            _fail(k, FailureKind.LOST_WRITE,
                  f"file {int(slots[i]) // ppf} page {int(slots[i]) % ppf} last had token "
                  f"{int(want[i]):#x} written, but its page-cache page {p} holds "
                  f"{int(fr[p, F_DATA]):#x}", [p])
    refs = pagecache_refs(k)
    stray = ((fr[:, F_FLAGS] & (PG_pagecache | PG_allocated)) == (PG_pagecache | PG_allocated)) & (
        refs == 0
    )
    if stray.any():
        p = int(np.flatnonzero(stray)[0])
        _fail(k, FailureKind.BAD_MAPPING, f"frame {p} has a page-cache mapping (index "
              f"{int(fr[p, F_PRIV]) - 1}) but no slot names it", [p])


def install(k: Kernel) -> None:
    """Plug the page cache's references into the refcount invariant
    (``k.extra_refs``) and :func:`check_pagecache` into the global checks."""
    prev = getattr(k, "extra_refs", None)
    if prev is None:
        k.extra_refs = lambda: pagecache_refs(k)
    else:
        k.extra_refs = lambda: prev() + pagecache_refs(k)
    if check_pagecache not in k.extra_checks:
        k.extra_checks.append(check_pagecache)


__all__ = [
    "add_to_page_cache",
    "check_pagecache",
    "clear_page_mapping",
    "filemap_get_entry",
    "filemap_read",
    "generic_perform_write",
    "grab_cache_page_write_begin",
    "install",
    "migrate_page_move_mapping",
    "pagecache_refs",
    "xa_load",
]

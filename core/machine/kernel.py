"""The kernel's primitives over model state: page locks, spinlocks, mmap_lock,
reference counts, allocators, TLBs, content and the oracle's shadow.

Kernel paths (``core/mm/memory.py``, ``core/mm/migrate_device.py``...) are generator functions
that take a :class:`Kernel` and an :class:`Actor`. They touch state only through the
methods here, so that:

- every read-modify-write is one call on the words backend (atomic in both engines);
- every lock operation is counted per call site (lock_stat's columns, see
  :class:`SiteStats`);
- a blocking wait is ``yield Block(...)``: the deterministic engine parks the actor until
  the lock word changes, the parallel engine spins with ``sched_yield`` backoff;
- the local checks (the kernel's ``VM_BUG_ON``) raise :class:`InvariantViolation` at the
  violating step, naming the actor, the page and the call site.

The primitives transcribe ``include/linux/pagemap.h`` (``folio_trylock``,
``folio_lock``, ``folio_unlock``, ``folio_wait_locked``), ``include/linux/page_ref.h``
(``get_page_unless_zero``, ``page_ref_freeze``, ``page_ref_unfreeze``),
``include/linux/mm.h`` (``get_page``, ``put_page``, ``folio_maybe_dma_pinned``) and
``include/linux/mmap_lock.h``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any

from .errors import Failure, FailureKind, InvariantViolation
from .layout import (
    A_PROGRESS,
    A_SITE,
    A_STATE,
    A_WAIT_MASK,
    A_WAIT_SITE,
    A_WAIT_WORD,
    ACTOR_BLOCKED,
    ACTOR_RUNNING,
    ACTOR_WORDS,
    AV_WORDS,
    F_DATA,
    F_GEN,
    F_MAP,
    F_OWNER,
    F_PIN,
    F_PRIV,
    F_REF,
    FRAME_WORDS,
    G_PROGRESS,
    GUP_PIN_COUNTING_BIAS,
    M_MMAP_LOCK,
    MM_WORDS,
    RWSEM_WRITER,
    STATIC_MASK,
    TLB_SLOTS,
    Z_CURSOR,
    Z_DEVICE,
    Z_DEVICE_COHERENT,
    Z_DEVICE_PRIVATE,
    Z_DEVID_MASK,
    Z_DEVID_SHIFT,
    Z_FREE,
    ZONE_WORDS,
    PG_allocated,
    PG_anon_exclusive,
    PG_locked,
)
from .state import State

# Indexes into a call site's statistics row (the columns of /proc/lock_stat).
(
    S_ACQUIRED,  # acquisitions
    S_CONTENDED,  # acquisitions that had to wait or whose trylock failed
    S_TRY,  # trylock attempts
    S_TRY_FAIL,  # trylock failures
    S_WAITS,  # blocking waits
    S_WAIT_TOTAL,
    S_WAIT_MIN,
    S_WAIT_MAX,
    S_HOLDS,
    S_HOLD_TOTAL,
    S_HOLD_MIN,
    S_HOLD_MAX,
) = range(12)
STAT_FIELDS = (
    "acquired",
    "contended",
    "trylock_attempts",
    "trylock_failures",
    "waits",
    "wait_total",
    "wait_min",
    "wait_max",
    "holds",
    "hold_total",
    "hold_min",
    "hold_max",
)
_NO_MIN = 1 << 62


def _new_stat() -> list[int]:
    return [0, 0, 0, 0, 0, 0, _NO_MIN, 0, 0, 0, _NO_MIN, 0]


def _add_time(st: list[int], first: int, t: int) -> None:
    """One timing into a stat row: count, total, min and max at ``first`` .. ``first + 3``
    (the waits at ``S_WAITS``, the holds at ``S_HOLDS``)."""
    st[first] += 1
    st[first + 1] += t
    if t < st[first + 2]:
        st[first + 2] = t
    if t > st[first + 3]:
        st[first + 3] = t


class Block:
    """A request to sleep until ``load(word) & mask == 0``: a blocking lock wait.

    Yielded by a kernel path; the engine carries it out. ``kind`` and ``target`` say what
    is waited on for reports (``"page"``, pfn), (``"ptl"``, word), (``"mmap"``, mm).
    """

    __slots__ = ("kind", "mask", "site", "target", "word")

    def __init__(self, word: int, mask: int, kind: str, target: int, site: str) -> None:
        self.word = word
        self.mask = mask
        self.kind = kind
        self.target = target
        self.site = site

    def __repr__(self) -> str:
        return f"Block({self.kind}:{self.target} at {self.site})"


class Actor:
    """One CPU, driver, pinner... : a generator program plus its bookkeeping.

    Attributes:
        id: index in the actor table (the scheduler's candidate key).
        name: unique readable name (``cpu0``, ``driver0``...).
        kind: the actor kind from the workload.
        held: lock word → call site, for every lock this actor holds now.
        site: the call site of the last lock operation (for reports).
    """

    __slots__ = (
        "held",
        "id",
        "idle",
        "kind",
        "name",
        "op",
        "ops_done",
        "params",
        "progress",
        "sigbus",
        "site",
        "steps_since_progress",
    )

    def __init__(self, aid: int, name: str, kind: str, params: dict[str, Any] | None = None):
        self.id = aid
        self.name = name
        self.kind = kind
        self.params = params or {}
        self.held: dict[int, str] = {}
        self.site = ""
        self.op = ""
        self.idle = True
        self.progress = 0
        self.ops_done = 0
        self.sigbus = 0
        self.steps_since_progress = 0

    def __repr__(self) -> str:
        return f"Actor({self.id}, {self.name})"


Path = Generator[Any, Any, Any]


class Kernel:
    """The model kernel: primitives over one :class:`State` for a set of actors.

    Args:
        state: the model state.
        variant: the protocol variant object (:func:`pagerace.core.variants.get_variant`):
            the primitives never import the paths, so the caller resolves the name.
        bugs: names of catalog bugs switched on.
        clock: returns the current time (engine steps, or ns in the parallel engine).
        faults: test-only fault injection switches (see ``core/faults.py``).
    """

    def __init__(
        self,
        state: State,
        variant: Any,
        bugs: Iterable[str] = (),
        clock: Callable[[], int] | None = None,
        faults: Iterable[str] = (),
    ) -> None:
        self.state = state
        self.s = state
        self.words = state.words
        self.lay = state.layout
        self.geo = state.geo
        self.variant_name: str = variant.name
        self.variant = variant
        self.bugs = frozenset(bugs)
        self.faults = frozenset(faults)
        self.clock: Callable[[], int] = clock if clock is not None else (lambda: 0)
        self.stats: dict[str, list[int]] = {}
        self.events: dict[str, int] = {}
        self._held_since: dict[int, tuple[str, int]] = {}
        self.actors: list[Actor] = []
        self.step_hook: Callable[[], int] = lambda: -1
        self.outcomes: dict[tuple[str, str], int] = {}
        self.devices: list[Any] = []
        # Optional paths other modules plug in (swap-in, ...): name → generator function.
        self.hooks: dict[str, Any] = {}
        # More global checks other modules add (pins, TLBs, swap...): f(kernel, final).
        self.extra_checks: list[Callable[[Kernel, bool], None]] = []
        # The parallel engine sets an object with ``acquire(mm, vpn)`` / ``release(mm,
        # vpn)`` that makes a CPU's hardware access (TLB lookup or page walk, then the
        # load or store) atomic against other accesses and TLB shootdowns of that page,
        # as the hardware is. None in the deterministic engine, where nothing else runs
        # between two preemption points.
        self.hw_lock: Any = None
        self.token_seq = 0
        # Cached bases
        self._F = self.lay.FRAMES
        self._PTE = self.lay.PTE
        self._A = self.lay.ACTOR
        self._ppm = self.geo.pages_per_mm

    # ------------------------------------------------------------------------------
    # Failure helpers
    def fail(
        self,
        kind: FailureKind,
        message: str,
        actors: Iterable[Actor] = (),
        pages: Iterable[int] = (),
        sites: Iterable[str] = (),
        locks: Iterable[str] = (),
        **details: Any,
    ) -> InvariantViolation:
        """Build the exception for a local check; the caller raises it."""
        return InvariantViolation(
            Failure(
                kind=kind,
                message=message,
                step=self.step_hook(),
                actors=tuple(a.name for a in actors),
                pages=tuple(int(p) for p in pages),
                sites=tuple(sites),
                locks=tuple(locks),
                details=details,
            )
        )

    def count(self, event: str, n: int = 1) -> None:
        """Count an event (reported per run)."""
        self.events[event] = self.events.get(event, 0) + n

    def outcome(self, attempt: str, reason: str, n: int = 1) -> None:
        """Count a migration outcome: ``attempt`` kind, ``reason`` (migrated, pinned...)."""
        key = (attempt, reason)
        self.outcomes[key] = self.outcomes.get(key, 0) + n

    def _stat(self, site: str) -> list[int]:
        st = self.stats.get(site)
        if st is None:
            st = self.stats[site] = _new_stat()
        return st

    def _acquired(self, a: Actor, word: int, site: str) -> None:
        a.held[word] = site
        a.site = site
        self._held_since[word] = (site, self.clock())

    def _released(self, a: Actor, word: int) -> None:
        a.held.pop(word, None)
        since = self._held_since.pop(word, None)
        if since is not None:
            site, t0 = since
            _add_time(self._stat(site), S_HOLDS, self.clock() - t0)

    def _waited(self, st: list[int], t0: int) -> None:
        _add_time(st, S_WAITS, self.clock() - t0)

    def _block(self, a: Actor, req: Block) -> None:
        w = self._A + a.id * ACTOR_WORDS
        words = self.words
        words.store(w + A_WAIT_WORD, req.word)
        words.store(w + A_WAIT_MASK, req.mask)
        words.store(w + A_STATE, ACTOR_BLOCKED)

    def _unblock(self, a: Actor) -> None:
        w = self._A + a.id * ACTOR_WORDS
        self.words.store(w + A_WAIT_MASK, 0)
        self.words.store(w + A_STATE, ACTOR_RUNNING)

    # ------------------------------------------------------------------------------
    # Page frames
    def fw(self, pfn: int, field: int) -> int:
        """Word index of a frame field."""
        return self._F + pfn * FRAME_WORDS + field

    def flags(self, pfn: int) -> int:
        return self.words.load(self._F + pfn * FRAME_WORDS)

    def test_flag(self, pfn: int, flag: int) -> bool:
        return bool(self.words.load(self._F + pfn * FRAME_WORDS) & flag)

    def set_flag(self, pfn: int, flag: int) -> None:
        self.words.fetch_or(self._F + pfn * FRAME_WORDS, flag)

    def clear_flag(self, pfn: int, flag: int) -> None:
        self.words.fetch_and(self._F + pfn * FRAME_WORDS, ~flag)

    def test_clear_flag(self, pfn: int, flag: int) -> bool:
        return bool(self.words.fetch_and(self._F + pfn * FRAME_WORDS, ~flag) & flag)

    def is_zone_device(self, pfn: int) -> bool:
        return bool(self.flags(pfn) & Z_DEVICE)

    def is_device_private(self, pfn: int) -> bool:
        return bool(self.flags(pfn) & Z_DEVICE_PRIVATE)

    def is_device_coherent(self, pfn: int) -> bool:
        return bool(self.flags(pfn) & Z_DEVICE_COHERENT)

    def device_of(self, pfn: int) -> int:
        """The device (pgmap owner) of a ZONE_DEVICE frame, -1 for system RAM."""
        f = self.flags(pfn)
        return (f & Z_DEVID_MASK) >> Z_DEVID_SHIFT if f & Z_DEVICE else -1

    def sigbus_expected(self) -> bool:
        """SIGBUS is a failure unless the workload injects errors that can cause it."""
        return bool(self.faults & {"copy_error", "alloc_fail_sys"}) or any(
            getattr(d, "fail_alloc", 0) or getattr(d, "copy_error", 0) for d in self.devices
        )

    def variant_checks_fault_page_locked(self) -> bool:
        return self.variant.checks_fault_page_locked(self)

    def device_for(self, pfn: int) -> Any:
        """The driver object of the device that owns ``pfn`` (its ``dev_pagemap_ops``)."""
        return self.devices[self.device_of(pfn)]

    def touch(self, a: Actor, pfn: int, site: str) -> None:
        """Check that ``pfn`` is allocated before ``a`` uses it (use-after-free oracle)."""
        if not self.words.load(self._F + pfn * FRAME_WORDS) & PG_allocated:
            raise self.fail(
                FailureKind.USE_AFTER_FREE,
                f"{a.name} touched page {pfn} at {site} after it was freed "
                f"(refcount {self.words.load(self.fw(pfn, F_REF))})",
                actors=[a],
                pages=[pfn],
                sites=[site],
            )

    # -- reference counts (include/linux/page_ref.h, mm.h) -----------------------------
    def ref_count(self, pfn: int) -> int:
        return self.words.load(self._F + pfn * FRAME_WORDS + F_REF)

    def mapcount(self, pfn: int) -> int:
        return self.words.load(self._F + pfn * FRAME_WORDS + F_MAP)

    def get_page(self, a: Actor, pfn: int, site: str) -> None:
        """``get_page()`` / ``folio_get()``: the caller must already hold a reference."""
        self.touch(a, pfn, site)
        old = self.words.fetch_add(self._F + pfn * FRAME_WORDS + F_REF, 1)
        if old <= 0:
            raise self.fail(
                FailureKind.BUG_ON,
                f"{a.name} took a reference on page {pfn} at {site} with refcount {old} "
                "(VM_BUG_ON_FOLIO(folio_ref_zero_or_close_to_overflow))",
                actors=[a],
                pages=[pfn],
                sites=[site],
            )

    def get_page_unless_zero(self, a: Actor, pfn: int) -> bool:
        """``get_page_unless_zero()``: take a reference unless the page is free or frozen."""
        w = self._F + pfn * FRAME_WORDS + F_REF
        words = self.words
        while True:
            old = words.load(w)
            if old <= 0:
                return False
            if words.cas(w, old, old + 1):
                return True

    def put_page(self, a: Actor, pfn: int, site: str, refs: int = 1) -> None:
        """``put_page()`` / ``folio_put_refs()``: drop ``refs`` references (a pin's
        GUP_PIN_COUNTING_BIAS for ``unpin_user_page``), free the page at zero."""
        self.touch(a, pfn, site)
        old = self.words.fetch_add(self._F + pfn * FRAME_WORDS + F_REF, -refs)
        if old < refs:
            raise self.fail(
                FailureKind.REFCOUNT_UNDERFLOW,
                f"{a.name} dropped {refs} reference{'s' if refs > 1 else ''} on page {pfn} "
                f"at {site} and the refcount went to {old - refs}",
                actors=[a],
                pages=[pfn],
                sites=[site],
            )
        if old == refs:
            self.free_page(a, pfn, site)

    def page_ref_freeze(self, pfn: int, count: int) -> bool:
        """``page_ref_freeze()``: refcount ``count`` → 0 atomically, or fail."""
        return self.words.cas(self._F + pfn * FRAME_WORDS + F_REF, count, 0)

    def page_ref_unfreeze(self, pfn: int, count: int) -> None:
        """``page_ref_unfreeze()``: 0 → ``count``."""
        self.words.store(self._F + pfn * FRAME_WORDS + F_REF, count)

    def mapcount_add(self, pfn: int, n: int) -> int:
        """``folio_add_*_rmap`` (+n) / ``folio_remove_rmap_pte`` (-n); returns the new value."""
        return self.words.fetch_add(self._F + pfn * FRAME_WORDS + F_MAP, n) + n

    def maybe_dma_pinned(self, pfn: int) -> bool:
        """``folio_maybe_dma_pinned()`` for a small folio: refcount >= the pin bias."""
        return self.ref_count(pfn) >= GUP_PIN_COUNTING_BIAS

    def pincount(self, pfn: int) -> int:
        return self.words.load(self._F + pfn * FRAME_WORDS + F_PIN)

    # -- allocator (mm/page_alloc.c; memremap_pages free lists for device memory) ------
    def alloc_page(self, a: Actor, zone: int, site: str) -> int:
        """Allocate a frame from ``zone`` (0: system RAM, 1+d: device d), or -1.

        The new page has refcount 1, is allocated and up to date, content 0. A device
        page comes back as ``zone_device_page_init()`` leaves it.
        """
        if zone == 0 and "alloc_fail_sys" in self.faults:
            return -1
        words = self.words
        zw = self.lay.ZONES + zone * ZONE_WORDS
        if words.load(zw + Z_FREE) <= 0:
            return -1
        lo, hi = self.lay.zone_range(zone)
        n = hi - lo
        start = words.fetch_add(zw + Z_CURSOR, 1) % n
        F = self._F
        for k in range(n):
            pfn = lo + (start + k) % n
            fl = F + pfn * FRAME_WORDS
            cur = words.load(fl)
            if cur & PG_allocated:
                continue
            if words.cas(fl, cur, (cur & STATIC_MASK) | PG_allocated):
                words.fetch_add(zw + Z_FREE, -1)
                words.store(fl + F_MAP, 0)
                words.store(fl + F_PIN, 0)
                words.store(fl + F_OWNER, 0)
                words.store(fl + F_DATA, 0)
                words.store(fl + F_PRIV, 0)
                words.fetch_add(fl + F_GEN, 1)
                # The refcount goes from 0 to 1 last (set_page_count() in prep_new_page /
                # zone_device_page_init): until then get_page_unless_zero() fails, so no
                # speculative user (an eviction scan) can see a half-initialised page.
                words.store(fl + F_REF, 1)
                self.count(f"alloc_zone{zone}")
                return pfn
        return -1

    def free_page(self, a: Actor, pfn: int, site: str) -> None:
        """The page's refcount reached zero: return it to its zone
        (``free_unref_page`` / ``free_zone_device_folio`` → the driver's ``folio_free``)."""
        words = self.words
        fl = self._F + pfn * FRAME_WORDS
        f = words.load(fl)
        if f & PG_locked:
            raise self.fail(
                FailureKind.BUG_ON,
                f"page {pfn} freed at {site} while locked by "
                f"actor {words.load(fl + F_OWNER) - 1} (VM_BUG_ON_FOLIO(folio_test_locked))",
                actors=[a],
                pages=[pfn],
                sites=[site],
            )
        m = words.load(fl + F_MAP)
        if m != 0:
            raise self.fail(
                FailureKind.BUG_ON,
                f"page {pfn} freed at {site} with mapcount {m} (bad_page: nonzero mapcount)",
                actors=[a],
                pages=[pfn],
                sites=[site],
            )
        if f & Z_DEVICE and self.devices:
            dev = (f & Z_DEVID_MASK) >> Z_DEVID_SHIFT
            if dev < len(self.devices):
                self.devices[dev].folio_free(self, a, pfn)
        words.store(fl + F_DATA, 0)
        words.store(fl + F_PRIV, 0)
        words.store(self.lay.MAPPING + pfn, 0)  # free_pages_prepare: page->mapping = NULL
        words.fetch_add(fl + F_GEN, 1)
        # Publishing the frame as free comes last: from here alloc_page may claim it.
        words.store(fl, f & STATIC_MASK)
        zone = self.lay.zone_of(pfn)
        words.fetch_add(self.lay.ZONES + zone * ZONE_WORDS + Z_FREE, 1)
        self.count(f"free_zone{zone}")

    # -- page lock (include/linux/pagemap.h, mm/filemap.c) ------------------------------
    def trylock_page(self, a: Actor, pfn: int, site: str) -> bool:
        """``folio_trylock()``."""
        self.touch(a, pfn, site)
        st = self._stat(site)
        st[S_TRY] += 1
        fl = self._F + pfn * FRAME_WORDS
        if self.words.fetch_or(fl, PG_locked) & PG_locked:
            st[S_TRY_FAIL] += 1
            st[S_CONTENDED] += 1
            return False
        self.words.store(fl + F_OWNER, a.id + 1)
        st[S_ACQUIRED] += 1
        self._acquired(a, fl, site)
        return True

    def lock_page(self, a: Actor, pfn: int, site: str) -> Path:
        """``folio_lock()``: sleep until the page lock is ours."""
        self.touch(a, pfn, site)
        st = self._stat(site)
        fl = self._F + pfn * FRAME_WORDS
        words = self.words
        if words.fetch_or(fl, PG_locked) & PG_locked:
            if words.load(fl + F_OWNER) == a.id + 1 and a.held.get(fl) is not None:
                # The kernel would sleep forever on its own lock; the deadlock finder
                # reports it as a cycle of one.
                pass
            st[S_CONTENDED] += 1
            t0 = self.clock()
            req = Block(fl, PG_locked, "page", pfn, site)
            while True:
                self._block(a, req)
                yield req
                self._unblock(a)
                self.touch(a, pfn, site)
                if not words.fetch_or(fl, PG_locked) & PG_locked:
                    break
            self._waited(st, t0)
        words.store(fl + F_OWNER, a.id + 1)
        st[S_ACQUIRED] += 1
        self._acquired(a, fl, site)

    def unlock_page(self, a: Actor, pfn: int, site: str) -> None:
        """``folio_unlock()``, with the ownership check the model adds."""
        fl = self._F + pfn * FRAME_WORDS
        words = self.words
        owner = words.load(fl + F_OWNER)
        f = words.load(fl)
        if not f & PG_locked or owner != a.id + 1:
            who = "nobody" if not f & PG_locked else f"actor {owner - 1}"
            raise self.fail(
                FailureKind.BAD_UNLOCK,
                f"{a.name} unlocked page {pfn} at {site} but the lock is held by {who} "
                "(VM_BUG_ON_FOLIO(!folio_test_locked))",
                actors=[a],
                pages=[pfn],
                sites=[site],
                locks=[f"page:{pfn}"],
            )
        words.store(fl + F_OWNER, 0)
        self._released(a, fl)
        words.fetch_and(fl, ~PG_locked)

    def page_locked(self, pfn: int) -> bool:
        return bool(self.words.load(self._F + pfn * FRAME_WORDS) & PG_locked)

    def page_lock_owner(self, pfn: int) -> int:
        return self.words.load(self._F + pfn * FRAME_WORDS + F_OWNER) - 1

    def wait_on_page_locked(self, a: Actor, pfn: int, site: str) -> Path:
        """``folio_wait_locked()``: sleep until the page is unlocked, without taking it."""
        fl = self._F + pfn * FRAME_WORDS
        if self.words.load(fl) & PG_locked:
            st = self._stat(site)
            st[S_CONTENDED] += 1
            t0 = self.clock()
            req = Block(fl, PG_locked, "page", pfn, site)
            self._block(a, req)
            yield req
            self._unblock(a)
            self._waited(st, t0)

    # -- page-table lock (spinlock_t) ----------------------------------------------------
    def ptl_word(self, mm: int, vpn: int) -> int:
        return self.s.ptl_word(mm, vpn)

    def spin_lock(self, a: Actor, word: int, site: str) -> Path:
        """``spin_lock()`` on a page-table lock word (0 free, owner + 1 held)."""
        st = self._stat(site)
        words = self.words
        me = a.id + 1
        if not words.cas(word, 0, me):
            st[S_CONTENDED] += 1
            t0 = self.clock()
            req = Block(word, -1, "ptl", word, site)
            while True:
                self._block(a, req)
                yield req
                self._unblock(a)
                if words.cas(word, 0, me):
                    break
            self._waited(st, t0)
        st[S_ACQUIRED] += 1
        self._acquired(a, word, site)

    def spin_unlock(self, a: Actor, word: int, site: str) -> None:
        owner = self.words.xchg(word, 0)
        if owner != a.id + 1:
            raise self.fail(
                FailureKind.BAD_UNLOCK,
                f"{a.name} released page-table lock word {word} at {site} held by "
                f"{'nobody' if owner == 0 else f'actor {owner - 1}'}",
                actors=[a],
                sites=[site],
                locks=[self.lock_name(word)],
            )
        self._released(a, word)

    # -- mmap_lock (kernel/locking/rwsem.c) -----------------------------------------------
    def mmap_word(self, mm: int) -> int:
        return self.lay.MM + mm * MM_WORDS + M_MMAP_LOCK

    def mmap_read_lock(self, a: Actor, mm: int, site: str) -> Path:
        """``mmap_read_lock()``: readers share; a writer excludes them."""
        w = self.mmap_word(mm)
        words = self.words
        st = self._stat(site)
        t0 = -1
        while True:
            cur = words.load(w)
            if not cur & RWSEM_WRITER and words.cas(w, cur, cur + 1):
                break
            if t0 < 0:
                st[S_CONTENDED] += 1
                t0 = self.clock()
            req = Block(w, RWSEM_WRITER, "mmap", mm, site)
            self._block(a, req)
            yield req
            self._unblock(a)
        if t0 >= 0:
            self._waited(st, t0)
        st[S_ACQUIRED] += 1
        a.held[w] = site

    def mmap_read_unlock(self, a: Actor, mm: int, site: str) -> None:
        w = self.mmap_word(mm)
        old = self.words.fetch_add(w, -1)
        if old & (RWSEM_WRITER - 1) == 0:
            raise self.fail(
                FailureKind.BAD_UNLOCK,
                f"{a.name} released mmap_lock of mm {mm} for read at {site} without holding it",
                actors=[a],
                sites=[site],
                locks=[f"mmap:{mm}"],
            )
        a.held.pop(w, None)

    def mmap_write_lock(self, a: Actor, mm: int, site: str) -> Path:
        """``mmap_write_lock()``."""
        w = self.mmap_word(mm)
        words = self.words
        st = self._stat(site)
        t0 = -1
        while not words.cas(w, 0, RWSEM_WRITER | 0):
            if t0 < 0:
                st[S_CONTENDED] += 1
                t0 = self.clock()
            req = Block(w, -1, "mmap", mm, site)
            self._block(a, req)
            yield req
            self._unblock(a)
        if t0 >= 0:
            self._waited(st, t0)
        st[S_ACQUIRED] += 1
        a.held[w] = site
        words.store(self.lay.MM + mm * MM_WORDS + M_MMAP_LOCK + 3, a.id + 1)

    def mmap_write_unlock(self, a: Actor, mm: int, site: str) -> None:
        w = self.mmap_word(mm)
        owner_w = self.lay.MM + mm * MM_WORDS + M_MMAP_LOCK + 3
        # Only the writer may release: another actor's up_write is DEBUG_RWSEMS' warning.
        if self.words.load(owner_w) != a.id + 1 or not self.words.cas(w, RWSEM_WRITER, 0):
            raise self.fail(
                FailureKind.BAD_UNLOCK,
                f"{a.name} released mmap_lock of mm {mm} for write at {site} without holding it",
                actors=[a],
                sites=[site],
                locks=[f"mmap:{mm}"],
            )
        self.words.store(owner_w, 0)
        a.held.pop(w, None)

    # -- page-table entries -----------------------------------------------------------------
    def pte_w(self, mm: int, vpn: int) -> int:
        return self._PTE + mm * self._ppm + vpn

    def pte_read(self, mm: int, vpn: int) -> int:
        """``ptep_get()`` (READ_ONCE of the entry)."""
        return self.words.load(self._PTE + mm * self._ppm + vpn)

    def set_pte(self, mm: int, vpn: int, pte: int) -> None:
        """``set_pte_at()``."""
        self.words.store(self._PTE + mm * self._ppm + vpn, pte)

    def ptep_get_and_clear(self, mm: int, vpn: int) -> int:
        """``ptep_get_and_clear()``: atomically read and clear the entry."""
        return self.words.xchg(self._PTE + mm * self._ppm + vpn, 0)

    # -- per-CPU TLB (arch/x86/mm/tlb.c) ------------------------------------------------
    def _tlb_slot(self, a: Actor, mm: int, vpn: int) -> int:
        key = mm * self._ppm + vpn
        return self.lay.TLB + (a.id * TLB_SLOTS + key % TLB_SLOTS) * 2

    def tlb_lookup(self, a: Actor, mm: int, vpn: int) -> int:
        """The cached translation ``(pfn << 1) | writable`` of ``a``, or -1 on a miss."""
        w = self._tlb_slot(a, mm, vpn)
        if self.words.load(w) == mm * self._ppm + vpn + 1:
            return self.words.load(w + 1)
        return -1

    def tlb_fill(self, a: Actor, mm: int, vpn: int, pfn: int, writable: bool) -> None:
        w = self._tlb_slot(a, mm, vpn)
        self.words.store(w, mm * self._ppm + vpn + 1)
        self.words.store(w + 1, (pfn << 1) | int(writable))

    def flush_tlb_range(self, mm: int, lo: int, hi: int) -> None:
        """``flush_tlb_range()``: drop the translations of ``[lo, hi)`` on every CPU."""
        if "no_tlb_flush" in self.faults:
            return
        words = self.words
        base = mm * self._ppm
        hw = self.hw_lock  # the shootdown waits for an access in flight (the IPI)
        for vpn in range(lo, hi):
            if hw is not None:
                hw.acquire(mm, vpn)
            key = base + vpn
            for aid in range(self.geo.actors):
                w = self.lay.TLB + (aid * TLB_SLOTS + key % TLB_SLOTS) * 2
                if words.load(w) == key + 1:
                    words.store(w, 0)
            if hw is not None:
                hw.release(mm, vpn)

    # -- content and the oracle's shadow ------------------------------------------------
    def new_token(self, a: Actor) -> int:
        """A fresh, never-zero content token for a write by ``a``."""
        self.token_seq += 1
        return ((a.id + 1) << 40) | self.token_seq

    def data(self, pfn: int) -> int:
        return self.words.load(self._F + pfn * FRAME_WORDS + F_DATA)

    def set_data(self, pfn: int, v: int) -> None:
        self.words.store(self._F + pfn * FRAME_WORDS + F_DATA, v)

    def shadow_w(self, mm: int, vpn: int) -> int:
        return self.lay.SHADOW + mm * self._ppm + vpn

    def shadow(self, mm: int, vpn: int) -> int:
        return self.words.load(self.lay.SHADOW + mm * self._ppm + vpn)

    def set_shadow(self, mm: int, vpn: int, v: int) -> None:
        self.words.store(self.lay.SHADOW + mm * self._ppm + vpn, v)

    # -- progress ----------------------------------------------------------------------
    def progress(self, a: Actor) -> None:
        """The actor finished an operation: forward progress for the livelock oracle."""
        a.progress += 1
        a.steps_since_progress = 0
        self.words.fetch_add(self._A + a.id * ACTOR_WORDS + A_PROGRESS, 1)
        self.words.fetch_add(self.lay.GLOB + G_PROGRESS, 1)

    def set_site(self, a: Actor, site: str, code: int = 0) -> None:
        a.site = site
        self.words.store(self._A + a.id * ACTOR_WORDS + A_SITE, code)

    # -- naming, for reports --------------------------------------------------------------
    def lock_name(self, word: int) -> str:
        """``page:<pfn>``, ``ptl:<mm>:<table>`` or ``mmap:<mm>`` for a lock word."""
        lay, g = self.lay, self.geo
        if lay.FRAMES <= word < lay.FRAMES + g.frames * FRAME_WORDS:
            return f"page:{(word - lay.FRAMES) // FRAME_WORDS}"
        if lay.PTL <= word < lay.PTL + g.mms * g.tables_per_mm:
            off = word - lay.PTL
            return f"ptl:{off // g.tables_per_mm}:{off % g.tables_per_mm}"
        if lay.MM <= word < lay.MM + g.mms * MM_WORDS:
            return f"mmap:{(word - lay.MM) // MM_WORDS}"
        if lay.ANON_VMA <= word < lay.ANON_VMA + g.mms * AV_WORDS:
            return f"anon_vma:{(word - lay.ANON_VMA) // AV_WORDS}"
        return f"word:{word}"

    def lock_owner(self, word: int) -> int:
        """The actor that holds the lock at ``word``, or -1 when unknown or free."""
        lay, g = self.lay, self.geo
        words = self.words
        if lay.FRAMES <= word < lay.FRAMES + g.frames * FRAME_WORDS:
            if words.load(word) & PG_locked:
                return words.load(word + F_OWNER) - 1
            return -1
        if lay.PTL <= word < lay.PTL + g.mms * g.tables_per_mm:
            return words.load(word) - 1
        if lay.MM <= word < lay.MM + g.mms * MM_WORDS:
            if words.load(word) & RWSEM_WRITER:
                return words.load(word + 3) - 1
            # readers are anonymous, as in the kernel; report the first actor holding it
            for act in self.actors:
                if word in act.held:
                    return act.id
        if lay.ANON_VMA <= word < lay.ANON_VMA + g.mms * AV_WORDS:
            if words.load(word) & RWSEM_WRITER:
                return words.load(word + 1) - 1  # AV_OWNER
            for act in self.actors:
                if word in act.held:
                    return act.id
        return -1

    def waits_for(self, a: Actor) -> tuple[int, int]:
        """(word, mask) ``a`` is blocked on, from the shared actor table."""
        w = self._A + a.id * ACTOR_WORDS
        return self.words.load(w + A_WAIT_WORD), self.words.load(w + A_WAIT_MASK)

    def anon_exclusive(self, pfn: int) -> bool:
        return self.test_flag(pfn, PG_anon_exclusive)


__all__ = [
    "A_WAIT_SITE",
    "STAT_FIELDS",
    "Actor",
    "Block",
    "Kernel",
    "Path",
]

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

import operator
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

import numpy as np

from .errors import Failure, FailureKind, InvariantViolation
from .layout import (
    A_PROGRESS,
    A_SITE,
    A_STATE,
    A_WAIT_LOCK,
    A_WAIT_MASK,
    A_WAIT_SITE,
    A_WAIT_WORD,
    A_WQ_FLAGS,
    A_WQ_LOCK,
    A_WQ_SEQ,
    ACTOR_BLOCKED,
    ACTOR_RUNNING,
    ACTOR_WORDS,
    AV_WORDS,
    CPU_IDLE,
    DC_LOCK,
    DC_WORDS,
    DM_MUTEX,
    DM_WORDS,
    F_DATA,
    F_GEN,
    F_MAP,
    F_OWNER,
    F_PIN,
    F_PRIV,
    F_REF,
    FOLIO_BATCH_SIZE,
    FRAME_WORDS,
    G_PROGRESS,
    G_WQ_SEQ,
    GUP_PIN_COUNTING_BIAS,
    LRU_BATCH_WORDS,
    M_MMAP_LOCK,
    MM_WORDS,
    MN_LOCK,
    MN_WORDS,
    RWSEM_FLAG_WAITERS,
    RWSEM_LOCK_MASK,
    RWSEM_READER_MASK,
    RWSEM_WRITER,
    STATIC_MASK,
    TLB_SLOTS,
    WORK_LRU_DRAIN,
    WQ_CUSTOM,
    WQ_DONE,
    WQ_EXCLUSIVE,
    WQ_RWSEM_READ,
    WQ_RWSEM_WRITE,
    WQ_SLEEP,
    WQ_WOKEN,
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
    PG_head,
    PG_locked,
    PG_lru,
    PG_waiters,
)
from .state import State
from .words import kernel_fields as _kernel_fields

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


def merge_stat(into: list[int], st: Sequence[int]) -> None:
    """Add one call site's statistics row ``st`` into ``into`` (both ``_new_stat``
    rows, of other runs or other workers): counts and totals add up, the minima take the
    smaller (``_NO_MIN``: no wait or hold yet), the maxima the larger. Written out field
    by field (a hunt merges ~15 sites a run): acquired, contended, trylock attempts and
    failures, then the waits' and the holds' count, total, min and max (as _add_time
    writes them); tests/unit/test_output.py's by-name reference checks the indexes."""
    into[0] += st[0]
    into[1] += st[1]
    into[2] += st[2]
    into[3] += st[3]
    into[4] += st[4]  # S_WAITS
    into[5] += st[5]
    if st[6] < into[6]:
        into[6] = st[6]
    if st[7] > into[7]:
        into[7] = st[7]
    into[8] += st[8]  # S_HOLDS
    into[9] += st[9]
    if st[10] < into[10]:
        into[10] = st[10]
    if st[11] > into[11]:
        into[11] = st[11]


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
    ``lock`` is the lock word waited for (the waits-for graph follows its owner): the
    lock word itself for a spinning wait, while a sleeper on a wait queue parks on its
    own entry (``word`` = its A_WQ_FLAGS, ``mask`` = WQ_SLEEP) until a waker clears it.
    """

    __slots__ = ("kind", "lock", "mask", "site", "target", "word")

    def __init__(
        self, word: int, mask: int, kind: str, target: int, site: str, lock: int = -1
    ) -> None:
        self.word = word
        self.mask = mask
        self.kind = kind
        self.target = target
        self.site = site
        self.lock = word if lock < 0 else lock

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
        "cpu",
        "daemon",
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
        self.cpu = aid  # the CPU it runs on: its own unless the workload binds CPUs
        self.daemon = False  # a kworker: the run ends when every other actor is done

    def __repr__(self) -> str:
        return f"Actor({self.id}, {self.name})"


class _Resched:
    """The marker a path yields at ``might_sleep()`` under ``PREEMPT_VOLUNTARY``: a
    preemption point where the CPU may switch to another task."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "RESCHED"


RESCHED = _Resched()
PREEMPTION_MODELS = ("full", "voluntary", "none")


Path = Generator[Any, Any, Any]



def _done() -> Path:
    """A path that has ended: what the C ``spin_lock`` returns for a lock it took at
    once, so that ``yield from k.spin_lock(...)`` costs no generator of its own."""
    return
    yield  # pragma: no cover - never reached: makes this a generator function


_DONE = _done()
for _ in _DONE:  # pragma: no cover - exhausts it
    pass


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
        self.lay = state.layout
        self.geo = state.geo
        self.use_words(state.words)
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
        # References the global refcount check expects beyond mappings, pins and the swap
        # cache, per frame; other modules chain theirs on (core/mm/filemap.py).
        self.extra_refs: Callable[[], Any] = self.lru_batch_refs
        # The parallel engine sets an object with ``acquire(mm, vpn)`` / ``release(mm,
        # vpn)`` that makes a CPU's hardware access (TLB lookup or page walk, then the
        # load or store) atomic against other accesses and TLB shootdowns of that page,
        # as the hardware is. None in the deterministic engine, where nothing else runs
        # between two preemption points.
        self.hw_lock: Any = None
        # The wait queues' lock (G_WQ_LOCK) for the parallel engine: an object with
        # ``acquire()`` / ``release()``, held across a few lines, never a preemption
        # point. None in the deterministic engine.
        self.wq_lock: Any = None
        # Which page wait-queue code the variant's kernel has: 5.9+ (folio_wait_bit_common,
        # lock hand-off) or 4.14-5.8 (wait_on_page_bit_common).
        self.page_wait_59: bool = getattr(variant, "page_wait", "5.9") == "5.9"
        # sysctl_page_lock_unfairness (mm/filemap.c, default 5): the rounds an exclusive
        # page-lock waiter may lose before the unlock hands the lock over.
        self.page_lock_unfairness: int = 5
        # The CPU model (workload keys ``cpus`` and ``preemption``): 0 CPUs means none
        # (each actor is its own CPU, lru_add_drain_all drains from the caller); with
        # CPUs, each has a kworker actor that runs the work queued on it.
        self.cpus: int = 0
        self.preemption: str = "full"
        self.token_seq = 0
        # Cached bases
        self._F = self.lay.FRAMES
        self._PTE = self.lay.PTE
        self._A = self.lay.ACTOR
        self._ppm = self.geo.pages_per_mm

    # The one-word accessors that :meth:`use_words` replaces by the C extension's.
    _FAST = (
        "flags", "test_flag", "set_flag", "clear_flag", "test_clear_flag", "is_zone_device",
        "is_device_private", "page_locked", "ref_count", "mapcount", "pincount", "data",
        "set_data", "mapcount_add", "pte_read", "set_pte", "ptep_get_and_clear", "ptl_word",
        "tlb_lookup", "tlb_fill",
    )
    # The lock and reference primitives :meth:`use_words` replaces by the C extension's
    # (``KernelFields.bind``): the fast path in one call, the rest in the Python methods.
    _FAST_BOUND = (
        "spin_lock", "spin_unlock", "get_page", "put_page", "trylock_page", "unlock_page",
    )

    def use_words(self, words: Any) -> None:
        """Run the primitives over ``words`` from now on (the state's backend, or the
        dependency relation's recorder around it).

        Over the C extension's ``AtomicWords`` the one-word accessors (``flags``,
        ``test_flag``, ``pte_read``...) become the bound methods of a
        ``KernelFields``, which does the index arithmetic and the operation in one C
        call instead of a Python frame around a words call: the same words, the same
        operations, the same results. Over any other backend (``RecordingWords``, which
        must see every access; ``PlainWords`` where the extension is not built) the
        Python methods below stay."""
        self.words = words
        d = self.__dict__
        if not d.keys().isdisjoint(_FAST_ALL):  # a second call: the Python methods first
            for name in _FAST_ALL:
                d.pop(name, None)
        fields = self._fields = _kernel_fields(words, self.lay, self.geo)
        if fields is not None:
            # The bound methods into the instance's dict, as setattr puts them (the class
            # has no descriptor for these names but its methods): one C call fetches
            # them all.
            d.update(zip(self._FAST, _FAST_GET(fields)))
            # spin_lock / spin_unlock / get_page / put_page / trylock_page /
            # unlock_page: the word operation, the checks that cannot fire and the
            # bookkeeping of the common case in one C call (a missing statistics row
            # made by _stat); anything else (a wait, a wrapped _acquired / _released, a
            # failure, the free of a last put, a wake) in the Python methods below,
            # which the C hands over to (KernelFields holds the kernel weakly).
            cls = type(self)
            fields.bind(
                self, _DONE, cls.spin_lock, cls._spin_unlock_bad, cls.get_page,
                cls._get_page_bug, cls.put_page, cls._put_page_tail, cls.trylock_page,
                cls.unlock_page,
            )
            d.update(zip(self._FAST_BOUND, _BOUND_GET(fields)))
            # State.find_vma binds the C lookup of a KernelFields over its words at its
            # first call: over the state's own words, it is this one's (the same words
            # and layout), not a second KernelFields built for the state.
            s = self.s
            if words is s.words and type(s) is State and not s._vma_tried:
                s._vma_tried = True
                s.find_vma = fields.find_vma  # type: ignore[method-assign]

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
        try:
            self.events[event] += n
        except KeyError:
            self.events[event] = n

    def outcome(self, attempt: str, reason: str, n: int = 1) -> None:
        """Count a migration outcome: ``attempt`` kind, ``reason`` (migrated, pinned...)."""
        key = (attempt, reason)
        try:
            self.outcomes[key] += n
        except KeyError:
            self.outcomes[key] = n

    def _stat(self, site: str) -> list[int]:
        # Hot (every lock operation): a subscript, no call, when the row exists.
        try:
            return self.stats[site]
        except KeyError:
            st = self.stats[site] = _new_stat()
            return st

    def _acquired(self, a: Actor, word: int, site: str) -> None:
        a.held[word] = site
        a.site = site
        self._held_since[word] = (site, self.clock())

    def _released(self, a: Actor, word: int) -> None:
        held = a.held
        if word in held:
            del held[word]
        hs = self._held_since
        if word in hs:
            site, t0 = hs[word]
            del hs[word]
            t = self.clock() - t0
            try:
                st = self.stats[site]
            except KeyError:
                st = self.stats[site] = _new_stat()
            # _add_time(st, S_HOLDS, t), inlined (hot)
            st[S_HOLDS] += 1
            st[S_HOLD_TOTAL] += t
            if t < st[S_HOLD_MIN]:
                st[S_HOLD_MIN] = t
            if t > st[S_HOLD_MAX]:
                st[S_HOLD_MAX] = t

    def _waited(self, st: list[int], t0: int) -> None:
        _add_time(st, S_WAITS, self.clock() - t0)

    def _block(self, a: Actor, req: Block) -> None:
        w = self._A + a.id * ACTOR_WORDS
        words = self.words
        words.store(w + A_WAIT_WORD, req.word)
        words.store(w + A_WAIT_MASK, req.mask)
        words.store(w + A_WAIT_LOCK, req.lock)
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
        """``get_page()`` / ``folio_get()``: the caller must already hold a reference.

        Over the C extension the instance's ``get_page`` is ``KernelFields.get_page``
        (:meth:`use_words`): the same check and add in one call, this method for a frame
        that is not allocated, :meth:`_get_page_bug` for a count that was not positive."""
        words = self.words
        fl = self._F + pfn * FRAME_WORDS
        if not words.load(fl) & PG_allocated:
            self.touch(a, pfn, site)  # raises: use after free
        old = words.fetch_add(fl + F_REF, 1)
        if old <= 0:
            self._get_page_bug(a, pfn, site, old)

    def _get_page_bug(self, a: Actor, pfn: int, site: str, old: int) -> None:
        """get_page's ``VM_BUG_ON_FOLIO(folio_ref_zero_or_close_to_overflow)``: the
        reference was taken on a page whose count was ``old`` <= 0."""
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
        GUP_PIN_COUNTING_BIAS for ``unpin_user_page``), free the page at zero.

        Over the C extension the instance's ``put_page`` is ``KernelFields.put_page``
        (:meth:`use_words`): the same check and add in one call, this method for a frame
        that is not allocated, :meth:`_put_page_tail` when the count reached ``refs``."""
        words = self.words
        fl = self._F + pfn * FRAME_WORDS
        if not words.load(fl) & PG_allocated:
            self.touch(a, pfn, site)  # raises: use after free
        old = words.fetch_add(fl + F_REF, -refs)
        if old <= refs:
            self._put_page_tail(a, pfn, site, refs, old)

    def _put_page_tail(self, a: Actor, pfn: int, site: str, refs: int, old: int) -> None:
        """The end of a put that took the count from ``old`` <= ``refs``: below zero is
        an underflow, zero frees the page."""
        if old < refs:
            raise self.refcount_underflow(a, f"page {pfn}", pfn, refs, old, site)
        if old == refs:
            self.free_page(a, pfn, site)

    def refcount_underflow(
        self, a: Actor, what: str, pfn: int, refs: int, old: int, site: str
    ) -> InvariantViolation:
        """The failure of a put that took the refcount of ``what`` (a page, or a folio
        at its head ``pfn``) from ``old`` below zero: ``put_page`` and ``folio_put``."""
        return self.fail(
            FailureKind.REFCOUNT_UNDERFLOW,
            f"{a.name} dropped {refs} reference{'s' if refs > 1 else ''} on {what} "
            f"at {site} and the refcount went to {old - refs}",
            actors=[a],
            pages=[pfn],
            sites=[site],
        )

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
        lo, hi = self.lay.zone_range(zone)
        if self._fields is not None:  # the same search and claim in one C call
            pfn = self._fields.alloc_frame(zw, lo, hi)
            if pfn >= 0:
                # count(), inlined (hot)
                ev, key = self.events, f"alloc_zone{zone}"
                ev[key] = ev[key] + 1 if key in ev else 1
            return pfn
        if words.load(zw + Z_FREE) <= 0:
            return -1
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
        lay = self.lay
        # lay.zone_of(pfn), inlined (hot: every page freed)
        g = lay.geo
        zone = 0 if pfn < g.sys_frames else 1 + (pfn - g.sys_frames) // g.dev_frames
        if self._fields is not None:  # the same stores in the same order, one C call
            self._fields.free_frame(
                pfn, f, lay.MAPPING + pfn, lay.ZONES + zone * ZONE_WORDS + Z_FREE
            )
            # count(), inlined (hot)
            ev, key = self.events, f"free_zone{zone}"
            ev[key] = ev[key] + 1 if key in ev else 1
            return
        words.store(fl + F_DATA, 0)
        words.store(fl + F_PRIV, 0)
        words.store(self.lay.MAPPING + pfn, 0)  # free_pages_prepare: page->mapping = NULL
        words.fetch_add(fl + F_GEN, 1)
        # Publishing the frame as free comes last: from here alloc_page may claim it.
        words.store(fl, f & STATIC_MASK)
        words.fetch_add(self.lay.ZONES + zone * ZONE_WORDS + Z_FREE, 1)
        self.count(f"free_zone{zone}")

    # -- per-CPU LRU-add batches (mm/swap.c, 7.0) ---------------------------------------
    def _batch(self, cpu: int) -> int:
        return self.lay.LRU_BATCH + cpu * LRU_BATCH_WORDS

    def folio_add_lru(self, a: Actor, pfn: int, site: str) -> None:
        """``folio_add_lru()`` → ``folio_batch_add_and_move(folio, lru_add)``: take a
        reference for the batch and add the folio to this CPU's LRU-add batch; a full
        batch is moved to the LRU at once. Until then the folio is not on the LRU
        (``folio_isolate_lru`` fails on it) and carries the batch's reference."""
        self.get_page(a, pfn, site + ":folio_get")
        self._wq_acquire()  # local_lock(&cpu_fbatches.lock): the parallel engine's drains
        b = self._batch(a.cpu)
        words = self.words
        n = words.load(b)
        words.store(b + 1 + n, pfn)
        words.store(b, n + 1)
        # 7.0: !folio_may_be_lru_cached(folio) (a large folio, v7) moves the batch at
        # once: a PMD-sized folio is never held in the per-CPU cache.
        full = n + 1 >= FOLIO_BATCH_SIZE or bool(words.load(self._F + pfn * FRAME_WORDS) & PG_head)
        if full:
            pfns = self._folio_batch_take(a.cpu)
        self._wq_release()
        if full:
            self._folio_batch_move_lru(a, pfns, site)

    def _folio_batch_take(self, cpu: int) -> list[int]:
        b = self._batch(cpu)
        words = self.words
        n = words.load(b)
        pfns = [words.load(b + 1 + i) for i in range(n)]
        for i in range(n):
            words.store(b + 1 + i, 0)
        words.store(b, 0)
        return pfns

    def _folio_batch_move_lru(self, a: Actor, pfns: list[int], site: str) -> None:
        """``folio_batch_move_lru(fbatch, lru_add)``: each folio onto the LRU
        (``lru_add``: ``folio_set_lru``), then ``folios_put``: the batch's references go."""
        for pfn in pfns:
            self.set_flag(pfn, PG_lru)
        for pfn in pfns:
            self.put_page(a, pfn, site + ":folios_put")
        self.count("lru_add_drained", len(pfns))

    def lru_batch_count(self, cpu: int) -> int:
        return self.words.load(self._batch(cpu))

    def lru_add_drain(self, a: Actor, site: str) -> None:
        """``lru_add_drain()`` → ``lru_add_drain_cpu(this cpu)``: move this CPU's batch
        to the LRU."""
        self._lru_add_drain_cpu(a, a.cpu, site)

    def _lru_add_drain_cpu(self, a: Actor, cpu: int, site: str) -> None:
        self._wq_acquire()
        pfns = self._folio_batch_take(cpu)
        self._wq_release()
        if pfns:
            self._folio_batch_move_lru(a, pfns, site)

    def lru_add_drain_all(self, a: Actor, site: str) -> Path:
        """``lru_add_drain_all()``: drain every CPU's batch. With the CPU model, as 7.0
        does it: queue ``lru_add_drain_per_cpu`` on each CPU whose batch is not empty
        (``queue_work_on``), then wait for each (``flush_work``): the CPU's kworker runs
        the drain when that CPU schedules it. Without it, the caller drains each CPU's
        batch itself, one CPU per step (docs/internals.md, Deliberate simplifications)."""
        if self.cpus:
            queued = [
                cpu for cpu in range(self.cpus)
                if self.lru_batch_count(cpu) and self.queue_work_on(cpu, WORK_LRU_DRAIN)
            ]
            for cpu in queued:
                yield from self.flush_work(a, cpu, WORK_LRU_DRAIN, site + ":flush_work")
            self.count("lru_add_drain_all")
            return
        for cpu in range(self.geo.actors):
            if self.lru_batch_count(cpu):
                self._lru_add_drain_cpu(a, cpu, site)
                yield  # flush_work(): the caller waits for that CPU's work
        self.count("lru_add_drain_all")

    # -- per-CPU work (kernel/workqueue.c) ------------------------------------------------
    def cpu_word(self, cpu: int) -> int:
        return self.lay.CPU + cpu

    def queue_work_on(self, cpu: int, work: int) -> bool:
        """``queue_work_on()``: mark ``work`` pending on ``cpu`` and wake its kworker;
        False if it was pending already."""
        w = self.lay.CPU + cpu
        if self.words.fetch_or(w, work) & work:
            return False
        self.words.fetch_and(w, ~CPU_IDLE)  # wake_up_process(kworker)
        return True

    def flush_work(self, a: Actor, cpu: int, work: int, site: str) -> Path:
        """``flush_work()``: sleep until ``work`` has run on ``cpu``."""
        w = self.lay.CPU + cpu
        if self.words.load(w) & work:
            st = self._stat(site)
            st[S_CONTENDED] += 1
            t0 = self.clock()
            req = Block(w, work, "work", cpu, site)
            self._block(a, req)
            yield req
            self._unblock(a)
            self._waited(st, t0)

    def worker_thread(self, a: Actor, cpu: int) -> Path:
        """The kworker of ``cpu`` (``worker_thread`` / ``process_one_work``): run the work
        queued on its CPU, one item per step, and sleep when there is none. It never
        ends: the engine stops it once every other actor is done."""
        w = self.lay.CPU + cpu
        words = self.words
        while True:
            if words.load(w) & WORK_LRU_DRAIN:
                a.idle = False
                a.op = "lru_add_drain_per_cpu"
                self._lru_add_drain_cpu(a, cpu, "lru_add_drain_per_cpu")
                words.fetch_and(w, ~WORK_LRU_DRAIN)
                self.progress(a)
                a.idle = True
                yield
                continue
            if words.cas(w, 0, CPU_IDLE):  # nothing queued: sleep until queue_work_on
                req = Block(w, CPU_IDLE, "work", cpu, "worker_thread:schedule")
                self._block(a, req)
                yield req
                self._unblock(a)

    def might_sleep(self) -> Path:
        """``might_sleep()``: a preemption point under ``PREEMPT_VOLUNTARY`` only."""
        if self.preemption == "voluntary":
            yield RESCHED

    def lru_batch_refs(self) -> Any:
        """The references LRU-add batches hold: one per batch slot naming the frame (a
        numpy array over frames), for the global refcount check (``extra_refs``)."""
        lb = self.s.lru_batch
        counts = lb[:, 0]
        out = np.zeros(self.geo.frames, dtype=np.int64)
        for cpu in counts.nonzero()[0]:  # np.flatnonzero of the 1-D counts, without wrappers
            np.add.at(out, lb[cpu, 1 : 1 + int(counts[cpu])], 1)
        return out

    # -- wait queues (kernel/sched/wait.c, the model's words) ----------------------------
    # An actor's wait-queue entry lives in its actor row (A_WQ_LOCK, A_WQ_FLAGS,
    # A_WQ_SEQ): the queue of a lock is every actor whose A_WQ_LOCK names it, in A_WQ_SEQ
    # order (__add_wait_queue_entry_tail: FIFO). Queues change only under the wait-queue
    # lock (G_WQ_LOCK, taken through ``wq_lock`` in the parallel engine; in the
    # deterministic engine nothing runs between two preemption points). A queued actor
    # sleeps until a waker clears WQ_SLEEP in its own flags word: wake-ups are events
    # delivered to one entry, not a re-read of the lock word.
    def _wq_acquire(self) -> None:
        if self.wq_lock is not None:
            self.wq_lock.acquire()

    def _wq_release(self) -> None:
        if self.wq_lock is not None:
            self.wq_lock.release()

    def _enqueue(self, a: Actor, lock: int, flags: int) -> None:
        """``__add_wait_queue_entry_tail()``: put ``a``'s entry at the tail of ``lock``'s
        queue (the caller holds the wait-queue lock)."""
        words = self.words
        w = self._A + a.id * ACTOR_WORDS
        words.store(w + A_WQ_SEQ, words.fetch_add(self.lay.GLOB + G_WQ_SEQ, 1))
        words.store(w + A_WQ_FLAGS, flags)
        words.store(w + A_WQ_LOCK, lock + 1)

    def wait_queue(self, lock: int) -> list[int]:
        """The actors queued on ``lock``, head first."""
        words = self.words
        key = lock + 1
        ents = []
        w = self._A
        for aid in range(self.geo.actors):
            if words.load(w + A_WQ_LOCK) == key:
                ents.append((words.load(w + A_WQ_SEQ), aid))
            w += ACTOR_WORDS
        ents.sort()
        return [aid for _seq, aid in ents]

    def _wq_flags(self, aid: int) -> int:
        return self.words.load(self._A + aid * ACTOR_WORDS + A_WQ_FLAGS)

    def _wake(self, aid: int, flags: int, dequeue: bool = True) -> None:
        """Wake ``aid``: ``list_del_init`` of its entry (page waits; an rwsem writer stays
        queued until it takes the lock), then its flags with WQ_SLEEP cleared
        (``smp_store_release(&wait->flags, ...)`` + ``wake_up_state``)."""
        w = self._A + aid * ACTOR_WORDS
        if dequeue:
            self.words.store(w + A_WQ_LOCK, 0)
        self.words.store(w + A_WQ_FLAGS, flags & ~WQ_SLEEP)

    def _finish_wait(self, a: Actor) -> None:
        """``finish_wait()``: off the queue if still on it (a path closed while asleep)."""
        w = self._A + a.id * ACTOR_WORDS
        words = self.words
        if words.load(w + A_WQ_LOCK):
            self._wq_acquire()
            lock = words.load(w + A_WQ_LOCK) - 1
            words.store(w + A_WQ_LOCK, 0)
            words.store(w + A_WQ_FLAGS, 0)
            if lock >= 0 and self._is_mmap_word(lock) and not self.wait_queue(lock):
                words.fetch_and(lock, ~RWSEM_FLAG_WAITERS)  # rwsem_del_waiter
            self._wq_release()
        else:
            words.store(w + A_WQ_FLAGS, 0)

    def _sleep(self, a: Actor, req: Block) -> Path:
        """Sleep on a queued entry until a waker clears WQ_SLEEP. A path closed while
        asleep (the run ended) takes its entry off the queue."""
        try:
            self._block(a, req)
            yield req
            self._unblock(a)
        except GeneratorExit:
            self._finish_wait(a)
            raise

    # -- page lock (include/linux/pagemap.h, mm/filemap.c) ------------------------------
    def trylock_page(self, a: Actor, pfn: int, site: str) -> bool:
        """``folio_trylock()``.

        Over the C extension the instance's ``trylock_page`` is
        ``KernelFields.trylock_page`` (:meth:`use_words`): the same check, bit, owner,
        statistics and ``_acquired`` bookkeeping in one call; this method when the frame
        is not allocated or ``_acquired`` is wrapped."""
        fl = self._F + pfn * FRAME_WORDS
        words = self.words
        if not words.load(fl) & PG_allocated:
            self.touch(a, pfn, site)  # raises: use after free
        got = not words.fetch_or(fl, PG_locked) & PG_locked
        if got:
            words.store(fl + F_OWNER, a.id + 1)
        try:
            st = self.stats[site]
        except KeyError:
            st = self._stat(site)
        st[S_TRY] += 1
        if not got:
            st[S_TRY_FAIL] += 1
            st[S_CONTENDED] += 1
            return False
        st[S_ACQUIRED] += 1
        self._acquired(a, fl, site)
        return True

    def lock_page(self, a: Actor, pfn: int, site: str) -> Path:
        """``folio_lock()``: ``folio_trylock()``, else ``__folio_lock()``: sleep in
        ``folio_wait_bit_common(EXCLUSIVE)`` until the lock is ours.

        A page locked by its own caller sleeps forever; the deadlock finder reports it
        as a cycle of one."""
        if self.preemption == "voluntary":
            yield from self.might_sleep()
        words = self.words
        fl = self._F + pfn * FRAME_WORDS
        if not words.load(fl) & PG_allocated:
            self.touch(a, pfn, site)  # raises: use after free
        try:
            st = self.stats[site]
        except KeyError:
            st = self._stat(site)
        if words.fetch_or(fl, PG_locked) & PG_locked:
            st[S_CONTENDED] += 1
            t0 = self.clock()
            yield from self._folio_wait_bit(a, pfn, site, exclusive=True)
            self.touch(a, pfn, site)  # a waiter without a reference may wake on a freed page
            self._waited(st, t0)
        words.store(fl + F_OWNER, a.id + 1)
        st[S_ACQUIRED] += 1
        self._acquired(a, fl, site)

    def unlock_page(self, a: Actor, pfn: int, site: str) -> None:
        """``folio_unlock()``, with the ownership check the model adds: clear PG_locked
        (``folio_xor_flags_has_waiters``) and, if PG_waiters was set, wake the queue
        (``folio_wake_bit``).

        Over the C extension the instance's ``unlock_page`` is
        ``KernelFields.unlock_page`` (:meth:`use_words`): the same check, stores,
        ``_released`` and wake in one call; this method for a bad unlock."""
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
        if words.fetch_and(fl, ~PG_locked) & PG_waiters:
            self._folio_wake_bit(fl)

    def page_locked(self, pfn: int) -> bool:
        return bool(self.words.load(self._F + pfn * FRAME_WORDS) & PG_locked)

    def page_lock_owner(self, pfn: int) -> int:
        return self.words.load(self._F + pfn * FRAME_WORDS + F_OWNER) - 1

    def wait_on_page_locked(self, a: Actor, pfn: int, site: str) -> Path:
        """``folio_wait_locked()``: ``folio_wait_bit_common(SHARED)``: sleep until woken
        by an unlock, without taking the lock. From 5.9 the waiter returns once woken,
        even if the page was locked again since (the caller re-checks what it waits
        for); before (v5.0, hmm-2017) it re-checks the bit and sleeps again."""
        fl = self._F + pfn * FRAME_WORDS
        if self.words.load(fl) & PG_locked:
            st = self._stat(site)
            st[S_CONTENDED] += 1
            t0 = self.clock()
            yield from self._folio_wait_bit(a, pfn, site, exclusive=False)
            self._waited(st, t0)

    def migration_entry_wait_on_locked(
        self, a: Actor, pfn: int, ptl: int, site: str, ptl_site: str
    ) -> Path:
        """``migration_entry_wait_on_locked()`` (5.17+; 7.0 ``softleaf_entry_wait_on_locked``):
        with the PTL held, queue a non-exclusive wait on the page lock (or see it
        unlocked), drop the PTL, and sleep until woken. No page reference: once queued,
        the page may be freed and reused before the waiter runs again; a wake-up is all
        it waits for, and the caller retries the fault."""
        fl = self._F + pfn * FRAME_WORDS
        words = self.words
        self._wq_acquire()
        words.fetch_or(fl, PG_waiters)  # folio_set_waiters
        queued = bool(words.load(fl) & PG_locked)  # folio_trylock_flag (non-exclusive)
        if queued:
            self._enqueue(a, fl, WQ_SLEEP)
        self._wq_release()
        self.spin_unlock(a, ptl, ptl_site)
        if queued:
            st = self._stat(site)
            st[S_CONTENDED] += 1
            t0 = self.clock()
            yield from self._sleep(a, Block(self._wq_word(a), WQ_SLEEP, "page", pfn, site, fl))
            self.words.store(self._wq_word(a), 0)
            self._waited(st, t0)

    def _wq_word(self, a: Actor) -> int:
        return self._A + a.id * ACTOR_WORDS + A_WQ_FLAGS

    def _folio_wait_bit(self, a: Actor, pfn: int, site: str, exclusive: bool) -> Path:
        if self.page_wait_59:
            yield from self._folio_wait_bit_common(a, pfn, site, exclusive)
        else:
            yield from self._wait_on_page_bit_common_414(a, pfn, site, exclusive)

    def _folio_wait_bit_common(self, a: Actor, pfn: int, site: str, exclusive: bool) -> Path:
        """``folio_wait_bit_common()`` on PG_locked, 5.9+ (7.0 mm/filemap.c), EXCLUSIVE
        or SHARED.

        Each round (``repeat:``) queues the entry at the tail, unless the bit can be
        taken (EXCLUSIVE) or is clear (SHARED) under the queue lock. An EXCLUSIVE waiter
        whose round is past ``sysctl_page_lock_unfairness`` is WQ_FLAG_CUSTOM: the
        unlock hands it the lock. Otherwise, woken, it must take the bit itself, and
        when a trylocker got there first it goes round again, at the tail."""
        fl = self._F + pfn * FRAME_WORDS
        words = self.words
        ww = self._wq_word(a)
        req = Block(ww, WQ_SLEEP, "page", pfn, site, fl)
        unfairness = self.page_lock_unfairness
        while True:  # repeat:
            flags = 0
            if exclusive:
                flags = WQ_EXCLUSIVE
                unfairness -= 1
                if unfairness < 0:
                    flags |= WQ_CUSTOM
            self._wq_acquire()
            words.fetch_or(fl, PG_waiters)  # folio_set_waiters
            if exclusive:
                got = not words.fetch_or(fl, PG_locked) & PG_locked
            else:
                got = not words.load(fl) & PG_locked
            if not got:
                self._enqueue(a, fl, flags | WQ_SLEEP)
            self._wq_release()
            if got:
                break
            yield from self._sleep(a, req)
            flags = words.load(ww)  # smp_load_acquire(&wait->flags): WQ_FLAG_WOKEN
            if not exclusive or flags & WQ_DONE:
                break  # non-exclusive, or the waker got the lock for us
            if not words.fetch_or(fl, PG_locked) & PG_locked:
                break
            self.count("page_lock_retry")  # woken, but a trylocker took it first
        words.store(ww, 0)

    def _wait_on_page_bit_common_414(
        self, a: Actor, pfn: int, site: str, exclusive: bool
    ) -> Path:
        """``wait_on_page_bit_common()`` of 4.14 to 5.8 (seeds 002 and 004): the entry
        stays queued until a wake-up removes it; each round re-queues it if it was
        removed, sleeps only while the bit is set, then takes the bit (EXCLUSIVE) or
        re-checks it (SHARED) and goes round again if it lost: no hand-off, and a
        shared waiter sleeps again when the page was relocked before it ran."""
        fl = self._F + pfn * FRAME_WORDS
        words = self.words
        aw = self._A + a.id * ACTOR_WORDS
        ww = aw + A_WQ_FLAGS
        req = Block(ww, WQ_SLEEP, "page", pfn, site, fl)
        flags = WQ_EXCLUSIVE if exclusive else 0
        while True:
            self._wq_acquire()
            if not words.load(aw + A_WQ_LOCK):
                self._enqueue(a, fl, flags)
                words.fetch_or(fl, PG_waiters)  # SetPageWaiters
            words.fetch_or(ww, WQ_SLEEP)  # set_current_state(state)
            self._wq_release()
            if words.load(fl) & PG_locked:
                yield from self._sleep(a, req)  # io_schedule()
            else:
                words.fetch_and(ww, ~WQ_SLEEP)
            if exclusive:
                if not words.fetch_or(fl, PG_locked) & PG_locked:
                    break
                self.count("page_lock_retry")
            elif not words.load(fl) & PG_locked:
                break
        self._finish_wait(a)

    def _folio_wake_bit(self, fl: int) -> None:
        """``folio_wake_bit(folio, PG_locked)`` → ``__wake_up_common`` with one exclusive
        wake-up and ``wake_page_function`` per entry, head first (7.0; before 5.9 the
        4.14 ``wake_page_function``: stop at a set bit, else ``autoremove_wake_function``,
        which wakes and removes only a task that is not running already)."""
        words = self.words
        self._wq_acquire()
        new = self.page_wait_59
        for aid in self.wait_queue(fl):
            flags = self._wq_flags(aid)
            if new:
                if flags & WQ_EXCLUSIVE:
                    if words.load(fl) & PG_locked:
                        break  # return -1: stop walking, do not wake
                    if flags & WQ_CUSTOM:
                        if words.fetch_or(fl, PG_locked) & PG_locked:
                            break
                        flags |= WQ_DONE  # the fair hand-off: the lock is the waiter's
                        words.store(fl + F_OWNER, aid + 1)
                        self.count("page_lock_handoff")
                self._wake(aid, flags | WQ_WOKEN)
                if flags & WQ_EXCLUSIVE:
                    break
            else:
                if words.load(fl) & PG_locked:
                    break
                if not flags & WQ_SLEEP:
                    continue  # try_to_wake_up() of a running task: 0, the entry stays
                self._wake(aid, flags | WQ_WOKEN)
                if flags & WQ_EXCLUSIVE:
                    break
        if not self.wait_queue(fl):
            words.fetch_and(fl, ~PG_waiters)  # folio_clear_waiters
        self._wq_release()

    # -- page-table lock (spinlock_t) ----------------------------------------------------
    def ptl_word(self, mm: int, vpn: int) -> int:
        return self.s.ptl_word(mm, vpn)

    def spin_lock(
        self, a: Actor, word: int, site: str, st: list[int] | None = None
    ) -> Path:
        """``spin_lock()`` on a page-table lock word (0 free, owner + 1 held).

        Over the C extension the instance's ``spin_lock`` is ``KernelFields.spin_lock``
        (:meth:`use_words`): an uncontended take, its statistics and ``_acquired``'s
        bookkeeping in one call, which returns an ended generator. It hands over to this
        generator when a caller wrapped ``_acquired``, and on contention with ``st``
        (the row) after its ``cas`` failed: then the wait starts at once, as it would
        here after the same failed ``cas``."""
        words = self.words
        me = a.id + 1
        if st is None:
            try:
                st = self.stats[site]
            except KeyError:
                st = self._stat(site)
            contended = not words.cas(word, 0, me)
        else:
            contended = True
        if contended:
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
        """``spin_unlock()``, with the owner check the model adds.

        Over the C extension the instance's ``spin_unlock`` is
        ``KernelFields.spin_unlock`` (:meth:`use_words`): the same ``xchg``, check and
        ``_released`` bookkeeping in one call."""
        owner = self.words.xchg(word, 0)
        if owner != a.id + 1:
            self._spin_unlock_bad(a, word, site, owner)
        self._released(a, word)

    def _spin_unlock_bad(self, a: Actor, word: int, site: str, owner: int) -> None:
        """The failure of a ``spin_unlock`` of a lock word ``owner`` held (0: nobody)."""
        raise self.fail(
            FailureKind.BAD_UNLOCK,
            f"{a.name} released page-table lock word {word} at {site} held by "
            f"{'nobody' if owner == 0 else f'actor {owner - 1}'}",
            actors=[a],
            sites=[site],
            locks=[self.lock_name(word)],
        )

    # -- struct mutex (kernel/locking/mutex.c): a driver's sleeping lock ----------------
    def mutex_lock(self, a: Actor, word: int, site: str) -> Path:
        """``mutex_lock()`` on a mutex word (0 free, owner + 1 held): sleep until it is
        ours. The engines see it as any other lock (waits-for graph, lock_stat rows,
        lock balance); ``lock_name`` names it."""
        try:
            st = self.stats[site]
        except KeyError:
            st = self._stat(site)
        words = self.words
        me = a.id + 1
        if not words.cas(word, 0, me):
            st[S_CONTENDED] += 1
            t0 = self.clock()
            req = Block(word, -1, "mutex", word, site)
            while True:
                self._block(a, req)
                yield req
                self._unblock(a)
                if words.cas(word, 0, me):
                    break
            self._waited(st, t0)
        st[S_ACQUIRED] += 1
        self._acquired(a, word, site)

    def mutex_unlock(self, a: Actor, word: int, site: str) -> None:
        """``mutex_unlock()``, with the owner check of ``DEBUG_MUTEXES``."""
        owner = self.words.load(word)
        if owner != a.id + 1:
            raise self.fail(
                FailureKind.BAD_UNLOCK,
                f"{a.name} unlocked {self.lock_name(word)} at {site} held by "
                f"{'nobody' if owner == 0 else f'actor {owner - 1}'}",
                actors=[a],
                sites=[site],
                locks=[self.lock_name(word)],
            )
        self._released(a, word)
        self.words.store(word, 0)

    # -- mmap_lock (kernel/locking/rwsem.c, 7.0) ------------------------------------------
    # The count word: a reader count, RWSEM_WRITER and RWSEM_FLAG_WAITERS; the writer's
    # id + 1 three words on (the rwsem's owner). Waiters queue FIFO (rwsem_add_waiter);
    # readers are granted the lock by their waker, writers take it themselves.
    def mmap_word(self, mm: int) -> int:
        return self.lay.MM + mm * MM_WORDS + M_MMAP_LOCK

    def _is_mmap_word(self, w: int) -> bool:
        lay = self.lay
        return lay.MM <= w < lay.MM + self.geo.mms * MM_WORDS and (
            (w - lay.MM) % MM_WORDS == M_MMAP_LOCK
        )

    def mmap_read_lock(self, a: Actor, mm: int, site: str) -> Path:
        """``mmap_read_lock()`` → ``down_read()``: the fast path when neither a writer
        holds the lock nor anyone waits (``rwsem_read_trylock``), else
        ``rwsem_down_read_slowpath()``: steal the lock if no writer holds it and no other
        reader does (the 5.13+ reader lock stealing), else queue, behind any queued
        writer, and sleep until a waker grants the lock. A reader that already holds the
        lock and asks again behind a queued writer waits forever (a deadlock)."""
        if self.preemption == "voluntary":
            yield from self.might_sleep()
        w = self.lay.MM + mm * MM_WORDS + M_MMAP_LOCK  # mmap_word(mm), inlined (hot)
        words = self.words
        try:
            st = self.stats[site]
        except KeyError:
            st = self._stat(site)
        cur = words.load(w)
        if cur & (RWSEM_WRITER | RWSEM_FLAG_WAITERS) or not words.cas(w, cur, cur + 1):
            st[S_CONTENDED] += 1
            t0 = self.clock()
            yield from self._down_read_slowpath(a, mm, w, site)
            self._waited(st, t0)
        st[S_ACQUIRED] += 1
        a.held[w] = site

    def _down_read_slowpath(self, a: Actor, mm: int, w: int, site: str) -> Path:
        words = self.words
        self._wq_acquire()
        cur = words.load(w)
        if not cur & RWSEM_WRITER and not cur & RWSEM_READER_MASK:
            # Reader optimistic lock stealing (no RWSEM_FLAG_HANDOFF in the model).
            words.fetch_add(w, 1)
            if cur & RWSEM_FLAG_WAITERS:
                self._rwsem_mark_wake(w, "read_owned")
            self._wq_release()
            self.count("rwsem_rlock_steal")
            return
        if not self.wait_queue(w) and not cur & RWSEM_WRITER:
            words.fetch_add(w, 1)  # rwsem_rlock_fast: the queue is empty, readers own it
            self._wq_release()
            return
        self._enqueue(a, w, WQ_RWSEM_READ | WQ_SLEEP)
        words.fetch_or(w, RWSEM_FLAG_WAITERS)
        self._rwsem_cond_wake_waiter(w)
        self._wq_release()
        ww = self._wq_word(a)
        # Queued: one sleep, even if a waker granted the lock already (the engine then
        # does not park us), so that a step means the same in both engines.
        yield from self._sleep(a, Block(ww, WQ_SLEEP, "mmap", mm, site, w))
        words.store(ww, 0)  # the waker granted the lock: waiter.task == NULL

    def _rwsem_cond_wake_waiter(self, w: int) -> None:
        """``rwsem_cond_wake_waiter()``: after queueing, wake who can run now."""
        cur = self.words.load(w)
        if cur & RWSEM_WRITER:
            return
        self._rwsem_mark_wake(w, "readers" if cur & RWSEM_READER_MASK else "any")

    def _rwsem_mark_wake(self, w: int, wake_type: str) -> None:
        """``rwsem_mark_wake()`` (the caller holds the wait lock): a writer at the head is
        woken to take the lock itself (RWSEM_WAKE_ANY only); else every queued reader is
        granted the lock, writers left in place."""
        words = self.words
        q = self.wait_queue(w)
        if not q:
            return
        if self._wq_flags(q[0]) & WQ_RWSEM_WRITE:
            if wake_type == "any":
                self._wake(q[0], self._wq_flags(q[0]), dequeue=False)
            return
        adjustment = 0
        if wake_type != "read_owned":
            adjustment = 1
            if words.fetch_add(w, 1) & RWSEM_WRITER:
                words.fetch_add(w, -1)  # a writer stole it (no hand-off timeout modelled)
                return
        readers = [aid for aid in q if self._wq_flags(aid) & WQ_RWSEM_READ]
        add = len(readers) - adjustment
        if len(readers) == len(q):
            add -= RWSEM_FLAG_WAITERS
        if add:
            words.fetch_add(w, add)
        for aid in readers:
            self._wake(aid, self._wq_flags(aid) | WQ_WOKEN)

    def mmap_read_unlock(self, a: Actor, mm: int, site: str) -> None:
        """``mmap_read_unlock()`` → ``up_read()``: the last reader out wakes the queue."""
        w = self.lay.MM + mm * MM_WORDS + M_MMAP_LOCK  # mmap_word(mm), inlined (hot)
        old = self.words.fetch_add(w, -1)
        if old & RWSEM_READER_MASK == 0:
            raise self.fail(
                FailureKind.BAD_UNLOCK,
                f"{a.name} released mmap_lock of mm {mm} for read at {site} without holding it",
                actors=[a],
                sites=[site],
                locks=[f"mmap:{mm}"],
            )
        a.held.pop(w, None)
        if (old - 1) & (RWSEM_LOCK_MASK | RWSEM_FLAG_WAITERS) == RWSEM_FLAG_WAITERS:
            self._rwsem_wake(w)

    def _rwsem_wake(self, w: int) -> None:
        """``rwsem_wake()``."""
        self._wq_acquire()
        if self.wait_queue(w):
            self._rwsem_mark_wake(w, "any")
        self._wq_release()

    def _rwsem_try_write_lock(self, a: Actor, w: int) -> bool:
        """``rwsem_try_write_lock()`` for a queued writer (the wait lock held): take the
        lock if nobody holds it, leaving the queue (no hand-off bit in the model)."""
        words = self.words
        while True:
            cur = words.load(w)
            if cur & RWSEM_LOCK_MASK:
                return False
            new = cur | RWSEM_WRITER
            q = self.wait_queue(w)
            if q == [a.id]:
                new &= ~RWSEM_FLAG_WAITERS
            if words.cas(w, cur, new):
                words.store(self._A + a.id * ACTOR_WORDS + A_WQ_LOCK, 0)
                return True

    def mmap_write_lock(self, a: Actor, mm: int, site: str) -> Path:
        """``mmap_write_lock()`` → ``down_write()``: the fast path on a free lock with no
        waiters, else ``rwsem_down_write_slowpath()``: one unqueued attempt on a free lock
        (the optimistic spin's ``rwsem_try_write_lock_unqueued``), then queue and, each
        time woken, try to take the lock."""
        if self.preemption == "voluntary":
            yield from self.might_sleep()
        w = self.mmap_word(mm)
        words = self.words
        st = self._stat(site)
        if not words.cas(w, 0, RWSEM_WRITER):
            st[S_CONTENDED] += 1
            t0 = self.clock()
            yield from self._down_write_slowpath(a, mm, w, site)
            self._waited(st, t0)
        st[S_ACQUIRED] += 1
        a.held[w] = site
        words.store(self.lay.MM + mm * MM_WORDS + M_MMAP_LOCK + 3, a.id + 1)

    def _down_write_slowpath(self, a: Actor, mm: int, w: int, site: str) -> Path:
        words = self.words
        while True:  # rwsem_try_write_lock_unqueued()
            cur = words.load(w)
            if cur & RWSEM_LOCK_MASK:
                break
            if words.cas(w, cur, cur | RWSEM_WRITER):
                self.count("rwsem_wlock_steal")
                return
        ww = self._wq_word(a)
        req = Block(ww, WQ_SLEEP, "mmap", mm, site, w)
        self._wq_acquire()
        first = not self.wait_queue(w)
        self._enqueue(a, w, WQ_RWSEM_WRITE)
        if first:
            words.fetch_or(w, RWSEM_FLAG_WAITERS)
        else:
            self._rwsem_cond_wake_waiter(w)
        while not self._rwsem_try_write_lock(a, w):
            words.fetch_or(ww, WQ_SLEEP)  # set_current_state(state)
            self._wq_release()
            yield from self._sleep(a, req)  # schedule_preempt_disabled()
            self._wq_acquire()
        self._wq_release()
        words.store(ww, 0)

    def mmap_write_unlock(self, a: Actor, mm: int, site: str) -> None:
        """``mmap_write_unlock()`` → ``up_write()``: wake the queue if anyone waits."""
        w = self.mmap_word(mm)
        owner_w = self.lay.MM + mm * MM_WORDS + M_MMAP_LOCK + 3
        words = self.words
        # Only the writer may release: another actor's up_write is DEBUG_RWSEMS' warning.
        if words.load(owner_w) != a.id + 1 or not words.load(w) & RWSEM_WRITER:
            raise self.fail(
                FailureKind.BAD_UNLOCK,
                f"{a.name} released mmap_lock of mm {mm} for write at {site} without holding it",
                actors=[a],
                sites=[site],
                locks=[f"mmap:{mm}"],
            )
        words.store(owner_w, 0)
        a.held.pop(w, None)
        if words.fetch_add(w, -RWSEM_WRITER) & RWSEM_FLAG_WAITERS:
            self._rwsem_wake(w)

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
        hw = self.hw_lock  # the shootdown waits for an access in flight (the IPI)
        if hw is None and self._fields is not None:
            self._fields.flush_tlb_range(mm, lo, hi)  # the same loop in one C call
            return
        words = self.words
        base = mm * self._ppm
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
        if self._fields is not None:  # the same two adds in one C call
            self._fields.progress(a.id)
            return
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
        if lay.CPU <= word < lay.CPU + g.actors:
            return f"work:{word - lay.CPU}"
        if lay.DEVMEM <= word < lay.DEVMEM + (g.devices if g.chunks else 0) * DC_WORDS:
            dev, field = divmod(word - lay.DEVMEM, DC_WORDS)
            return f"devmem_lock:{dev}" if field == DC_LOCK else f"pgmap_ref:{dev}"
        if self._is_mutex_word(word):
            return f"dmirror_mutex:{(word - lay.DMIRROR) // DM_WORDS}"
        if self._is_mn_lock_word(word):
            return f"mn_subscriptions:{(word - lay.MN) // MN_WORDS}"
        if lay.ANON_VMA <= word < lay.ANON_VMA + g.mms * AV_WORDS:
            return f"anon_vma:{(word - lay.ANON_VMA) // AV_WORDS}"
        if lay.PMD_PTL <= word < lay.HTLB:  # the split PMD locks (thp geometries: pmd.py)
            off = word - lay.PMD_PTL
            return f"pmd:{off // g.pmd_tables_per_mm}:{off % g.pmd_tables_per_mm}"
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
        if self._is_mutex_word(word) or self._is_mn_lock_word(word):
            return words.load(word) - 1  # dmirror->mutex, subscriptions->lock: owner + 1
        if lay.ANON_VMA <= word < lay.ANON_VMA + g.mms * AV_WORDS:
            if words.load(word) & RWSEM_WRITER:
                return words.load(word + 1) - 1  # AV_OWNER
            for act in self.actors:
                if word in act.held:
                    return act.id
        if lay.PMD_PTL <= word < lay.HTLB:  # a PMD lock: owner + 1, as a PTL
            return words.load(word) - 1
        return -1

    def _is_mutex_word(self, word: int) -> bool:
        lay = self.lay
        off = word - lay.DMIRROR
        if 0 <= off < len(self.geo.dmirrors) * DM_WORDS and off % DM_WORDS == DM_MUTEX:
            return True
        off = word - lay.DEVMEM  # mdevice->devmem_lock (core/mm/memremap.py)
        return 0 <= off < (self.geo.devices if self.geo.chunks else 0) * DC_WORDS and (
            off % DC_WORDS == DC_LOCK
        )

    def _is_mn_lock_word(self, word: int) -> bool:
        off = word - self.lay.MN
        return 0 <= off < self.lay.MNI - self.lay.MN and off % MN_WORDS == MN_LOCK

    def waits_for(self, a: Actor) -> tuple[int, int]:
        """(lock word, mask) ``a`` is blocked on, from the shared actor table."""
        w = self._A + a.id * ACTOR_WORDS
        return self.words.load(w + A_WAIT_LOCK), self.words.load(w + A_WAIT_MASK)

    def blocked_by(self, aid: int, lock: int) -> int:
        """The actor that actor ``aid``, waiting for ``lock``, waits for: the lock's
        owner; for an mmap_lock that readers hold, a reader queued behind a writer waits
        for the first writer queued ahead of it (which waits for the readers), a queued
        writer for a reader that holds it."""
        if not self._is_mmap_word(lock) or self.words.load(lock) & RWSEM_WRITER:
            return self.lock_owner(lock)
        if self._wq_flags(aid) & WQ_RWSEM_READ and self.words.load(
            self._A + aid * ACTOR_WORDS + A_WQ_LOCK
        ) == lock + 1:
            for other in self.wait_queue(lock):
                if other == aid:
                    break
                if self._wq_flags(other) & WQ_RWSEM_WRITE:
                    return other
        return self.lock_owner(lock)

    def anon_exclusive(self, pfn: int) -> bool:
        return self.test_flag(pfn, PG_anon_exclusive)


# Kernel.use_words's names and the C calls that fetch KernelFields's methods of them.
_FAST_ALL = frozenset(Kernel._FAST + Kernel._FAST_BOUND)
_FAST_GET = operator.attrgetter(*Kernel._FAST)
_BOUND_GET = operator.attrgetter(*Kernel._FAST_BOUND)


__all__ = [
    "A_WAIT_SITE",
    "PREEMPTION_MODELS",
    "RESCHED",
    "STAT_FIELDS",
    "Actor",
    "Block",
    "Kernel",
    "Path",
    "merge_stat",
]

"""Stateful property tests of the kernel primitives against simple shadow models.

Each machine drives the real primitives (``core/machine/kernel.py``) from a few actors and keeps
a plain-Python shadow of what the kernel's semantics say must be true: who owns each page
lock, each refcount and pin, the mmap_lock word, the page-table lock, the zones' free
lists. Blocking primitives are generators; the machines drive them by hand, one
preemption point at a time, the way the engine does (template: Hypothesis's
``tests/nocover/test_cache_implementation.py``).

Where a local check fires on a failure path that also changed the word (``put_page``'s
underflow decrements before it checks, as ``page_ref_dec_and_test`` does), the machine
puts the word back after checking the report: a real run stops at the first failure.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)
from pagerace.core.lib.test_hmm import Dmirror
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.kernel import (
    S_ACQUIRED,
    S_TRY,
    S_TRY_FAIL,
    S_WAITS,
    Block,
)
from pagerace.core.machine.layout import (
    A_STATE,
    ACTOR_BLOCKED,
    ACTOR_RUNNING,
    ACTOR_WORDS,
    F_FLAGS,
    F_GEN,
    F_PIN,
    F_REF,
    GUP_PIN_COUNTING_BIAS,
    RWSEM_FLAG_WAITERS,
    RWSEM_WRITER,
    STATIC_MASK,
    WQ_SLEEP,
    Z_FREE,
    Geometry,
    PG_allocated,
    PG_locked,
    PG_waiters,
)
from strategies import Stepper, actor_ids, kernel_with_actors

SETTINGS = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much],
)
N_ACTORS = 3
actor_ids4 = st.integers(0, 3)


def _expect(kind: FailureKind, fn, *args):
    with pytest.raises(InvariantViolation) as info:
        fn(*args)
    assert info.value.failure.kind is kind, info.value.failure.headline()
    return info.value.failure


# --------------------------------------------------------------------------------------
# Page lock: folio_trylock / folio_lock / folio_unlock / folio_wait_locked


class PageLockMachine(RuleBasedStateMachine):
    """The page lock of 5.9+ against a shadow of its wait queue: FIFO entries, an unlock
    that wakes the queue head-first up to the first exclusive waiter, and hands the lock
    to an exclusive waiter past ``sysctl_page_lock_unfairness`` rounds (here 1, so that
    both the hand-off and the unfair wake-up are reached in a few steps)."""

    N_PAGES = 2
    UNFAIRNESS = 1

    def __init__(self) -> None:
        super().__init__()
        self.k, self.actors = kernel_with_actors(Geometry(sys_frames=3, devices=0), N_ACTORS)
        self.k.page_lock_unfairness = self.UNFAIRNESS
        self.pfns = [self.k.alloc_page(self.actors[0], 0, "setup") for _ in range(self.N_PAGES)]
        self.owner: dict[int, int | None] = dict.fromkeys(self.pfns)
        # The shadow queue per page: (actor, exclusive, round) head first.
        self.queue: dict[int, list[tuple[int, bool, int]]] = {p: [] for p in self.pfns}
        # Sleeping or woken waiters: actor -> (pfn, exclusive, round, stepper, woken, handed)
        self.waiting: dict[int, list] = {}
        self.tries = 0
        self.try_fails = 0
        self.waits = 0
        self.lock_acquired = 0
        self.handoffs = 0

    def _fl(self, pfn: int) -> int:
        return self.k.fw(pfn, F_FLAGS)

    pages = st.integers(0, N_PAGES - 1)

    def _sleep(self, aid: int, pfn: int, exclusive: bool, rnd: int, s: Stepper, req) -> None:
        assert type(req) is Block
        assert (req.kind, req.target, req.lock) == ("page", pfn, self._fl(pfn))
        assert req.mask == WQ_SLEEP and req.word == self.k._wq_word(self.actors[aid])
        assert s.blocked_on(self.k) is req, "a queued waiter sleeps until woken"
        state = self.k.words.load(self.k.lay.ACTOR + aid * ACTOR_WORDS + A_STATE)
        assert state == ACTOR_BLOCKED
        self.queue[pfn].append((aid, exclusive, rnd))
        self.waiting[aid] = [pfn, exclusive, rnd, s, False, False]

    @rule(aid=actor_ids, p=pages)
    def trylock(self, aid: int, p: int) -> None:
        assume(aid not in self.waiting)
        pfn = self.pfns[p]
        got = self.k.trylock_page(self.actors[aid], pfn, "t:trylock")
        self.tries += 1
        assert got == (self.owner[pfn] is None)
        if got:
            self.owner[pfn] = aid
        else:
            self.try_fails += 1

    @rule(aid=actor_ids, p=pages)
    def unlock(self, aid: int, p: int) -> None:
        assume(aid not in self.waiting)
        pfn = self.pfns[p]
        a = self.actors[aid]
        if self.owner[pfn] == aid:
            self.k.unlock_page(a, pfn, "t:unlock")
            self.owner[pfn] = None
            self._wake(pfn)
        else:
            f = _expect(FailureKind.BAD_UNLOCK, self.k.unlock_page, a, pfn, "t:unlock")
            assert f.actors == (a.name,)
            assert f.pages == (pfn,)
            assert f.locks == (f"page:{pfn}",)
            assert f.sites == ("t:unlock",)

    def _wake(self, pfn: int) -> None:
        """wake_page_function over the shadow queue."""
        q = self.queue[pfn]
        while q:
            aid, exclusive, rnd = q.pop(0)
            w = self.waiting[aid]
            w[4] = True
            if exclusive:
                if rnd > self.UNFAIRNESS:  # WQ_FLAG_CUSTOM: the lock is handed over
                    self.owner[pfn] = aid
                    w[5] = True
                    self.handoffs += 1
                return

    @rule(aid=actor_ids, p=pages)
    def lock(self, aid: int, p: int) -> None:
        pfn = self.pfns[p]
        # Locking a page you hold sleeps forever: test_self_lock_blocks covers it.
        assume(aid not in self.waiting and self.owner[pfn] != aid)
        s = Stepper(self.k.lock_page(self.actors[aid], pfn, "t:lock"))
        req = s.step()
        if self.owner[pfn] is None:
            assert s.done, "folio_lock on a free page must not sleep"
            self.owner[pfn] = aid
            self.lock_acquired += 1
        else:
            self._sleep(aid, pfn, True, 1, s, req)

    @precondition(lambda self: any(w[4] for w in self.waiting.values()))
    @rule(data=st.data())
    def resume_woken_waiter(self, data: st.DataObject) -> None:
        aid = data.draw(st.sampled_from(sorted(a for a, w in self.waiting.items() if w[4])))
        pfn, exclusive, rnd, s, _woken, handed = self.waiting.pop(aid)
        assert s.blocked_on(self.k) is None, "a woken waiter is runnable"
        req = s.step()
        if not exclusive:
            assert s.done, "a woken shared waiter returns, locked page or not"
            assert self.owner[pfn] != aid
            return
        if handed or self.owner[pfn] is None:
            assert s.done
            if not handed:
                self.owner[pfn] = aid
            assert self.owner[pfn] == aid
            self.lock_acquired += 1
            self.waits += 1
            state = self.k.words.load(self.k.lay.ACTOR + aid * ACTOR_WORDS + A_STATE)
            assert state == ACTOR_RUNNING
        else:
            # Woken without the lock and a trylocker took it first: round again, at the tail.
            self._sleep(aid, pfn, True, rnd + 1, s, req)

    @rule(aid=actor_ids, p=pages)
    def wait_on_locked(self, aid: int, p: int) -> None:
        assume(aid not in self.waiting)
        pfn = self.pfns[p]
        s = Stepper(self.k.wait_on_page_locked(self.actors[aid], pfn, "t:wait"))
        req = s.step()
        if self.owner[pfn] is None:
            assert s.done
        else:
            self._sleep(aid, pfn, False, 1, s, req)

    @invariant()
    def locks_match_shadow(self) -> None:
        k = self.k
        for pfn, owner in self.owner.items():
            assert k.page_locked(pfn) == (owner is not None)
            assert k.page_lock_owner(pfn) == (-1 if owner is None else owner)
            assert k.lock_owner(self._fl(pfn)) == (-1 if owner is None else owner)
        for a in self.actors:
            w = self.waiting.get(a.id)
            handed = w is not None and w[5]
            mine = {self._fl(p) for p, o in self.owner.items() if o == a.id}
            if handed:
                mine.discard(self._fl(w[0]))  # its bookkeeping runs when it runs
            assert set(a.held) == mine

    @invariant()
    def queues_match_shadow(self) -> None:
        for pfn, q in self.queue.items():
            assert self.k.wait_queue(self._fl(pfn)) == [aid for aid, _x, _r in q]
            if q:
                assert self.k.flags(pfn) & PG_waiters, "a queued waiter without PG_waiters"

    @invariant()
    def statistics_count_every_operation(self) -> None:
        st_try = self.k.stats.get("t:trylock")
        if st_try is not None:
            assert st_try[S_TRY] == self.tries
            assert st_try[S_TRY_FAIL] == self.try_fails
            assert st_try[S_ACQUIRED] == self.tries - self.try_fails
        st_lock = self.k.stats.get("t:lock")
        if st_lock is not None:
            assert st_lock[S_ACQUIRED] == self.lock_acquired
            assert st_lock[S_WAITS] == self.waits
        assert self.k.events.get("page_lock_handoff", 0) == self.handoffs

    def teardown(self) -> None:
        for w in self.waiting.values():
            w[3].gen.close()


PageLockMachine.TestCase.settings = SETTINGS
TestPageLock = PageLockMachine.TestCase


def _waiter(k, a, pfn, site="t:lock"):
    s = Stepper(k.lock_page(a, pfn, site))
    assert type(s.step()) is Block and s.blocked_on(k) is not None
    return s


@pytest.mark.parametrize("unfairness", [0, 5])
def test_handoff_waiter_gets_the_lock_before_a_later_trylocker(unfairness: int) -> None:
    """An exclusive waiter past ``sysctl_page_lock_unfairness`` rounds is handed the lock
    by ``folio_unlock``: a trylock between the unlock and the waiter's next step fails
    (with 0, the first round; with the default 5, the sixth: before that, the woken
    waiter loses to the trylocker and queues again at the tail)."""
    k, (owner, waiter, thief) = kernel_with_actors(Geometry(sys_frames=1, devices=0), 3)
    k.page_lock_unfairness = unfairness
    pfn = k.alloc_page(owner, 0, "setup")
    assert k.trylock_page(owner, pfn, "t:own")
    s = _waiter(k, waiter, pfn)
    holder, other = owner, thief
    for rnd in range(1, unfairness + 1):
        k.unlock_page(holder, pfn, "t:unlock")
        assert s.blocked_on(k) is None, "the unlock wakes the exclusive waiter"
        assert k.trylock_page(other, pfn, "t:steal"), f"round {rnd}: no hand-off yet"
        assert type(s.step()) is Block and s.blocked_on(k) is not None  # queued again
        holder, other = other, holder
    assert k.events.get("page_lock_retry", 0) == unfairness
    k.unlock_page(holder, pfn, "t:unlock")
    assert k.page_lock_owner(pfn) == waiter.id, "the lock is handed over at the unlock"
    assert not k.trylock_page(other, pfn, "t:steal"), "a later trylocker must fail"
    s.step()
    assert s.done and waiter.held == {k.fw(pfn, F_FLAGS): "t:lock"}
    assert k.events["page_lock_handoff"] == 1
    k.unlock_page(waiter, pfn, "t:unlock")
    assert not k.flags(pfn) & (PG_locked | PG_waiters)


def test_handoff_follows_the_queue_order() -> None:
    """Two exclusive waiters get the lock in the order they queued, each by hand-off."""
    k, (owner, w1, w2) = kernel_with_actors(Geometry(sys_frames=1, devices=0), 3)
    k.page_lock_unfairness = 0
    pfn = k.alloc_page(owner, 0, "setup")
    assert k.trylock_page(owner, pfn, "t:own")
    s1, s2 = _waiter(k, w1, pfn), _waiter(k, w2, pfn)
    assert k.wait_queue(k.fw(pfn, F_FLAGS)) == [w1.id, w2.id]
    k.unlock_page(owner, pfn, "t:unlock")
    assert k.page_lock_owner(pfn) == w1.id and s2.blocked_on(k) is not None
    s1.step()
    k.unlock_page(w1, pfn, "t:unlock")
    assert k.page_lock_owner(pfn) == w2.id
    s2.step()
    assert s2.done


@pytest.mark.parametrize("variant", ["v6", "v5.0"])
def test_shared_waiter_woken_then_relocked(variant: str) -> None:
    """Wake-ups are events (5.9+): a shared waiter woken by an unlock returns even if the
    page was locked again before it ran; the 4.14-5.8 code re-checks the bit and sleeps
    again (v5.0, hmm-2017)."""
    k, (owner, waiter, other) = kernel_with_actors(
        Geometry(sys_frames=1, devices=0), 3, variant=variant
    )
    pfn = k.alloc_page(owner, 0, "setup")
    assert k.trylock_page(owner, pfn, "t:own")
    s = Stepper(k.wait_on_page_locked(waiter, pfn, "t:wait"))
    assert type(s.step()) is Block and s.blocked_on(k) is not None
    k.unlock_page(owner, pfn, "t:unlock")
    assert s.blocked_on(k) is None
    assert k.trylock_page(other, pfn, "t:relock")
    s.step()
    if variant == "v6":
        assert s.done
    else:
        assert not s.done and s.blocked_on(k) is not None
        k.unlock_page(other, pfn, "t:unlock")
        s.step()
        assert s.done
    assert k.wait_queue(k.fw(pfn, F_FLAGS)) == []


def test_migration_entry_waiter_woken_after_the_page_is_reused() -> None:
    """``migration_entry_wait_on_locked`` holds no reference: the waiter is woken by the
    unlock, and the page may then be freed, reused and locked again before it runs; it
    returns (the caller retries the fault) instead of sleeping on the new owner's lock."""
    k, (mig, waiter, other) = kernel_with_actors(Geometry(sys_frames=1, devices=0), 3)
    pfn = k.alloc_page(mig, 0, "setup")
    ptl = k.ptl_word(0, 0)
    assert k.trylock_page(mig, pfn, "t:mig")
    s = Stepper(k.spin_lock(waiter, ptl, "t:ptl"))
    s.step()
    s = Stepper(k.migration_entry_wait_on_locked(waiter, pfn, ptl, "t:wait", "t:ptl"))
    assert type(s.step()) is Block and s.blocked_on(k) is not None
    assert k.words.load(ptl) == 0, "the PTL is dropped once the entry is queued"
    k.unlock_page(mig, pfn, "t:unlock")
    k.put_page(mig, pfn, "t:free")
    assert k.alloc_page(other, 0, "t:reuse") == pfn
    assert k.trylock_page(other, pfn, "t:relock")
    s.step()
    assert s.done


def test_self_lock_blocks_on_itself() -> None:
    """``folio_lock`` on a page the caller holds sleeps on its own lock (the engine's
    deadlock finder reports it as a cycle of one)."""
    k, (a, _b) = kernel_with_actors(Geometry(sys_frames=1, devices=0), 2)
    pfn = k.alloc_page(a, 0, "setup")
    assert k.trylock_page(a, pfn, "t:first")
    s = Stepper(k.lock_page(a, pfn, "t:again"))
    req = s.step()
    assert type(req) is Block and req.target == pfn
    assert k.page_lock_owner(pfn) == a.id
    s.gen.close()


# --------------------------------------------------------------------------------------
# Reference counts and pins: get_page, get_page_unless_zero, put_page, freeze/unfreeze,
# GUP pins as a bias on the refcount.


class RefcountMachine(RuleBasedStateMachine):
    N_FRAMES = 3

    def __init__(self) -> None:
        super().__init__()
        self.k, (self.a,) = kernel_with_actors(Geometry(sys_frames=self.N_FRAMES, devices=0), 1)
        n = self.N_FRAMES
        self.alloc = [False] * n
        self.ref = [0] * n
        self.pins = [0] * n
        self.frozen: list[int | None] = [None] * n
        self.gen = [0] * n

    frames = st.integers(0, N_FRAMES - 1)

    def _free_count(self) -> int:
        return self.alloc.count(False)

    @rule()
    def alloc_page(self) -> None:
        pfn = self.k.alloc_page(self.a, 0, "t:alloc")
        if self._free_count() == 0:
            assert pfn == -1
            return
        assert 0 <= pfn < self.N_FRAMES
        assert not self.alloc[pfn], f"allocator handed out allocated frame {pfn}"
        self.alloc[pfn] = True
        self.ref[pfn] = 1
        self.gen[pfn] += 1

    @rule(p=frames)
    def get_page(self, p: int) -> None:
        assume(self.alloc[p] and self.ref[p] > 0)
        self.k.get_page(self.a, p, "t:get")
        self.ref[p] += 1

    @rule(p=frames)
    def get_page_unless_zero(self, p: int) -> None:
        assume(self.alloc[p])
        got = self.k.get_page_unless_zero(self.a, p)
        assert got == (self.ref[p] > 0)
        if got:
            self.ref[p] += 1

    @rule(p=frames)
    def put_page(self, p: int) -> None:
        assume(self.alloc[p] and self.ref[p] > 0)
        self.k.put_page(self.a, p, "t:put")
        self.ref[p] -= 1
        if self.ref[p] == 0:
            self.alloc[p] = False
            self.pins[p] = 0
            self.gen[p] += 1

    @rule(p=frames)
    def put_page_underflow(self, p: int) -> None:
        assume(self.alloc[p] and self.ref[p] == 0)  # frozen at zero
        f = _expect(FailureKind.REFCOUNT_UNDERFLOW, self.k.put_page, self.a, p, "t:put")
        assert f.pages == (p,) and f.sites == ("t:put",)
        self.k.words.store(self.k.fw(p, F_REF), 0)  # see the module docstring

    @rule(p=frames)
    def get_page_on_zero_is_a_bug(self, p: int) -> None:
        assume(self.alloc[p] and self.ref[p] == 0)
        _expect(FailureKind.BUG_ON, self.k.get_page, self.a, p, "t:get")
        self.k.words.store(self.k.fw(p, F_REF), 0)

    @rule(p=frames, op=st.sampled_from(["get", "put", "trylock"]))
    def use_after_free(self, p: int, op: str) -> None:
        assume(not self.alloc[p])
        k, a = self.k, self.a
        fn = {"get": k.get_page, "put": k.put_page, "trylock": k.trylock_page}[op]
        f = _expect(FailureKind.USE_AFTER_FREE, fn, a, p, f"t:{op}")
        assert f.pages == (p,) and f.actors == (a.name,)
        assert not k.get_page_unless_zero(a, p)  # a free page has no references to share

    @rule(p=frames, off=st.integers(-1, 1))
    def freeze(self, p: int, off: int) -> None:
        assume(self.alloc[p] and self.frozen[p] is None and self.ref[p] > 0)
        count = self.ref[p] + off
        ok = self.k.page_ref_freeze(p, count)
        assert ok == (off == 0)
        if ok:
            self.frozen[p] = count
            self.ref[p] = 0

    @rule(p=frames)
    def unfreeze(self, p: int) -> None:
        count = self.frozen[p]
        assume(count is not None)
        self.k.page_ref_unfreeze(p, count)
        self.ref[p] = count
        self.frozen[p] = None

    @rule(p=frames)
    def pin(self, p: int) -> None:
        # What GUP's try_grab_folio(FOLL_PIN) will do: the pin bias and the pin count.
        assume(self.alloc[p] and self.ref[p] > 0)
        w = self.k.words
        w.fetch_add(self.k.fw(p, F_REF), GUP_PIN_COUNTING_BIAS)
        w.fetch_add(self.k.fw(p, F_PIN), 1)
        self.ref[p] += GUP_PIN_COUNTING_BIAS
        self.pins[p] += 1

    @rule(p=frames)
    def unpin(self, p: int) -> None:
        assume(self.pins[p] > 0 and self.ref[p] > GUP_PIN_COUNTING_BIAS)
        w = self.k.words
        w.fetch_add(self.k.fw(p, F_PIN), -1)
        w.fetch_add(self.k.fw(p, F_REF), -GUP_PIN_COUNTING_BIAS)
        self.ref[p] -= GUP_PIN_COUNTING_BIAS
        self.pins[p] -= 1

    @invariant()
    def frames_match_shadow(self) -> None:
        k = self.k
        for p in range(self.N_FRAMES):
            assert k.ref_count(p) == self.ref[p], p
            assert k.pincount(p) == self.pins[p], p
            assert k.test_flag(p, PG_allocated) == self.alloc[p], p
            assert k.maybe_dma_pinned(p) == (self.ref[p] >= GUP_PIN_COUNTING_BIAS)
            assert k.words.load(k.fw(p, F_GEN)) == self.gen[p]
        assert int(k.s.zones[0, Z_FREE]) == self._free_count()


RefcountMachine.TestCase.settings = SETTINGS
TestRefcount = RefcountMachine.TestCase


def test_free_refuses_a_locked_page() -> None:
    """Dropping the last reference of a locked page is the kernel's
    ``VM_BUG_ON_FOLIO(folio_test_locked)`` in the free path."""
    k, (a,) = kernel_with_actors(Geometry(sys_frames=1, devices=0), 1)
    pfn = k.alloc_page(a, 0, "setup")
    assert k.trylock_page(a, pfn, "t:lock")
    f = _expect(FailureKind.BUG_ON, k.put_page, a, pfn, "t:put")
    assert "locked" in f.message and f.pages == (pfn,)


def test_free_refuses_a_mapped_page() -> None:
    k, (a,) = kernel_with_actors(Geometry(sys_frames=1, devices=0), 1)
    pfn = k.alloc_page(a, 0, "setup")
    k.mapcount_add(pfn, 1)
    f = _expect(FailureKind.BUG_ON, k.put_page, a, pfn, "t:put")
    assert "mapcount 1" in f.message


# --------------------------------------------------------------------------------------
# mmap_lock: the reader/writer word


class MmapLockMachine(RuleBasedStateMachine):
    """mmap_lock (7.0 rwsem) against a shadow of its count and FIFO wait list: readers
    queue behind a queued writer, the waker grants every queued reader the lock when a
    reader is at the head, and wakes a writer at the head to take the lock itself."""

    def __init__(self) -> None:
        super().__init__()
        self.k, self.actors = kernel_with_actors(Geometry(sys_frames=1, devices=0), 4)
        self.word = self.k.mmap_word(0)
        self.readers: set[int] = set()
        self.writer: int | None = None
        self.queue: list[tuple[int, str]] = []
        # actor -> [mode, stepper, state]: state "sleep", "woken" (a writer) or "granted"
        self.waiting: dict[int, list] = {}

    def _holds(self, aid: int) -> bool:
        return aid in self.readers or self.writer == aid

    def _mark_wake(self, wake_type: str) -> None:
        if not self.queue:
            return
        head, mode = self.queue[0]
        if mode == "write":
            if wake_type == "any":
                self.waiting[head][2] = "woken"
            return
        if wake_type != "read_owned" and self.writer is not None:
            return
        for aid, m in list(self.queue):
            if m == "read":
                self.queue.remove((aid, m))
                self.readers.add(aid)
                self.waiting[aid][2] = "granted"

    def _cond_wake(self) -> None:
        if self.writer is None:
            self._mark_wake("readers" if self.readers else "any")

    def _queue(self, aid: int, mode: str, s: Stepper, req) -> None:
        assert type(req) is Block and (req.kind, req.target, req.lock) == ("mmap", 0, self.word)
        assert req.mask == WQ_SLEEP
        self.queue.append((aid, mode))
        self.waiting[aid] = [mode, s, "sleep"]

    @rule(aid=actor_ids4, mode=st.sampled_from(["read", "write"]))
    def lock(self, aid: int, mode: str) -> None:
        assume(aid not in self.waiting and not self._holds(aid))
        a = self.actors[aid]
        gen = self.k.mmap_read_lock if mode == "read" else self.k.mmap_write_lock
        s = Stepper(gen(a, 0, f"t:{mode}_lock"))
        req = s.step()
        if mode == "read":
            if self.writer is None and not self.readers:  # fast path, or the steal
                assert s.done
                self.readers.add(aid)
                self._mark_wake("read_owned")
            elif self.writer is None and not self.queue:  # readers own it, nobody waits
                assert s.done
                self.readers.add(aid)
            else:
                assert not s.done, "a reader must queue behind a held or queued writer"
                self._queue(aid, mode, s, req)
                self._cond_wake()
        elif self.writer is None and not self.readers:  # fast path or unqueued steal
            assert s.done
            self.writer = aid
        else:
            assert not s.done
            first = not self.queue
            self._queue(aid, mode, s, req)
            if not first:
                self._cond_wake()
        for w in self.waiting.values():
            if w[1] is not s and w[2] == "sleep":
                assert w[1].blocked_on(self.k) is not None

    @precondition(lambda self: any(w[2] != "sleep" for w in self.waiting.values()))
    @rule(data=st.data())
    def resume_waiter(self, data: st.DataObject) -> None:
        aid = data.draw(st.sampled_from(sorted(a for a, w in self.waiting.items() if w[2] != "sleep")))
        mode, s, state = self.waiting[aid]
        assert s.blocked_on(self.k) is None, "a woken waiter is runnable"
        s.step()
        if state == "granted":
            assert s.done
            del self.waiting[aid]
            return
        if self.writer is None and not self.readers:
            assert s.done
            self.queue.remove((aid, mode))
            self.writer = aid
            del self.waiting[aid]
        else:
            assert not s.done and s.blocked_on(self.k) is not None
            self.waiting[aid][2] = "sleep"

    @rule(aid=actor_ids4)
    def read_unlock(self, aid: int) -> None:
        assume(aid in self.readers and aid not in self.waiting)
        self.k.mmap_read_unlock(self.actors[aid], 0, "t:read_unlock")
        self.readers.discard(aid)
        if not self.readers and self.writer is None:
            self._mark_wake("any")

    @rule(aid=actor_ids4)
    def write_unlock(self, aid: int) -> None:
        a = self.actors[aid]
        assume(aid not in self.waiting)
        if self.writer == aid:
            self.k.mmap_write_unlock(a, 0, "t:write_unlock")
            self.writer = None
            self._mark_wake("any")
        else:
            f = _expect(FailureKind.BAD_UNLOCK, self.k.mmap_write_unlock, a, 0, "t:write_unlock")
            assert f.locks == ("mmap:0",)

    @rule(aid=actor_ids4)
    def read_unlock_unheld(self, aid: int) -> None:
        # Readers are anonymous (as in the kernel): the model can tell a bad up_read only
        # when no reader holds the lock at all.
        assume(aid not in self.waiting and not self.readers)
        before = self.k.words.load(self.word)
        f = _expect(
            FailureKind.BAD_UNLOCK, self.k.mmap_read_unlock, self.actors[aid], 0, "t:read_unlock"
        )
        assert f.locks == ("mmap:0",)
        self.k.words.store(self.word, before)

    @invariant()
    def word_matches_shadow(self) -> None:
        want = len(self.readers) + (RWSEM_WRITER if self.writer is not None else 0)
        if self.queue:
            want += RWSEM_FLAG_WAITERS
        assert self.k.words.load(self.word) == want
        assert self.k.wait_queue(self.word) == [aid for aid, _m in self.queue]
        if self.writer is not None:
            assert self.k.lock_owner(self.word) == self.writer
        for a in self.actors:
            granted = a.id in self.waiting and self.waiting[a.id][2] == "granted"
            assert (self.word in a.held) == (self._holds(a.id) and not granted)

    def teardown(self) -> None:
        for w in self.waiting.values():
            w[1].gen.close()


MmapLockMachine.TestCase.settings = SETTINGS
TestMmapLock = MmapLockMachine.TestCase


def test_writer_preference_a_reader_blocks_behind_a_queued_writer() -> None:
    """rwsem: a reader arriving while readers hold the lock and a writer waits queues
    behind the writer; the last reader's unlock wakes the writer, whose unlock grants the
    queued reader."""
    k, (r1, w, r2) = kernel_with_actors(Geometry(sys_frames=1, devices=0), 3)
    word = k.mmap_word(0)
    sr1 = Stepper(k.mmap_read_lock(r1, 0, "t:r1"))
    sr1.step()
    assert sr1.done
    sw = Stepper(k.mmap_write_lock(w, 0, "t:w"))
    assert type(sw.step()) is Block and sw.blocked_on(k) is not None
    sr2 = Stepper(k.mmap_read_lock(r2, 0, "t:r2"))
    assert type(sr2.step()) is Block and sr2.blocked_on(k) is not None
    assert k.wait_queue(word) == [w.id, r2.id]
    assert k.blocked_by(r2.id, word) == w.id and k.blocked_by(w.id, word) == r1.id
    k.mmap_read_unlock(r1, 0, "t:r1")
    assert sw.blocked_on(k) is None and sr2.blocked_on(k) is not None
    sw.step()
    assert sw.done and k.lock_owner(word) == w.id
    k.mmap_write_unlock(w, 0, "t:w")
    assert sr2.blocked_on(k) is None and k.words.load(word) == 1  # granted by the waker
    sr2.step()
    assert sr2.done and word in r2.held


def test_recursive_read_lock_behind_a_waiting_writer_is_a_deadlock() -> None:
    """The deadlock class writer preference brings: a reader takes mmap_read_lock again
    (a fault under GUP, say) while a writer waits: reported as a cycle reader → writer
    → reader."""
    from pagerace.harness.engine import DeterministicEngine, Limits, Outcome
    from pagerace.harness.schedulers.round_robin import RoundRobin

    k, actors = kernel_with_actors(Geometry(sys_frames=1, devices=0), 2)

    def reader(a):
        yield from k.mmap_read_lock(a, 0, "gup:mmap_read_lock")
        yield
        yield
        yield from k.mmap_read_lock(a, 0, "fault:mmap_read_lock")
        k.mmap_read_unlock(a, 0, "fault:unlock")
        k.mmap_read_unlock(a, 0, "gup:unlock")

    def writer(a):
        yield
        yield from k.mmap_write_lock(a, 0, "munmap:mmap_write_lock")
        k.mmap_write_unlock(a, 0, "munmap:unlock")

    r = DeterministicEngine(
        k, actors, [reader(actors[0]), writer(actors[1])], RoundRobin(), seed=0, limits=Limits()
    ).run()
    assert r.outcome is Outcome.FAILED
    f = r.failure
    assert f.kind is FailureKind.DEADLOCK and f.details["cycle"] is True
    assert sorted(f.actors) == ["t0", "t1"] and set(f.locks) == {"mmap:0"}
    assert "fault:mmap_read_lock" in f.message and "munmap:mmap_write_lock" in f.message


# --------------------------------------------------------------------------------------
# Spinlocks (page-table locks)


class SpinlockMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        geo = Geometry(sys_frames=1, devices=0, pages_per_mm=16, ptes_per_table=8)
        self.k, self.actors = kernel_with_actors(geo, N_ACTORS)
        self.words = [self.k.ptl_word(0, 0), self.k.ptl_word(0, 8)]
        assert self.words[0] != self.words[1]
        self.owner: dict[int, int | None] = dict.fromkeys(self.words)
        self.waiting: dict[int, tuple[int, Stepper]] = {}

    locks = st.integers(0, 1)

    @rule(aid=actor_ids, i=locks)
    def lock(self, aid: int, i: int) -> None:
        w = self.words[i]
        assume(aid not in self.waiting and self.owner[w] != aid)
        s = Stepper(self.k.spin_lock(self.actors[aid], w, "t:spin"))
        req = s.step()
        if self.owner[w] is None:
            assert s.done
            self.owner[w] = aid
        else:
            assert type(req) is Block and (req.kind, req.word, req.mask) == ("ptl", w, -1)
            self.waiting[aid] = (w, s)

    @precondition(lambda self: self.waiting)
    @rule(data=st.data())
    def resume_waiter(self, data: st.DataObject) -> None:
        aid = data.draw(st.sampled_from(sorted(self.waiting)))
        w, s = self.waiting[aid]
        s.step()
        if self.owner[w] is None:
            assert s.done
            self.owner[w] = aid
            del self.waiting[aid]
        else:
            assert type(s.last) is Block

    @rule(aid=actor_ids, i=locks)
    def unlock(self, aid: int, i: int) -> None:
        w = self.words[i]
        assume(aid not in self.waiting)
        a = self.actors[aid]
        if self.owner[w] == aid:
            self.k.spin_unlock(a, w, "t:unspin")
            self.owner[w] = None
        else:
            before = self.k.words.load(w)
            f = _expect(FailureKind.BAD_UNLOCK, self.k.spin_unlock, a, w, "t:unspin")
            assert f.locks == (self.k.lock_name(w),) and f.locks[0].startswith("ptl:0:")
            self.k.words.store(w, before)

    @invariant()
    def words_match_shadow(self) -> None:
        for w, owner in self.owner.items():
            assert self.k.words.load(w) == (0 if owner is None else owner + 1)
            assert self.k.lock_owner(w) == (-1 if owner is None else owner)
        for a in self.actors:
            assert {w for w in a.held} == {w for w, o in self.owner.items() if o == a.id}

    def teardown(self) -> None:
        for _w, s in self.waiting.values():
            s.gen.close()


SpinlockMachine.TestCase.settings = SETTINGS
TestSpinlock = SpinlockMachine.TestCase


# --------------------------------------------------------------------------------------
# The allocator: system RAM and two device zones


class AllocatorMachine(RuleBasedStateMachine):
    GEO = Geometry(sys_frames=4, dev_frames=3, devices=2)
    allocated = Bundle("allocated")

    def __init__(self) -> None:
        super().__init__()
        self.k, (self.a,) = kernel_with_actors(self.GEO, 1)
        self.k.devices = [Dmirror(0), Dmirror(1)]
        self.static = [int(x) & STATIC_MASK for x in self.k.s.frames[:, F_FLAGS]]
        self.taken: set[int] = set()
        self.dev_frees = [0, 0]

    def _free_in(self, zone: int) -> int:
        lo, hi = self.k.lay.zone_range(zone)
        return sum(1 for p in range(lo, hi) if p not in self.taken)

    @rule(target=allocated, zone=st.integers(0, 2))
    def alloc(self, zone: int) -> int:
        pfn = self.k.alloc_page(self.a, zone, "t:alloc")
        if self._free_in(zone) == 0:
            assert pfn == -1
            return -1
        lo, hi = self.k.lay.zone_range(zone)
        assert lo <= pfn < hi, f"zone {zone} handed out frame {pfn} outside [{lo}, {hi})"
        assert pfn not in self.taken, f"frame {pfn} handed out twice"
        assert self.k.ref_count(pfn) == 1 and self.k.data(pfn) == 0
        self.taken.add(pfn)
        return pfn

    @rule(pfn=consumes(allocated))
    def free(self, pfn: int) -> None:
        if pfn < 0:
            return
        self.k.put_page(self.a, pfn, "t:free")
        self.taken.discard(pfn)
        dev = self.k.lay.zone_of(pfn) - 1
        if dev >= 0:
            self.dev_frees[dev] += 1

    @invariant()
    def zones_and_frames_match(self) -> None:
        k = self.k
        for zone in range(self.GEO.zones):
            assert int(k.s.zones[zone, Z_FREE]) == self._free_in(zone)
        for p in range(self.GEO.frames):
            f = k.flags(p)
            assert f & STATIC_MASK == self.static[p], "zone bits changed"
            assert bool(f & PG_allocated) == (p in self.taken)
        assert [d.freed for d in k.devices] == self.dev_frees


AllocatorMachine.TestCase.settings = SETTINGS
TestAllocator = AllocatorMachine.TestCase


def test_alloc_fail_sys_fault_injection() -> None:
    k, (a,) = kernel_with_actors(Geometry(sys_frames=2, devices=0), 1)
    k.faults = frozenset({"alloc_fail_sys"})
    assert k.alloc_page(a, 0, "t:alloc") == -1
    assert int(k.s.zones[0, Z_FREE]) == 2


def test_pre_59_exclusive_waiter_loses_to_a_trylocker_and_sleeps_again() -> None:
    """4.14-5.8 (v5.0, hmm-2017): no hand-off however often the waiter loses; a woken
    exclusive waiter that finds the bit taken queues again at the tail and sleeps."""
    k, (owner, waiter, thief) = kernel_with_actors(
        Geometry(sys_frames=1, devices=0), 3, variant="hmm-2017"
    )
    pfn = k.alloc_page(owner, 0, "setup")
    assert k.trylock_page(owner, pfn, "t:own")
    s = _waiter(k, waiter, pfn)
    holder, other = owner, thief
    for _ in range(8):
        k.unlock_page(holder, pfn, "t:unlock")
        assert s.blocked_on(k) is None and k.page_lock_owner(pfn) == -1
        assert k.trylock_page(other, pfn, "t:steal")
        assert type(s.step()) is Block and s.blocked_on(k) is not None
        assert k.wait_queue(k.fw(pfn, F_FLAGS)) == [waiter.id]
        holder, other = other, holder
    assert "page_lock_handoff" not in k.events and k.events["page_lock_retry"] == 8
    k.unlock_page(holder, pfn, "t:unlock")
    s.step()
    assert s.done and k.page_lock_owner(pfn) == waiter.id
    assert k.wait_queue(k.fw(pfn, F_FLAGS)) == [] and not k.flags(pfn) & PG_waiters

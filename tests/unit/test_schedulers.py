"""Schedulers, in process, with recording fakes (pytest-xdist's ``MockNode`` style): a
fake stream whose draws are scripted and recorded, and a recording scheduler that the
real engine drives, to check what the engine offers a scheduler at every step."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pagerace.core.machine.errors import InvalidOption
from pagerace.core.machine.kernel import Actor
from pagerace.core.machine.layout import Geometry
from pagerace.harness.engine import DeterministicEngine, Limits
from pagerace.harness.schedulers import (
    PCT,
    STRATEGIES,
    RandomWalk,
    Replay,
    RoundRobin,
    ScheduleDiverged,
    StickyWalk,
    make_scheduler,
)
from strategies import kernel_with_actors


class FakeGenerator:
    """Stands in for ``numpy.random.Generator``: scripted answers, recorded calls."""

    def __init__(self, perm: list[int], points: list[int]) -> None:
        self.perm = perm
        self.points = points
        self.calls: list[tuple[str, tuple]] = []

    def permutation(self, n: int) -> np.ndarray:
        self.calls.append(("permutation", (n,)))
        assert n == len(self.perm)
        return np.array(self.perm)

    def integers(self, lo: int, hi: int, size: int) -> np.ndarray:
        self.calls.append(("integers", (lo, hi, size)))
        assert size == len(self.points)
        return np.array(self.points)


class FakeStream:
    def __init__(self, floats: list[float] = (), gen: FakeGenerator | None = None) -> None:
        self.floats = list(floats)
        self.gen = gen
        self.drawn = 0

    def random(self) -> float:
        self.drawn += 1
        return self.floats.pop(0)

    def generator(self) -> FakeGenerator:
        assert self.gen is not None
        return self.gen


# -- PCT ---------------------------------------------------------------------------------------


def test_pct_runs_the_highest_priority_runnable_actor() -> None:
    gen = FakeGenerator(perm=[2, 0, 3, 1], points=[])
    pct = PCT(depth=1, k=100)
    pct.start(4, FakeStream(gen=gen))
    assert gen.calls == [("permutation", (4,)), ("integers", (1, 101, 0))]
    # priorities: depth + perm = [3, 1, 4, 2]
    assert pct.choose([0, 1, 2, 3], 0) == 2
    assert pct.choose([0, 1, 3], 1) == 0
    assert pct.choose([1, 3], 2) == 3
    assert pct.choose([1], 3) == 1


def test_pct_change_points_demote_the_running_actor() -> None:
    gen = FakeGenerator(perm=[0, 1, 2], points=[7, 3])
    pct = PCT(depth=3, k=10)
    pct.start(3, FakeStream(gen=gen))
    assert gen.calls[1] == ("integers", (1, 11, 2))
    # priorities 3, 4, 5; change points sorted: step 3 → priority 2, step 7 → priority 1
    picks = [pct.choose([0, 1, 2], step) for step in range(10)]
    assert picks[:3] == [2, 2, 2]
    assert picks[3] == 1  # actor 2 demoted to 2 at step 3; actor 1 (4) runs
    assert picks[4:7] == [1, 1, 1]
    assert picks[7] == 0  # actor 1 demoted to 1 at step 7; actor 0 (3) runs
    assert picks[8:] == [0, 0]


def test_pct_colliding_change_points_are_spread() -> None:
    pct = PCT(depth=3, k=10)
    pct.start(2, FakeStream(gen=FakeGenerator(perm=[0, 1], points=[5, 5])))
    picks = [pct.choose([0, 1], s) for s in range(8)]
    assert picks == [1, 1, 1, 1, 1, 0, 1, 1]  # step 5: 1 → 2 (below 0's 3); step 6: 0 → 1


@pytest.mark.parametrize(("n", "k", "d"), [(4, 10, 1), (4, 10, 3), (3, 2000, 2), (8, 50, 4)])
def test_pct_guarantee(n: int, k: int, d: int) -> None:
    pct = PCT(depth=d, k=k)
    pct.start(n, FakeStream(gen=FakeGenerator(perm=list(range(n)), points=[1] * (d - 1))))
    assert pct.guarantee() == pytest.approx(1.0 / (n * k ** (d - 1)))
    assert pct.describe()["guarantee"] == pct.guarantee()


@pytest.mark.parametrize(("depth", "k"), [(0, 10), (3, 0)])
def test_pct_refuses_bad_parameters(depth: int, k: int) -> None:
    with pytest.raises(ValueError, match=str(depth if depth < 1 else k)):
        PCT(depth=depth, k=k)


# -- round robin ---------------------------------------------------------------------------------


def test_round_robin_quantum() -> None:
    rr = RoundRobin(quantum=3)
    rr.start(3, FakeStream())
    assert [rr.choose([0, 1, 2], s) for s in range(10)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 0]


def test_round_robin_moves_on_when_the_current_actor_blocks() -> None:
    rr = RoundRobin(quantum=4)
    rr.start(3, FakeStream())
    assert rr.choose([0, 1, 2], 0) == 0
    assert rr.choose([1, 2], 1) == 1  # 0 blocked: next in order
    assert rr.choose([0, 1, 2], 2) == 1  # 1 keeps its quantum
    assert rr.choose([0, 2], 3) == 2
    assert rr.choose([0], 4) == 0  # wraps around


def test_round_robin_draws_nothing() -> None:
    stream = FakeStream()
    rr = RoundRobin()
    rr.start(2, stream)
    for s in range(5):
        rr.choose([0, 1], s)
    assert stream.drawn == 0


# -- replay ----------------------------------------------------------------------------------------


def test_replay_follows_the_schedule_then_round_robin() -> None:
    rp = Replay([2, 0, 0, 1])
    rp.start(3, FakeStream())
    assert [rp.choose([0, 1, 2], s) for s in range(4)] == [2, 0, 0, 1]
    assert [rp.choose([0, 1, 2], s) for s in range(4, 8)] == [2, 0, 1, 2]


def test_replay_strict_divergence_raises() -> None:
    rp = Replay([0, 1, 1], strict=True)
    rp.start(2, FakeStream())
    assert rp.choose([0, 1], 0) == 0
    with pytest.raises(ScheduleDiverged, match=r"step 1: .*actor 1.*\[0\]") as info:
        rp.choose([0], 1)
    assert info.value.step == 1


def test_replay_lenient_divergence_continues() -> None:
    rp = Replay([0, 1, 1, 0], strict=False)
    rp.start(3, FakeStream())
    assert rp.choose([0, 1, 2], 0) == 0
    assert rp.choose([0, 2], 1) == 2  # 1 cannot run: the next runnable after it
    assert rp.choose([1, 2], 2) == 1
    assert rp.choose([0, 1], 3) == 0
    assert rp.describe() == {"strategy": "replay", "strict": False, "diverged": 1}


# -- random walk -----------------------------------------------------------------------------------


def test_random_walk_maps_draws_onto_the_runnable_list() -> None:
    stream = FakeStream(floats=[0.0, 0.5, 0.99, 0.34])
    rw = RandomWalk()
    rw.start(3, stream)
    assert rw.choose([0, 1, 2], 0) == 0
    assert rw.choose([0, 1, 2], 1) == 1
    assert rw.choose([0, 1, 2], 2) == 2
    assert rw.choose([4], 3) == 4  # a single candidate draws nothing
    assert rw.choose([1, 2], 4) == 1
    assert stream.drawn == 4


# -- sticky walk -----------------------------------------------------------------------------------


def test_sticky_walk_keeps_the_last_actor_or_switches_with_one_draw() -> None:
    # quantum 4: keep the last actor when the draw is >= 1/4; below, the draw scaled by 4
    # picks uniformly among the runnable ones (the last one included).
    stream = FakeStream(floats=[0.5, 0.9, 0.3, 0.1, 0.2, 0.0, 0.7])
    st = StickyWalk(quantum=4)
    st.start(3, stream)
    assert st.choose([0, 1, 2], 0) == 1  # no last actor yet: 0.5 picks the middle one
    assert st.choose([0, 1, 2], 1) == 1  # 0.9 >= 0.25: keeps 1
    assert st.choose([0, 1, 2], 2) == 1  # 0.3 >= 0.25: keeps 1
    assert st.choose([0, 1, 2], 3) == 1  # 0.1 < 0.25 -> 0.4 of [0, 1, 2]: 1 again
    assert st.choose([0, 1, 2], 4) == 2  # 0.2 -> 0.8: switches to 2
    assert st.choose([7], 5) == 7  # a single candidate draws nothing and becomes the last
    assert st.choose([0, 2], 6) == 0  # 7 is gone: the draw 0.0 itself picks
    assert st.choose([0, 2], 7) == 0  # 0.7 >= 0.25: keeps 0
    assert stream.drawn == 7
    assert st.describe() == {"strategy": "sticky", "quantum": 4}


def test_sticky_walk_quantum_one_makes_the_random_walks_choices() -> None:
    draws = [0.0, 0.5, 0.99, 0.34, 0.67]
    rw, st = RandomWalk(), StickyWalk(quantum=1)
    rw.start(3, FakeStream(floats=list(draws)))
    st.start(3, FakeStream(floats=list(draws)))
    assert [st.choose([0, 1, 2], i) for i in range(5)] == [rw.choose([0, 1, 2], i) for i in range(5)]


def test_sticky_walk_slices_are_about_quantum_steps_long() -> None:
    from pagerace.harness._rng import Stream

    for q in (1, 3, 8):
        st = StickyWalk(quantum=q)
        st.start(4, Stream([q]))
        picks = [st.choose([0, 1, 2, 3], i) for i in range(40_000)]
        switches = sum(a != b for a, b in itertools.pairwise(picks))
        # a switch draw (1/q of the steps) lands on another actor 3 times in 4
        assert switches / len(picks) == pytest.approx(0.75 / q, rel=0.05)
    with pytest.raises(ValueError, match="quantum must be >= 1, got 0"):
        StickyWalk(quantum=0)


def test_make_scheduler_names_the_valid_strategies() -> None:
    for name in STRATEGIES:
        assert make_scheduler(name).name == name
    with pytest.raises(InvalidOption, match=r"'fifo'.*pct, pos, random, replay, rr, sticky, surw, urw"):
        make_scheduler("fifo")


# -- what the engine offers a scheduler -------------------------------------------------------------


class RecordingScheduler:
    """Round robin that records every (runnable, step) the engine hands it."""

    name = "recording"

    def __init__(self) -> None:
        self.offers: list[tuple[list[int], int]] = []
        self.inner = RoundRobin()

    def start(self, n_actors: int, stream) -> None:
        self.n = n_actors
        self.inner.start(n_actors, stream)

    def choose(self, runnable: list[int], step: int) -> int:
        self.offers.append((list(runnable), step))
        return self.inner.choose(runnable, step)

    def describe(self) -> dict[str, object]:
        return {"strategy": self.name}


def test_engine_offers_sorted_runnable_actors_and_never_a_blocked_one() -> None:
    """A waiter is offered again only once an unlock woke it: one exclusive waiter per
    unlock, head of the queue first (folio_wake_bit), and steps are numbered without
    gaps."""
    k, actors = kernel_with_actors(Geometry(sys_frames=1, devices=0), 3)
    p = k.alloc_page(actors[0], 0, "setup")
    released_at: list[int] = []

    def holder(a: Actor):
        yield from k.lock_page(a, p, "holder:lock")
        for _ in range(6):
            yield
        k.unlock_page(a, p, "holder:unlock")
        released_at.append(eng.step)
        yield

    def waiter(a: Actor):
        yield
        yield from k.lock_page(a, p, "waiter:lock")
        k.unlock_page(a, p, "waiter:unlock")

    rec = RecordingScheduler()
    progs = [holder(actors[0]), waiter(actors[1]), waiter(actors[2])]
    eng = DeterministicEngine(k, actors, progs, rec, seed=0, limits=Limits())
    r = eng.run()
    assert r.outcome.value == "clean"
    steps = [s for _, s in rec.offers]
    assert steps == list(range(len(steps))) and len(steps) == r.steps
    assert all(run == sorted(run) for run, _ in rec.offers)
    (release,) = released_at
    offered = [run for run, _ in rec.offers]
    assert offered[4] == [0, 1, 2] and offered[5] == [0, 2]  # 1 blocked at step 4
    for step in range(6, release + 1):  # both waiters parked until the unlock
        assert offered[step] == [0], (step, offered[step])
    assert offered[release + 1] == [0, 1]  # the unlock woke the first waiter only
    assert k.stats["waiter:lock"][0] == 2  # both waiters got the lock in the end


# -- the engine's inline strategies and its stream ---------------------------------------


def test_stream_batches_do_not_change_its_numbers() -> None:
    """The stream draws in growing batches; its numbers are one ``Generator.random``
    sequence whatever mix of ``random`` / ``next_batch`` / ``below`` reads them."""
    from pagerace.harness._rng import Stream

    want = np.random.default_rng([5, 0x5EED]).random(20_000).tolist()
    s = Stream([5, 0x5EED])
    got: list[float] = []
    rng = np.random.default_rng(0)
    while len(got) < len(want):
        how = rng.integers(3)
        if how == 0:
            got.append(s.random())
        elif how == 1:
            got.extend(s.next_batch())
        else:
            n = int(rng.integers(1, 9))
            assert s.below(n) == int(want[len(got)] * n)
            got.append(want[len(got)])
    assert got[: len(want)] == want


class _Called:
    """Wraps a strategy so the engine calls its ``choose`` (a subclass is not inlined)."""

    @staticmethod
    def of(sched):  # a subclass of the strategy's own class: the same methods
        return type("Called" + type(sched).__name__, (type(sched),), {})(
            **({"quantum": sched.quantum} if hasattr(sched, "quantum") else {})
        )


@pytest.mark.parametrize(
    ("strategy", "quantum"), [("random", 1), ("sticky", 3), ("sticky", 1), ("rr", 1), ("rr", 4)]
)
@pytest.mark.parametrize(("name", "variant"), [("default", "v6"), ("opposite-order", "hmm-2017")])
def test_inline_strategies_choose_as_their_choose(
    strategy: str, quantum: int, name: str, variant: str
) -> None:
    """The engine makes the random walk's, the sticky walk's and round robin's choices
    itself (no call per step): the same schedules, preemptions and outcomes as their
    ``choose`` called at every step, over seeds with blocked actors and deadlocks."""
    from pagerace.core.actors import program
    from pagerace.core.oracles.invariants import check_all
    from pagerace.harness.runner import build_model, limits_for
    from pagerace.workloads import load_workload

    w = load_workload(name)
    for seed in range(4):
        got = []
        for wrap in (False, True):
            sched = make_scheduler(strategy, quantum=quantum)
            if wrap:
                sched = _Called.of(sched)
                assert type(sched) is not type(make_scheduler(strategy, quantum=quantum))
            m = build_model(w, variant, (), seed)
            progs = [program(m.kernel, a, o) for a, o in zip(m.actors, m.ops)]
            r = DeterministicEngine(
                m.kernel, m.actors, progs, sched, seed=seed, limits=limits_for(w),
                invariants=check_all,
            ).run()
            got.append((list(r.schedule), r.preemptions, r.outcome, r.fingerprint, r.fair_turns))
        assert got[0] == got[1]
        assert got[0][1] > 0

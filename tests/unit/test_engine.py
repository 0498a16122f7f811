"""The deterministic engine: determinism (trio's seeded-scheduler test), the deadlock and
livelock oracles, budgets, invalid yields, and quiet-point invariants."""

from __future__ import annotations

import pytest
from pagerace.core.actors import OPS, program
from pagerace.core.machine.errors import FailureKind, HarnessInternalError
from pagerace.core.machine.kernel import Actor, Kernel
from pagerace.core.machine.layout import Geometry, PG_locked
from pagerace.core.oracles.invariants import check_all
from pagerace.harness.engine import DeterministicEngine, Limits, Outcome
from pagerace.harness.runner import build_model, run_deterministic
from pagerace.harness.schedulers import RoundRobin
from pagerace.workloads import load_workload
from strategies import kernel_with_actors

STRATEGIES = ["random", "pct", "rr"]


# -- determinism ----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_gives_one_trace(strategy: str) -> None:
    """trio's ``test_the_trio_scheduler_is_deterministic_if_seeded``: ten runs of one
    (workload, variant, seed, strategy) give one fingerprint and one schedule."""
    w = load_workload("default")
    runs = [run_deterministic(w, seed=7, strategy=strategy, trace=True) for _ in range(10)]
    assert len({r.result.fingerprint for r in runs}) == 1
    assert len({r.result.schedule.tobytes() for r in runs}) == 1
    assert len({tuple(r.result.trace) for r in runs}) == 1
    assert runs[0].result.steps > 100 and runs[0].outcome is Outcome.CLEAN


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_different_seeds_give_different_traces(strategy: str) -> None:
    w = load_workload("default")
    prints = {run_deterministic(w, seed=s, strategy=strategy).result.fingerprint for s in range(5)}
    assert len(prints) == 5


def test_strategies_differ_on_one_seed() -> None:
    w = load_workload("default")
    prints = {run_deterministic(w, seed=3, strategy=s).result.schedule.tobytes() for s in STRATEGIES}
    assert len(prints) == 3


# -- hand-made programs ----------------------------------------------------------------------


DEFAULT_LIMITS = Limits()


def _engine(
    k: Kernel, actors: list[Actor], programs: list, limits: Limits = DEFAULT_LIMITS, **kw
) -> DeterministicEngine:
    return DeterministicEngine(k, actors, programs, RoundRobin(), seed=0, limits=limits, **kw)


def _lock_two(k: Kernel, a: Actor, first: int, second: int):
    yield from k.lock_page(a, first, "ab:lock_first")
    yield
    yield from k.lock_page(a, second, "ab:lock_second")
    k.unlock_page(a, second, "ab:unlock")
    k.unlock_page(a, first, "ab:unlock")


def test_ab_ba_deadlock_is_reported_as_a_cycle() -> None:
    k, actors = kernel_with_actors(Geometry(sys_frames=2, devices=0), 2)
    p, q = (k.alloc_page(actors[0], 0, "setup") for _ in range(2))
    progs = [_lock_two(k, actors[0], p, q), _lock_two(k, actors[1], q, p)]
    r = _engine(k, actors, progs).run()
    assert r.outcome is Outcome.FAILED
    f = r.failure
    assert f.kind is FailureKind.DEADLOCK and f.details["cycle"] is True
    assert sorted(f.actors) == ["t0", "t1"]
    assert sorted(f.pages) == sorted([p, q])
    assert sorted(f.locks) == sorted([f"page:{p}", f"page:{q}"])
    # Where each lock was taken, and where each actor waits.
    assert {"ab:lock_first", "ab:lock_second"} <= set(f.sites)
    assert "ab:lock_second" in f.message and "ab:lock_first" in f.message
    assert r.steps == 4  # found when the second waiter closes the cycle, not later


def test_self_deadlock_is_a_cycle_of_one() -> None:
    k, actors = kernel_with_actors(Geometry(sys_frames=1, devices=0), 2)
    p = k.alloc_page(actors[0], 0, "setup")

    def relock(a: Actor):
        yield from k.lock_page(a, p, "self:first")
        yield
        yield from k.lock_page(a, p, "self:again")

    def bystander(a: Actor):
        for _ in range(50):
            yield

    r = _engine(k, actors, [relock(actors[0]), bystander(actors[1])]).run()
    f = r.failure
    assert f is not None and f.kind is FailureKind.DEADLOCK and f.details["cycle"] is True
    assert f.actors == ("t0",) and f.pages == (p,)
    assert "self:first" in f.sites
    assert r.steps < 50  # reported at once, while the bystander still runs


def test_everyone_blocked_is_a_deadlock_without_a_cycle() -> None:
    """A lock left held by an actor that finished: the waiters are all blocked, and no
    cycle exists (the owner is gone)."""
    k, actors = kernel_with_actors(Geometry(sys_frames=1, devices=0), 3)
    p = k.alloc_page(actors[0], 0, "setup")

    def take_and_leave(a: Actor):
        assert k.trylock_page(a, p, "leaver:trylock")
        yield

    def waiter(a: Actor):
        yield
        yield from k.lock_page(a, p, "waiter:lock")

    progs = [take_and_leave(actors[0]), waiter(actors[1]), waiter(actors[2])]
    f = _engine(k, actors, progs).run().failure
    assert f is not None and f.kind is FailureKind.DEADLOCK and f.details["cycle"] is False
    assert f.actors == ("t1", "t2") and f.pages == (p, p)
    assert "every live actor is blocked" in f.message and "leaver:trylock" in f.sites


def test_livelock_on_a_trylock_retried_forever() -> None:
    k, actors = kernel_with_actors(Geometry(sys_frames=1, devices=0), 2)
    p = k.alloc_page(actors[0], 0, "setup")

    def holder(a: Actor):
        assert k.trylock_page(a, p, "holder:trylock")
        yield

    def spinner(a: Actor):
        a.op = "spin"
        while not k.trylock_page(a, p, "spinner:trylock"):
            yield

    r = _engine(k, actors, [holder(actors[0]), spinner(actors[1])], Limits(livelock_steps=100)).run()
    f = r.failure
    assert r.outcome is Outcome.FAILED and f.kind is FailureKind.LIVELOCK
    assert f.actors == ("t1",) and "spinner:trylock" in f.sites
    # The first 101 spins raise the suspicion; the spinner then gets one more window under
    # a fair round robin (the holder is done, so it cannot help) before it is reported.
    assert "spin" in f.message and f.details["steps"] == 101
    assert k.stats["spinner:trylock"][3] == 202  # every retry counted as a failed trylock
    assert r.fair_turns > 0


def test_a_livelock_names_the_loop_it_spins_in_not_the_runs_busiest_site() -> None:
    """The message names where the livelocked actor spins and what grew in its last, fair
    window; a site that failed more trylocks earlier in the run (another actor's, which
    gave up since) is not blamed (it was, by the run's totals, in session 5)."""
    k, actors = kernel_with_actors(Geometry(sys_frames=2, devices=0), 3)
    p = k.alloc_page(actors[0], 0, "setup")
    q = k.alloc_page(actors[0], 0, "setup")

    def holder(a: Actor):
        assert k.trylock_page(a, p, "holder:trylock")
        assert k.trylock_page(a, q, "holder:trylock")
        yield

    def noisy(a: Actor):  # 300 failed trylocks in its first 30 steps, then gives up
        for _ in range(30):
            for _ in range(10):
                assert not k.trylock_page(a, q, "noisy:trylock")
            yield

    def spinner_loop(a: Actor):
        while not k.trylock_page(a, p, "spinner:trylock"):
            yield

    def spinner(a: Actor):
        a.op = "spin"
        yield from spinner_loop(a)

    progs = [holder(actors[0]), noisy(actors[1]), spinner(actors[2])]
    r = _engine(k, actors, progs, Limits(livelock_steps=100)).run()
    f = r.failure
    assert r.outcome is Outcome.FAILED and f.kind is FailureKind.LIVELOCK and f.actors == ("t2",)
    assert k.stats["noisy:trylock"][3] == 300 > k.stats["spinner:trylock"][3]  # the run's busiest
    assert f.sites == ("spinner:trylock",), f.message
    assert "spinning in spinner_loop" in f.message and f.details["where"] == "spinner_loop"
    assert "noisy" not in f.message
    assert "spinner:trylock failed 101 trylocks" in f.message, f.message


def test_budget_outcome_when_max_steps_is_hit() -> None:
    r = run_deterministic(load_workload("default"), seed=1, max_steps=50)
    assert r.outcome is Outcome.BUDGET and r.result.failure is None
    assert r.result.steps == 50 and len(r.result.schedule) == 50


def test_unknown_yield_raises_internal_error_naming_file_and_line() -> None:
    k, actors = kernel_with_actors(Geometry(sys_frames=1, devices=0), 1)

    def bad(a: Actor):
        yield
        yield 42  # the line the error must name

    line = bad.__code__.co_firstlineno + 2
    with pytest.raises(HarnessInternalError) as info:
        _engine(k, actors, [bad(actors[0])]).run()
    msg = str(info.value)
    assert f"test_engine.py:{line}" in msg and "42" in msg and "bad" in msg


def test_quiet_point_invariants_catch_corruption_before_the_end(monkeypatch) -> None:
    """A corruption made and repaired between operations is caught at a quiet point (all
    actors idle), not only at the end, where it would be invisible."""
    victim = 1

    def corrupt(k: Kernel, a: Actor):
        k.set_flag(victim, PG_locked)
        yield

    def repair(k: Kernel, a: Actor):
        k.clear_flag(victim, PG_locked)
        yield

    monkeypatch.setitem(OPS, "test_corrupt", corrupt)
    monkeypatch.setitem(OPS, "test_repair", repair)
    ops = [[("test_corrupt",), ("idle", 3), ("test_repair",), ("idle", 3)], [("idle", 2)]]

    def run(check_every: int):
        kk, acts = kernel_with_actors(Geometry(sys_frames=2, devices=0), 2)
        progs = [program(kk, a, o) for a, o in zip(acts, ops)]
        lim = Limits(check_every=check_every)
        return _engine(kk, acts, progs, lim, invariants=check_all).run()

    caught = run(check_every=1)
    assert caught.outcome is Outcome.FAILED
    assert caught.failure.kind is FailureKind.LOCK_BALANCE
    assert caught.failure.pages == (victim,)
    assert caught.quiet_checks >= 1
    unchecked = run(check_every=0)
    assert unchecked.outcome is Outcome.CLEAN and unchecked.quiet_checks == 1  # only the end
    assert caught.failure.step < unchecked.steps


def test_quiet_checks_run_only_when_every_actor_is_idle() -> None:
    seen: list[list[bool]] = []

    def spy(k: Kernel, final: bool) -> None:
        seen.append([a.idle for a in k.actors])
        check_all(k, final)

    w = load_workload("default")
    m = build_model(w, "v6", (), 4)
    progs = [program(m.kernel, a, o) for a, o in zip(m.actors, m.ops)]
    eng = DeterministicEngine(
        m.kernel, m.actors, progs, RoundRobin(), seed=4, limits=Limits(check_every=5), invariants=spy
    )
    r = eng.run()
    assert r.outcome is Outcome.CLEAN and r.quiet_checks == len(seen) > 2
    assert all(all(flags) for flags in seen)


def test_replaying_a_recorded_schedule_reproduces_the_failure_bit_for_bit() -> None:
    w = load_workload("fault-storm")
    bugs = ["no-fault-folio-exception"]
    first = run_deterministic(w, seed=2, bugs=bugs)
    assert first.outcome is Outcome.FAILED
    again = run_deterministic(w, seed=2, bugs=bugs, schedule=list(first.result.schedule))
    assert again.strategy == "replay"
    assert again.result.failure.kind is first.result.failure.kind
    assert again.result.failure.step == first.result.failure.step
    assert again.result.fingerprint == first.result.fingerprint


def test_strict_replay_of_a_schedule_that_cannot_run_diverges() -> None:
    """A schedule naming a blocked or finished actor is not this run: strict replay
    stops at once instead of wandering off."""
    from pagerace.harness.schedulers import ScheduleDiverged

    w = load_workload("default")
    rec = run_deterministic(w, seed=5)
    sched = list(rec.result.schedule)
    last = {aid: i for i, aid in enumerate(sched)}  # each actor's finishing step
    done_first = min(last, key=last.get)
    sched[last[done_first] + 1] = done_first  # run an actor after it finished
    with pytest.raises(ScheduleDiverged) as info:
        run_deterministic(w, seed=5, schedule=sched)
    assert info.value.step == last[done_first] + 1
    lenient = run_deterministic(w, seed=5, schedule=sched, strict=False)
    assert lenient.outcome is Outcome.CLEAN and lenient.result.scheduler["diverged"] >= 1

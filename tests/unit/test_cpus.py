"""CPUs, per-CPU work and the preemption models (workload keys ``cpus``, ``preemption``
and an actor's ``cpu``): kworkers run the work ``lru_add_drain_all`` queues, and under
``PREEMPT_NONE`` an actor that spins on a CPU keeps that CPU's kworker from running."""

from __future__ import annotations

import pytest
from pagerace.core.machine.errors import FailureKind, InvalidWorkload
from pagerace.core.machine.kernel import RESCHED, Actor
from pagerace.core.machine.layout import Geometry, PG_anon, PG_lru
from pagerace.harness.engine import DeterministicEngine, Limits, Outcome
from pagerace.harness.runner import run_deterministic
from pagerace.harness.schedulers.round_robin import RoundRobin
from pagerace.workloads import parse_workload
from strategies import Stepper, kernel_with_actors


def _spinner_world(preemption: str):
    """cpu0: a spinner and kworker/0; cpu1: a driver that holds a page lock while it
    waits for lru_add_drain_all, and kworker/1. The spinner retries a trylock of the
    driver's page without sleeping; a fresh folio sits in cpu0's LRU-add batch."""
    k, actors = kernel_with_actors(Geometry(sys_frames=4, devices=0, actors=4), 4)
    spinner, driver, kw0, kw1 = actors
    k.cpus, k.preemption = 2, preemption
    for a, cpu, daemon in ((spinner, 0, False), (driver, 1, False), (kw0, 0, True), (kw1, 1, True)):
        a.cpu, a.daemon = cpu, daemon
    page = k.alloc_page(driver, 0, "setup")
    fresh = k.alloc_page(spinner, 0, "setup")
    k.set_flag(fresh, PG_anon)
    k.folio_add_lru(spinner, fresh, "setup")

    def spin(a: Actor):
        a.idle, a.op = False, "spin"
        yield
        while not k.trylock_page(a, page, "spin:trylock"):
            yield
        k.unlock_page(a, page, "spin:unlock")
        k.progress(a)
        a.idle = True

    def unmap(a: Actor):
        a.idle, a.op = False, "migrate_device_unmap"
        assert k.trylock_page(a, page, "collect:trylock")
        yield
        yield from k.lru_add_drain_all(a, "migrate_device_unmap:lru_add_drain_all")
        k.unlock_page(a, page, "unmap:unlock")
        k.progress(a)
        a.idle = True

    progs = [spin(spinner), unmap(driver), k.worker_thread(kw0, 0), k.worker_thread(kw1, 1)]
    eng = DeterministicEngine(
        k, actors, progs, RoundRobin(), seed=0, limits=Limits(livelock_steps=300)
    )
    return k, eng, fresh


def test_preempt_none_spinner_on_a_cpu_with_queued_work_is_a_livelock() -> None:
    k, eng, fresh = _spinner_world("none")
    r = eng.run()
    assert r.outcome is Outcome.FAILED
    f = r.failure
    assert f.kind is FailureKind.LIVELOCK and f.actors == ("t0",), f.headline()
    assert "spin:trylock" in f.sites
    assert r.fair_turns > 0, "the fair window ran and, under PREEMPT_NONE, could not help"
    assert not k.test_flag(fresh, PG_lru), "cpu0's kworker never ran"


@pytest.mark.parametrize("preemption", ["full", "voluntary"])
def test_only_full_preemption_lets_the_kworker_past_the_spinner(preemption: str) -> None:
    """Under full preemption the kworker gets cpu0 at one of the spinner's preemption
    points and the run is clean; under voluntary the spinner's trylock loop has no
    might_sleep() point, so it starves the kworker as under none."""
    k, eng, fresh = _spinner_world(preemption)
    r = eng.run()
    if preemption == "full":
        assert r.outcome is Outcome.CLEAN, r.failure and r.failure.headline()
        assert k.test_flag(fresh, PG_lru) and k.events["lru_add_drain_all"] == 1
    else:
        assert r.failure is not None and r.failure.kind is FailureKind.LIVELOCK


def test_voluntary_preemption_point_at_might_sleep() -> None:
    """Under PREEMPT_VOLUNTARY a sleeping lock's might_sleep() is a preemption point even
    when the lock is free; under full and none it is not one."""
    for preemption, want in (("voluntary", True), ("none", False), ("full", False)):
        k, (a,) = kernel_with_actors(Geometry(sys_frames=1, devices=0), 1)
        k.preemption = preemption
        pfn = k.alloc_page(a, 0, "setup")
        s = Stepper(k.lock_page(a, pfn, "t:lock"))
        first = s.step()
        assert (first is RESCHED) == want and s.done != want


WORKLOAD = {
    "name": "cpus-test",
    "cpus": 2,
    "geometry": {"sys_frames": 16, "dev_frames": 8, "pages_per_mm": 8},
    "mm": [{"id": 0}],
    "actor": [
        {"kind": "cpu", "count": 2, "ops": 6, "cpu": [0, 1], "hot": [0, 3]},
        {"kind": "driver", "count": 1, "range": [0, 4], "ops": 4, "cpu": 0},
    ],
}


def test_a_workload_with_cpus_runs_kworkers() -> None:
    w = parse_workload(dict(WORKLOAD), "t")
    assert w.cpus == 2 and w.preemption == "full" and w.actor_cpus() == [0, 1, 0]
    assert w.geometry.actors == 5  # three actors and a kworker per CPU
    r = run_deterministic(w, seed=1)
    assert r.outcome is Outcome.CLEAN, r.result.failure and r.result.failure.headline()
    names = [a.name for a in r.actors]
    assert names[-2:] == ["kworker/0", "kworker/1"] and all(a.daemon for a in r.actors[-2:])
    assert [a.cpu for a in r.actors] == [0, 1, 0, 0, 1]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"preemption": "lazy"}, "preemption = 'lazy' is not valid; valid models: full, voluntary, none"),
        ({"cpus": 0, "preemption": "none"}, "needs cpus >= 1"),
        ({"cpus": 1}, "actor.cpu = 1 is not valid; expected an integer in [0, 0]"),
    ],
)
def test_bad_cpu_keys_are_one_line_errors(change: dict, needle: str) -> None:
    with pytest.raises(InvalidWorkload) as info:
        parse_workload({**WORKLOAD, **change}, "t")
    msg = str(info.value)
    assert needle in msg and "\n" not in msg


def test_page_lock_unfairness_is_a_workload_key() -> None:
    """``page_lock_unfairness`` (the sysctl) reaches the kernel: 0 hands the page lock to
    the first exclusive waiter at once; the default is the kernel's 5."""
    from pagerace.harness.runner import build_model

    w = parse_workload(dict(WORKLOAD), "t")
    assert w.page_lock_unfairness == 5
    assert build_model(w, "v6", (), 0).kernel.page_lock_unfairness == 5
    w0 = parse_workload({**WORKLOAD, "page_lock_unfairness": 0}, "t")
    assert build_model(w0, "v6", (), 0).kernel.page_lock_unfairness == 0
    with pytest.raises(InvalidWorkload, match="page_lock_unfairness = -1 is not valid"):
        parse_workload({**WORKLOAD, "page_lock_unfairness": -1}, "t")

"""Bounded exhaustive search and the hunt loop."""

from __future__ import annotations

import pytest
from pagerace.core.machine.errors import FailureKind, InvalidOption
from pagerace.harness.explore import explore
from pagerace.harness.hunt import Budget, hunt, parse_budget
from pagerace.harness.schedulers import make_scheduler
from pagerace.harness.schedulers.exhaustive import Exhaustive, preemptions_of
from pagerace.workloads import load_workload, parse_workload

TINY = {
    "name": "tiny",
    "geometry": {"sys_frames": 8, "dev_frames": 4, "pages_per_mm": 2, "ptes_per_table": 2},
    "mm": [{"id": 0, "populate": [{"start": 0, "end": 2}]}],
    "actor": [
        {"kind": "cpu", "count": 2, "range": [0, 2], "ops": 1, "write_ratio": 1.0},
    ],
}


def test_exhaustive_scheduler_replays_prefix_then_runs_without_preempting():
    from pagerace.harness._rng import Stream

    s = Exhaustive([1, 0])
    s.start(2, Stream([0]))
    assert s.choose([0, 1], 0) == 1
    assert s.choose([0, 1], 1) == 0
    assert s.choose([0, 1], 2) == 0  # keeps the last actor
    assert s.choose([1], 3) == 1  # free switch: 0 is not runnable
    assert preemptions_of(s.log, 4) == 1  # the prefix's switch 1 -> 0
    assert make_scheduler("exhaustive").name == "exhaustive"


def test_tiny_space_is_exhausted_and_grows_with_the_bound():
    w = parse_workload(TINY, "tiny")
    counts = []
    for bound in (0, 1, 2):
        r = explore(w, preemption_bound=bound, max_schedules=5000)
        assert r.exhausted, bound
        assert r.failure is None
        counts.append(r.schedules)
    assert counts[0] < counts[1] < counts[2]


def test_budget_stops_the_search_unexhausted():
    w = parse_workload(TINY, "tiny")
    r = explore(w, preemption_bound=3, max_schedules=3)
    assert r.schedules == 3 and not r.exhausted


def test_exhaustive_finds_the_ab_ba_deadlock():
    from pagerace.workloads import load_workload

    r = explore(load_workload("opposite-order"), variant="hmm-2017", max_schedules=300)
    assert r.failure is not None
    assert r.failure.result.failure.kind is FailureKind.DEADLOCK


def test_parse_budget():
    assert parse_budget("200-runs") == Budget(runs=200)
    assert parse_budget("7 runs") == Budget(runs=7)
    # a bare number is seconds, as for every other duration (issue 12: it was 45 runs)
    assert parse_budget("45") == Budget(seconds=45.0)
    assert parse_budget("500ms") == Budget(seconds=0.5)
    assert parse_budget("1h30m") == Budget(seconds=5400.0)
    assert parse_budget("30s") == Budget(seconds=30.0)
    assert parse_budget("2m") == Budget(seconds=120.0)
    for bad in ("", "-3", "0-runs", "fast", "3 parsecs", "0", "1h30"):
        with pytest.raises(InvalidOption, match="budget"):
            parse_budget(bad)


def test_hunt_random_finds_and_shrinks_and_pct_reports_its_guarantee():
    from pagerace.workloads import load_workload

    w = load_workload("opposite-order")
    r = hunt(w, variant="hmm-2017", budget=Budget(runs=50), shrink_budget=2.0)
    assert r.found is not None and r.shrunk is not None
    assert r.shrunk.record.result.failure.kind is FailureKind.DEADLOCK
    assert r.shrunk.record.result.steps <= r.found.result.steps
    clean = hunt(w, variant="v6", budget=Budget(runs=20), strategy="pct", pct_depth=2)
    assert clean.found is None and clean.runs == 20
    assert clean.guarantee is not None and 0 < clean.guarantee < 1
    with pytest.raises(InvalidOption, match="valid: mix, random, pct, rr, pos, urw, surw, exhaustive"):
        hunt(w, strategy="sideways")


def test_mix_rotates_random_pct_and_round_robin_over_the_seeds():
    """``mix`` (the default) finds both a lockstep livelock that the random walk misses
    and a race that needs a well-placed preemption, and says which strategy each run used."""
    from pagerace.harness.hunt import MIX

    assert [s for s, _ in MIX] == ["random", "pct", "rr"]
    lockstep = hunt(
        load_workload("fault-storm-many"), bugs=["fault-ref-no-trylock"],
        budget=Budget(runs=6), shrink=False,
    )
    assert lockstep.strategy == "mix" and lockstep.found is not None
    assert lockstep.found.strategy in ("pct", "rr")
    assert lockstep.found.result.failure.kind is FailureKind.LIVELOCK
    pins = hunt(
        load_workload("migrate-vs-pin"), bugs=["check-ignores-pins"],
        budget=Budget(runs=120), shrink=False,
    )
    # The pin race needs a preemption between a fault's lockless read of the entry and
    # its PTL (or a random one elsewhere): round robin has had that window since the
    # fault path got its preemption point there (issue 14 item 5).
    assert pins.found is not None and pins.found.strategy in ("random", "rr")
    assert pins.found.result.failure is not None

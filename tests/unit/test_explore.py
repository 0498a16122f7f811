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
    valid = "valid: mix, random, pct, rr, sticky, pos, urw, surw, exhaustive"
    with pytest.raises(InvalidOption, match=valid):
        hunt(w, strategy="sideways")


def test_mix_runs_round_robin_first_then_sticky_round_robin_and_random_by_turns():
    """``mix`` (the default) finds both a lockstep livelock that the random walk misses
    and races that need one actor to sit still at a random point, and each run records
    the strategy and quantum its turn gave it."""
    from pagerace.harness.hunt import MIX_RR_QUANTA, Turn, mix_turn

    assert [mix_turn(i) for i in range(8)] == [
        Turn("rr", 3, 1),
        Turn("sticky", 3, 3), Turn("rr", 3, MIX_RR_QUANTA[0]), Turn("random"),
        Turn("sticky", 3, 3), Turn("rr", 3, MIX_RR_QUANTA[1]), Turn("random"),
        Turn("sticky", 3, 3),
    ]
    assert {mix_turn(2 + 3 * j).quantum for j in range(len(MIX_RR_QUANTA))} == set(MIX_RR_QUANTA)
    assert mix_turn(2 + 3 * len(MIX_RR_QUANTA)) == mix_turn(2)  # the quanta come round again
    lockstep = hunt(
        load_workload("fault-storm-many"), bugs=["fault-ref-no-trylock"],
        budget=Budget(runs=6), shrink=False,
    )
    assert lockstep.strategy == "mix" and lockstep.found is not None
    assert lockstep.runs == 1 and lockstep.found.strategy == "rr"  # the first turn
    assert lockstep.found.result.failure.kind is FailureKind.LIVELOCK
    seen: list[tuple[str, int]] = []
    uaf = hunt(
        load_workload("evict-vs-fault"), bugs=["fault-without-ref"], budget=Budget(runs=60),
        shrink=False, on_run=lambda rec: seen.append((rec.strategy, rec.options["quantum"])),
    )
    assert uaf.found is not None and uaf.found.result.failure.kind is FailureKind.USE_AFTER_FREE
    found = uaf.found
    turns = [mix_turn(i) for i in range(uaf.runs)]
    assert seen + [(found.strategy, found.options["quantum"])] == [
        (t.strategy, t.quantum) for t in turns
    ]
    assert found.result.scheduler.get("quantum", 1) == turns[-1].quantum
    pins = hunt(
        load_workload("migrate-vs-pin"), bugs=["check-ignores-pins"],
        budget=Budget(runs=120), shrink=False,
    )
    assert pins.found is not None and pins.found.strategy in ("random", "rr", "sticky")
    assert pins.found.result.failure is not None


def test_mix_hunt_artifact_replays_with_its_turns_strategy(tmp_path, capsys) -> None:
    """A failure a sticky or round-robin turn of ``mix`` found replays from its artifact,
    shrunk or as found."""
    import json

    from pagerace.harness.cli import main

    for shrink in ([], ["--no-shrink"]):
        out = tmp_path / f"o{len(shrink)}"
        rc = main(["hunt", "evict-vs-fault", "--bug", "fault-without-ref", "--budget", "60-runs",
                   "--shrink-time", "2", "--out", str(out), *shrink])
        assert rc == 1
        (art,) = (out / "artifacts").glob("*.json")
        sched = json.loads(art.read_text())["strategy_params"]["scheduler"]
        found_by = sched.get("found_by", sched)
        assert found_by["strategy"] in ("sticky", "rr", "random")
        capsys.readouterr()
        assert main(["replay", str(art)]) == 1  # reproduced

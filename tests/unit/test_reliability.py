"""Issue 10, "the harness never eats the machine, never hangs, never lies about an
interruption": one test (or more) per numbered item, each failing on the code before the
fix. The process-spawning ones (kills, orphans, Dask) are in tests/robustness/."""

from __future__ import annotations

import csv
import tracemalloc
from pathlib import Path

import pytest
from pagerace.harness import campaign as c

SMALL = dict(max_steps=20000, livelock_steps=400)


# -- item 1: a large seed range takes all memory ------------------------------------------------


def test_a_plan_of_two_million_seeds_takes_no_memory() -> None:
    """Before: parse_seeds built a set of every seed and expand() a list of every unit
    (hundreds of MB here; 10^11 seeds took the machine's 24 GB)."""
    tracemalloc.start()
    try:
        p = c.make_plan({"workloads": "fault-storm,opposite-order", "seeds": "1-2000000,5-9,3000000"})
        units, _ = c.expand(p, c.resolve_workloads(p))
        n = len(units)
        first = [u.seed for u, _ in zip(units, range(5))]
        text = c.plan_json(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 2 * 2_000_001
    assert first == [1, 1, 2, 2, 3]
    assert '"seeds": "1-2000000,3000000"' in text
    assert peak < 2_000_000, f"peak {peak} bytes"


def test_a_campaign_over_seeds_up_to_10_to_the_12_runs_its_first_units(tmp_path: Path) -> None:
    p = c.make_plan({"workloads": "fault-storm", "seeds": "1-1000000000000", **SMALL})
    starts: list[tuple[int, int]] = []
    res = c.run_campaign(p, tmp_path, limit_units=3, on_start=lambda t, a: starts.append((t, a)))
    assert starts == [(3, 0)]
    assert (res.ran, res.planned, res.not_run) == (3, 10**12, 10**12 - 3)
    again = c.run_campaign(p, tmp_path, limit_units=2)  # resume: the three done are skipped
    assert (again.already, again.ran) == (3, 2)
    with (tmp_path / "runs.csv").open(newline="") as fh:
        assert [int(r["seed"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("seeds", "why"),
    [
        ("1-1000000000000000000", "below 10\\^18"),
        ("99999999999999999999", "bad part"),
        ([1, True], "integers"),
        ([1.5], "integers"),
        ("-3-4", "bad part"),
    ],
)
def test_seed_ranges_are_bounded(seeds: object, why: str) -> None:
    with pytest.raises(c.InvalidOption, match=why):
        c.parse_seeds(seeds)  # type: ignore[arg-type]


def test_seeds_membership_and_merging() -> None:
    s = c.parse_seeds("10-20,1-3,4,21,30")
    assert s.ranges == ((1, 4), (10, 21), (30, 30))
    assert len(s) == 4 + 12 + 1
    assert [x for x in range(35) if x in s] == list(s)
    assert "x" not in s and 0 not in s

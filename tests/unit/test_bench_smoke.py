"""Smoke check of the benchmarks: ``python -m bench --quick`` still runs and its JSON has
every figure with a unit, the machine and the date. A smoke check, never a timing
assertion: the figures' values are not compared with anything here.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = {
    "memory", "engine_speed", "parallel_scaling", "campaign_throughput", "time_to_find",
    "naive_baseline", "cli_rate",
}
TARGET_FIGURES = {
    "memory.bytes_per_frame", "memory.build_1m_pages_s", "engine.default.points_per_s",
    "parallel.speedup_2v1", "ttf.worst_default_median_s", "naive.min_ratio",
    "cli_rate.opposite_order.cli_per_s", "cli_rate.opposite_order.api_vs_cli",
}


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("python -m bench --quick took over 60 s on this machine (loaded?)")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "== targets" in proc.stdout
    return json.loads(out.read_text())


def test_every_benchmark_ran_without_error(bench_json: dict) -> None:
    assert set(bench_json["benchmarks"]) == BENCHMARKS
    for name, b in bench_json["benchmarks"].items():
        assert b["error"] is None, f"{name}: {b['error']}"
    assert bench_json["quick"] is True


def test_machine_and_date(bench_json: dict) -> None:
    m = bench_json["machine"]
    assert m["cores"] >= 1
    assert m["python"].count(".") == 2
    assert m["numpy"]
    assert m["cpu_model"]
    when = dt.datetime.fromisoformat(bench_json["date"])
    assert when.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 3600


def test_every_figure_has_a_unit_and_a_value_or_a_reason(bench_json: dict) -> None:
    figs = bench_json["figures"]
    names = [f["name"] for f in figs]
    assert len(names) == len(set(names)), "duplicate figure names"
    for f in figs:
        assert f["unit"], f["name"]
        assert f["label"], f["name"]
        if f["value"] is None:
            assert f["note"], f"{f['name']} has no value and no reason"
        else:
            assert isinstance(f["value"], (int, float)), f["name"]
            assert f["value"] >= 0, f["name"]
    # the figures that are always measurable in this build
    got = {f["name"]: f for f in figs}
    for name in ("memory.bytes_per_frame", "engine.default.points_per_s",
                 "engine.floor.yields_per_s", "engine.default.vs_floor"):
        assert got[name]["value"] is not None, name


def test_every_target_is_reported(bench_json: dict) -> None:
    assert {t["figure"] for t in bench_json["targets"]} == TARGET_FIGURES
    for t in bench_json["targets"]:
        assert t["met"] in (True, False, None)
        if t["value"] is None:
            assert t["met"] is None


def test_target_logic() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from bench._machine import Figure, Target
    finally:
        sys.path.remove(str(ROOT))
    below = Target("<", 5.0, "under 5 s")
    assert below.met(4.0) is True
    assert below.met(6.0) is False
    assert below.met(4.0, lower_bound=True) is False  # a budget-capped median proves nothing
    assert below.met(None) is None
    atleast = Target(">=", 10.0, "10x")
    assert atleast.met(12.0, lower_bound=True) is True
    assert atleast.met(9.0) is False
    f = Figure("x.y", "x", None, "s", note="not available in this build: z", target=below)
    d = f.to_json()
    assert d["available"] is False and d["target"]["met"] is None

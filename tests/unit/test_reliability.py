"""Issue 10, "the harness never eats the machine, never hangs, never lies about an
interruption": one test (or more) per numbered item, each failing on the code before the
fix. The process-spawning ones (kills, orphans, Dask) are in tests/robustness/."""

from __future__ import annotations

import copy
import csv
import json
import os
import stat
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from pagerace.harness import campaign as c
from pagerace.harness.cli import main

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


# -- item 6: artifacts are trusted ---------------------------------------------------------------


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real artifact: the hmm-2017 opposite-order deadlock (112 steps; 2 mms of 8 pages)."""
    out = tmp_path_factory.mktemp("art")
    assert main(["run", "opposite-order", "--variant", "hmm-2017", "--seed", "2", "--quiet",
                 "--out", str(out)]) == 1
    [path] = (out / "artifacts").iterdir()
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _replay(doc: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "a.json"
    path.write_text(json.dumps(doc))
    code = main(["replay", str(path)])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    ("op", "why"),
    [
        (["read", 1, 999], "vpn 999 is out of range; valid: 0..7 (geometry.pages_per_mm)"),
        (["read", 0, 8], "vpn 8 is out of range; valid: 0..7"),  # before: read mm 1's table
        (["read", 2, 0], "mm 2 is out of range; valid: 0..1 (geometry.mms)"),
        (["write", 0, -1], "vpn -1 is out of range"),
        (["read", 0], "takes 2 arguments, not 1"),
        (["read", 0, "1"], "arguments must be integers"),
        (["migrate_to_device", 0, 0, 4, 9], "end 9 is out of range; valid: 1..8"),
        (["migrate_to_device", 0, 0, 5, 5], "the range [5, 5) is empty"),
        (["migrate_to_device", 1, 0, 0, 8], "dev 1 is out of range; valid: 0..0"),
        (["pin_dma", 0, 0, 9, 1, 0], "mode 9 is out of range"),
        (["file_write", 0, 0], "f 0 is out of range; valid: none (the geometry has none)"),
    ],
)
def test_an_operation_out_of_the_geometry_is_exit_2_naming_it(
    op: list[Any], why: str, artifact: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = copy.deepcopy(artifact)
    doc["ops"][0][0] = op
    code, err = _replay(doc, tmp_path, capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and "'ops' actor 0 operation 0" in err and why in err, err


@pytest.mark.parametrize("count", [100_000_000, 10**15])
def test_a_schedule_longer_than_its_budget_is_refused_before_it_is_decoded(
    count: int, artifact: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: [[0, 100000000]] took 2.4 GB before it answered, [[0, 10**15]] was exit 3."""
    doc = copy.deepcopy(artifact)
    doc["schedule"] = [[0, count]]
    tracemalloc.start()
    try:
        code, err = _replay(doc, tmp_path, capsys)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 2 and f"'schedule' has {count:,} steps, more than its step budget" in err
    assert peak < 50_000_000


def test_limits_are_bounded(
    artifact: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = copy.deepcopy(artifact)
    doc["limits"]["max_steps"] = 10**15
    doc["schedule"] = [[0, 10**12]]
    code, err = _replay(doc, tmp_path, capsys)
    assert code == 2 and "'limits' max_steps = 1000000000000000 is more than 100,000,000" in err


def test_a_variant_that_is_not_loaded_is_not_called_corrupt(
    artifact: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = copy.deepcopy(artifact)
    doc["variant"] = "v7-plugin"
    doc["pagerace_version"] = "9.9"
    code, err = _replay(doc, tmp_path, capsys)
    assert code == 2
    assert "corrupt" not in err
    assert "needs variant 'v7-plugin', which is not loaded in this pagerace" in err
    assert "loaded: hmm-2017, v5.0, v6" in err and "written by pagerace 9.9" in err
    doc = copy.deepcopy(artifact)
    doc["bugs"] = ["from-a-plugin"]
    code, err = _replay(doc, tmp_path, capsys)
    assert code == 2 and "needs bug toggle 'from-a-plugin', which is not loaded" in err


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("seed", -1, "'seed' must be"),
        ("seed", 10**30, "'seed' must be"),
        ("strategy_params", {"pct_depth": "x"}, "'strategy_params'"),
        ("strategy_params", {"pct_depth": 10**12}, "'strategy_params'"),
        ("faults", ["no-such-fault"], "fault"),
    ],
)
def test_other_fields_are_checked(
    key: str, value: object, why: str, artifact: dict[str, Any], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = copy.deepcopy(artifact)
    doc[key] = value
    code, err = _replay(doc, tmp_path, capsys)
    assert code == 2 and why in err and err.count("\n") == 1, err


def test_the_real_artifact_still_replays(
    artifact: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _replay(copy.deepcopy(artifact), tmp_path, capsys)
    assert code == 1 and err == ""


def test_a_workload_too_big_for_the_machine_is_exit_2(
    artifact: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each geometry size is bounded (2^24), their product was not: MemoryError, exit 3."""
    doc = copy.deepcopy(artifact)
    doc["workload"]["raw"]["geometry"].update(sys_frames=1 << 24, mms=60, pages_per_mm=1 << 24)
    code, err = _replay(doc, tmp_path, capsys)
    assert code == 2 and "more than half of this machine's available" in err, err
    toml = tmp_path / "big.toml"
    toml.write_text('name = "big"\n[geometry]\nsys_frames = 16777216\nmms = 60\npages_per_mm = 16777216\n'
                    '[[actor]]\nkind = "cpu"\n')
    assert main(["run", str(toml), "--out", str(tmp_path / "out")]) == 2
    assert "needs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--steps", "1000000000000"],
        ["run", "--seed", str(2**64)],
        ["run", "--engine", "parallel", "--workers", "100000"],
        ["campaign", "--jobs", "100000"],
        ["campaign", "--max-steps", "10000000000"],
        ["campaign", "--duration", "30d", "--engine", "parallel"],
    ],
)
def test_user_typed_sizes_are_bounded(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("at most" in err or "more than" in err or "limit" in err
                                     or "between" in err), err
    assert list(tmp_path.iterdir()) == []


# -- item 7: bad output paths are internal errors ------------------------------------------------


def test_run_whose_artifacts_dir_is_a_file_is_refused_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the failure just found was lost (exit 3, no row written)."""
    (tmp_path / "artifacts").write_text("not a directory")
    code = main(["run", "opposite-order", "--variant", "hmm-2017", "--seed", "2", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "artifacts' is a file" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts"]


@pytest.mark.parametrize(
    "argv",
    [
        ["campaign", "--seeds", "1-2", "--out", "{file}"],
        ["campaign", "--seeds", "1-2", "--out", "/proc/pagerace-x"],
        ["run", "--out", "{file}"],
        ["run", "--out", "/proc/pagerace-x/y"],
        ["report", "{dir}", "--out", "/proc/pagerace-x"],
        ["report", "{dir}", "--out", "{file}"],
        ["shrink", "{artifact}", "-o", "/proc/pagerace-x/y.json"],
        ["shrink", "{artifact}", "-o", "{dir}"],
        ["replay", "{artifact}", "--out", "{file}"],
        ["hunt", "default", "--out", "{file}"],
    ],
)
def test_a_bad_output_path_is_exit_2_before_any_work(
    argv: list[str], artifact: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: all exit 3, shrink after spending its whole budget."""
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "file.txt"
    f.write_text("x")
    d = tmp_path / "dir"
    d.mkdir()
    (d / "runs.csv").write_text("")
    a = tmp_path / "a.json"
    a.write_text(json.dumps(artifact))
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    argv = [x.format(file=f, dir=d, artifact=a) for x in argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and ("--out" in err or "-o/--output" in err), err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written


# -- item 10: the smaller ones -------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_artifacts_follow_the_umask_like_the_csvs(umask: int, tmp_path: Path) -> None:
    """Before: artifacts were always 0600 (mkstemp), unreadable once a CI job published them."""
    old = os.umask(umask)
    try:
        assert main(["run", "opposite-order", "--variant", "hmm-2017", "--seed", "2", "--quiet",
                     "--out", str(tmp_path)]) == 1
    finally:
        os.umask(old)
    [art] = (tmp_path / "artifacts").iterdir()
    want = 0o644 & ~umask  # reports/schema.py creates the CSVs 0644 under the umask
    assert stat.S_IMODE(art.stat().st_mode) == want
    assert stat.S_IMODE((tmp_path / "runs.csv").stat().st_mode) == want


def test_a_report_over_a_header_only_runs_csv_counts_no_orphan_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: contention tables from rows of runs that runs.csv does not have."""
    full = tmp_path / "full"
    assert c.run_campaign(c.make_plan({"workloads": "fault-storm", "seeds": "1-3", **SMALL}), full).ran == 3
    cut = tmp_path / "cut"
    cut.mkdir()
    for name in ("runs.csv", "contention.csv", "outcomes.csv", "failures.csv"):
        text = (full / name).read_text()
        (cut / name).write_text(text.splitlines(keepends=True)[0] if name == "runs.csv" else text)
    assert main(["report", str(cut), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "0 runs" in out
    assert ":ptl" not in out and "folio_trylock" not in out  # no call site of a run not in runs.csv
    assert main(["report", str(full), "--no-figures"]) == 0
    assert ":ptl" in capsys.readouterr().out  # the same rows do show with their runs

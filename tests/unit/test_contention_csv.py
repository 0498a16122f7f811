"""contention.csv per configuration (issue 12, last item): the schema page, nights written
by an older pagerace (one row per run and site, ``tests/unit/data/v1-night``), and
``report --baseline`` against a baseline that ran several bug sets."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pandas as pd
import pytest
from pagerace.harness import campaign as c
from pagerace.harness.cli import main
from pagerace.reports import build_report
from pagerace.reports import schema as sc
from pagerace.reports.load import load_dir

ROOT = Path(__file__).resolve().parents[2]
V1_NIGHT = Path(__file__).parent / "data" / "v1-night"
SMALL = {"max_steps": 20000, "livelock_steps": 400, "replay": False}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _v1_copy(tmp_path: Path) -> Path:
    d = tmp_path / "old"
    shutil.copytree(V1_NIGHT, d)
    return d


def test_the_schema_page_is_what_the_schemas_print() -> None:
    page = (ROOT / "docs" / "csv-schemas.md").read_text()
    generated, sep, _notes = page.partition(sc.HAND_WRITTEN)
    assert sep, f"docs/csv-schemas.md lost its {sc.HAND_WRITTEN!r} line"
    assert generated == sc.markdown() + "\n\n", (
        "docs/csv-schemas.md is out of date: python -m pagerace.reports.schema, then keep the notes"
    )


def test_the_fixture_is_a_version_1_night() -> None:
    with (V1_NIGHT / "contention.csv").open(newline="") as fh:
        assert next(csv.reader(fh)) == sc.CONTENTION_V1.names
    assert {r["schema"] for r in _rows(V1_NIGHT / "contention.csv")} == {"1"}


def test_a_version_1_night_loads_as_current_rows() -> None:
    old = _rows(V1_NIGHT / "contention.csv")
    ds = load_dir(V1_NIGHT)
    cont = ds.contention
    assert list(cont.columns) == sc.CONTENTION.names
    assert len(cont) == len(old) and set(cont["runs"]) == {1} and set(cont["schema"]) == {2}
    assert set(cont["strategy"]) == {"random"}  # from runs.csv, by run_id
    assert int(cont["contended"].sum()) == sum(int(r["contended"]) for r in old)
    assert int(cont["wait_total"].sum()) == sum(int(r["wait_total"]) for r in old)


def test_report_with_a_version_1_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Tonight written by this pagerace, the baseline by the one before: the report runs
    (no exit 2), compares, and its contention tables are per run on both sides."""
    tonight = tmp_path / "tonight"
    plan = c.make_plan({"workloads": "fault-storm,holes", "seeds": "0-1",
                        "bugs": ["none", "no-fault-folio-exception"], **SMALL})
    assert c.run_campaign(plan, tonight).ran == 8
    assert main(["report", str(tonight), "--baseline", str(V1_NIGHT), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "no regression against" in out and "lock contention" in out
    rep = build_report(tonight, baseline=V1_NIGHT)
    rates = rep.comparison.rates if rep.comparison is not None else pd.DataFrame()
    assert len(rates) == 4  # every configuration found its baseline
    # the same plan, the same seeds: the per-run contention of both nights agrees
    from pagerace.reports import aggregate as agg

    now = agg.contention_table(load_dir(tonight), top=None).set_index(["variant", "site"])
    then = agg.contention_table(load_dir(V1_NIGHT), top=None).set_index(["variant", "site"])
    assert set(now.index) == set(then.index)
    assert (now["cont/run"] > 0).sum() == (then["cont/run"] > 0).sum()


def test_a_new_run_into_a_version_1_directory_upgrades_contention(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _v1_copy(tmp_path)
    before = load_dir(d).contention
    assert main(["run", "holes", "--seed", "7", "--out", str(d), "--quiet"]) == 0
    with (d / "contention.csv").open(newline="") as fh:
        assert next(csv.reader(fh)) == sc.CONTENTION.names
    after = load_dir(d).contention
    assert len(after) > len(before)
    assert int(after["runs"].sum()) == int(before["runs"].sum()) + len(after) - len(before)
    assert after.iloc[: len(before)].reset_index(drop=True).equals(before)


def test_a_campaign_resumed_in_a_version_1_directory(tmp_path: Path) -> None:
    d = _v1_copy(tmp_path)
    plan = c.make_plan({"workloads": "fault-storm,holes", "seeds": "0-2",
                        "bugs": ["none", "no-fault-folio-exception"], **SMALL})
    res = c.run_campaign(plan, d)
    assert (res.already, res.ran, res.repaired) == (8, 4, {})
    ds = load_dir(d)
    assert len(ds.runs) == 12 and set(ds.contention["schema"]) == {2}
    assert set(ds.contention["run_id"]) <= set(ds.runs["run_id"])


def test_a_new_bug_set_is_compared_with_the_baselines_run_without_bugs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The baseline ran fault-storm × v6 with two bug sets (none, no-fault-folio-exception);
    tonight runs a third. Before: no unique baseline configuration, baseline '-', no rate
    test. Now: compared with the baseline's run without bugs."""
    tonight = tmp_path / "tonight"
    plan = c.make_plan({"workloads": "fault-storm", "seeds": "0-1",
                        "bugs": ["no-fault-folio-exception,check-ignores-pins"], **SMALL})
    assert c.run_campaign(plan, tonight).failed == 2
    assert main(["report", str(tonight), "--baseline", str(V1_NIGHT), "--no-figures"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("fault-storm") and "100.0%" in x)
    assert line.rstrip().endswith("0/2 (none)"), line
    rep = build_report(tonight, baseline=V1_NIGHT)
    assert rep.comparison is not None
    [m] = rep.comparison.rates.itertuples(index=False)
    assert (m.baseline_bugs, m.base_runs, m.base_failed) == ("none", 2, 0)

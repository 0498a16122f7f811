"""A run's CSV rows and files: the outcome mapping, contention rows, write_run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from pagerace.core.machine.kernel import _new_stat
from pagerace.harness import output
from pagerace.harness.output import (
    append_all,
    contention_row,
    outcome_columns,
    rows_for,
    run_id,
    write_run,
)
from pagerace.harness.runner import RunRecord, run_deterministic
from pagerace.reports.schema import OUTCOME_REASONS, SCHEMAS, format_row
from pagerace.workloads import load_workload


@pytest.fixture(scope="module")
def clean() -> RunRecord:
    return run_deterministic(load_workload("default"), seed=3)


@pytest.fixture(scope="module")
def failed() -> RunRecord:
    return run_deterministic(load_workload("fault-storm"), seed=1, bugs=["no-fault-folio-exception"])


def test_outcome_mapping() -> None:
    cols = outcome_columns(
        {
            ("fault", "migrated"): 3,
            ("fault", "migrated_hole"): 1,
            ("fault", "hole_collected"): 2,
            ("fault", "pinned"): 2,
            ("fault", "restored"): 2,
            ("fault", "no_destination"): 1,
            ("fault", "some_new_reason"): 4,
            ("evict", "lock_contended"): 5,
        }
    )
    assert list(cols) == ["evict", "fault"]
    f = cols["fault"]
    assert set(f) == set(OUTCOME_REASONS)
    assert f["migrated"] == 4  # migrated + migrated_hole
    assert f["pinned"] == 2 and f["restored"] == 2
    assert f["other"] == 5  # no_destination + the unknown reason
    assert f["collected"] == 4 + 2 + 5  # restored and hole_collected are not ends
    assert cols["evict"]["collected"] == cols["evict"]["lock_contended"] == 5


def test_outcome_rows_of_a_real_run(clean: RunRecord) -> None:
    rows = rows_for(clean, "r", "")["outcomes.csv"]
    assert rows, "the default workload migrates"
    for row in rows:
        ends = sum(row[c] for c in OUTCOME_REASONS if c not in ("collected", "restored"))
        assert row["collected"] == ends
    assert sum(r["migrated"] for r in rows) == sum(
        n for (_, why), n in clean.kernel.outcomes.items() if why in ("migrated", "migrated_hole")
    )


def test_contention_row_fields() -> None:
    st = _new_stat()
    row = contention_row("f:lock", st)
    assert row["wait_min"] == 0 and row["hold_min"] == 0  # no wait: 0, not the sentinel
    assert row["wait_avg"] == 0.0
    st[0:6] = [4, 1, 2, 1, 2, 10]  # acquired, contended, try, try_fail, waits, wait_total
    st[6], st[7] = 3, 7
    row = contention_row("f:lock", st)
    assert row["waits"] == 2 and row["wait_avg"] == 5.0 and row["wait_min"] == 3 and row["wait_max"] == 7


def test_rows_fit_their_schemas(clean: RunRecord, failed: RunRecord) -> None:
    for rec, rel in ((clean, ""), (failed, "artifacts/x.json")):
        rows = rows_for(rec, "rid", rel, campaign="nightly")
        assert set(rows) == set(SCHEMAS)
        for file, lst in rows.items():
            for row in lst:
                format_row(SCHEMAS[file], row)  # raises on an unknown column
        (run,) = rows["runs.csv"]
        assert run["campaign"] == "nightly" and run["artifact"] == rel
        assert run["actors"] == len(rec.actors) and run["ops"] > 0
        assert json.loads(run["strategy_params"])["strategy"] == "random"
        assert len(rows["failures.csv"]) == (1 if rec.result.failure else 0)
        sites = [r["site"] for r in rows["contention.csv"]]
        assert sites == sorted(set(sites)) == sorted(rec.kernel.stats)


def test_run_id_is_readable_and_unique(clean: RunRecord) -> None:
    a, b = run_id(clean), run_id(clean)
    assert a != b
    assert a.startswith("default-v6-s3-random-deterministic-")


def test_write_run_clean(clean: RunRecord, tmp_path: Path) -> None:
    w = write_run(tmp_path, clean)
    assert w.artifact_path is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contention.csv", "outcomes.csv", "runs.csv"]
    with (tmp_path / "runs.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["run_id"] == w.run_id and row["outcome"] == "clean"


def test_write_run_failed(failed: RunRecord, tmp_path: Path) -> None:
    w = write_run(tmp_path, failed, campaign="c1")
    assert w.artifact_path == tmp_path / "artifacts" / f"{w.run_id}.json"
    assert w.artifact_path.exists()
    with (tmp_path / "failures.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["artifact"] == f"artifacts/{w.run_id}.json"
    assert row["reproduced"] == "" and row["shrunk_steps"] == "-1"


def test_append_all_validates_every_file_before_writing(clean: RunRecord, tmp_path: Path) -> None:
    rows = rows_for(clean, "rid", "")
    rows["outcomes.csv"] = [{**rows["outcomes.csv"][0], "no_such_column": 1}]
    with pytest.raises(KeyError, match="no_such_column"):
        append_all(tmp_path, rows)
    assert list(tmp_path.iterdir()) == []


def test_artifact_before_rows(failed: RunRecord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the artifact cannot be written, no row points at a missing file."""

    def no_artifact(*a: object, **k: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output, "write_artifact", no_artifact)
    with pytest.raises(OSError):
        write_run(tmp_path, failed)
    assert list(tmp_path.glob("*.csv")) == []

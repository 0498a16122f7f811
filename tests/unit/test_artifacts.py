"""Failure artifacts: what they hold, atomic writes, loading, strict and lenient replay."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
from pagerace.core.machine.errors import CorruptArtifact, Failure, FailureKind
from pagerace.harness import artifacts
from pagerace.harness.artifacts import (
    ARTIFACT_SCHEMA,
    artifact_json,
    load_artifact,
    replay,
    rle_decode,
    rle_encode,
    same_failure,
    write_artifact,
    write_json_atomic,
)
from pagerace.harness.runner import RunRecord, run_deterministic
from pagerace.workloads import load_workload

BUG = "no-fault-folio-exception"


@pytest.fixture(scope="module")
def failed() -> RunRecord:
    rec = run_deterministic(load_workload("fault-storm"), seed=1, bugs=[BUG])
    assert rec.result.failure is not None
    return rec


@pytest.fixture
def art_path(failed: RunRecord, tmp_path: Path) -> Path:
    return write_artifact(tmp_path / "a" / "f.json", failed, "run-1")


@pytest.mark.parametrize("schedule", [[], [0], [0, 0, 1, 0], [3, 3, 3, 3], [0, 1, 2, 3, 4, 4, 1]])
def test_rle_round_trip(schedule: list[int]) -> None:
    enc = rle_encode(schedule)
    assert rle_decode(enc) == schedule
    assert all(c > 0 for _, c in enc)
    assert all(a[0] != b[0] for a, b in itertools.pairwise(enc))


def test_artifact_holds_everything_replay_needs(failed: RunRecord, art_path: Path) -> None:
    doc = json.loads(art_path.read_text())
    assert doc["schema"] == ARTIFACT_SCHEMA
    assert doc["run_id"] == "run-1"
    assert doc["workload"]["name"] == "fault-storm"
    assert doc["variant"] == "v6" and doc["bugs"] == [BUG] and doc["engine"] == "deterministic"
    assert doc["seed"] == 1 and doc["strategy"] == "random"
    assert doc["limits"]["livelock_steps"] == 4000  # from the workload's [limits]
    assert rle_decode(doc["schedule"]) == list(failed.result.schedule)
    assert doc["ops"] == [[list(op) for op in ops] for ops in failed.ops]
    assert doc["failure"] == failed.result.failure.to_json()
    assert doc["fingerprint"] == failed.result.fingerprint
    last = doc["steps"][-1]
    assert last[0] == failed.result.failure.step
    assert last[1] in doc["actors"] and ":" in last[2]
    assert len(doc["steps"]) == artifacts.STEP_LIST_LEN


def test_clean_run_has_no_artifact() -> None:
    rec = run_deterministic(load_workload("default"), seed=0)
    with pytest.raises(ValueError, match="failed run"):
        artifact_json(rec)


def test_load_and_strict_replay_reproduce_bit_for_bit(failed: RunRecord, art_path: Path) -> None:
    art = load_artifact(art_path)
    assert art.schedule == list(failed.result.schedule)
    assert art.ops == failed.ops
    assert art.failure == failed.result.failure
    rec, ok, why = replay(art)
    assert ok, why
    assert rec.result.failure is not None
    assert rec.result.failure.kind == failed.result.failure.kind
    assert rec.result.fingerprint == failed.result.fingerprint
    assert rec.result.scheduler["strict"] is True


def test_replay_uses_the_artifacts_operations(failed: RunRecord, art_path: Path) -> None:
    """A shrunk artifact carries fewer operations than the workload draws: replay runs
    the artifact's, not the workload's."""
    doc = json.loads(art_path.read_text())
    doc["ops"] = [ops[:1] for ops in doc["ops"]]
    art_path.write_text(json.dumps(doc))
    rec, _ok, _why = replay(load_artifact(art_path))
    assert rec.ops == [[tuple(op) for op in ops] for ops in doc["ops"]]


def test_replay_uses_the_artifacts_limits(art_path: Path) -> None:
    doc = json.loads(art_path.read_text())
    doc["limits"]["livelock_steps"] = 100
    art_path.write_text(json.dumps(doc))
    rec, ok, why = replay(load_artifact(art_path))
    # The schedule was recorded under the old limits: with the smaller budget the
    # livelock suspicion opens its fair window earlier, the strict replay diverges there
    # and says so, and the lenient replay that follows sees the hang much earlier.
    assert not ok and "diverged" in why
    assert rec.result.failure is not None
    assert rec.result.failure.kind.family == "hang"
    assert rec.result.failure.step < doc["failure"]["step"]


def test_parallel_artifacts_replay_leniently(art_path: Path) -> None:
    doc = json.loads(art_path.read_text())
    doc["engine"] = "parallel"
    # a ticket order the model cannot follow exactly: strict replay would diverge
    doc["schedule"] = [[4, 50]] + doc["schedule"]
    art_path.write_text(json.dumps(doc))
    rec, _ok, _why = replay(load_artifact(art_path))
    assert rec.result.scheduler["strict"] is False


def test_strict_replay_that_diverges_says_so(art_path: Path) -> None:
    doc = json.loads(art_path.read_text())
    doc["bugs"] = []
    art_path.write_text(json.dumps(doc))
    rec, ok, why = replay(load_artifact(art_path))
    assert not ok
    assert "diverged at step" in why and "lenient replay ended" in why
    assert rec is not None


def test_hangs_are_one_family() -> None:
    dl = Failure(FailureKind.DEADLOCK, "x")
    ll = Failure(FailureKind.LIVELOCK, "y")
    lw = Failure(FailureKind.LOST_WRITE, "z")
    assert same_failure(dl, ll) and same_failure(ll, dl)
    assert not same_failure(ll, lw)
    assert same_failure(lw, lw)


def test_other_schema_is_refused_naming_both_versions(art_path: Path) -> None:
    doc = json.loads(art_path.read_text())
    doc["schema"] = ARTIFACT_SCHEMA + 1
    art_path.write_text(json.dumps(doc))
    with pytest.raises(CorruptArtifact) as ei:
        load_artifact(art_path)
    msg = str(ei.value)
    assert f"schema version {ARTIFACT_SCHEMA + 1}" in msg and f"schema version {ARTIFACT_SCHEMA} only" in msg
    assert ei.value.exit_code == 2


def test_binary_garbage_is_corrupt(tmp_path: Path) -> None:
    p = tmp_path / "g.json"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CorruptArtifact, match="corrupt artifact"):
        load_artifact(p)


def test_atomic_write_leaves_nothing_when_replace_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out" / "x.json"

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        write_json_atomic(target, {"a": 1})
    assert list(target.parent.iterdir()) == []


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"b": [1, 2]})
    assert json.loads(target.read_text()) == {"b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]

"""Every finding's artifact replays: one test per ``docs/findings/*.json``.

The project's rule is that every finding in docs/findings/ comes with an artifact that
``pagerace replay`` reproduces. The per-finding tests (test_thp_fault.py,
test_paths_older.py, ...) check more about some of them; this module covers all of them,
parametrized over the glob, so an artifact added later is covered without a new test, and
one that stops replaying after a model change fails here (finding 002's did, unnoticed:
docs/findings/002-v50-collect-drops-pte-dirty.md, "History").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pagerace.harness.artifacts import load_artifact, replay
from pagerace.workloads import load_workload

FINDINGS = Path(__file__).resolve().parents[2] / "docs" / "findings"
ARTIFACTS = sorted(FINDINGS.glob("*.json"))


def replay_mismatch(path: Path) -> str:
    """Replay the artifact at ``path``; return why it did not fail with exactly the
    failure kind it records ("" when it did)."""
    art = load_artifact(path)
    rec, ok, why = replay(art)
    if not ok:
        return f"did not reproduce: {why}"
    got = rec.result.failure
    if got is None or got.kind is not art.failure.kind:
        return f"expected {art.failure.kind.value}, got {got.kind.value if got else 'clean'}"
    return ""


def test_the_glob_finds_the_artifacts() -> None:
    """The parametrization is not empty (a moved directory would skip every case)."""
    assert len(ARTIFACTS) >= 17
    assert all(p.name[:3].isdigit() for p in ARTIFACTS)


@pytest.mark.parametrize("path", ARTIFACTS, ids=[p.name for p in ARTIFACTS])
def test_finding_artifact_replays_its_failure_kind(path: Path) -> None:
    """The artifact's recorded schedule fails again with the recorded failure kind."""
    assert replay_mismatch(path) == ""


@pytest.mark.parametrize("path", ARTIFACTS, ids=[p.name for p in ARTIFACTS])
def test_finding_artifact_is_named_by_its_finding_doc(path: Path) -> None:
    """A finding doc of the same number names the artifact (its replay command), and an
    artifact of an unmodified generation is a failure its workload declares for that
    generation (else the clean checks would call the finding unexplained)."""
    docs = sorted(FINDINGS.glob(path.name[:3] + "-*.md"))
    assert any(path.name in d.read_text(encoding="utf-8") for d in docs), docs
    art = load_artifact(path)
    if not art.bugs and not art.faults:
        w = load_workload(art.workload.name)
        assert art.failure.kind.value in w.finding_kinds_for(art.variant)


def test_replay_mismatch_fires_on_a_schedule_that_no_longer_fails(tmp_path: Path) -> None:
    """The check is not vacuous: an artifact whose run now ends clean (here: its actors'
    operations removed), one whose schedule names an actor that cannot run (what a
    model change that moves the step list does to a recorded schedule) and one that
    records another failure kind are all reported."""
    src = FINDINGS / "018-thp-fault-vs-collect.shrunk.json"
    doc = json.loads(src.read_text(encoding="utf-8"))
    idle = dict(doc, ops=[[] for _ in doc["ops"]])
    p = tmp_path / "idle.json"
    p.write_text(json.dumps(idle), encoding="utf-8")
    assert "ended clean" in replay_mismatch(p)

    first = doc["schedule"][0][0]  # runs on past its own end: then it cannot run
    moved = dict(doc, schedule=[[first, 10_000]] + doc["schedule"][1:])
    m = tmp_path / "moved.json"
    m.write_text(json.dumps(moved), encoding="utf-8")
    assert "diverged" in replay_mismatch(m)

    other = dict(doc, failure=dict(doc["failure"], kind="bad_mapping"))
    q = tmp_path / "other.json"
    q.write_text(json.dumps(other), encoding="utf-8")
    assert replay_mismatch(q) != ""
    assert replay_mismatch(src) == ""

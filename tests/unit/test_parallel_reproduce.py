"""A parallel failure becomes a deterministic artifact (harness/parallel/reproduce.py).

No worker process here: the "parallel run" is a deterministic run whose trace is
rewritten the way overlapping steps rewrite one (its tail serialised in another order),
so that neither the ticket-order replay nor the lenient replay shows the failure. Every
outcome below is deterministic (seeded streams, no timing).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from array import array
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pagerace.core.machine.errors import FailureKind
from pagerace.harness import cli
from pagerace.harness.artifacts import load_artifact, replay, write_json_atomic
from pagerace.harness.commands import run as run_cmd
from pagerace.harness.parallel.reproduce import (
    GuidedTrace,
    cut_points,
    reproduce,
    reproduction_artifact,
)
from pagerace.harness.runner import RunRecord, run_deterministic
from pagerace.harness.schedulers import RandomWalk
from pagerace.workloads import load_workload

SEED = 2  # opposite-order on hmm-2017, random walk: the AB-BA deadlock at step 129
TAIL = 20  # the trace's last TAIL steps, serialised actor by actor


@pytest.fixture(scope="module")
def found() -> RunRecord:
    r = run_deterministic(load_workload("opposite-order"), variant="hmm-2017", seed=SEED)
    assert r.result.failure is not None and r.result.failure.kind is FailureKind.DEADLOCK
    return r


def _bent_trace(r: RunRecord) -> list[int]:
    s = list(r.result.schedule)
    return s[: len(s) - TAIL] + sorted(s[len(s) - TAIL :])


def _parallel(r: RunRecord, kind: FailureKind | None = None) -> RunRecord:
    """``r`` as the parallel engine would have recorded it, with the bent trace."""
    f = r.result.failure
    assert f is not None
    if kind is not None:
        f = dataclasses.replace(f, kind=kind)
    res = dataclasses.replace(r.result, schedule=array("i", _bent_trace(r)), failure=f,
                              scheduler={"strategy": "os", "workers": 2, "perturb": 0.0})
    return dataclasses.replace(r, engine="parallel", strategy="os", result=res,
                               options={**r.options, "workers": 2, "watchdog_only": False})


def test_neither_replay_reproduces_the_bent_trace_but_the_guided_search_does(found: RunRecord) -> None:
    par = _parallel(found)
    rep = reproduce(par)
    assert [t["try"] for t in rep.tries[:2]] == ["ticket-order", "lenient"]
    assert [t["outcome"] for t in rep.tries[:2]] == ["clean", "clean"]
    assert rep.reproduced and rep.how == "guided" and rep.same_kind
    assert 1 <= rep.guided_tries <= 64
    assert "by guided search" in rep.reason and "ticket order: clean" in rep.reason
    rec = rep.record
    assert rec.engine == "deterministic" and rec.result.failure.kind is FailureKind.DEADLOCK
    # the same search again: the same try, the same run (seeded streams only)
    again = reproduce(par)
    assert again.guided_tries == rep.guided_tries
    assert again.record.result.fingerprint == rec.result.fingerprint


def test_without_the_guided_search_it_is_not_reproduced(found: RunRecord) -> None:
    rep = reproduce(_parallel(found), guided_tries=0)
    assert not rep.reproduced and rep.record is None and rep.how == ""
    assert rep.reason.startswith("expected deadlock; ticket order: clean")


def test_the_unbent_trace_replays_in_ticket_order(found: RunRecord) -> None:
    par = dataclasses.replace(_parallel(found), result=dataclasses.replace(
        _parallel(found).result, schedule=found.result.schedule))
    rep = reproduce(par)
    assert rep.reproduced and rep.how == "ticket-order" and rep.guided_tries == 0


def test_the_guided_search_accepts_only_the_same_kind(found: RunRecord) -> None:
    # The deterministic tries find the deadlock; the recorded failure says livelock (the
    # same family, hang): the guided search must not take the deadlock for it.
    par = _parallel(found, kind=FailureKind.LIVELOCK)
    rep = reproduce(par, only=("guided",), guided_tries=24)
    assert not rep.reproduced and rep.record is None
    assert rep.reason.startswith("expected livelock; guided search: 24 tries, none livelock (")
    assert "deadlock" in rep.reason
    assert any(t["kind"] == "deadlock" for t in rep.tries)
    # what it found instead is kept apart, as another failure, never as a reproduction
    assert rep.other_by == "guided" and rep.other.result.failure.kind is FailureKind.DEADLOCK
    assert rep.as_json()["other"] == {"kind": "deadlock", "by": "guided"}
    assert reproduce(par, only=("guided",), guided_tries=0).other is None


def test_the_reproduction_artifact_replays_exactly(found: RunRecord, tmp_path: Path) -> None:
    par = _parallel(found)
    rep = reproduce(par)
    path = write_json_atomic(tmp_path / "a.json", reproduction_artifact(rep, par, "rid", "artifacts/x.json"))
    art = load_artifact(path)
    assert art.engine == "deterministic"
    assert json.loads(path.read_text())["reproduced_from"]["by"] == "guided"
    rec, ok, why = replay(art)
    assert ok, why
    assert rec.result.fingerprint == rep.record.result.fingerprint == art.fingerprint
    assert "differs" not in why  # a strict replay, same fingerprint


def test_a_run_that_did_not_fail_or_a_watchdog_verdict_is_not_reproduced(found: RunRecord) -> None:
    clean = SimpleNamespace(workload=found.workload, variant="hmm-2017", bugs=(), seed=SEED,
                            schedule=[0], ops=found.ops, failure=None)
    assert reproduce(clean).reason == "the parallel run did not fail: nothing to reproduce"
    par = _parallel(found)
    dead = dataclasses.replace(par, options={**par.options, "watchdog_only": True})
    rep = reproduce(dead)
    assert not rep.reproduced and "harness verdict" in rep.reason and rep.tries == []


def test_cut_points_start_at_the_first_deferral_and_the_end() -> None:
    cuts = cut_points(1000, 400, 24)
    assert cuts[:2] == [400, 1000] and len(cuts) == 24
    assert all(0 <= c <= 1000 for c in cuts)
    assert 0 in cuts and len(set(cuts[:15])) == 15 and cuts[15] == cuts[0]  # then round again
    assert cut_points(1000, -1, 4) == [1000, 998, 990, 970]
    assert cut_points(0, -1, 2) == [0, 0]


def test_guided_trace_follows_the_trace_then_its_continuation() -> None:
    from pagerace.harness._rng import Stream

    g = GuidedTrace([1, 1, 0, 0], cut=2, then=RandomWalk(), stream=Stream([1]))
    g.start(2, Stream([0]))
    assert [g.choose([0, 1], 0), g.choose([0, 1], 1)] == [1, 1]
    rest = [g.choose([0, 1], s) for s in range(2, 40)]
    assert set(rest) == {0, 1}  # the walk, not the recorded 0, 0
    assert g.describe()["then"] == {"strategy": "random"} and g.describe()["cut"] == 2


# ----------------------------------------------------------------------------------------
# pagerace run --engine parallel: what it prints, saves and exits with


def _run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, par: RunRecord,
             *extra: str) -> tuple[int, str, str]:
    monkeypatch.setattr(run_cmd, "execute", lambda args, w: par)
    rc = cli.main(["run", "opposite-order", "--variant", "hmm-2017", "--engine", "parallel", *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _failures(out: Path) -> list[dict[str, Any]]:
    with (out / "failures.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_run_saves_the_deterministic_artifact_and_the_trace(
    found: RunRecord, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    rc, text, _ = _run_cli(capsys, monkeypatch, _parallel(found), "--out", str(out))
    assert rc == 1, text
    assert "reproduced on the deterministic engine by guided" in text
    arts = sorted(p.name for p in (out / "artifacts").iterdir())
    assert len(arts) == 2 and arts[0].endswith(".json") and arts[1].endswith(".parallel.json")
    (row,) = _failures(out)
    assert row["reproduced"] == "yes" and row["artifact"] == f"artifacts/{arts[0]}"
    assert load_artifact(out / "artifacts" / arts[1]).engine == "parallel"
    rc = cli.main(["replay", str(out / "artifacts" / arts[0])])
    assert rc == 1 and capsys.readouterr().out.startswith("reproduced: ")


def test_run_exits_4_with_the_trace_and_what_to_do_when_nothing_reproduces(
    found: RunRecord, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    par = _parallel(found, kind=FailureKind.LIVELOCK)
    rc, text, _ = _run_cli(capsys, monkeypatch, par, "--out", str(out), "--reproduce-tries", "24")
    assert rc == 4, text
    assert "did not reproduce on the deterministic engine: expected livelock" in text
    assert "guided search: 24 tries" in text
    assert "what to do: run it again with --exact-trace" in text
    other, art = sorted((out / "artifacts").iterdir())
    assert art.name.endswith(".parallel.json") and f"parallel trace: {art}" in text
    (row,) = _failures(out)
    assert row["reproduced"] == "no" and row["artifact"] == f"artifacts/{art.name}"
    # the guided tries found the deadlock instead: saved apart, and it replays
    assert other.name.endswith(".other.json") and "another failure, found by the guided try" in text
    assert json.loads(other.read_text())["reproduced_from"]["same_kind"] is False
    assert cli.main(["replay", str(other)]) == 1
    capsys.readouterr()
    out2 = tmp_path / "out2"
    rc, text, _ = _run_cli(capsys, monkeypatch, par, "--out", str(out2), "--reproduce-tries", "0",
                           "--format", "json")
    doc = json.loads(text)
    assert rc == 4 and doc["exit_code"] == 4
    assert doc["reproduction"]["reproduced"] is False and doc["reproduction"]["guided_tries"] == 0
    assert doc["artifact"] == doc["trace_artifact"] and doc["other_artifact"] is None


def test_reproduce_tries_is_for_the_parallel_engine_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli.main(["run", "--reproduce-tries", "3", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "--reproduce-tries applies to --engine parallel only" in err
    rc = cli.main(["run", "--exact-trace", "--out", str(tmp_path / "o")])
    assert rc == 2 and "--exact-trace applies" in capsys.readouterr().err


def test_campaign_keeps_the_deterministic_artifact_of_a_parallel_failure(
    found: RunRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pagerace.harness import campaign
    from pagerace.workloads import workload_to_json

    par = _parallel(found)
    monkeypatch.setattr(campaign, "check_parallel_engine", lambda: lambda w, **kw: par)
    monkeypatch.setattr(campaign, "SHRINK_BUDGET_S", 0.5)
    t = campaign.Task(workload_to_json(found.workload), "hmm-2017", (), "random", "parallel", (SEED,), "c",
                      shrink=True)
    res = campaign._run_one(found.workload, t, SEED)
    (row,) = res.rows["failures.csv"]
    assert row["reproduced"] == "yes" and row["engine"] == "parallel"
    assert 0 < int(row["shrunk_steps"]) <= found.result.steps
    assert res.artifact is not None
    doc = res.artifact[1]
    assert doc["engine"] == "deterministic" and doc["reproduced_from"]["by"] == "guided"
    assert doc["reproduced_from"]["failure"]["kind"] == "deadlock"
    # without a reproduction the unit keeps the raw trace, reproduced = no
    dead = _parallel(found, kind=FailureKind.LIVELOCK)
    monkeypatch.setattr(campaign, "check_parallel_engine", lambda: lambda w, **kw: dead)
    monkeypatch.setattr(campaign, "CAMPAIGN_GUIDED_TRIES", 2)
    res = campaign._run_one(found.workload, t, SEED)
    (row,) = res.rows["failures.csv"]
    assert row["reproduced"] == "no" and int(row["shrunk_steps"]) == -1
    assert res.artifact is not None and res.artifact[1]["engine"] == "parallel"
    assert "reproduced_from" not in res.artifact[1]


def test_ctrl_c_during_the_reproduction_keeps_the_trace_and_the_rows(
    found: RunRecord, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    reproduce_mod = importlib.import_module("pagerace.harness.parallel.reproduce")

    def interrupted(*a: Any, **kw: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce_mod, "reproduce", interrupted)
    out = tmp_path / "out"
    rc, _, _ = _run_cli(capsys, monkeypatch, _parallel(found), "--out", str(out))
    assert rc == 130
    (art,) = (out / "artifacts").iterdir()
    assert art.name.endswith(".parallel.json")
    (row,) = _failures(out)
    assert row["reproduced"] == "" and row["artifact"] == f"artifacts/{art.name}"

"""The shrinker and the readable step list."""

from __future__ import annotations

from pagerace.core.machine.errors import FailureKind
from pagerace.harness.runner import run_deterministic
from pagerace.harness.shrink import Shrinker, pass_drop_actors, shrink_record, size
from pagerace.harness.steps import readable_steps
from pagerace.workloads import load_workload


def _deadlock():
    w = load_workload("opposite-order")
    for s in range(20):
        r = run_deterministic(w, variant="hmm-2017", seed=s)
        if r.result.failure is not None:
            return r
    raise AssertionError("no deadlock in 20 seeds")


def test_shrunk_deadlock_is_smaller_and_replays_strictly():
    rec = _deadlock()
    res = shrink_record(rec, budget_s=5.0)
    small = res.record
    assert small.result.failure.kind is FailureKind.DEADLOCK
    assert size(small) < size(rec)
    assert small.result.preemptions < rec.result.preemptions
    assert sum(1 for ops in small.ops if ops) == 2  # the CPU reader was dropped
    again = run_deterministic(
        rec.workload, variant="hmm-2017", seed=rec.seed,
        schedule=list(small.result.schedule), ops_override=small.ops, strict=True,
    )
    assert again.result.failure is not None
    assert again.result.fingerprint == small.result.fingerprint


def test_a_candidate_failing_differently_is_rejected():
    rec = _deadlock()
    sh = Shrinker(rec, deadline=float("inf"))
    # Every actor emptied: the run is clean, so it cannot replace the base.
    assert not sh.attempt([], [[] for _ in rec.ops], "test")
    assert sh.base is rec
    accepted = [ok for ok in pass_drop_actors(sh)]
    assert any(accepted) and sh.base is not rec


def test_step_list_reads_as_the_ab_ba_interleaving():
    res = shrink_record(_deadlock(), budget_s=5.0)
    lines = readable_steps(res.record)
    text = "\n".join(lines)
    takes = [ln for ln in lines if " takes page:" in ln]
    waits = [ln for ln in lines if " waits on page:" in ln]
    assert len(takes) == 2 and len(waits) == 2
    assert {"driver0", "driver1"} <= set(text.split())
    assert "held by driver0" in text and "held by driver1" in text
    assert lines[-1].lstrip().startswith("=> deadlock")
    assert len(lines) <= 8


def test_cli_hunt_shrink_replay_round_trip(tmp_path, capsys):
    import csv
    import json

    from pagerace.harness import cli

    out = tmp_path / "out"
    rc = cli.main(
        ["hunt", "opposite-order", "--variant", "hmm-2017", "--budget", "40-runs",
         "--shrink-time", "3", "--out", str(out)]
    )
    text = capsys.readouterr().out
    assert rc == 1
    assert "found after" in text and "waits on page:" in text and "driver1" in text
    (art,) = sorted((out / "artifacts").glob("*.json"))
    with (out / "failures.csv").open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["kind"] == "deadlock" and int(row["shrunk_steps"]) > 0
    with (out / "runs.csv").open(newline="") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) >= 1 and runs[-1]["outcome"] == "failed"
    assert json.loads(art.read_text())["failure"]["kind"] == "deadlock"
    assert cli.main(["replay", str(art)]) == 1
    small = tmp_path / "small.json"
    assert cli.main(["shrink", str(art), "-o", str(small), "--time", "2"]) == 1
    assert cli.main(["replay", str(small)]) == 1
    capsys.readouterr()
    assert cli.main(["hunt", "opposite-order", "--variant", "v6", "--budget", "10-runs",
                     "--out", str(out)]) == 0
    assert "nothing found in 10 runs" in capsys.readouterr().out
    assert cli.main(["hunt", "opposite-order", "--budget", "soon"]) == 2

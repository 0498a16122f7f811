"""``pagerace hunt --jobs N`` / ``hunt(jobs=N)``: a hunt over worker processes gives the
runs, rows and failure of ``jobs=1`` (harness/hunt.py's module docstring).

The output directories are compared cell by cell except what differs between two runs
of the same hunt with one job already: run ids (a random nonce; compared as the order
of the runs they name), the timing columns, and how ``contention.csv``'s rows are cut
into batches (a batch is also written when its oldest run is a second old), which is
compared summed over the batches."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pytest
from pagerace.core.machine.errors import HarnessInternalError, InvalidOption
from pagerace.harness import cli
from pagerace.harness import hunt as hunt_mod
from pagerace.harness.hunt import Budget, RunDone, Turn, hunt, mix_turn
from pagerace.harness.output import ContentionSums
from pagerace.workloads import load_workload

TIMING = {"run_id", "duration_s", "wall_s", "started", "artifact"}
_INT = {"runs", "acquired", "contended", "trylock_attempts", "trylock_failures", "waits", "wait_total",
        "holds", "hold_total", "wait_max", "hold_max", "wait_min", "hold_min"}


def _read(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _normal(out: Path) -> dict[str, Any]:
    """An output directory without what differs between two identical hunts."""
    runs = _read(out / "runs.csv")
    order = {r["run_id"]: i for i, r in enumerate(runs)}
    doc: dict[str, Any] = {"runs.csv": [{**{k: v for k, v in r.items() if k not in TIMING},
                                         "artifact": bool(r["artifact"])} for r in runs]}
    for name in ("outcomes.csv", "failures.csv"):
        doc[name] = [{**{k: v for k, v in r.items() if k not in TIMING}, "run": order[r["run_id"]],
                      "artifact": bool(r.get("artifact"))} for r in _read(out / name)]
    sums = ContentionSums()
    for r in _read(out / "contention.csv"):
        assert r["run_id"] in order  # names a run of runs.csv
        sums.add({k: int(v) if k in _INT else v for k, v in r.items()})
    doc["contention.csv"] = [{k: v for k, v in r.items() if k != "run_id"} for r in sums.rows()]
    arts = sorted((out / "artifacts").glob("*.json")) if (out / "artifacts").exists() else []
    doc["artifacts"] = []
    for a in arts:
        art = json.loads(a.read_text())
        doc["artifacts"].append({k: art[k] for k in ("seed", "strategy", "fingerprint", "schedule", "failure")
                                 if k in art})
    return doc


def _cli(tmp: Path, name: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Path, str]:
    out = tmp / name
    code = cli.main(["hunt", *args, "--out", str(out), "--format", "json"])
    return code, out, capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["opposite-order", "--variant", "v5.0", "--budget", "70-runs"], 0),
        # found at run 22 (seed 22), in the second chunk of 16, with later chunks out
        (["migrate-vs-pin", "--bug", "check-ignores-pins", "--strategy", "pos", "--budget", "200-runs",
          "--no-shrink"], 1),
    ],
    ids=["not-found", "found"],
)
def test_jobs_2_writes_what_jobs_1_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int
) -> None:
    c1, out1, text1 = _cli(tmp_path, "one", capsys, *args, "--jobs", "1")
    c2, out2, text2 = _cli(tmp_path, "two", capsys, *args, "--jobs", "2")
    assert (c1, c2) == (code, code)
    doc1, doc2 = json.loads(text1), json.loads(text2)
    assert (doc1["jobs"], doc2["jobs"]) == (1, 2)
    for d in (doc1, doc2):
        del d["jobs"], d["seconds"]
        d.pop("artifact", None), d.pop("replay", None)
    assert doc1 == doc2
    n1, n2 = _normal(out1), _normal(out2)
    assert n1 == n2
    runs = n2["runs.csv"]
    assert [int(r["seed"]) for r in runs] == list(range(doc2["runs"]))
    if code:
        # the hunt ended at the first failure: nothing the workers made after it
        assert [r["outcome"] for r in runs][-1] == "failed"
        assert [r["outcome"] for r in runs[:-1]] == ["clean"] * (len(runs) - 1)
        assert len(n2["artifacts"]) == 1 and n2["failures.csv"][0]["run"] == len(runs) - 1
        assert len(runs) > hunt_mod.CHUNK
    else:
        assert len(runs) == 70  # a budget of N runs makes exactly N


def test_a_seconds_budget_keeps_a_prefix_of_the_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cut by time, the runs taken are seeds 0..n-1, each the run jobs=1 makes."""
    code, out2, text = _cli(tmp_path, "two", capsys, "opposite-order", "--variant", "v5.0",
                            "--budget", "300ms", "--jobs", "2")
    assert code == 0
    n = json.loads(text)["runs"]
    assert n >= 1
    code, out1, _ = _cli(tmp_path, "one", capsys, "opposite-order", "--variant", "v5.0",
                         "--budget", f"{n}-runs", "--jobs", "1")
    assert code == 0
    n1, n2 = _normal(out1), _normal(out2)
    assert [int(r["seed"]) for r in n2["runs.csv"]] == list(range(n))
    assert n1 == n2


def test_the_api_gives_the_same_hunt_with_any_jobs() -> None:
    w = load_workload("migrate-vs-pin")
    seen: dict[int, list[RunDone]] = {1: [], 2: [], 3: []}
    res = {
        j: hunt(w, bugs=["check-ignores-pins"], strategy="pos", budget=Budget(runs=200), shrink=False, jobs=j,
                on_clean=seen[j].append)
        for j in (1, 2, 3)
    }
    assert res[1].found is not None and res[1].runs > hunt_mod.CHUNK
    for j in (2, 3):
        r = res[j]
        assert r.jobs == j and r.found is not None
        assert (r.runs, r.seeds) == (res[1].runs, res[1].seeds)
        assert r.found.result.fingerprint == res[1].found.result.fingerprint
        assert [(d.index, d.seed, d.fingerprint, d.failed) for d in seen[j]] == \
               [(d.index, d.seed, d.fingerprint, d.failed) for d in seen[1]]
        assert all(d.rows is not None for d in seen[j])
    assert len(seen[1]) == res[1].runs - 1  # every clean run, not the failing one


def test_history_strategies_stay_in_one_process_and_fixed_k_pct_does_not() -> None:
    w = load_workload("opposite-order")
    for strategy in ("urw", "surw", "pct"):
        one = hunt(w, variant="v5.0", budget=Budget(runs=5), strategy=strategy, shrink=False)
        two = hunt(w, variant="v5.0", budget=Budget(runs=5), strategy=strategy, shrink=False, jobs=2)
        assert two.jobs == 1, strategy  # learned k, counts: jobs ignored
        assert (two.runs, two.pct_k, two.guarantee) == (one.runs, one.pct_k, one.guarantee)
    one = hunt(w, variant="v5.0", budget=Budget(runs=6), strategy="pct", pct_k=150, shrink=False)
    two = hunt(w, variant="v5.0", budget=Budget(runs=6), strategy="pct", pct_k=150, shrink=False, jobs=2)
    assert two.jobs == 2 and (two.runs, two.pct_k, two.guarantee) == (one.runs, 150, one.guarantee)
    # a workload that sets pct_k fixes k too: over workers
    aon = load_workload("aon-coherent")
    assert aon.pct_k
    one = hunt(aon, budget=Budget(runs=12), strategy="pct", shrink=False)
    two = hunt(aon, budget=Budget(runs=12), strategy="pct", shrink=False, jobs=2)
    assert two.jobs == 2 and (two.runs, two.pct_k, two.guarantee) == (one.runs, aon.pct_k, one.guarantee)


def test_a_mix_turn_that_needs_earlier_runs_goes_on_in_this_process() -> None:
    """turns() giving PCT with a learned k from run 40 on: the pool makes runs up to
    the chunk that holds it, this process the rest, and k is learned from all of them."""
    w = load_workload("opposite-order")

    def turns(i: int) -> Turn:
        return Turn("pct") if i >= 40 else mix_turn(i)

    one = hunt(w, variant="v5.0", budget=Budget(runs=60), turns=turns, shrink=False)
    made: list[RunDone] = []
    two = hunt(w, variant="v5.0", budget=Budget(runs=60), turns=turns, shrink=False, jobs=2,
               on_clean=made.append)
    assert two.jobs == 2 and [d.index for d in made] == list(range(60))
    assert (two.runs, two.pct_k, two.guarantee) == (one.runs, one.pct_k, one.guarantee)
    assert one.pct_k is not None


def test_bad_jobs_and_on_run_with_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = load_workload("opposite-order")
    with pytest.raises(InvalidOption, match="jobs=0"):
        hunt(w, jobs=0)
    with pytest.raises(InvalidOption, match="on_clean"):
        hunt(w, jobs=2, on_run=lambda rec: None)
    out = tmp_path / "bad"
    assert cli.main(["hunt", "opposite-order", "--jobs", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--jobs" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def _dying_chunk(chunk: Any) -> Any:  # a test-only fault: the worker dies
    os._exit(7)


def test_a_worker_that_dies_is_an_internal_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hunt_mod, "_run_chunk", _dying_chunk)  # forked workers see it too
    w = load_workload("opposite-order")
    with pytest.raises(HarnessInternalError, match="exited with code 7"):
        hunt(w, variant="v5.0", budget=Budget(runs=50), jobs=2)
    code = cli.main(["hunt", "opposite-order", "--variant", "v5.0", "--budget", "50-runs", "--jobs", "2",
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 3
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "internal error: hunt: hunt worker" in err


def _lying_chunk(chunk: Any) -> Any:  # a test-only fault: a failure with another fingerprint
    out = _REAL_CHUNK(chunk)
    if out and out[-1].failed:
        d = out[-1]
        out[-1] = RunDone(d.index, d.seed, True, d.shared_steps, d.counts, d.pct_k, d.guarantee,
                          "0" * len(d.fingerprint), d.kind)
    return out


_REAL_CHUNK = hunt_mod._run_chunk


def test_the_failing_run_made_again_must_fail_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    w = load_workload("opposite-order")
    assert hunt(w, variant="hmm-2017", budget=Budget(runs=200), shrink=False, jobs=2).found is not None
    monkeypatch.setattr(hunt_mod, "_run_chunk", _lying_chunk)
    with pytest.raises(HarnessInternalError, match="made again in this process"):
        hunt(w, variant="hmm-2017", budget=Budget(runs=200), shrink=False, jobs=2)


def test_an_interrupt_in_the_parent_ends_the_workers_and_keeps_the_rows_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the parent takes runs: exit 130, runs.csv holds seeds 0..n-1 once
    each with every other file naming only those runs, n the runs of the chunks taken
    whole (the runs of the chunk being taken are dropped: output.FormattedRows.hold);
    the conftest guard fails the test if a worker is left."""
    from pagerace.harness import output

    real_add = output.RowWriter.add
    added = [0]

    def add(self: Any, rows: Any) -> None:
        real_add(self, rows)
        added[0] += 1
        if added[0] == 37:
            raise KeyboardInterrupt

    monkeypatch.setattr(output.RowWriter, "add", add)
    out = tmp_path / "o"
    code = cli.main(["hunt", "opposite-order", "--variant", "v5.0", "--budget", "100000-runs", "--jobs", "2",
                     "--out", str(out)])
    assert code == 130
    assert capsys.readouterr().err.strip() == "pagerace hunt: interrupted"
    runs = _read(out / "runs.csv")
    whole = 37 // hunt_mod.CHUNK * hunt_mod.CHUNK  # chunks of CHUNK runs (a budget this large)
    assert 0 < whole < 37
    assert [int(r["seed"]) for r in runs] == list(range(whole))
    ids = {r["run_id"] for r in runs}
    for name in ("outcomes.csv", "contention.csv"):
        assert {r["run_id"] for r in _read(out / name)} <= ids
    cont = _read(out / "contention.csv")
    # every run written is summed: per configuration, its runs in runs.csv reach each site
    # at most that often, and the busiest site of each configuration is reached by all
    per_config: dict[tuple[str, ...], int] = {}
    for r in runs:
        per_config[(r["variant"], r["strategy"])] = per_config.get((r["variant"], r["strategy"]), 0) + 1
    for cfg, n in per_config.items():
        reached = [int(c["runs"]) for c in cont if (c["variant"], c["strategy"]) == cfg]
        assert reached and max(reached) <= n


def test_status_lines_with_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["hunt", "opposite-order", "--variant", "v5.0", "--budget", "40-runs", "--jobs", "2",
                     "--status-every", "1ms", "--out", str(tmp_path / "o")])
    assert code == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("hunt opposite-order")]
    assert lines and all("nothing found yet" in ln for ln in lines)


class _Ended:
    def __init__(self, code: int) -> None:
        self.exitcode = code

    def join(self, timeout: float) -> None:
        pass


class _Pool:
    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        pass


@pytest.mark.parametrize("first", ["lower pid", "higher pid"])
def test_the_worker_that_broke_the_pool_is_named_not_one_the_pool_ended(
    first: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One worker exits 7; the pool SIGTERMs the other, which may already be gone when the
    # parent looks (both dead then, in any pid order): the exit 7 is the cause, not an
    # operator's SIGTERM (it was once reported as "killed by SIGTERM from outside").
    import psutil
    from pagerace.harness import pool

    def gone(pid: int) -> Any:
        raise psutil.NoSuchProcess(pid)

    monkeypatch.setattr(psutil, "Process", gone)
    backend = object.__new__(pool.PoolBackend)
    crashed, termed = (200, 100) if first == "lower pid" else (100, 200)
    backend._seen = {crashed: _Ended(7), termed: _Ended(-15)}  # type: ignore[assignment]
    backend.pool = _Pool()  # type: ignore[assignment]
    assert backend.dead_worker() == (crashed, 7)
    assert pool.worker_death(backend, "hunt worker") == (
        False, f"hunt worker {crashed} exited with code 7")
    # an operator's SIGTERM of one worker alone is from outside
    backend._seen = {100: _Ended(-15), 200: _Ended(0)}  # type: ignore[assignment]
    assert pool.worker_death(backend, "hunt worker") == (
        True, "hunt worker 100 was killed by SIGTERM from outside")


def test_a_pool_found_broken_at_a_submit_is_a_worker_death(monkeypatch: pytest.MonkeyPatch) -> None:
    # The pool can break between two results: the next submit raises WorkerDied before
    # any result does (it was an internal error naming BrokenProcessPool, exit 3).
    from pagerace.core.machine.errors import StoppedFromOutside
    from pagerace.harness import pool

    real_submit = pool.ForkPool.submit
    calls = [0]

    def submit(self: Any, t: Any) -> Any:
        calls[0] += 1
        if calls[0] > 2:
            raise pool.WorkerDied("hunt worker 4242 ended")
        return real_submit(self, t)

    monkeypatch.setattr(pool.ForkPool, "submit", submit)
    monkeypatch.setattr(pool.ForkPool, "dead_worker", lambda self: (4242, -9))
    with pytest.raises(StoppedFromOutside, match="hunt worker 4242 was killed by SIGKILL from outside"):
        hunt(load_workload("opposite-order"), variant="v5.0", budget=Budget(runs=200), jobs=2)

"""Campaign backends that spawn processes: the local process pool, a real Ctrl-C to a
running ``pagerace campaign`` (no worker left behind, nothing lost or repeated on the
rerun), and Dask with two worker processes on a loopback LocalCluster.

Run with ``pytest tests/stress/test_dask.py``; the in-process Dask test is in
tests/unit/test_campaign.py.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from pagerace.harness import campaign as c

pytestmark = pytest.mark.stress

SMALL = dict(max_steps=20000, livelock_steps=400)


def plan(**kw: object) -> c.Plan:
    base: dict[str, object] = dict(
        name="s",
        workloads="fault-storm,opposite-order,default",
        variants="v6",
        seeds="1-10",
        bugs=["none", "no-fault-folio-exception"],
        **SMALL,
    )
    base.update(kw)
    return c.make_plan(base)


def fingerprints(d: Path) -> dict[tuple[str, ...], str]:
    with (d / "runs.csv").open(newline="") as fh:
        return {tuple(r[k] for k in c.KEY_COLUMNS): r["fingerprint"] for r in csv.DictReader(fh)}


def test_process_pool_matches_inline_run(tmp_path: Path) -> None:
    pool = c.run_campaign(plan(jobs=2), tmp_path / "pool")
    inline = c.run_campaign(plan(jobs=1), tmp_path / "inline")
    assert pool.ran == inline.ran == 60
    assert fingerprints(tmp_path / "pool") == fingerprints(tmp_path / "inline")
    # no worker left: the conftest leak guard fails any test that leaves a child process


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_stopped_campaign_keeps_finished_units_and_leaves_no_worker(
    tmp_path: Path, sig: signal.Signals
) -> None:
    out = tmp_path / "camp"
    cmd = [
        sys.executable,
        "-m",
        "pagerace",
        "campaign",
        "--workloads",
        "fault-storm,default",
        "--seeds",
        "1-400",
        "--bugs",
        "none",
        "--bugs",
        "no-fault-folio-exception",
        "--jobs",
        "2",
        "--max-steps",
        "20000",
        "--livelock-steps",
        "3000",
        "--out",
        str(out),
        "--quiet",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while len(_rows(out / "runs.csv")) < 20:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the campaign wrote no rows in 60 s"
            time.sleep(0.1)
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert workers, "expected pool workers"
        if sig == signal.SIGTERM:
            os.kill(proc.pid, sig)  # a job scheduler stops the parent only
        else:
            os.killpg(proc.pid, sig)  # what a terminal's Ctrl-C does: the whole group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, err
        assert "interrupted: finished units are saved" in err
    _, alive = psutil.wait_procs(workers, timeout=5)
    assert alive == []
    first = {r["run_id"]: r for r in _rows(out / "runs.csv")}
    assert 20 <= len(first) < 1600
    # rerun a smaller plan that contains the finished units: nothing lost, nothing twice
    rerun = c.run_campaign(
        c.make_plan(
            dict(
                name="camp",
                workloads="fault-storm,default",
                seeds="1-400",
                bugs=["none", "no-fault-folio-exception"],
                max_steps=20000,
                livelock_steps=3000,
                jobs=2,
            )
        ),
        out,
        limit_units=10,
    )
    assert rerun.already == len(first) and rerun.ran == 10
    after = _rows(out / "runs.csv")
    keys = [tuple(r[k] for k in c.KEY_COLUMNS) for r in after]
    assert len(keys) == len(set(keys)) == len(first) + 10
    by_id = {r["run_id"]: r for r in after}
    assert all(by_id[k] == v for k, v in first.items())
    ids = set(by_id)
    for name in ("contention.csv", "outcomes.csv", "failures.csv"):
        assert {r["run_id"] for r in _rows(out / name)} <= ids


def test_dask_with_worker_processes(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
    from pagerace.harness.dask_backend import DaskBackend

    saved = random.getstate()
    import dask

    # its scratch space under tmp_path, not $TMPDIR/dask-scratch-space (issue 10 item 10)
    scratch = dask.config.set({"temporary-directory": str(tmp_path / "dask-scratch")})
    with scratch, distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=":0",  # a random port: None still serves HTTP on 8787, another run may hold it
        worker_dashboard_address=None,
    ) as cluster:
        backend = DaskBackend(cluster.scheduler_address)
        try:
            res = c.run_campaign(plan(seeds="1-5"), tmp_path / "dask", backend=backend)
        finally:
            backend.close(cancel=False)
    random.setstate(saved)
    assert res.ran == 30
    c.run_campaign(plan(seeds="1-5"), tmp_path / "inline")
    assert fingerprints(tmp_path / "dask") == fingerprints(tmp_path / "inline")


def test_a_dying_worker_is_an_internal_error_and_the_rerun_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pagerace.core.machine.errors import HarnessInternalError

    real = c.run_deterministic

    def dies_on_seed_7(w: object, **kw: object) -> object:
        if kw["seed"] == 7:
            os._exit(9)  # a segfault or the OOM killer, as the pool sees it
        return real(w, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(c, "run_deterministic", dies_on_seed_7)  # the fork children inherit it
    with pytest.raises(HarnessInternalError, match="a campaign worker died"):
        c.run_campaign(plan(jobs=2, chunk=1), tmp_path)
    monkeypatch.setattr(c, "run_deterministic", real)
    kept = {r["run_id"] for r in _rows(tmp_path / "runs.csv")}
    res = c.run_campaign(plan(jobs=2), tmp_path)
    assert res.already == len(kept) and res.ran + res.already == 60
    keys = [tuple(r[k] for k in c.KEY_COLUMNS) for r in _rows(tmp_path / "runs.csv")]
    assert len(keys) == len(set(keys)) == 60
    # no worker left: the conftest leak guard fails any test that leaves a child process


def test_dask_workers_load_the_plugins_of_the_campaign(tmp_path: Path) -> None:
    """Dask worker processes (spawned: they inherit nothing) run a plugin's variant: each
    task carries the plugin's path and the worker loads it before it runs."""
    distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
    from pagerace.harness import plugins
    from pagerace.harness.dask_backend import DaskBackend

    example = Path(__file__).parents[2] / "docs" / "examples" / "my_patch.py"
    saved = random.getstate()
    with plugins.isolated():
        plugins.load(str(example))
        p = c.make_plan(dict(name="p", workloads="migrate-vs-pin", variants="v6-check-page-patch",
                             seeds="0-6", strategies="rr", replay=False))
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, protocol="tcp", host="127.0.0.1",
            dashboard_address=":0", worker_dashboard_address=None,  # ":0": no fixed HTTP port
        ) as cluster:
            backend = DaskBackend(cluster.scheduler_address)
            try:
                res = c.run_campaign(p, tmp_path / "dask", backend=backend)
            finally:
                backend.close(cancel=False)
    random.setstate(saved)
    assert res.ran == 7 and not res.errors
    seeds = sorted(int(r["seed"]) for r in _rows(tmp_path / "dask" / "failures.csv"))
    assert seeds == [1, 5]  # as hunt and compare find it (rr on seeds 1 and 5)

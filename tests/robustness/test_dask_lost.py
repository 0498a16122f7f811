"""A Dask cluster that cannot run anything ends a campaign in bounded time with a clear
message (issue 10 item 9: with no worker connected, the last one lost, or all paused for
memory, `campaign --cluster` waited forever without a word and ignored --budget)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pagerace.core.machine.errors import InvalidOption
from pagerace.harness import campaign as c
from procs import record_figures

pytestmark = pytest.mark.robustness
distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")

SMALL = dict(workloads="fault-storm,default", variants="v6", max_steps=20000, livelock_steps=400)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    import dask

    saved = random.getstate()  # distributed draws ids from the global `random`
    n = getattr(request, "param", 2)
    with dask.config.set({"temporary-directory": str(tmp_path / "dask-scratch")}), distributed.LocalCluster(
        n_workers=n, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
        dashboard_address=":0", worker_dashboard_address=None, memory_limit=0,  # ":0": no fixed HTTP port
    ) as cl:
        yield cl
    random.setstate(saved)


def _backend(cl: Any, worker_timeout: float) -> Any:
    from pagerace.harness.dask_backend import DaskBackend

    return DaskBackend(cl.scheduler_address, worker_timeout=worker_timeout)


def _run(
    cl: Any, out: Path, worker_timeout: float, on_progress: Any = None, **plan: Any
) -> tuple[Any, float]:
    backend = _backend(cl, worker_timeout)
    t0 = time.monotonic()
    try:
        res = c.run_campaign(c.make_plan({**SMALL, **plan}), out, backend=backend, on_progress=on_progress)
    finally:
        backend.close(cancel=False)
    return res, time.monotonic() - t0


@pytest.mark.parametrize("cluster", [0], indirect=True)
def test_no_worker_ever_connects(cluster: Any, tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(InvalidOption, match=r"no Dask worker is connected .* for 1 s; 0 finished unit"):
        _run(cluster, tmp_path / "out", worker_timeout=1.0, seeds="1-100")
    took = time.monotonic() - t0
    assert took < 10
    record_figures("dask_no_worker", {"seconds_to_end": round(took, 2), "worker_timeout_s": 1.0})


def test_losing_every_worker_mid_campaign(cluster: Any, tmp_path: Path) -> None:
    lost: list[float] = []

    def progress(p: c.Progress) -> None:
        if not lost and p.done >= 4:
            lost.append(time.monotonic())
            cluster.scale(0)

    with pytest.raises(InvalidOption, match="no Dask worker is connected") as ei:
        _run(cluster, tmp_path / "out", worker_timeout=1.0, on_progress=progress, seeds="1-100000", chunk=1)
    took = time.monotonic() - lost[0]
    assert took < 15
    assert "finished unit(s) are saved in" in str(ei.value)
    again = c.run_campaign(c.make_plan({**SMALL, "seeds": "1-3"}), tmp_path / "out")  # resumes locally
    assert again.already >= 4 or again.ran + again.already == 6
    record_figures("dask_all_lost", {"seconds_to_end_after_loss": round(took, 2), "worker_timeout_s": 1.0})


def test_every_worker_paused(cluster: Any, tmp_path: Path) -> None:
    from distributed.core import Status

    for w in cluster.workers.values():
        w.status = Status.paused
    t0 = time.monotonic()
    with pytest.raises(InvalidOption, match=r"all 2 Dask worker\(s\) are paused"):
        _run(cluster, tmp_path / "out", worker_timeout=1.0, seeds="1-100")
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("cluster", [0], indirect=True)
def test_the_budget_bounds_a_campaign_that_cannot_run(cluster: Any, tmp_path: Path) -> None:
    res, took = _run(cluster, tmp_path / "out", worker_timeout=600.0, seeds="1-100", budget="2s")
    assert res.stopped == "budget" and res.ran == 0
    assert took < 2 + c._budget_grace(2.0) + 3

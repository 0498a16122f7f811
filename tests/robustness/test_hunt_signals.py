"""Signals at ``pagerace hunt --jobs 2`` (session 5): Ctrl-C or SIGTERM to the parent
ends the hunt with exit 130, its workers with it, and the rows on disk are the runs taken,
seeds 0..n-1, each once; a SIGKILLed parent leaves no worker; a worker killed from
outside is one line and exit 130, as in a campaign. Nothing sleeps to let things race: the
tests wait for rows on disk and for the workers, then act."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from procs import duplicates, finish, orphan_rows, orphans_after, pagerace, rows, wait_rows, wait_workers

pytestmark = pytest.mark.robustness

HUNT = ["hunt", "opposite-order", "--variant", "v5.0", "--budget", "10000000-runs", "--jobs", "2"]


def _consistent(out: Path) -> int:
    runs = rows(out / "runs.csv")
    assert [int(r["seed"]) for r in runs] == list(range(len(runs)))
    assert duplicates(out) == {} and orphan_rows(out) == {}
    return len(runs)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_hunt_over_workers_keeps_a_prefix_and_leaves_no_worker(
    tmp_path: Path, sig: signal.Signals
) -> None:
    p = pagerace(*HUNT, "--out", str(tmp_path))
    assert wait_rows(tmp_path / "runs.csv", 20, p)
    assert len(wait_workers(p.pid, 2)) == 2
    p.send_signal(sig)
    code, _, err = finish(p)
    assert code == 130, err
    assert err.strip().endswith("pagerace hunt: interrupted"), err
    assert "Traceback" not in err
    assert orphans_after(p.pid) == []
    assert _consistent(tmp_path) >= 20


def test_sigkill_of_a_hunt_parent_leaves_no_worker(tmp_path: Path) -> None:
    p = pagerace(*HUNT, "--out", str(tmp_path))
    assert wait_rows(tmp_path / "runs.csv", 5, p)
    assert len(wait_workers(p.pid, 2)) == 2
    p.send_signal(signal.SIGKILL)
    code, _, _ = finish(p)
    assert code == -signal.SIGKILL
    assert orphans_after(p.pid) == []
    _consistent(tmp_path)


def test_a_hunt_worker_killed_from_outside_is_one_line_and_exit_130(tmp_path: Path) -> None:
    p = pagerace(*HUNT, "--out", str(tmp_path))
    assert wait_rows(tmp_path / "runs.csv", 5, p)
    victim = wait_workers(p.pid, 2)[0]
    victim.kill()
    code, _, err = finish(p)
    assert code == 130, err  # as campaign (README's exit codes): not a bug in pagerace
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "pagerace hunt: hunt worker" in err and "SIGKILL from outside" in err, err
    assert orphans_after(p.pid) == []
    _consistent(tmp_path)

"""Signals at pagerace from outside (issue 10 items 3, 4, 5, 10): a campaign parent
SIGKILLed leaves no worker; a worker killed from outside is a harness event naming the
signal; an interrupted parallel run says so in runs.csv and exits 130; a campaign started
in the background by a script still stops on SIGINT. Then the same, at random moments,
many times: zero rows lost or duplicated after the resume, zero processes or segments
left. Every process here is pagerace's own subprocess; nothing sleeps to let things race:
the tests wait for rows on disk or for processes to appear, and then act."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
from procs import (
    CAMPAIGN,
    duplicates,
    finish,
    orphan_rows,
    orphans_after,
    pagerace,
    record_figures,
    rows,
    segments_of,
    wait_rows,
    wait_workers,
    workers_of,
)

pytestmark = pytest.mark.robustness

KILL_TRIALS = int(os.environ.get("PAGERACE_KILL_TRIALS", "24"))


def test_sigkill_of_a_campaign_parent_leaves_no_worker(tmp_path: Path) -> None:
    """Before: the pool workers lived on with parent pid 1 and `clean` did not see them."""
    p = pagerace("campaign", *CAMPAIGN, "--seeds", "1-100000", "--jobs", "2", "--out", str(tmp_path))
    wait_rows(tmp_path / "runs.csv", 5, p)
    assert len(wait_workers(p.pid, 2)) == 2
    p.send_signal(signal.SIGKILL)
    code, _, _ = finish(p)
    assert code == -signal.SIGKILL
    assert orphans_after(p.pid) == []
    assert segments_of(p.pid) == []


def test_a_campaign_worker_killed_from_outside_is_a_harness_event(tmp_path: Path) -> None:
    """Before: the first SIGTERM did not end a worker (it inherited the parent's handler),
    and a SIGKILLed worker was an internal error (exit 3)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        out = tmp_path / sig.name
        p = pagerace("campaign", *CAMPAIGN, "--seeds", "1-100000", "--jobs", "2", "--out", str(out))
        wait_rows(out / "runs.csv", 5, p)
        victim = wait_workers(p.pid, 2)[0]
        victim.send_signal(sig)
        code, _, err = finish(p)
        assert code == 130, err
        named = f"campaign worker {victim.pid} was killed by {sig.name} from outside" in err
        # the pool SIGTERMs the other workers: a SIGTERM death may not be told apart
        assert named or (sig == signal.SIGTERM and f"a campaign worker was killed by {sig.name}" in err), err
        assert "internal error" not in err and "Traceback" not in err
        assert orphans_after(p.pid) == []
        assert duplicates(out) == {} and orphan_rows(out) == {}


def test_an_interrupted_parallel_run_is_recorded_as_interrupted(tmp_path: Path) -> None:
    """Before: SIGINT or SIGTERM stopped it in 0.4 s with `outcome: clean`, exit 0."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / sig.name
        p = pagerace("run", "--engine", "parallel", "--duration", "60s", "--out", str(out))
        wait_workers(p.pid, 2)
        p.send_signal(sig)
        code, stdout, err = finish(p, timeout=30)
        assert code == 130, err
        assert "outcome: interrupted" in stdout
        [row] = rows(out / "runs.csv")
        assert row["outcome"] == "interrupted" and row["failure_kind"] == ""
        assert rows(out / "failures.csv") == []
        assert orphans_after(p.pid) == [] and segments_of(p.pid) == []


def test_a_parallel_worker_killed_from_outside_is_not_a_kernel_failure(tmp_path: Path) -> None:
    """Before: a bug_on failure with an artifact whose replay could not reproduce it."""
    p = pagerace("run", "--engine", "parallel", "--workers", "3", "--duration", "60s", "--out", str(tmp_path))
    victim = sorted(wait_workers(p.pid, 3), key=lambda w: w.name())[1]
    victim.kill()
    code, stdout, err = finish(p, timeout=30)
    assert code == 130, err
    assert "outcome: killed" in stdout and "SIGKILL from outside" in stdout
    [row] = rows(tmp_path / "runs.csv")
    assert row["outcome"] == "killed" and row["failure_kind"] == "" and row["artifact"] == ""
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())
    assert orphans_after(p.pid) == [] and segments_of(p.pid) == []


def test_a_campaign_started_in_the_background_by_a_script_stops_on_sigint(tmp_path: Path) -> None:
    """A non-interactive shell starts `cmd &` with SIGINT ignored. Before: the campaign
    ignored it and ran on."""
    script = (
        f"{sys.executable} -m pagerace campaign {' '.join(CAMPAIGN)} --seeds 1-100000 --jobs 1 "
        f"--out {tmp_path} & echo $!; wait $!; echo rc=$?"
    )
    sh = subprocess.Popen(["/bin/sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True)
    try:
        assert sh.stdout is not None
        pid = int(sh.stdout.readline())
        status = psutil.Process(pid).as_dict(["pid"])
        assert status["pid"] == pid
        wait_rows(tmp_path / "runs.csv", 5, sh)
        os.kill(pid, signal.SIGINT)
        out, err = sh.communicate(timeout=60)
    finally:
        if sh.poll() is None:
            os.killpg(sh.pid, signal.SIGKILL)
            sh.communicate()
    assert "rc=130" in out, err
    assert "interrupted: finished units are saved" in err


def test_clean_finds_and_ends_an_orphaned_campaign_worker(tmp_path: Path) -> None:
    """A worker named prc-<dead parent> (one that outlived PR_SET_PDEATHSIG, e.g. from an
    older pagerace): before, `pagerace clean` said "nothing to clean"."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = subprocess.Popen(
        [sys.executable, "-c",
         f"import ctypes, sys; ctypes.CDLL(None).prctl(15, b'prc-{dead.pid}', 0, 0, 0); "
         "print('named', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert orphan.stdout is not None and orphan.stdout.readline().strip() == "named"
        p = pagerace("clean", "--dry-run", "--out", str(tmp_path))
        code, out, _ = finish(p)
        assert code == 0 and f"would kill worker process {orphan.pid} (prc-{dead.pid})" in out
        assert orphan.poll() is None
        code, out, _ = finish(pagerace("clean", "--out", str(tmp_path)))
        assert code == 0 and f"killed worker process {orphan.pid}" in out
        assert orphan.wait(10) == -signal.SIGKILL
    finally:
        if orphan.poll() is None:
            orphan.kill()
        orphan.communicate()


def test_kills_at_random_moments_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    """SIGKILL, SIGINT or SIGTERM to the campaign parent or to one of its workers, after a
    random number of committed rows; then the same command again to the end. Every unit
    of the plan has exactly one row in runs.csv, the rows committed before the kill are
    all still there, no file has a duplicated or an orphan row, and no worker process or
    segment outlived its parent."""
    rng = np.random.default_rng(20261201)
    plan = 2 * 300
    lost = duplicated = orphans = segments = injected = 0
    seen: dict[str, int] = {}
    for trial in range(KILL_TRIALS):
        out = tmp_path / f"t{trial}"
        sig = [signal.SIGKILL, signal.SIGINT, signal.SIGTERM][int(rng.integers(3))]
        target = "parent" if rng.random() < 0.5 else "worker"
        after = int(rng.integers(1, plan - 50))
        argv = ["campaign", *CAMPAIGN, "--seeds", "1-300", "--jobs", "2", "--out", str(out)]
        p = pagerace(*argv)
        if wait_rows(out / "runs.csv", after, p):
            victims = [p] if target == "parent" else workers_of(p.pid)
            if victims:
                victims[int(rng.integers(len(victims)))].send_signal(sig)
                injected += 1
        code, _, err = finish(p)
        assert code in (0, 130, -signal.SIGKILL), (trial, sig, target, code, err)
        assert "internal error" not in err, err
        orphans += len(orphans_after(p.pid))
        segments += len(segments_of(p.pid))
        before = {tuple(r[k] for k in ("workload", "seed")) for r in rows(out / "runs.csv")}
        code, _, err = finish(pagerace(*argv))
        assert code == 0, err
        final = rows(out / "runs.csv")
        keys = [(r["workload"], r["seed"]) for r in final]
        lost += len(before - set(keys)) + (plan - len(set(keys)))
        duplicated += sum(duplicates(out).values()) + sum(orphan_rows(out).values())
        seen[f"{target} {sig.name}"] = seen.get(f"{target} {sig.name}", 0) + 1
    assert injected >= KILL_TRIALS * 3 // 4  # most trials were cut short, not finished first
    record_figures("kills", {
        "trials": KILL_TRIALS, "kills_injected": injected, "by_target_and_signal": seen,
        "rows_lost": lost, "rows_duplicated_or_orphaned": duplicated,
        "processes_left": orphans, "segments_left": segments,
    })
    assert (lost, duplicated, orphans, segments) == (0, 0, 0, 0)

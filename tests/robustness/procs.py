"""Helpers of the robustness tier: pagerace as a subprocess, its rows, its processes."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil

# A small, fast campaign configuration: a few hundred units a second on one core.
CAMPAIGN = ["--workloads", "fault-storm,default", "--max-steps", "20000", "--livelock-steps", "400",
            "--no-replay", "--quiet"]
KEYS = {
    "runs.csv": ("workload", "variant", "bugs", "seed", "strategy", "engine"),
    "contention.csv": ("run_id", "site"),
    "outcomes.csv": ("run_id", "attempt"),
    "failures.csv": ("run_id",),
}


def pagerace(*args: str, **kw: object) -> subprocess.Popen[str]:
    """``pagerace ARGS`` in a new process (its own session: a signal to it is to it alone)."""
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-m", "pagerace", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kw,
    )


def finish(p: subprocess.Popen[str], timeout: float = 60.0) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    return p.returncode, out, err


def rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def complete_lines(path: Path) -> int:
    """Rows (complete lines after the header) in ``path`` now."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    return max(0, data.count(b"\n") - 1)


def wait_rows(path: Path, n: int, p: subprocess.Popen[str], timeout: float = 60.0) -> bool:
    """Poll until ``path`` has ``n`` complete rows (False if ``p`` ended first)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if complete_lines(path) >= n:
            return True
        if p.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError(f"{path} never reached {n} rows")


def workers_of(parent: int) -> list[psutil.Process]:
    """Live processes named as pagerace workers of ``parent`` (``prc-<pid>``, ``prw-<pid>-<n>``)."""
    out = []
    for proc in psutil.process_iter(["name", "status"]):
        name = proc.info["name"] or ""
        ours = name == f"prc-{parent}" or name.startswith(f"prw-{parent}-")
        if ours and proc.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(proc)
    return out


def wait_workers(parent: int, n: int, timeout: float = 30.0) -> list[psutil.Process]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ws = workers_of(parent)
        if len(ws) >= n:
            return ws
        time.sleep(0.005)
    raise AssertionError(f"pid {parent} never had {n} workers")


def orphans_after(parent: int, timeout: float = 5.0) -> list[int]:
    """Workers of ``parent`` still alive ``timeout`` seconds after it ended (0 expected:
    they die with it); any found are killed so that nothing outlives the test."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not workers_of(parent):
            return []
        time.sleep(0.01)
    left = workers_of(parent)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return [p.pid for p in left]


def segments_of(parent: int) -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"pagerace_{parent}_"))


def duplicates(out: Path) -> dict[str, int]:
    """Rows whose key appears more than once, per file."""
    dup = {}
    for name, key in KEYS.items():
        c = Counter(tuple(r[k] for k in key) for r in rows(out / name))
        n = sum(v - 1 for v in c.values() if v > 1)
        if n:
            dup[name] = n
    return dup


def orphan_rows(out: Path) -> dict[str, int]:
    """Rows of the other files whose run is not in runs.csv."""
    have = {r["run_id"] for r in rows(out / "runs.csv")}
    bad = {}
    for name in ("contention.csv", "outcomes.csv", "failures.csv"):
        n = sum(1 for r in rows(out / name) if r["run_id"] not in have)
        if n:
            bad[name] = n
    return bad


def record_figures(name: str, figures: dict[str, object]) -> None:
    """Append the figures of a robustness test to $PAGERACE_FIGURES (JSON lines), when set:
    docs/reliability.md quotes them."""
    path = os.environ.get("PAGERACE_FIGURES")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"test": name, **figures}) + "\n")


SIGNALS = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)

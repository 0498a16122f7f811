"""Schedules per second through the CLI and through the API, and the CLI's start-up.

Issue 13 measured pagerace running 150-270 schedules/s through ``pagerace hunt`` while
its own :func:`~pagerace.harness.hunt.hunt` ran 1,100-2,800/s on the same toys: the
difference was per-run overhead outside the engine (CSV rows with two ``fsync`` per run,
rebuilding the model, start-up imports). This benchmark keeps that difference measured.

For each workload (``opposite-order`` on ``v5.0``, the target's workload; the smallest
and the busiest workload by median steps per run among ``workloads/*.toml``, on their
default variant), the same hunt (``mix`` strategy, seeds from 0, a fixed number of runs,
no failure expected) runs

- through the CLI: ``python -m pagerace hunt W --variant V --budget N-runs --out TMP`` in
  a fresh process; the figure is N / the process's wall time, start-up and every CSV row
  included (what a nightly job pays). Twice: as a user types it (``--jobs`` left at its
  default, one worker process per CPU since session 5: ``cli_per_s``) and with
  ``--jobs 1`` (one process, as before session 5: ``cli_jobs1_per_s``);
- through the API: ``hunt(w, variant=V, budget=Budget(runs=N))`` in this process, no rows
  written; the figure is N / ``HuntResult.seconds``. Twice: with its default ``jobs=1``
  (``api_per_s``, the figure of every earlier session) and with ``jobs=os.cpu_count()``
  (``api_cpus_per_s``).

The targets stay on the CLI as typed (``cli_per_s``). The ratio target compares like with
like: ``api_vs_cli`` is API / CLI with the same number of worker processes, the CLI's
default (``api_cpus_per_s / cli_per_s``); ``api_vs_cli_jobs1`` is the one-process pair
(``api_per_s / cli_jobs1_per_s``, what ``api_vs_cli`` was before session 5).

Each figure is the median of the repeats; the four alternate so that load on the machine
hits them alike. ``cli_rate.start_s`` is the wall time of ``python -m pagerace list``
(start-up and one command's imports), median of the repeats.

The CLI's processes start as an installed pagerace starts: from compiled bytecode (``pip
install`` compiles every module; a checkout writes ``__pycache__`` on its first run). A
machine that sets ``PYTHONDONTWRITEBYTECODE`` (this project's own does) would otherwise
compile the ~70 modules a hunt imports at every start of an editable install, about 0.25 s of CPU
on the 2-core machine, a quarter of a 1,000-run hunt there: the CLI processes of this
benchmark get a bytecode cache of their own (``PYTHONPYCACHEPREFIX``, a temporary
directory, filled by a warm-up start) and never write into the checkout.
``cli_rate.start_cold_s`` keeps the start-up with the caller's environment as it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from ._machine import Figure, Log, Target, median, quiet, variant_for

# ``pagerace hunt opposite-order --variant v5.0`` through the CLI before issue 13's work:
# median of 5 processes of 1,000 runs each on the project's 2-core machine (load ~1),
# measured by this module at its first commit, before any change (docs/PERFORMANCE.md).
CLI_BEFORE = 175.0
CLI_TARGET = Target(
    ">=", 5 * CLI_BEFORE,
    f"hunt through the CLI on opposite-order (v5.0) >= 5x the {CLI_BEFORE:g} schedules/s before",
)
RATIO_TARGET = Target("<=", 1.5, "hunt through the CLI within 1.5x of the API's rate (opposite-order)")
CPUS = os.cpu_count() or 1  # the CLI's default --jobs


def cli_env(cache_dir: str) -> dict[str, str]:
    """The environment of the benchmark's CLI processes: the caller's, with bytecode
    caches allowed and kept under ``cache_dir`` (never in the checkout)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache_dir
    return env


def cli_rate(
    workload: str, variant: str, runs: int, jobs: int | None = None, env: dict[str, str] | None = None
) -> float:
    """Runs/s of ``pagerace hunt`` in a fresh process (wall time, start-up included);
    ``jobs``: its ``--jobs`` (``None``: the default, one worker per CPU); ``env``: the
    process's environment (``None``: the caller's)."""
    with tempfile.TemporaryDirectory(prefix="pagerace-bench-cli-") as d:
        cmd = [sys.executable, "-m", "pagerace", "hunt", workload, "--variant", variant,
               "--budget", f"{runs}-runs", "--no-shrink", "--out", d]
        if jobs is not None:
            cmd += ["--jobs", str(jobs)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[2:])} exited {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-300:]}"
        )
    return runs / wall


def api_rate(workload: str, variant: str, runs: int, jobs: int = 1) -> float:
    """Runs/s of :func:`hunt` called from this process (``HuntResult.seconds``, no rows),
    with ``jobs`` worker processes (1: in this process)."""
    from pagerace.harness.hunt import Budget, hunt
    from pagerace.workloads import load_workload

    res = hunt(load_workload(workload), variant=variant, budget=Budget(runs=runs), shrink=False, jobs=jobs)
    if res.found is not None or res.runs != runs:
        raise RuntimeError(f"hunt {workload} ({variant}) found a failure or stopped at {res.runs} runs")
    return res.runs / res.seconds


def start_seconds(env: dict[str, str] | None = None) -> float:
    """Wall time of ``python -m pagerace list`` (output discarded); ``env``: the
    process's environment (``None``: the caller's)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pagerace", "list"], capture_output=True, check=True, env=env)
    return time.perf_counter() - t0


def smallest_and_busiest(probe_seeds: int) -> tuple[tuple[str, str, float], tuple[str, str, float]]:
    """(name, variant, median steps per run) of the workloads with the fewest and the most
    steps per run, on their default variant, over seeds ``0..probe_seeds-1``."""
    from pagerace.harness.runner import run_deterministic
    from pagerace.workloads import load_workload, workload_names

    found: list[tuple[float, str, str]] = []
    for name in workload_names():
        try:
            w = load_workload(name)
        except Exception:  # a half-written workload of another helper: skip it
            continue
        v = variant_for(w)
        if v is None:
            continue
        try:
            steps = [run_deterministic(w, variant=v, seed=s).result.steps for s in range(probe_seeds)]
        except Exception:  # a workload another helper is still writing: skip it
            continue
        found.append((median(steps), name, v))
    found.sort()
    lo, hi = found[0], found[-1]
    return (lo[1], lo[2], lo[0]), (hi[1], hi[2], hi[0])


def run(quick: bool = False, log: Log = quiet) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="pagerace-bench-pyc-") as cache:
        env = cli_env(cache)
        start_seconds(env)  # warm-up: fills the bytecode cache
        cli_rate("opposite-order", "v5.0", 2, jobs=1, env=env)
        return _run(quick, log, env)


def _run(quick: bool, log: Log, env: dict[str, str]) -> list[Figure]:
    repeats = 1 if quick else 5
    scale = 0.1 if quick else 1.0
    log("cli rate: smallest and busiest workload")
    (small, small_v, small_steps), (busy, busy_v, busy_steps) = smallest_and_busiest(2 if quick else 3)
    cases = [
        ("opposite_order", "opposite-order", "v5.0", 1000, "opposite-order (v5.0)"),
        ("smallest", small, small_v, 2000, f"smallest ({small})"),
        ("busiest", busy, busy_v, 400, f"busiest ({busy})"),
    ]
    figs: list[Figure] = []
    env_note = f"load {os.getloadavg()[0]:.2f} at the start" if hasattr(os, "getloadavg") else ""
    steps = {"smallest": small_steps, "busiest": busy_steps}
    for tag, name, variant, n, what in cases:
        runs = max(10, int(n * scale))
        api_rate(name, variant, max(3, runs // 20))  # warm-up: imports, caches
        cli: list[float] = []
        cli1: list[float] = []
        api: list[float] = []
        apin: list[float] = []
        for _ in range(repeats):
            log(f"cli rate: {name} through the CLI (default --jobs, {CPUS})")
            cli.append(cli_rate(name, variant, runs, env=env))
            log(f"cli rate: {name} through the CLI, --jobs 1")
            cli1.append(cli_rate(name, variant, runs, jobs=1, env=env))
            log(f"cli rate: {name} through the API, jobs=1")
            api.append(api_rate(name, variant, runs))
            log(f"cli rate: {name} through the API, jobs={CPUS}")
            apin.append(api_rate(name, variant, runs, jobs=CPUS))
        c, c1, a, an = median(cli), median(cli1), median(api), median(apin)
        how = f"{variant}, mix, {runs} runs from seed 0, median of {repeats}"
        if tag in steps:
            how += f" ({steps[tag]:.0f} median steps per run: the {tag} of workloads/*.toml)"
        wall = ("runs / wall time of the process (start-up from compiled bytecode, as installed, "
                "and CSV rows included)")
        cfg = {"workload": name, "variant": variant, "runs": runs}
        figs += [
            Figure(f"cli_rate.{tag}.cli_per_s", f"hunt through the CLI, default --jobs ({CPUS}), {what}", c,
                   "runs/s", how=f"{how}; {wall}",
                   target=CLI_TARGET if tag == "opposite_order" else None,
                   note=f"--jobs defaults to the CPUs ({CPUS} worker processes) since session 5",
                   extra={**cfg, "jobs": CPUS, "values": cli}),
            Figure(f"cli_rate.{tag}.cli_jobs1_per_s", f"hunt through the CLI, --jobs 1, {what}", c1, "runs/s",
                   how=f"{how}; {wall}", extra={**cfg, "jobs": 1, "values": cli1}),
            Figure(f"cli_rate.{tag}.api_per_s", f"hunt() through the API, jobs=1, {what}", a, "runs/s",
                   how=f"{how}; runs / HuntResult.seconds (no rows)",
                   extra={**cfg, "jobs": 1, "values": api}),
            Figure(f"cli_rate.{tag}.api_cpus_per_s", f"hunt() through the API, jobs={CPUS}, {what}", an,
                   "runs/s", how=f"{how}; runs / HuntResult.seconds (no rows, pool start included)",
                   extra={**cfg, "jobs": CPUS, "values": apin}),
            Figure(f"cli_rate.{tag}.api_vs_cli", f"API / CLI rate, both {CPUS} jobs, {what}",
                   an / c if c else None, "ratio",
                   how=f"api_cpus_per_s / cli_per_s: like with like ({CPUS} worker processes each)",
                   note="before session 5 this was the one-process pair: now api_vs_cli_jobs1",
                   target=RATIO_TARGET if tag == "opposite_order" else None),
            Figure(f"cli_rate.{tag}.api_vs_cli_jobs1", f"API / CLI rate, both 1 job, {what}",
                   a / c1 if c1 else None, "ratio", how="api_per_s / cli_jobs1_per_s (one process each)"),
        ]
    starts = [start_seconds(env) for _ in range(max(3, repeats))]
    figs.append(Figure("cli_rate.start_s", "pagerace list: start-up + command", median(starts), "s",
                       how=f"wall time of python -m pagerace list from compiled bytecode, "
                           f"median of {len(starts)}",
                       note=env_note, extra={"values": starts}))
    cold = [start_seconds() for _ in range(max(3, repeats))]
    compiles = "compiles every module" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "as it is"
    figs.append(Figure("cli_rate.start_cold_s", "pagerace list: start-up in the caller's environment",
                       median(cold), "s",
                       how=f"wall time of python -m pagerace list with the caller's environment "
                           f"({compiles}), median of {len(cold)}",
                       extra={"values": cold}))
    return figs

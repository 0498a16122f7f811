"""``pagerace hunt``: seeds until the first failure or the budget; shrink; write it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ...workloads import load_workload
from ..artifacts import write_artifact
from ..hunt import HUNT_STRATEGIES, RunDone, hunt, parse_budget
from ..output import ARTIFACT_DIR, RowWriter, rows_for, run_id
from ..runner import validate_variant_bugs
from ._options import (
    StatusLine,
    add_out,
    add_seed,
    add_status_every,
    add_variant_and_bugs,
    at_least,
    check_out_dir,
    interruptible,
    seconds,
)

NAME = "hunt"
HELP = (
    "run seeds until an oracle fires or the budget is spent; shrink and print the failure "
    "(CSV rows for every run, an artifact for the failure)"
)
EXAMPLES = [
    (
        "pagerace hunt opposite-order --variant hmm-2017 --budget 200-runs",
        "find the AB-BA deadlock of blocking prepare and print its shrunk step list (exit 1)",
    ),
    ("pagerace hunt opposite-order --variant v5.0 --budget 200-runs", "v5.0 backs off: exit 0"),
    (
        "pagerace hunt fault-storm --bug fault-ref-no-trylock --budget 30s --strategy pct",
        "PCT (depth 3) finds the fault livelock that a random walk misses",
    ),
    ("pagerace hunt holes --variant hmm-2017 --bug holes-src-zero --strategy exhaustive",
     "bounded exhaustive search (preemption bound 2)"),
    ("pagerace hunt opposite-order --variant v5.0 --budget 5000-runs --jobs 1",
     "the same hunt in one process (the result is the same with any --jobs)"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workload", metavar="WORKLOAD", help="workload name or .toml path")
    add_variant_and_bugs(p)
    p.add_argument("--budget", default="100-runs", metavar="B",
                   help="N-runs (200-runs) or a time: seconds (45) or with units (500ms, 30s, 2m, "
                   "1h30m) (default: 100-runs)")
    p.add_argument("--strategy", choices=HUNT_STRATEGIES, default="mix",
                   help="mix (round robin first, then a sticky random walk, round robin with "
                   "quanta 2-8 and a random walk by turns over the seeds), random, pct, rr, "
                   "sticky, pos, urw, surw or exhaustive (default: mix)")
    p.add_argument("--pct-depth", type=at_least("--pct-depth", 1), default=3, metavar="D",
                   help="PCT depth (default 3)")
    p.add_argument("--preemptions", type=at_least("--preemptions", 0), default=2, metavar="K",
                   help="preemption bound of the exhaustive search (default 2)")
    add_seed(p, "first seed (default 0)", metavar="BASE")
    p.add_argument("--jobs", type=at_least("--jobs", 1), default=os.cpu_count() or 1, metavar="N",
                   help="worker processes; the runs, rows and failure found are the same with "
                   "any N; pct (unless the workload sets pct_k), urw, surw and exhaustive "
                   f"depend on earlier runs and run in one process (default: {os.cpu_count() or 1}, "
                   "the CPUs)")
    p.add_argument("--shrink-time", type=seconds, default=10.0, metavar="S",
                   help="time budget of the shrinker in seconds (default 10)")
    p.add_argument("--no-shrink", action="store_true", help="keep the failing run as found")
    add_out(p)
    p.add_argument("--full-steps", action="store_true", help="print every lock event")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="output format; json: one object (runs, seed, failure, artifact, replay command) "
                   "(default: text)")
    add_status_every(p)


def _term_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """A job scheduler's SIGTERM stops the hunt the way Ctrl-C does: the rows of the runs
    taken are written, the workers end, exit 130."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _run(args)
    old_term = signal.signal(signal.SIGTERM, _term_as_interrupt)
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, old_term)


def _run(args: argparse.Namespace) -> int:
    w = load_workload(args.workload)
    budget = parse_budget(args.budget)
    validate_variant_bugs(args.variant, args.bug, w)
    check_out_dir(args.out, artifacts=True)
    interruptible()
    import time

    status = StatusLine(args.status_every, quiet=args.quiet)
    t0 = time.monotonic()
    count = [0]

    def on_clean(done: RunDone) -> None:
        assert done.rows is not None  # formatted where the run was made (a worker)
        writer.add(done.rows)
        count[0] += 1
        status(lambda: f"hunt {w.name} · {args.variant}: {count[0]} runs, nothing found yet "
                       f"({time.monotonic() - t0:.0f} s, seed {done.seed}, budget {budget})")

    # Rows go out in batches (RowWriter); everything printed below comes after the writer
    # closed, so no run is reported before its rows are on disk.
    with RowWriter(args.out) as writer:
        res = hunt(
            w, variant=args.variant, bugs=args.bug, budget=budget, strategy=args.strategy,
            pct_depth=args.pct_depth, base_seed=args.seed, shrink=not args.no_shrink,
            shrink_budget=args.shrink_time, preemption_bound=args.preemptions,
            jobs=args.jobs, on_clean=on_clean,
        )
        status.close()
        if res.found is not None:
            found = res.found
            rec = res.shrunk.record if res.shrunk is not None else found
            rid = run_id(found)
            rel = f"{ARTIFACT_DIR}/{rid}.json"
            path = write_artifact(Path(args.out) / rel, rec, rid)
            rows = rows_for(found, rid, rel)
            for row in rows["failures.csv"]:
                row["shrunk_steps"] = rec.result.steps if res.shrunk is not None else -1
            writer.add(rows)
    if args.format == "json":
        return _print_json(args, w.name, res, budget, path if res.found is not None else None)
    bugs = f" +{'+'.join(sorted(args.bug))}" if args.bug else ""
    head = f"{w.name} · {args.variant}{bugs} · {args.strategy}"
    extra = ""
    if res.guarantee is not None:
        extra = f"; PCT guarantee per run >= {res.guarantee:.3g} (k = {res.pct_k} steps)"
    if res.search:
        extra = (f"; {res.search['schedules']} schedules, preemption bound "
                 f"{res.search['preemption_bound']}, "
                 f"{'exhausted' if res.search['exhausted'] else 'not exhausted'}, "
                 f"sleep sets pruned {res.search.get('pruned', 0)} branches and stopped "
                 f"{res.search.get('sleep_blocked', 0)} redundant runs")
    if res.found is None:
        print(f"{head}: nothing found in {res.runs} runs ({res.seconds:.1f} s, budget {budget}){extra}")
        return 0
    print(f"{head}: found after {res.runs} runs (seed {found.seed}, {res.seconds:.2f} s){extra}")
    if found.result.failure is not None:
        print(f"failure: {found.result.failure.headline()}")
    if res.shrunk is not None:
        print(res.shrunk.summary())
    print("steps (shrunk):" if res.shrunk is not None else "steps:")
    from ..steps import readable_steps  # imported here: a clean hunt never needs it (start-up)

    for line in readable_steps(rec, full=args.full_steps):
        print(line)
    print(f"artifact: {path}")
    from ..plugins import flags_for

    kinds = sorted({a.kind for a in w.actors})
    print(f"replay it: pagerace {flags_for(args.variant, kinds)}replay {path}")
    return 1


def _print_json(args: argparse.Namespace, workload: str, res: Any, budget: Any, path: Path | None) -> int:
    """``--format json``: the hunt as one object; the exit code is the same as in text."""
    import json

    from ..plugins import flags_for

    doc: dict[str, Any] = {
        "workload": workload, "variant": args.variant, "bugs": sorted(args.bug), "strategy": args.strategy,
        "budget": str(budget), "runs": res.runs, "seconds": round(res.seconds, 3), "jobs": res.jobs,
        "found": res.found is not None,
    }
    if res.found is not None:
        f = res.found.result.failure
        rec = res.shrunk.record if res.shrunk is not None else res.found
        doc.update(
            seed=res.found.seed,
            failure={"kind": f.kind.value, "message": f.headline()} if f is not None else None,
            steps=res.found.result.steps,
            shrunk_steps=rec.result.steps if res.shrunk is not None else None,
            artifact=str(path),
            replay=f"pagerace {flags_for(args.variant)}replay {path}",
        )
    print(json.dumps(doc, indent=1))
    return 1 if res.found is not None else 0

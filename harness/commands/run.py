"""``pagerace run``: one run of a workload, rows to the CSV files, an artifact on failure."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core.machine.errors import InvalidOption
from ...workloads import Workload, load_workload
from ..artifacts import MAX_STEPS, check_buildable, check_fits, write_artifact
from ..output import WrittenRun, write_run
from ..runner import RunRecord, run_deterministic, validate_variant_bugs
from ..schedulers import STRATEGIES
from ._options import (
    add_out,
    add_seed,
    add_variant_and_bugs,
    at_least,
    check_out_dir,
    duration,
    interruptible,
)

NAME = "run"
HELP = "run a workload once; append CSV rows; write a failure artifact if an oracle fires"
EXAMPLES = [
    ("pagerace run", "the default workload on seed 0, output in ./pagerace-out/"),
    (
        "pagerace run fault-storm --bug no-fault-folio-exception --seed 1",
        "put a historical bug back and watch the livelock oracle catch it (exit 1)",
    ),
    ("pagerace run opposite-order --strategy pct --pct-depth 4 --seed 9", "PCT scheduling"),
    ("pagerace run my-workload.toml --steps 50000 --out /tmp/out", "a workload file of your own"),
    (
        "pagerace run fault-storm --engine parallel --workers 4 --duration 30s",
        "real processes over shared memory for 30 seconds",
    ),
]

EXIT_INTERRUPTED = 130
EXIT_NOT_REPRODUCED = 4  # a parallel failure no deterministic try reproduced
MAX_WORKERS = 256  # parallel-engine worker processes (at most one per actor is used)
DETERMINISTIC_STRATEGIES = [s for s in STRATEGIES if s != "replay"]
PARALLEL_ONLY = ("workers", "duration", "ops", "perturb", "reproduce_tries", "exact_trace")


def _rate(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid rate {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"the rate must be between 0 and 1, not {v}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "workload",
        nargs="?",
        default="default",
        metavar="WORKLOAD",
        help="workload name (see 'pagerace list') or path to a .toml file (default: default)",
    )
    add_seed(p, "seed (default: 0)")
    add_variant_and_bugs(p)
    add_out(p)
    p.add_argument("--quiet", action="store_true", help="print nothing; the exit code says it all")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="the summary as text or as one JSON object (default: text)")
    det = p.add_argument_group("deterministic engine")
    det.add_argument(
        "--strategy",
        choices=DETERMINISTIC_STRATEGIES,
        default=None,
        help="scheduling strategy (default: random)",
    )
    det.add_argument(
        "--pct-depth",
        type=at_least("--pct-depth", 1, 10_000),
        default=None,
        metavar="D",
        help="PCT priority-change depth (default: 3)",
    )
    det.add_argument(
        "--quantum",
        type=at_least("--quantum", 1, MAX_STEPS),
        default=None,
        metavar="Q",
        help="round-robin quantum in steps (default: 1)",
    )
    det.add_argument(
        "--steps",
        type=at_least("--steps", 1, MAX_STEPS),
        default=None,
        metavar="N",
        help="step budget; outcome 'budget' when it runs out (default: the workload's)",
    )
    par = p.add_argument_group("parallel engine")
    par.add_argument(
        "--engine",
        choices=["deterministic", "parallel"],
        default="deterministic",
        help="deterministic (one process, exact replay) or parallel (real processes)",
    )
    par.add_argument(
        "--workers",
        type=at_least("--workers", 1, MAX_WORKERS),
        default=None,
        metavar="N",
        help="worker processes; actors are dealt to them round robin (default: 2)",
    )
    par.add_argument(
        "--duration",
        type=duration("--duration"),
        default=None,
        metavar="TIME",
        help="run for this long: 30s, 2m, 1.5 (seconds; default: 10s)",
    )
    par.add_argument(
        "--ops",
        type=at_least("--ops", 1, 2**31),
        default=None,
        metavar="N",
        help="stop each actor after this many operations",
    )
    par.add_argument(
        "--perturb",
        type=_rate,
        default=0.0,
        metavar="RATE",
        help="probability of a random delay at a preemption point (0..1, default 0)",
    )
    par.add_argument(
        "--reproduce-tries",
        type=at_least("--reproduce-tries", 0, 10_000),
        default=None,
        metavar="N",
        help="guided tries to reproduce a failure on the deterministic engine after ticket "
        "order and the lenient replay (default: 64, within 60 s; 0: the two replays only)",
    )
    par.add_argument(
        "--exact-trace",
        action="store_true",
        help="run each step under one shared step lock: the trace is a total order and "
        "replays exactly, at the price of parallel speed",
    )


def _parallel_entry(name: str) -> Any:
    """``pagerace.harness.parallel.<name>``, or None when this build has no parallel engine."""
    try:
        mod = importlib.import_module("pagerace.harness.parallel")
    except ModuleNotFoundError as exc:
        if exc.name in ("pagerace.harness.parallel", "pagerace.harness"):
            return None
        raise
    return getattr(mod, name, None)


def execute(args: argparse.Namespace, w: Workload) -> RunRecord:
    """Run ``w`` as the options say (everything already validated)."""
    bugs = tuple(args.bug)
    if args.engine == "parallel":
        run_parallel = _parallel_entry("run_parallel")
        if run_parallel is None:
            raise InvalidOption("the parallel engine is not available in this build")
        kw: dict[str, Any] = {}
        if args.workers is not None:
            kw["workers"] = args.workers
        if args.duration is not None:
            kw["duration"] = args.duration
        if args.ops is not None:
            kw["ops"] = args.ops
        if args.exact_trace:
            kw["exact_trace"] = True
        return run_parallel(
            w,
            variant=args.variant,
            bugs=bugs,
            seed=args.seed,
            perturb=args.perturb,
            progress=None if args.quiet else _progress,
            **kw,
        )
    return run_deterministic(
        w,
        variant=args.variant,
        bugs=bugs,
        seed=args.seed,
        strategy=args.strategy or "random",
        pct_depth=args.pct_depth or 3,
        quantum=args.quantum or 1,
        max_steps=args.steps,
    )


def _progress(p: dict[str, Any]) -> None:
    """Progress from the parallel engine (about once a second): one overwritten line on
    stderr when it is a terminal."""
    if not sys.stderr.isatty():
        return
    line = (
        f"{p.get('elapsed', 0):6.1f} s  {p.get('ops', 0)} ops ({p.get('ops_per_s', 0):,.0f}/s)  "
        f"{p.get('steps', 0)} steps  {p.get('failures', 0)} failures"
    )
    print("\r" + line[:79].ljust(79), end="", file=sys.stderr, flush=True)


def validate(args: argparse.Namespace) -> Workload:
    """Every check that can fail on bad input, before anything runs or is written."""
    w = load_workload(args.workload)
    check_fits(w, f"workload {args.workload!r}")
    check_buildable(w, f"workload {args.workload!r}")
    validate_variant_bugs(args.variant, args.bug, w)
    if args.engine == "deterministic":
        given = [
            f"--{o.replace('_', '-')}" for o in PARALLEL_ONLY if getattr(args, o) not in (None, 0.0, False)
        ]
        if given:
            raise InvalidOption(
                f"{', '.join(given)} applies to --engine parallel only; the deterministic engine "
                "runs the workload's operations to the end or to --steps"
            )
    else:
        given = [
            f"--{o.replace('_', '-')}"
            for o in ("strategy", "pct_depth", "quantum", "steps")
            if getattr(args, o) is not None
        ]
        if given:
            raise InvalidOption(
                f"{', '.join(given)} applies to the deterministic engine only; the parallel "
                "engine runs until --duration or --ops"
            )
    check_out_dir(args.out, artifacts=True)
    return w


def summary(rec: RunRecord, written: WrittenRun | ParallelWritten, out: str, rep: Any = None) -> str:
    r = rec.result
    rate = r.steps / r.elapsed if r.elapsed > 0 else 0.0
    bugs = f" +{'+'.join(rec.bugs)}" if rec.bugs else ""
    lines = [
        f"{rec.workload.name} · {rec.variant}{bugs} · seed {rec.seed} · {rec.strategy} · {rec.engine}",
        f"outcome: {r.outcome.value}  ({r.steps} steps, {r.preemptions} preemptions, "
        f"{rec.wall:.3f} s, {rate:,.0f} preemption points/s)",
        f"actors: {len(rec.actors)}, operations done: {sum(a.progress for a in rec.actors)}",
    ]
    if r.failure is not None:
        from ..plugins import flags_for

        plug = flags_for(rec.variant, sorted({a.kind for a in rec.workload.actors}))
        lines.append(f"failure: {r.failure.headline()}")
        if rep is not None and isinstance(written, ParallelWritten):
            lines.append(f"parallel trace: {written.trace_path}")
            if rep.reproduced:
                lines.append(f"reproduced on the deterministic engine by {rep.how}: {rep.reason}")
                lines.append(f"artifact: {written.artifact_path} (deterministic: replays exactly, shrinks)")
                lines.append(f"replay it: pagerace {plug}replay {written.artifact_path}")
            else:
                lines.append(f"did not reproduce on the deterministic engine: {rep.reason}")
                if written.other_path is not None:
                    lines.append(
                        f"another failure, found by the {rep.other_by} try (not this run's; it "
                        f"replays exactly): {rep.other.result.failure.headline()}: "
                        f"pagerace {plug}replay {written.other_path}"
                    )
                lines.append(
                    f"what to do: run it again with --exact-trace (each step under one lock: the trace "
                    f"replays exactly), or hunt it: pagerace {plug}hunt {rec.workload.name} --variant "
                    f"{rec.variant}; the raw trace replays leniently: "
                    f"pagerace {plug}replay {written.trace_path}"
                )
        else:
            lines.append(f"artifact: {written.artifact_path}")
            lines.append(f"replay it: pagerace {plug}replay {written.artifact_path}")
    elif r.outcome.value == "budget":
        lines.append("the step budget ran out before the workload finished (not a failure; raise --steps)")
    elif r.outcome.value in ("interrupted", "killed"):
        lines.append(f"cut short, not a kernel failure: {rec.options.get('stop_reason', '')}")
    lines.append(
        f"rows: {out}/runs.csv, contention.csv, outcomes.csv" + (", failures.csv" if r.failure else "")
    )
    lines.append(f"fingerprint: {r.fingerprint}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    interruptible()
    w = validate(args)
    rec = execute(args, w)
    if args.engine == "parallel" and not args.quiet and sys.stderr.isatty():
        print(file=sys.stderr)  # end the progress line
    rep = None
    written: WrittenRun | ParallelWritten
    if args.engine == "parallel" and rec.result.failure is not None and not rec.options.get("watchdog_only"):
        written, rep = write_parallel_failure(args, rec)
    else:
        written = write_run(args.out, rec)
    if args.format == "json" and not args.quiet:
        doc = summary_json(rec, written, args.out)
        if rep is not None:
            doc["reproduction"] = rep.as_json()
            doc["trace_artifact"] = str(getattr(written, "trace_path", ""))
            other_path = getattr(written, "other_path", None)
            doc["other_artifact"] = str(other_path) if other_path is not None else None
            doc["exit_code"] = 1 if rep.reproduced else EXIT_NOT_REPRODUCED
        print(json.dumps(doc, indent=1))
    elif not args.quiet:
        print(summary(rec, written, args.out, rep))
    if rec.result.outcome.value in ("interrupted", "killed"):
        return EXIT_INTERRUPTED  # recorded in runs.csv as such (issue 10 items 4, 5)
    if rep is not None and not rep.reproduced:
        return EXIT_NOT_REPRODUCED
    return 1 if rec.result.failure is not None else 0


@dataclass(frozen=True)
class ParallelWritten:
    """What :func:`write_parallel_failure` wrote: the run id, the artifact to replay
    (the deterministic reproduction's, else the raw trace's) and the raw trace's."""

    run_id: str
    artifact_path: Path
    trace_path: Path
    other_path: Path | None = None  # another failure a try found (nothing reproduced)


def write_parallel_failure(args: argparse.Namespace, rec: RunRecord) -> tuple[ParallelWritten, Any]:
    """A failed parallel run: reproduce it on the deterministic engine
    (``harness/parallel/reproduce.py``), save the raw parallel trace as
    ``artifacts/<id>.parallel.json`` and, when a try reproduced it, the deterministic
    run as ``artifacts/<id>.json`` (it replays exactly and can be shrunk), or another
    failure a try found as ``artifacts/<id>.other.json``; then the rows, the failure's
    ``reproduced`` column and its ``artifact`` naming the one to replay."""
    from ..artifacts import write_json_atomic
    from ..output import ARTIFACT_DIR, append_all, rows_for, run_id
    from ..parallel.reproduce import GUIDED_TRIES, reproduce, reproduction_artifact

    tries = GUIDED_TRIES if args.reproduce_tries is None else args.reproduce_tries
    rid = run_id(rec)
    out = Path(args.out)
    # The raw trace first: a Ctrl-C during the reproduction (up to a minute) keeps it,
    # and the run's rows (``reproduced`` empty: not tried to the end).
    trace_rel = f"{ARTIFACT_DIR}/{rid}.parallel.json"
    trace_path = write_artifact(out / trace_rel, rec, rid)
    try:
        rep = reproduce(rec, guided_tries=tries)
    except KeyboardInterrupt:
        append_all(out, rows_for(rec, rid, trace_rel))
        raise
    rel = trace_rel
    path = trace_path
    other = None
    if rep.record is not None:
        rel = f"{ARTIFACT_DIR}/{rid}.json"
        path = write_json_atomic(out / rel, reproduction_artifact(rep, rec, rid, trace_rel))
    elif rep.other is not None:
        other = write_json_atomic(out / f"{ARTIFACT_DIR}/{rid}.other.json",
                                  reproduction_artifact(rep, rec, rid, trace_rel, other=True))
    rows = rows_for(rec, rid, rel)
    for row in rows["failures.csv"]:
        row["reproduced"] = "yes" if rep.reproduced else "no"
    append_all(out, rows)
    return ParallelWritten(rid, path, trace_path, other), rep


def summary_json(rec: RunRecord, written: WrittenRun | ParallelWritten, out: str) -> dict[str, Any]:
    """``--format json``: the run as one object (what the text summary says)."""
    from ..plugins import flags_for

    r = rec.result
    doc: dict[str, Any] = {
        "workload": rec.workload.name, "variant": rec.variant, "bugs": list(rec.bugs), "seed": rec.seed,
        "strategy": rec.strategy, "engine": rec.engine, "outcome": r.outcome.value, "steps": r.steps,
        "preemptions": r.preemptions, "wall_s": round(rec.wall, 6), "fingerprint": r.fingerprint,
        "out": out, "failure": None, "artifact": None, "replay": None,
    }
    if r.failure is not None:
        doc["failure"] = {"kind": r.failure.kind.value, "message": r.failure.headline()}
        doc["artifact"] = str(written.artifact_path)
        plug = flags_for(rec.variant, sorted({a.kind for a in rec.workload.actors}))
        doc["replay"] = f"pagerace {plug}replay {written.artifact_path}"
    return doc

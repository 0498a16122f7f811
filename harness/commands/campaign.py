"""``pagerace campaign``: many seeds × workloads × variants, resumable, in parallel."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from ...core.machine.errors import InvalidOption
from ._options import StatusLine, add_status_every, check_out_dir, interruptible

NAME = "campaign"
HELP = "run many (workload, variant, seed) units in parallel into one output directory; resumable"
EXAMPLES = [
    (
        "pagerace campaign --workloads all --variants v6 --seeds 1-5000 --budget 30m --jobs 2 --out nightly/",
        "the nightly job: every workload, 5000 seeds, stop starting units after 30 minutes",
    ),
    (
        "pagerace campaign --plan nightly.toml",
        "the whole plan in a TOML file (keys: name, out, workloads, variants, seeds, bugs, budget, jobs...)",
    ),
    (
        "pagerace campaign --workloads fault-storm --seeds 1-200 --bugs none --bugs no-fault-folio-exception "
        "--out ab/",
        "an A/B of a bug toggle: each --bugs adds one bug set to the plan",
    ),
    (
        "pagerace campaign --plan nightly.toml --cluster tcp://scheduler:8786",
        "the same units on a Dask cluster (pip install 'pagerace[dask]')",
    ),
    (
        "pagerace campaign --plan nightly.toml   # again, same --out",
        "resume: units already in runs.csv are skipped",
    ),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--plan", metavar="FILE.toml", help="campaign file holding the plan; flags override its keys"
    )
    p.add_argument(
        "--out", metavar="DIR", help="output directory; rerun on it to resume (default: ./campaign-out)"
    )
    p.add_argument(
        "--name", help="campaign id written in every row (default: the plan's name, else the --out dir name)"
    )
    p.add_argument(
        "--workloads", metavar="W1,W2|all", help="workloads (names or .toml paths) (default: default)"
    )
    p.add_argument("--variants", metavar="V1,V2", help="protocol variants (default: v6)")
    p.add_argument("--seeds", metavar="RANGE", help="seeds: 1-5000, or 1,2,10-20 (default: 0)")
    p.add_argument(
        "--bugs",
        action="append",
        metavar="NAME[,NAME]",
        help="a bug set to switch on; repeat to add sets to the plan; 'none' is the set without bugs "
        "(default: none)",
    )
    p.add_argument("--strategies", metavar="S1,S2", help="scheduling strategies (default: random)")
    p.add_argument("--engine", choices=["deterministic", "parallel"], help="engine (default: deterministic)")
    p.add_argument(
        "--budget", metavar="TIME", help="no unit starts after this long: 30m, 1h30m, 90s (default: none)"
    )
    p.add_argument("--jobs", type=int, metavar="N", help=f"worker processes (default: {os.cpu_count()})")
    p.add_argument(
        "--cluster", metavar="tcp://HOST:PORT", help="run on this Dask scheduler instead of local cores"
    )
    p.add_argument("--duration", metavar="TIME", help="per-run duration on the parallel engine (default: 2s)")
    p.add_argument("--max-steps", type=int, metavar="N", help="step budget per run (default: the workload's)")
    p.add_argument(
        "--livelock-steps", type=int, metavar="N", help="livelock budget per run (default: the workload's)"
    )
    p.add_argument(
        "--no-replay", action="store_true", help="do not replay failures to fill failures.csv 'reproduced'"
    )
    p.add_argument("--shrink", action="store_true", help="shrink every failure's artifact (slower)")
    p.add_argument("--quiet", action="store_true",
                   help="nothing on stdout, and on stderr only what needs action (harness errors, a stop "
                   "short of the plan other than the budget)")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="the end summary as text or as one JSON object (default: text)")
    p.add_argument("--junit", metavar="FILE.xml",
                   help="also write a JUnit XML file: one test case per configuration, failed when a run "
                   "of it failed (with its failures, artifacts and replay commands)")
    add_status_every(p)


def _values(args: argparse.Namespace) -> dict[str, Any]:
    from ..campaign import load_plan_file

    v: dict[str, Any] = load_plan_file(args.plan) if args.plan else {}
    flags = {
        "name": args.name,
        "out": args.out,
        "workloads": args.workloads,
        "variants": args.variants,
        "seeds": args.seeds,
        "bugs": args.bugs,
        "strategies": args.strategies,
        "engine": args.engine,
        "budget": args.budget,
        "jobs": args.jobs,
        "cluster": args.cluster,
        "duration": args.duration,
        "max_steps": args.max_steps,
        "livelock_steps": args.livelock_steps,
        "replay": False if args.no_replay else None,
        "shrink": True if args.shrink else None,
    }
    v.update({k: x for k, x in flags.items() if x is not None})
    v.setdefault("out", "campaign-out")
    v.setdefault("jobs", os.cpu_count() or 1)
    v.setdefault("name", Path(str(v["out"])).resolve().name or "campaign")
    return v


class _Bar:
    """tqdm progress: units done, failures, rate and time left."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            unit="run",
            disable=not enabled,
            file=sys.stderr,
            dynamic_ncols=True,
            desc="campaign",
            smoothing=0.1,
        )

    def __call__(self, p: Any) -> None:
        self.bar.update(p.done + p.errors - self.bar.n)
        self.bar.set_postfix(failed=p.failed, refresh=False)

    def close(self) -> None:
        self.bar.close()


def _term_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from .. import campaign as c

    interruptible()
    v = _values(args)
    if v.get("plugins"):
        from ..plugins import load_all

        load_all(v["plugins"])
    if v.get("shrink"):
        try:
            from ..shrink import shrink_record  # noqa: F401
        except ImportError:
            raise InvalidOption("--shrink: this build has no shrinker (harness/shrink.py)") from None
    plan = c.make_plan(v)
    if plan.engine == "parallel":
        c.check_parallel_engine()
    backend = None
    if v.get("cluster"):
        from ..dask_backend import DaskBackend

        backend = DaskBackend(str(v["cluster"]))
    out = check_out_dir(str(v["out"]), "--out", artifacts=True)
    (out / "campaign.json").write_text(c.plan_json(plan) + "\n")
    # the bar's total is known once the directory was read (done units are skipped)
    state: dict[str, Any] = {}
    show = not args.quiet and sys.stderr.isatty()
    # not on a terminal (a CI log): a status line every --status-every instead of the bar
    status = StatusLine(args.status_every, quiet=args.quiet or show)

    def start(total: int, already: int) -> None:
        state["bar"] = _Bar(total, show)
        state["total"] = total

    def progress(p: Any) -> None:
        state["bar"](p)
        status(lambda: _status_text(p, state.get("total", p.total)))

    # a job scheduler's SIGTERM stops the campaign the way Ctrl-C does (finished units kept)
    old_term = signal.signal(signal.SIGTERM, _term_as_interrupt)
    try:
        res = c.run_campaign(plan, out, backend=backend, on_progress=progress, on_start=start)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if "bar" in state:
            state["bar"].close()
        if backend is not None:
            backend.close(cancel=False)
    if not args.quiet or res.errors or res.stopped not in ("", "budget"):
        for line in c.describe_result(res):
            print(line, file=sys.stderr)
    rows = c.summarize(out, campaign=plan.name)
    if args.junit:
        _write_junit(Path(args.junit), plan.name, out, rows)
    if args.format == "json":
        if not args.quiet:
            print(json.dumps(_json_summary(res, rows, out), indent=1))
    elif not args.quiet:
        print(format_end(rows, out, shutil.get_terminal_size((100, 24)).columns))
    if res.stopped in ("interrupted", "killed"):
        return c.EXIT_INTERRUPTED
    if res.errors:
        return 3
    return 1 if any(r.failed for r in rows) else 0


END_ROWS = 20  # failing configurations listed at most; the report has them all


def format_end(rows: Any, out: Path, width: int = 100) -> str:
    """The end of a campaign on a terminal: the verdict first, then the configurations
    that failed or ran out of step budget (worst first, at most :data:`END_ROWS`, cells
    cut with ``…`` to fit ``width`` columns), a count of the clean ones, and the command
    that shows everything. ``rows``: :func:`pagerace.harness.campaign.summarize`."""
    width = max(60, width)
    bad = [r for r in rows if r.failed or r.budget]
    good = [r for r in rows if not (r.failed or r.budget)]
    runs = sum(r.units for r in rows)
    failed = sum(r.failed for r in rows)
    budget = sum(r.budget for r in rows)
    n = len(rows)
    if failed:
        k = sum(1 for r in rows if r.failed)
        verdict = f"FAILURES: {k} of {n} configuration(s) failed, {failed} of {runs} runs"
    elif n:
        verdict = f"CLEAN: all {n} configuration(s) ran clean, {runs} runs"
    else:
        verdict = "CLEAN: no runs"
    if budget:
        verdict += f"; {budget} run(s) out of step budget"
    lines = [verdict]
    if bad:
        bad.sort(key=lambda r: (-r.rate, -r.budget, r.workload, r.variant, r.bugs))
        head = ("workload", "variant", "bugs", "runs", "failed", "rate", "budget", "failures by kind")
        body = [
            [r.workload, r.variant, r.bugs or "-", str(r.units), str(r.failed), f"{100 * r.rate:.1f}%",
             str(r.budget), r.kinds or "-"]
            for r in bad[:END_ROWS]
        ]
        lines += ["", *_fit(head, body, width, right={3, 4, 5, 6})]
        if len(bad) > END_ROWS:
            lines.append(f"... and {len(bad) - END_ROWS} more failing or out-of-budget configuration(s)")
    if good and bad:
        lines += ["", f"{len(good)} other configuration(s) ran clean ({sum(r.units for r in good)} runs)"]
    lines.append(f"full report (failures by signature, replay commands): pagerace report {out} --html")
    return "\n".join(lines)


def _fit(head: tuple[str, ...], body: list[list[str]], width: int, right: set[int]) -> list[str]:
    """A text table no wider than ``width``: the widest text column loses a character
    (its cells end in ``…``) until it fits; numbers are never cut."""
    widths = [max(len(x[i]) for x in [list(head), *body]) for i in range(len(head))]
    cuttable = [i for i in range(len(head)) if i not in right]
    while sum(widths) + 2 * (len(widths) - 1) > width:
        i = max(cuttable, key=lambda j: (widths[j], j))
        if widths[i] <= 6:
            break
        widths[i] -= 1

    def cell(v: str, i: int) -> str:
        v = v if len(v) <= widths[i] else v[: widths[i] - 1] + "…"
        return v.rjust(widths[i]) if i in right else v.ljust(widths[i])

    return ["  ".join(cell(v, i) for i, v in enumerate(r)).rstrip() for r in [list(head), *body]]


def _status_text(p: Any, total: int) -> str:
    left = ""
    if p.done and p.elapsed > 0 and total > p.done:
        left = f", ~{(total - p.done) * p.elapsed / p.done / 60:.1f} min left"
    rate = p.done / p.elapsed if p.elapsed > 0 else 0.0
    return (f"campaign: {p.done}/{total} units, {p.failed} failed, {p.errors} harness errors, "
            f"{rate:.1f}/s{left}")


def _failures(out: Path) -> list[dict[str, str]]:
    import csv

    p = out / "failures.csv"
    if not p.exists():
        return []
    with p.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _by_config(out: Path) -> dict[tuple[str, str, str], list[dict[str, str]]]:
    by: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for f in _failures(out):
        by.setdefault((f.get("workload", ""), f.get("variant", ""), f.get("bugs", "")), []).append(f)
    return by


def _replay_cmd(out: Path, f: dict[str, str]) -> str:
    from ..plugins import flags_for

    art = f.get("artifact", "")
    return f"pagerace {flags_for(f.get('variant', ''))}replay {out / art}" if art else ""


def _json_summary(res: Any, rows: Any, out: Path) -> dict[str, Any]:
    """``--format json``: how the campaign went and, per configuration, its counts and
    failures (seed, kind, message, artifact, replay command)."""
    fails = _by_config(out)
    return {
        "campaign": res.plan.name, "out": str(out), "planned": res.planned, "ran": res.ran,
        "already": res.already, "failed": res.failed, "harness_errors": len(res.errors),
        "stopped": res.stopped, "not_run": res.not_run, "elapsed_s": round(res.elapsed, 3),
        "rate_per_s": round(res.rate, 3),
        "configurations": [
            {
                "workload": r.workload, "variant": r.variant, "bugs": r.bugs, "units": r.units,
                "clean": r.clean, "budget": r.budget, "failed": r.failed, "rate": r.rate,
                "failures": [
                    {"seed": int(f.get("seed", -1) or -1), "run_id": f.get("run_id", ""),
                     "kind": f.get("kind", ""), "message": f.get("message", ""),
                     "artifact": f.get("artifact", ""), "replay": _replay_cmd(out, f)}
                    for f in fails.get((r.workload, r.variant, r.bugs), [])
                ],
            }
            for r in rows
        ],
    }


def _write_junit(path: Path, name: str, out: Path, rows: Any) -> None:
    """One ``<testcase>`` per configuration (classname: the workload, name: variant and
    bugs), with a ``<failure>`` listing its failures when a run of it failed."""
    import xml.etree.ElementTree as ET


    fails = _by_config(out)
    suite = ET.Element("testsuite", name=f"pagerace campaign {name}", tests=str(len(rows)),
                       failures=str(sum(1 for r in rows if r.failed)), errors="0", skipped="0")
    for r in rows:
        tc = ET.SubElement(suite, "testcase", classname=r.workload,
                           name=r.variant + (f" +{r.bugs}" if r.bugs else ""))
        ET.SubElement(tc, "system-out").text = (
            f"{r.units} units: {r.clean} clean, {r.budget} out of budget, {r.failed} failed"
        )
        if r.failed:
            fs = fails.get((r.workload, r.variant, r.bugs), [])
            kinds = r.kinds or "?"
            el = ET.SubElement(tc, "failure", type=kinds.split(" ")[0],
                               message=f"{r.failed} of {r.units} runs failed: {kinds}")
            el.text = "\n".join(
                f"seed {f.get('seed')} {f.get('kind')}: {f.get('message')}\n  {_replay_cmd(out, f)}"
                for f in fs
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    ET.ElementTree(suite).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)

"""``python -m bench [--quick] [--json FILE] [--only NAME] [--profile]``: run pagerace's
benchmarks, print the table and the targets of issue 7, and write the JSON.

Every figure is a median or a ratio measured in this one run (the machines are noisy);
``--quick`` is the CI smoke run (fewer seeds, hunts and shorter durations, under a
minute), not a measurement to quote. Exit code 0, or 3 if a benchmark raised (its error
is in the table and the JSON).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from ._machine import Figure, load_average, machine, now_iso

# (name, module, aliases), in the order they run.
BENCHMARKS: list[tuple[str, str, tuple[str, ...]]] = [
    ("memory", "bench.memory", ("mem",)),
    ("engine_speed", "bench.engine_speed", ("engine",)),
    ("parallel_scaling", "bench.parallel_scaling", ("parallel", "atomics")),
    ("campaign_throughput", "bench.campaign_throughput", ("campaign",)),
    ("time_to_find", "bench.time_to_find", ("ttf", "hunt")),
    ("naive_baseline", "bench.naive_baseline", ("naive", "baseline")),
    ("cli_rate", "bench.cli_rate", ("cli", "overhead")),
]
SCHEMA_VERSION = 1


def _pick(only: Sequence[str]) -> list[str]:
    if not only:
        return [b[0] for b in BENCHMARKS]
    names = []
    for item in only:
        for part in item.split(","):
            part = part.strip().replace("-", "_")
            hit = next((b[0] for b in BENCHMARKS if part == b[0] or part in b[2]), None)
            if hit is None:
                valid = ", ".join(b[0] for b in BENCHMARKS)
                raise SystemExit(f"bench: unknown benchmark {part!r}; valid: {valid}")
            if hit not in names:
                names.append(hit)
    return names


def fmt_value(f: Figure) -> str:
    v = f.value
    if v is None:
        return "n/a"
    pre = "≥" if f.lower_bound else ""
    if f.unit in ("ratio",):
        s = f"{v:.3g}" if v < 100 else f"{v:,.0f}"
    elif f.unit in ("s",):
        s = f"{v:.3f}" if v >= 0.001 else f"{v:.2e}"
    elif f.unit.endswith("/s") or f.unit in ("points", "runs", "bytes", "steps/run"):
        s = f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
    elif f.unit == "1/run":
        s = f"{v:.2e}"
    else:
        s = f"{v:.4g}"
    return pre + s


def verdict(f: Figure) -> str:
    m = f.met
    if f.target is None:
        return ""
    if m is None:
        return "n/a"
    return "met" if m else "MISSED"


def table(figs: Sequence[Figure]) -> str:
    """The generic table: one line per figure."""
    lines = []
    for f in figs:
        v = verdict(f)
        line = f"  {f.label:<58} {fmt_value(f):>14} {f.unit:<10} {v}"
        if f.value is None:
            line += f"  ({f.note})"
        lines.append(line.rstrip())
    return "\n".join(lines)


def targets_table(figs: Sequence[Figure]) -> str:
    lines = []
    for f in figs:
        if f.target is None:
            continue
        lines.append(f"  {verdict(f):<7} {f.target.text:<72} measured {fmt_value(f)} {f.unit}"
                     + (f"  ({f.note})" if f.note and (f.value is None or f.met is False) else ""))
    return "\n".join(lines)


def markdown(doc: dict[str, Any]) -> str:
    """The JSON document as markdown tables (for docs/PERFORMANCE.md)."""
    from .time_to_find import table as ttf_table

    m = doc["machine"]
    lines = [
        f"Run of {doc['date']}{' (quick)' if doc['quick'] else ''}: {m['cpu_model']}, "
        f"{m['cores']} cores, Python {m['python']}, numpy {m['numpy']}, pagerace {m['pagerace']}; "
        f"1-minute load average {m['loadavg_1m_at_start']} at the start and "
        f"{m.get('loadavg_1m_at_end')} at the end; {doc['duration_s']} s in all.",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
    ]
    figs = [_figure(d) for d in doc["figures"]]
    for f in figs:
        if f.target is not None:
            lines.append(f"| {f.target.text} | {fmt_value(f)} {f.unit} | {verdict(f) or '-'} |")
    for bench, info in doc["benchmarks"].items():
        lines += ["", f"### {bench} ({info['seconds']} s)", ""]
        mine = [f for f in figs if _bench_of(f.name) == bench]
        if bench == "time_to_find":
            lines += ["```", ttf_table(mine), "```", ""]
            mine = [f for f in mine if len(f.name.split(".")) != 4]
        if not mine:
            continue
        lines += ["| figure | value | unit | how | note |", "|---|---|---|---|---|"]
        for f in mine:
            note = (f.note + (f"; target: {verdict(f)}" if f.target else "")).strip("; ")
            lines.append(f"| {f.label} | {fmt_value(f)} | {f.unit} | {f.how} | {note} |")
    return "\n".join(lines) + "\n"


_PREFIX = {"memory": "memory", "engine": "engine_speed", "parallel": "parallel_scaling",
           "atomics": "parallel_scaling", "campaign": "campaign_throughput",
           "ttf": "time_to_find", "naive": "naive_baseline", "cli_rate": "cli_rate"}


def _bench_of(name: str) -> str:
    return _PREFIX.get(name.split(".", 1)[0], "")


def _figure(d: dict[str, Any]) -> Figure:
    from ._machine import Target

    t = d.get("target")
    return Figure(
        d["name"], d["label"], d["value"], d["unit"], how=d.get("how", ""), note=d.get("note", ""),
        target=Target(t["op"], t["threshold"], t["text"]) if t else None,
        extra=d.get("extra", {}), lower_bound=d.get("lower_bound", False),
    )


def run(
    quick: bool = False,
    only: Sequence[str] = (),
    out: Callable[[str], None] = print,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the chosen benchmarks; print as they finish; return the JSON document."""
    names = _pick(only)
    t_all = time.perf_counter()
    doc: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "date": now_iso(),
        "quick": quick,
        "machine": machine(),
        "benchmarks": {},
        "figures": [],
    }
    out(f"pagerace bench {'(quick: smoke run, not for quoting) ' if quick else ''}{doc['date']}")
    m = doc["machine"]
    out(f"machine: {m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable), Python "
        f"{m['python']}, numpy {m['numpy']}, load {m['loadavg_1m_at_start']}")
    figs: list[Figure] = []
    ttf_figs: list[Figure] = []
    progress = log or (lambda _msg: None)
    for name in names:
        mod = importlib.import_module(dict((b[0], b[1]) for b in BENCHMARKS)[name])
        t0 = time.perf_counter()
        err = None
        got: list[Figure] = []
        try:
            if name == "naive_baseline" and ttf_figs:
                from .time_to_find import best_medians, default_medians_lb

                got = mod.run(quick=quick, log=progress, pagerace=default_medians_lb(ttf_figs),
                              best=best_medians(ttf_figs))
            else:
                got = mod.run(quick=quick, log=progress)
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        dt = time.perf_counter() - t0
        broken = [f"{f.name}: {f.note}" for f in got if f.note.startswith("error:")]
        if broken and err is None:
            err = f"{len(broken)} figures failed; first: {broken[0]}"
        if name == "time_to_find":
            ttf_figs = got
        doc["benchmarks"][name] = {"seconds": round(dt, 2), "error": err}
        figs.extend(got)
        out(f"\n== {name} ({dt:.1f} s){'  ERROR: ' + err if err else ''}")
        if name == "time_to_find" and got:
            out(mod.table(got))
            out(table([f for f in got if len(f.name.split(".")) != 4]))
        elif got:
            out(table(got))
    doc["figures"] = [f.to_json() for f in figs]
    doc["targets"] = [
        {"text": f.target.text, "figure": f.name, "value": f.value, "unit": f.unit, "met": f.met,
         "lower_bound": f.lower_bound, "note": f.note}
        for f in figs if f.target is not None
    ]
    doc["duration_s"] = round(time.perf_counter() - t_all, 1)
    doc["machine"]["loadavg_1m_at_end"] = load_average()
    out("\n== targets (issue 7)")
    out(targets_table(figs))
    out(f"\ntotal {doc['duration_s']} s")
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="pagerace's benchmarks (issue 7): engine speed, parallel scaling, time to "
        "find each catalog bug, a naive threaded baseline, campaign throughput, memory.",
        epilog="examples:\n  python -m bench --quick --json /tmp/bench.json   CI smoke run (<1 min)\n"
        "  python -m bench --json bench.json                 the full run (~12 min)\n"
        "  python -m bench --only engine,memory              two benchmarks\n"
        "  python -m bench --profile 10                      where the engine's time goes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="smoke run: fewer seeds and hunts (<1 min)")
    p.add_argument("--json", metavar="FILE", help="write every figure, its unit, the machine and the date")
    p.add_argument("--only", metavar="NAME", action="append", default=[],
                   help="run only these (comma-separated or repeated): "
                   + ", ".join(b[0] for b in BENCHMARKS))
    p.add_argument("--profile", metavar="SECONDS", type=float, nargs="?", const=5.0, default=None,
                   help="print a cProfile summary of the deterministic engine on default and exit")
    p.add_argument("--markdown", metavar="FILE",
                   help="also write the tables as markdown (or, with --from, only that)")
    p.add_argument("--from", dest="from_json", metavar="JSON",
                   help="with --markdown: render a JSON file of an earlier run, run nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="print progress to stderr")
    args = p.parse_args(argv)
    if args.from_json:
        if not args.markdown:
            p.error("--from needs --markdown FILE")
        with open(args.from_json, encoding="utf-8") as f:
            old = json.load(f)
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(markdown(old))
        print(f"wrote {args.markdown}")
        return 0
    if args.profile is not None:
        from .engine_speed import profile

        print(profile(args.profile))
        return 0

    def log(msg: str) -> None:
        print(f"  .. {msg}", file=sys.stderr, flush=True)

    doc = run(quick=args.quick, only=args.only, log=log if args.verbose else None)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(markdown(doc))
        print(f"wrote {args.markdown}")
    return 3 if any(b["error"] for b in doc["benchmarks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())

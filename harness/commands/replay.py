"""``pagerace replay``: run a failure artifact again and say whether it reproduced."""

from __future__ import annotations

import argparse

from ...core.machine.errors import DidNotReproduce
from ..artifacts import load_artifact, replay
from ..output import append_all, failure_columns, key_columns, rows_for, run_id
from ._options import check_out_dir

NAME = "replay"
HELP = "rerun a failure artifact with its recorded schedule; exit 1 if it fails the same way"
EXAMPLES = [
    (
        "pagerace replay pagerace-out/artifacts/fault-storm-v6-s1-random-deterministic-1a2b3c4d.json",
        "exit 1 with 'reproduced: ...', or exit 4 with 'did not reproduce: <why>'",
    ),
    ("pagerace replay FILE --steps", "also print the steps before the failure"),
    ("pagerace replay FILE --out pagerace-out", "append the replay's rows (reproduced: yes/no)"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a failure artifact (JSON) written by 'pagerace run'")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="append the replay's rows to the CSV files in DIR (default: write nothing)",
    )
    p.add_argument(
        "--steps",
        action="store_true",
        help="print the readable step list (step, actor, function:line, call site)",
    )
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="the verdict as text or as one JSON object (default: text)")


def format_steps(steps: list[list[object]]) -> str:
    lines = []
    for entry in steps:
        step, actor, where, site = (list(entry) + ["", "", "", ""])[:4]
        lines.append(f"  {step!s:>7}  {actor!s:<10} {where!s:<40} {site}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    art = load_artifact(args.file)
    if args.out is not None:
        check_out_dir(args.out, "--out")
    rec, reproduced, reason = replay(art, trace=args.steps)
    if args.steps:
        names = [a.name for a in rec.actors]
        steps = [[s, names[a], w, site] for s, a, w, site in rec.result.trace[-200:]]
        print(f"last {len(steps)} steps of the replay:")
        print(format_steps(steps))
    if args.out is not None:
        rid = run_id(rec)
        rows = rows_for(rec, rid, "")
        if not rows["failures.csv"]:
            # The replay saw nothing: record the artifact's failure as not reproduced.
            f = art.failure
            rows["failures.csv"].append(
                {
                    **key_columns(rec, rid),
                    "engine": art.engine,
                    **failure_columns(f),
                    "shrunk_steps": -1,
                }
            )
        for row in rows["failures.csv"]:
            row["reproduced"] = "yes" if reproduced else "no"
            row["artifact"] = art.path
        append_all(args.out, rows)
    if args.format == "json":
        import json

        print(json.dumps({
            "artifact": art.path, "workload": art.workload.name, "variant": art.variant,
            "bugs": list(art.bugs), "seed": art.seed, "reproduced": reproduced, "reason": reason,
            "recorded": {"kind": art.failure.kind.value, "message": art.failure.headline()},
            "exit_code": 1 if reproduced else 4,
        }, indent=1))
    if not reproduced:
        raise DidNotReproduce(f"did not reproduce: {reason}")
    if args.format != "json":
        print(f"reproduced: {reason}")
    return 1

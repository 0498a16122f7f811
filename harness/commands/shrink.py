"""``pagerace shrink``: make a failure artifact smaller; write and print the result."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..artifacts import load_artifact, replay, write_artifact
from ..shrink import shrink_record
from ..steps import readable_steps
from ._options import check_out_file, seconds

NAME = "shrink"
HELP = "shrink a failure artifact (fewer steps, preemptions, actors, operations)"
EXAMPLES = [
    ("pagerace shrink FILE", "write FILE.shrunk.json next to it and print the step list"),
    ("pagerace shrink FILE -o small.json --time 30", "choose the output and the time budget"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a failure artifact (JSON)")
    p.add_argument("-o", "--output", default=None, metavar="OUT",
                   help="where to write the shrunk artifact (default: FILE with .shrunk.json)")
    p.add_argument("--time", type=seconds, default=10.0, metavar="S",
                   help="time budget in seconds (default 10)")
    p.add_argument("--full-steps", action="store_true", help="print every lock event")


def run(args: argparse.Namespace) -> int:
    from ...core.machine.errors import DidNotReproduce

    art = load_artifact(args.file)
    out = args.output or str(Path(args.file).with_suffix("")) + ".shrunk.json"
    check_out_file(out, "-o/--output")  # before the shrinker spends its budget
    rec, reproduced, reason = replay(art)
    if not reproduced:
        raise DidNotReproduce(f"{args.file} did not reproduce, nothing to shrink: {reason}")
    res = shrink_record(rec, args.time)
    path = write_artifact(out, res.record, art.raw.get("run_id", ""))
    print(res.summary())
    for line in readable_steps(res.record, full=args.full_steps):
        print(line)
    print(f"shrunk artifact: {path}")
    return 1

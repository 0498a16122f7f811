"""``pagerace compare A B``: two variants on the same workloads and seeds, paired."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ._options import at_least

NAME = "compare"
HELP = "A/B: two variants (or plugin variants) on the same workloads and seeds, paired, with an exact test"
EXAMPLES = [
    (
        "pagerace --plugin my_patch.py compare v6 v6-my-patch --workloads migrate-vs-pin --seeds 0-199",
        "your patch (B) against today's v6 (A) on 200 paired seeds: exit 1 if the patch is worse",
    ),
    (
        "pagerace compare v5.0 v6 --workloads all --seeds 0-49 --format json",
        "every workload both variants run, as JSON",
    ),
    (
        "pagerace compare v6 v6 --bug-b check-ignores-pins --workloads migrate-vs-pin",
        "a catalog bug toggle on one side only",
    ),
]
EXIT_CODES = (
    (0, "B is not worse than A (the same, or better)"),
    (1, "B is worse than A on some workload: a failure kind A does not have there, or a failure "
        "rate higher with exact McNemar p < --alpha"),
    (2, "bad input: unknown variant, workload, bug, strategy, bad seeds or option"),
    (3, "internal error (a bug in pagerace: please report it)"),
    (130, "interrupted"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="A", help="the baseline variant (e.g. v6)")
    p.add_argument("b", metavar="B", help="the variant under test (e.g. a plugin's variant)")
    p.add_argument("--workloads", default="all", metavar="W1,W2|all",
                   help="workloads (names or .toml paths); 'all': every built-in workload both "
                   "variants can run (default: all)")
    p.add_argument("--seeds", default="0-99", metavar="RANGE",
                   help="seeds, the same for both sides: 0-99, or 1,2,10-20 (default: 0-99)")
    p.add_argument("--strategy", choices=("mix", "random", "pct", "rr"), default="mix",
                   help="scheduling strategy; mix gives each seed the strategy hunt's mix gives "
                   "that run (round robin, then sticky walk / round robin / random walk) "
                   "(default: mix)")
    p.add_argument("--pct-depth", type=at_least("--pct-depth", 1), default=3, metavar="D",
                   help="PCT depth for --strategy pct (default 3)")
    p.add_argument("--bug-a", action="append", default=[], metavar="NAME",
                   help="a catalog bug toggle on side A only (repeatable)")
    p.add_argument("--bug-b", action="append", default=[], metavar="NAME",
                   help="a catalog bug toggle on side B only (repeatable)")
    p.add_argument("--max-steps", type=at_least("--max-steps", 1), default=None, metavar="N",
                   help="step budget per run (default: the workload's)")
    p.add_argument("--alpha", type=_alpha, default=0.05,
                   help="significance level of the exact test (default 0.05)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")


def _alpha(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"--alpha must be between 0 and 1, not {text}")
    return v


def _workloads(text: str) -> list[Any]:
    from ...workloads import load_workload, workload_names

    names = workload_names() if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    return [load_workload(n) for n in names]


def run(args: argparse.Namespace) -> int:
    from ..campaign import parse_seeds
    from ..compare import compare, format_text

    seeds = list(parse_seeds(args.seeds))
    workloads = _workloads(args.workloads)
    t0 = time.perf_counter()
    last = [t0]
    tty = sys.stderr.isatty()

    def on_pair(workload: str, seed: int) -> None:
        # a status line now and then when stderr is a log (CI), not a terminal
        now = time.perf_counter()
        if not tty and not args.quiet and now - last[0] >= 10:
            last[0] = now
            print(f"compare: {workload} seed {seed} ({now - t0:.0f} s)", file=sys.stderr, flush=True)

    c = compare(
        workloads, args.a, args.b, seeds, bugs_a=args.bug_a, bugs_b=args.bug_b,
        strategy=args.strategy, pct_depth=args.pct_depth, alpha=args.alpha,
        max_steps=args.max_steps, on_pair=on_pair,
    )
    if not c.workloads:
        from ...core.machine.errors import InvalidOption

        raise InvalidOption(
            f"no workload of {args.workloads!r} runs on both {args.a!r} and {args.b!r}: "
            + "; ".join(f"{w}: {why}" for w, why in c.skipped)
        )
    if args.format == "json":
        doc = c.to_json()
        doc["bugs_a"], doc["bugs_b"] = list(args.bug_a), list(args.bug_b)
        doc["exit_code"] = 1 if c.verdict == "worse" else 0
        print(json.dumps(doc, indent=1))
    else:
        for line in format_text(c, args.bug_a, args.bug_b):
            print(line)
    return 1 if c.verdict == "worse" else 0

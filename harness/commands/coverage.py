"""``pagerace coverage``: which of the model's race-outcome branches the workload
library reaches (coverage.py over a standard campaign; see ``harness/coverage.py``)."""

from __future__ import annotations

import argparse
import json
import sys

from ...core.machine.errors import InvalidOption

NAME = "coverage"
HELP = "branch coverage of core/ by the workload library, race-outcome branches first"
EXAMPLES = [
    ("pagerace coverage", "the standard campaign: every workload on v6, random and PCT, seeds 0-9"),
    ("pagerace coverage --variants v6,v5.0,hmm-2017 --seeds 20", "wider, all generations"),
    ("pagerace coverage --format json > cov.json", "for scripts and the morning report"),
    ("pagerace coverage --uncovered", "only the race-outcome branches not fully reached"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--variants",
        default="v6",
        metavar="LIST",
        help="comma-separated protocol variants (default: v6)",
    )
    p.add_argument(
        "--seeds", type=int, default=10, metavar="N", help="seeds 0..N-1 per configuration (default: 10)"
    )
    p.add_argument(
        "--strategies",
        default="random,pct",
        metavar="LIST",
        help="comma-separated scheduling strategies (default: random,pct)",
    )
    p.add_argument("--format", choices=["text", "json"], default="text", help="output format (default: text)")
    p.add_argument(
        "--uncovered", action="store_true", help="list only race-outcome branches not fully reached"
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")


def _check(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    from ...core.variants import VARIANTS
    from ..schedulers import STRATEGIES

    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            raise InvalidOption(f"--variants: unknown variant {v!r} (choices: {', '.join(sorted(VARIANTS))})")
    strategies = [s for s in args.strategies.split(",") if s]
    for s in strategies:
        if s not in STRATEGIES:
            raise InvalidOption(
                f"--strategies: unknown strategy {s!r} (choices: {', '.join(sorted(STRATEGIES))})"
            )
    if not variants or not strategies:
        raise InvalidOption("--variants and --strategies need at least one name each")
    if not 1 <= args.seeds <= 10_000:
        raise InvalidOption(f"--seeds: {args.seeds} is out of range (1 to 10000)")
    return variants, strategies


def run(args: argparse.Namespace) -> int:
    from ..coverage import measure

    variants, strategies = _check(args)
    tty = sys.stderr.isatty() and not args.quiet

    def progress(i: int, n: int) -> None:
        if tty and (i == n or i % 20 == 0):
            print(f"\r{i}/{n} runs", end="" if i < n else "\n", file=sys.stderr, flush=True)

    r = measure(variants=variants, seeds=range(args.seeds), strategies=strategies, progress=progress)
    if args.format == "json":
        print(
            json.dumps(
                {
                    "runs": r.runs,
                    "failures": r.failures,
                    "seconds": round(r.seconds, 1),
                    "branches": {"taken": r.branches_taken, "total": r.branches_total},
                    "race_branches": {"covered": r.race_covered, "total": len(r.race)},
                    "race": [
                        {
                            "where": f"{b.path}:{b.line}",
                            "function": b.function,
                            "test": b.test,
                            "true_taken": b.taken_true,
                            "false_taken": b.taken_false,
                        }
                        for b in r.race
                    ],
                    "files": {f: {"taken": t, "total": n} for f, (t, n) in sorted(r.per_file.items())},
                },
                indent=1,
            )
        )
        return 0
    pct = 100.0 * r.branches_taken / r.branches_total if r.branches_total else 0.0
    print(
        f"race-outcome branches reached both ways: {r.race_covered} of {len(r.race)}; "
        f"all branches of core/: {r.branches_taken} of {r.branches_total} ({pct:.1f}%)"
    )
    print(
        f"campaign: {r.runs} runs ({', '.join(variants)}; {', '.join(strategies)}; "
        f"seeds 0-{args.seeds - 1}), "
        f"{r.failures} failures, {r.seconds:.0f} s under coverage"
    )
    print()
    shown = [b for b in r.race if not args.uncovered or not b.covered]
    width = max((len(f"{b.path}:{b.line}") for b in shown), default=10)
    for b in shown:
        mark = "ok " if b.covered else "-- "
        what = "" if b.covered else f"  [{b.missing}]"
        print(f"{mark}{f'{b.path}:{b.line}':<{width}}  {b.function}: {b.test}{what}")
    return 0

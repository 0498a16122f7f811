"""``pagerace bench``: the benchmarks of ``bench/`` (the same entry as ``python -m bench``).

The benchmarks live in the source tree next to ``core/`` and ``harness/``, not in the
installed package: this command finds them from an editable install or a checkout.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from ...core.machine.errors import InvalidOption

NAME = "bench"
HELP = "run the benchmarks: engine speed, parallel scaling, time to find each catalog bug, memory"
EXAMPLES = [
    ("pagerace bench --quick --json /tmp/bench.json", "the CI smoke run (under a minute)"),
    ("pagerace bench --json bench.json", "the full run (about 12 minutes) with every figure in JSON"),
    ("pagerace bench --only engine,memory", "only the engine-speed and memory figures"),
    ("pagerace bench --profile 10", "a cProfile summary of the deterministic engine on default"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="smoke run: fewer seeds and hunts (<1 min)")
    p.add_argument("--json", metavar="FILE", help="write every figure, its unit, the machine and the date")
    p.add_argument(
        "--only",
        metavar="NAME",
        action="append",
        default=[],
        help="run only these (comma-separated or repeated): memory, engine_speed, parallel_scaling, "
        "campaign_throughput, time_to_find, naive_baseline",
    )
    p.add_argument(
        "--profile",
        metavar="SECONDS",
        type=float,
        nargs="?",
        const=5.0,
        default=None,
        help="print a cProfile summary of the deterministic engine on default and exit",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print progress to stderr")


def _bench_main() -> Any:
    """``bench.__main__.main`` from the source tree this package was installed from."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "bench" / "__main__.py").is_file():
        raise InvalidOption(
            f"no bench/ folder next to the installed package ({root}); the benchmarks ship with "
            "the source tree: run 'python -m bench' in a pagerace checkout"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    mod = importlib.import_module("bench.__main__")
    return mod.main


def run(args: argparse.Namespace) -> int:
    argv: list[str] = []
    if args.quick:
        argv.append("--quick")
    if args.json:
        argv += ["--json", args.json]
    for o in args.only:
        argv += ["--only", o]
    if args.profile is not None:
        argv += ["--profile", str(args.profile)]
    if args.verbose:
        argv.append("-v")
    main = _bench_main()
    try:
        return int(main(argv))
    except SystemExit as exc:  # an unknown --only name: one line, exit 2
        if isinstance(exc.code, str):
            raise InvalidOption(exc.code.removeprefix("bench: ")) from None
        raise

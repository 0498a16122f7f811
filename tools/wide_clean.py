"""The wide clean check of issue 14: every workload on one variant for N random-walk and
M PCT seeds; prints each failure (workload, strategy, seed, headline) and a summary line.

    python tools/wide_clean.py [--variant v6] [--random 200] [--pct 100] [WORKLOAD...]

Exit status 0 when every run is clean (or ends on its step budget), 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time

from pagerace.core.machine.errors import InvalidOption
from pagerace.harness.engine import Outcome
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload, workload_names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="v6")
    p.add_argument("--random", type=int, default=200)
    p.add_argument("--pct", type=int, default=100)
    p.add_argument("workloads", nargs="*")
    args = p.parse_args(argv)
    names = args.workloads or list(workload_names())
    t0 = time.perf_counter()
    runs = failed = skipped = budget = 0
    for name in names:
        w = load_workload(name)
        n_fail = 0
        for strategy, seeds in (("random", args.random), ("pct", args.pct)):
            for seed in range(seeds):
                try:
                    r = run_deterministic(w, variant=args.variant, seed=seed, strategy=strategy)
                except InvalidOption:
                    skipped += 1
                    break
                runs += 1
                if r.outcome is Outcome.BUDGET:
                    budget += 1
                elif r.outcome is Outcome.FAILED:
                    failed += 1
                    n_fail += 1
                    f = r.result.failure
                    print(f"FAIL {name} {strategy} seed {seed}: {f.headline() if f else '?'}")
        print(f"{name}: {n_fail} failures", flush=True)
    print(
        f"{runs} runs of {len(names)} workloads on {args.variant}: {failed} failed, "
        f"{budget} hit the step budget, {skipped} workloads skipped (variant lacks a path); "
        f"{time.perf_counter() - t0:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Every library workload on one variant, N random-walk and M PCT seeds each, no toggle:
the core helpers' wider cleanliness check (issue 14: "every workload is clean on v6 for
200 random and 100 PCT seeds"). Deterministic engine, no rows written.

    python tools/clean_sweep.py [--variant v6] [--random 200] [--pct 100]

Prints one line per workload (runs, failures, the first failing seed) and exits 1 when
any run failed.
"""

from __future__ import annotations

import argparse
import sys
import time

from pagerace.harness.hunt import Budget, hunt
from pagerace.workloads import load_workload, workload_names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="v6")
    ap.add_argument("--random", type=int, default=200)
    ap.add_argument("--pct", type=int, default=100)
    ap.add_argument("--only", default="", help="comma-separated workloads (default: all)")
    args = ap.parse_args(argv)
    names = [n for n in workload_names() if not args.only or n in args.only.split(",")]
    bad = 0
    t0 = time.perf_counter()
    for name in names:
        w = load_workload(name)
        line = [f"{name:34s}"]
        for strategy, n in (("random", args.random), ("pct", args.pct)):
            if n <= 0:
                continue
            res = hunt(w, variant=args.variant, budget=Budget(runs=n), strategy=strategy, shrink=False)
            if res.found is not None:
                bad += 1
                f = res.found.result.failure
                line.append(f"{strategy}: FAILED seed {res.found.seed} ({f.kind.value if f else '?'})")
            else:
                line.append(f"{strategy}: {res.runs} clean")
        print("  ".join(line), flush=True)
    took = time.perf_counter() - t0
    print(f"{len(names)} workloads, {args.variant}, {took:.0f} s, {bad} failing", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Fingerprint every (workload, variant, catalog bug, strategy, seed): a behaviour lock.

A refactor of the model or the engines must keep every fingerprint (hash of the schedule,
the final state and the failure kind). Write a reference before the change, compare after:

    python tools/fingerprints.py /tmp/before.json
    ... change the code ...
    python tools/fingerprints.py /tmp/after.json && cmp /tmp/before.json /tmp/after.json

Every registered generation (``VARIANTS``: hmm-2017, v5.0, v6, v7), every workload it can
run: about 1,600 runs, under a minute. An intended change of behaviour changes
fingerprints: say so in the commit and make a new reference.
"""

from __future__ import annotations

import json
import sys

from pagerace.core.bugs import CATALOG
from pagerace.core.machine.errors import InvalidOption
from pagerace.core.variants import VARIANTS
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload, workload_names


def fingerprints() -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    for name in workload_names():
        w = load_workload(name)
        for variant in sorted(VARIANTS):
            bugsets: list[tuple[str, ...]] = [()] + [
                (b,)
                for b, e in CATALOG.items()
                if variant in e.variants and not e.intrinsic and e.workload == name
            ]
            for bugs in bugsets:
                for strategy in ["random", "pct", "rr"]:
                    for seed in range(3):
                        key = f"{name}|{variant}|{'+'.join(bugs)}|{strategy}|{seed}"
                        try:
                            r = run_deterministic(
                                w, variant=variant, bugs=bugs, seed=seed, strategy=strategy
                            )
                        except InvalidOption:  # the variant cannot run this workload
                            break
                        res = r.result
                        out[key] = [res.fingerprint, str(res.outcome), res.steps]
    return out


if __name__ == "__main__":
    fp = fingerprints()
    with open(sys.argv[1], "w") as f:
        json.dump(fp, f, indent=0, sort_keys=True)
    print(len(fp), "runs fingerprinted")

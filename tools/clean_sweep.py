"""The wide no-false-positive check: every workload on ``v6`` (or ``--variant``), N random + M PCT seeds.

    python tools/clean_sweep.py                  # 200 random + 100 PCT seeds per workload
    python tools/clean_sweep.py 50 20 anon_read  # fewer seeds, some workloads
    python tools/clean_sweep.py --variant v5.0   # another generation

Prints one line per workload: runs, clean runs, the failures by kind, and whether each
failure kind is one the workload's documented findings explain on that generation
(``[[finding]]`` in its TOML, with ``variants``, or the old ``finding`` table for all)
or the generation's own bug (an ``intrinsic`` catalog entry of ``core/bugs.py`` for
that generation on that workload, e.g. hmm-2017's blocking-prepare deadlock on
opposite-order).
Exit 1 when a run failed in a way no finding explains. Run it once at the end of
a change to ``core/``; the quality tier runs a smaller version (50 + 20) by default.
"""

from __future__ import annotations

import collections
import sys
import time

from pagerace.core.bugs import CATALOG
from pagerace.core.variants import VARIANTS
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload, workload_names


def main(argv: list[str]) -> int:
    variant = "v6"
    if argv[:1] == ["--variant"] and len(argv) > 1:
        variant, argv = argv[1], argv[2:]
    if variant not in VARIANTS:
        print(f"--variant {variant!r}: valid: {', '.join(sorted(VARIANTS))}", file=sys.stderr)
        return 2
    n_random = int(argv[0]) if argv else 200
    n_pct = int(argv[1]) if len(argv) > 1 else 100
    names = argv[2:] or workload_names()
    bad = 0
    t0 = time.perf_counter()
    for name in names:
        w = load_workload(name)
        if set(w.needs) - VARIANTS[variant].provides:
            continue
        kinds: collections.Counter[str] = collections.Counter()
        first: dict[str, str] = {}
        runs = 0
        for strategy, n in (("random", n_random), ("pct", n_pct)):
            for seed in range(n):
                f = run_deterministic(w, variant=variant, seed=seed, strategy=strategy).result.failure
                runs += 1
                if f is None:
                    continue
                kinds[str(f.kind)] += 1
                first.setdefault(str(f.kind), f"{strategy} seed {seed}")
        explained = set(w.finding_kinds_for(variant))
        docs_l = [f.doc for f in w.findings_for(variant) if set(f.kinds) & set(kinds)]
        for e in CATALOG.values():  # the generation's own bug, declared in core/bugs.py
            if e.intrinsic and variant in e.variants and e.workload == name:
                explained |= set(e.oracle)
                if set(e.oracle) & set(kinds):
                    docs_l.append(f"catalog {e.name}, intrinsic")
        unexplained = {k: v for k, v in kinds.items() if k not in explained}
        bad += sum(unexplained.values())
        docs = ", ".join(docs_l)
        note = f" (finding {docs})" if kinds and not unexplained else ""
        detail = ", ".join(f"{k}: {v} (first {first[k]})" for k, v in sorted(kinds.items()))
        print(f"{name}: {runs} runs, {runs - sum(kinds.values())} clean"
              + (f"; {detail}" if detail else "") + note, flush=True)
    print(f"{len(names)} workloads in {time.perf_counter() - t0:.0f} s; "
          f"{bad} failure(s) no finding explains")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

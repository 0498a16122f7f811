"""Reproduce finding 001: seed 004's migrate_vma_prepare() as written (no put_page of
collect's reference after isolate_lru_page()) leaks a reference on every page.

Run from the repository root: ``python docs/findings/001_hmm2017_v4_reference_leak_repro.py``.
It swaps hmm-2017's prepare for one that skips the model's ``put_collect_ref`` (the line
seed 004 lacks) and runs three seeds of three workloads; each prints the leak oracle's
failure. Without the swap the same runs are clean.
"""

from __future__ import annotations

import pagerace.core.variants as variants
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload

_prepare = variants.prepare_2017


def prepare_as_seed_004(k, a, m):  # type: ignore[no-untyped-def]
    if not getattr(k, "_seed004_literal", False):
        put = k.put_page

        def put_page(actor, pfn, site):  # type: ignore[no-untyped-def]
            if site.endswith("put_collect_ref"):
                return None  # seed 004 lines 371-386: no put_page(page) here
            return put(actor, pfn, site)

        k.put_page = put_page
        k._seed004_literal = True
    yield from _prepare(k, a, m)


if __name__ == "__main__":
    variants.prepare_2017 = prepare_as_seed_004  # type: ignore[assignment]
    for name in ("default", "migrate", "holes"):
        for seed in range(3):
            r = run_deterministic(load_workload(name), variant="hmm-2017", seed=seed, strategy="random")
            f = r.result.failure
            print(name, seed, "clean" if f is None else f"{f.kind}: {f.message}")  # noqa: T201 (a repro script run by hand)

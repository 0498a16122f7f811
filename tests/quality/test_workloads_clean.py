"""No false positives: every named workload runs clean on the correct ``v6`` protocol.

The oracles (lost write, stale read, pin coherency, stale TLB, dirty conservation,
device-page lifetime, leaks, lock balance, deadlock, livelock...) must stay silent on
every workload of the library for at least 50 seeds each under the random walk (and 20
under PCT, whose starved actors widen other windows); the same workloads find the
catalog bugs when their toggles are on (``core/bugs.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pagerace.core.variants import VARIANTS
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload, workload_names

SEEDS = {"random": 50, "pct": 20}


@pytest.mark.quality
@pytest.mark.parametrize("strategy", sorted(SEEDS))
@pytest.mark.parametrize("name", workload_names())
def test_workload_runs_clean_on_v6(name: str, strategy: str) -> None:
    w = load_workload(name)
    missing = set(w.needs) - set(VARIANTS["v6"].provides)
    if missing:
        pytest.skip(f"{name} needs {sorted(missing)}, which v6 does not provide")
    failures = []
    n = SEEDS[strategy]
    for seed in range(n):
        r = run_deterministic(w, seed=seed, strategy=strategy)
        f = r.result.failure
        if f is not None and str(f.kind) in w.finding_kinds_for("v6"):
            continue  # a documented finding this workload keeps on v6 ([[finding]])
        if str(r.result.outcome) != "clean":
            failures.append(
                f"seed {seed}: {r.result.outcome} "
                + (r.result.failure.headline() if r.result.failure else "(step budget)")
            )
    assert not failures, (
        f"{name} ({strategy}): {len(failures)}/{n} seeds not clean; first: {failures[0]}"
    )


@pytest.mark.quality
@pytest.mark.parametrize("name", [n for n in workload_names() if load_workload(n).finding_kinds])
def test_a_workload_that_keeps_a_finding_names_its_document(name: str) -> None:
    w = load_workload(name)
    for f in w.findings:
        assert f.doc, f"{name}: finding.kinds without finding.doc"
        assert f.kinds, f"{name}: {f.doc} explains no failure kind"
        assert (Path(__file__).parents[2] / f.doc).is_file(), f"{name}: {f.doc} is missing"


@pytest.mark.quality
@pytest.mark.parametrize("name", workload_names())
def test_workload_says_what_it_mirrors_or_which_gap_it_fills(name: str) -> None:
    w = load_workload(name)
    assert w.mirrors or w.gap, f"{name}: neither mirrors nor gap is set"

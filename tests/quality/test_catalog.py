"""Quality tier: the harness finds every catalog entry with its oracle, and stays silent
on the same seeds with the toggle off.

For each (entry, variant) below: hunt on the entry's workload with the toggle on (or,
for an intrinsic entry, on its variant) within a fixed budget of seeds; the first
failure must be one of the entry's oracle kinds, and the seeds it took are recorded
(as the test's user properties ``seeds_to_find``, ``strategy`` and ``shrunk_steps``:
``pytest --junitxml`` with ``junit_family=xunit1`` writes them out). Then the same seeds, the
same strategy, with the toggle off (for ``hmm-2017-blocking-prepare``: on v5.0 and on
v6) must find nothing. Finally the found run is shrunk, written as an artifact, loaded
back and replayed: it must fail the same way.

The strategy per entry is the one that finds it (``random`` unless said); round robin
(``rr``) for the fault storm, whose livelock needs the faulters in lockstep, and for the
waiter storm (``waiter-takes-ref``, which the random walk finds too, in ~9 of 10 seeds). The
livelock oracle only reports an actor that makes no progress through a window of fair
scheduling (the engine's fairness check), so a strategy that merely starves an actor
cannot fake one. ``move-mapping-no-freeze`` is hunted on ``pagecache-vs-compaction``:
a lockless page-cache lookup lands in the unfrozen window of
``migrate_page_move_mapping()`` and a buffered read copies the old page after a newer
write went to the new one (``stale_read``; median 10 random seeds on v6, 29 on v5.0,
over ten base seeds). Through GUP-fast the same window is harmless (its PTE re-check
drops the reference, ``docs/mm-world.md``). No pair is left out.

``waiter-takes-ref`` is not a v6 entry: no kernel had the pre-5.17 waiter with v6's
6.15+ fault entry, which sleeps without a reference (``core/bugs.py``,
``tests/unit/test_waiter_takes_ref.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pagerace.core.bugs import CATALOG
from pagerace.harness.artifacts import load_artifact, replay, write_artifact
from pagerace.harness.hunt import Budget, hunt
from pagerace.harness.runner import run_deterministic
from pagerace.harness.shrink import shrink_record
from pagerace.workloads import load_workload

WORKLOADS = Path(load_workload.__code__.co_filename).parent

# (entry, variant) -> (strategy, pct_depth, seeds budget)
PLAN: dict[tuple[str, str], tuple[str, int, int]] = {
    ("hmm-2017-blocking-prepare", "hmm-2017"): ("random", 3, 40),
    ("prepare-keeps-collect-ref", "hmm-2017"): ("random", 3, 5),
    ("fault-without-ref", "v6"): ("random", 3, 80),
    ("fault-ref-no-trylock", "v6"): ("rr", 3, 5),
    ("waiter-takes-ref", "hmm-2017"): ("rr", 3, 10),
    ("waiter-takes-ref", "v5.0"): ("rr", 3, 10),
    ("no-fault-folio-exception", "v6"): ("random", 3, 5),
    ("check-ignores-pins", "v5.0"): ("random", 3, 120),
    ("check-ignores-pins", "v6"): ("random", 3, 120),
    ("callback-modifies-src", "hmm-2017"): ("random", 3, 10),
    ("holes-src-zero", "hmm-2017"): ("random", 3, 10),
    ("async-blocking-lock", "v5.0"): ("random", 3, 10),
    ("move-mapping-no-freeze", "v5.0"): ("random", 3, 150),
    ("move-mapping-no-freeze", "v6"): ("random", 3, 150),
    ("insert-no-stable-check", "v6"): ("random", 3, 20),
}
LEFT_OUT: dict[tuple[str, str], str] = {}


@pytest.mark.quality
def test_plan_covers_the_whole_catalog():
    pairs = {(n, v) for n, e in CATALOG.items() for v in e.variants}
    assert pairs == set(PLAN) | set(LEFT_OUT)


def _off_variants(entry: str, variant: str) -> list[tuple[str, tuple[str, ...]]]:
    e = CATALOG[entry]
    if e.intrinsic:
        return [("v5.0", ()), ("v6", ())]
    return [(variant, ())]


@pytest.mark.quality
@pytest.mark.parametrize("entry,variant", sorted(PLAN), ids=lambda x: str(x))
def test_entry_found_by_its_oracle_and_silent_without(entry, variant, tmp_path, request):
    e = CATALOG[entry]
    if not (WORKLOADS / f"{e.workload}.toml").exists():
        pytest.skip(f"workload {e.workload!r} does not exist yet (helper E adds it)")
    strategy, depth, n = PLAN[(entry, variant)]
    w = load_workload(e.workload)
    bugs = () if e.intrinsic else (entry,)
    res = hunt(
        w, variant=variant, bugs=bugs, budget=Budget(runs=n), strategy=strategy,
        pct_depth=depth, shrink=False,
    )
    assert res.found is not None, f"{entry} on {variant}: nothing in {n} {strategy} seeds"
    kind = res.found.result.failure.kind.value
    assert kind in e.oracle, f"{entry}: found {kind}, expected one of {e.oracle}"
    props = request.node.user_properties
    props.append(("seeds_to_find", res.runs))
    props.append(("strategy", strategy))

    for off_variant, off_bugs in _off_variants(entry, variant):
        for seed in range(n):
            r = run_deterministic(
                w, variant=off_variant, bugs=off_bugs, seed=seed, strategy=strategy,
                pct_depth=depth,
            )
            assert r.result.failure is None, (
                f"{entry} off ({off_variant}), seed {seed}: {r.result.failure.headline()}"
            )

    small = shrink_record(res.found, budget_s=1.5).record
    path = write_artifact(tmp_path / "shrunk.json", small)
    _rec, reproduced, why = replay(load_artifact(path))
    assert reproduced, why
    props.append(("shrunk_steps", small.result.steps))

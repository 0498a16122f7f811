"""A campaign's PCT step estimate: learned once per configuration from probe runs, the
same for every unit whatever the chunks or a resume, recorded in runs.csv and in the
artifact, and what a replay of the artifact reproduces."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from pagerace.harness import campaign as c
from pagerace.harness.artifacts import load_artifact, replay
from pagerace.harness.hunt import learned_k
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload

SMALL = dict(max_steps=20000, livelock_steps=400)


def _plan(**kw: object) -> c.Plan:
    base: dict[str, object] = dict(
        name="t", workloads="opposite-order", variants="v5.0", seeds="1-6",
        strategies="pct", **SMALL,
    )
    base.update(kw)
    return c.make_plan(base)


def _runs(out: Path) -> list[dict[str, str]]:
    with (out / "runs.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_pct_unit_of_a_configuration_gets_the_learned_k(tmp_path: Path) -> None:
    p = _plan()
    w = load_workload("opposite-order")
    want = learned_k([
        run_deterministic(w, variant="v5.0", seed=s, strategy="pct", **SMALL).result.shared_steps
        for s in c.PCT_PROBE_SEEDS
    ])
    assert c.campaign_pct_k(w, "v5.0", (), p) == want
    static = max(200, 30 * sum(len(o) for o in
                               [list(x) for x in run_deterministic(w, variant="v5.0").ops]))
    assert want != static  # the learned estimate is not the static one
    c.run_campaign(p, tmp_path)
    ks = {json.loads(r["strategy_params"])["k"] for r in _runs(tmp_path)}
    assert ks == {want}


def test_the_k_does_not_depend_on_chunks_or_a_resume(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    c.run_campaign(_plan(chunk=1), one)
    c.run_campaign(_plan(chunk=4), two, limit_units=3)  # cut off, then resumed
    c.run_campaign(_plan(chunk=4), two)

    def by_seed(out: Path) -> dict[str, tuple[str, str]]:
        return {r["seed"]: (r["strategy_params"], r["fingerprint"]) for r in _runs(out)}

    assert by_seed(one) == by_seed(two)
    assert len(by_seed(one)) == 6


def test_a_workload_that_sets_pct_k_keeps_it(tmp_path: Path) -> None:
    w = load_workload("fault-storm")
    assert w.pct_k
    assert c.campaign_pct_k(w, "v6", (), _plan()) is None
    c.run_campaign(_plan(workloads="fault-storm", variants="v6", seeds="1-2"), tmp_path)
    assert {json.loads(r["strategy_params"])["k"] for r in _runs(tmp_path)} == {w.pct_k}


def test_other_strategies_get_no_k_and_run_no_probe(tmp_path: Path) -> None:
    p = _plan(strategies="random")
    units, _ = c.expand(p, c.resolve_workloads(p))
    tasks = list(c.make_tasks(p, units, c.resolve_workloads(p), 3))
    assert tasks and all(t.pct_k is None for t in tasks)


def test_the_artifact_records_the_learned_k_and_replays(tmp_path: Path) -> None:
    p = _plan(workloads="holes", variants="hmm-2017", bugs="holes-src-zero", seeds="1-2")
    w = load_workload("holes")
    k = c.campaign_pct_k(w, "hmm-2017", ("holes-src-zero",), p)
    res = c.run_campaign(p, tmp_path)
    assert res.failed >= 1
    arts = sorted((tmp_path / "artifacts").glob("*.json"))
    assert arts
    art = load_artifact(arts[0])
    assert art.strategy_params["scheduler"]["k"] == k
    _rec, reproduced, why = replay(art)
    assert reproduced, why

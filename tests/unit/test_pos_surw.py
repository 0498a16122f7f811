"""POS, URW / SURW and PCT's learned step estimate."""

from __future__ import annotations

import numpy as np
from pagerace.core.machine.words import PlainWords, RecordingWords
from pagerace.harness._rng import Stream
from pagerace.harness.hunt import Budget, hunt, learned_k
from pagerace.harness.runner import run_deterministic
from pagerace.harness.schedulers import POS, SURW, make_scheduler
from pagerace.workloads import load_workload


def _recorder() -> RecordingWords:
    return RecordingWords(PlainWords(np.zeros(16, dtype=np.int64)))


def test_pos_runs_the_highest_priority_and_redraws_only_racing_actors() -> None:
    rec = _recorder()
    s = POS()
    s.attach(rec)
    s.start(3, Stream([7]))
    prio = list(s._prio)
    first = s.choose([0, 1, 2], 0)
    assert first == max(range(3), key=lambda a: prio[a])
    others = [a for a in range(3) if a != first]
    # The other actors' pending steps: one reads word 5, one reads word 9.
    s._pending[others[0]] = (frozenset({5}), frozenset())
    s._pending[others[1]] = (frozenset({9}), frozenset())
    before = list(s._prio)
    rec.store(5, 1)  # the step that ran writes word 5: races with others[0] only
    s.choose([0, 1, 2], 1)
    assert s._prio[others[1]] == before[others[1]]
    assert s._prio[others[0]] != before[others[0]]
    assert s._prio[first] != before[first]  # its next event is a new one
    assert s.redraws == 1


def test_urw_weighs_actors_by_their_remaining_steps() -> None:
    wins = [0, 0]
    for seed in range(400):
        s = SURW([1, 99], selective=False)
        s.start(2, Stream([seed]))
        wins[s.choose([0, 1], 0)] += 1
    assert 0 < wins[0] < 20 < wins[1]  # about 1 in 100 against 99 in 100


def test_surw_keeps_an_actor_whose_step_was_not_interesting() -> None:
    rec = _recorder()
    s = SURW([10, 10])
    s.attach(rec)
    s.start(2, Stream([3]))
    a = s.choose([0, 1], 0)
    rec.load(4)  # reads a word nobody wrote: not interesting
    assert s.choose([0, 1], 1) == a
    assert s.observed[a] == 0
    rec.store(4, 1)  # writes: interesting, a weighted choice follows
    s.choose([0, 1], 2)
    assert s.observed[a] == 1
    b = 1 - a
    s._last = b
    rec.load(4)  # b reads a's write: interesting
    s.choose([0, 1], 3)
    assert s.observed[b] == 1


def test_new_strategies_are_deterministic_and_replay_exactly() -> None:
    w = load_workload("opposite-order")
    for strategy in ("pos", "urw", "surw"):
        a = run_deterministic(w, variant="v5.0", seed=4, strategy=strategy)
        b = run_deterministic(w, variant="v5.0", seed=4, strategy=strategy)
        assert a.result.fingerprint == b.result.fingerprint, strategy
        r = run_deterministic(w, variant="v5.0", seed=4, schedule=list(a.result.schedule))
        assert r.kernel.s.digest() == a.kernel.s.digest(), strategy
        assert make_scheduler(strategy).name == strategy


def test_learned_k_is_the_median_run_length() -> None:
    assert learned_k([]) is None
    assert learned_k([30, 10, 2000]) == 30
    assert learned_k([40, 20]) == 20


def test_hunt_pct_learns_k_from_its_runs_and_reports_it() -> None:
    w = load_workload("holes")
    learned = hunt(w, variant="v6", budget=Budget(runs=4), strategy="pct", shrink=False)
    fixed = hunt(w, variant="v6", budget=Budget(runs=4), strategy="pct", shrink=False, pct_k=200)
    assert fixed.pct_k == 200
    assert learned.pct_k is not None and learned.pct_k < 200
    lengths: list[int] = []
    k = None
    for seed in range(4):  # the hunt's runs, redone by hand
        k = learned_k(lengths)
        rec = run_deterministic(w, variant="v6", seed=seed, strategy="pct", pct_k=k)
        assert rec.result.scheduler["k"] == (k or rec.result.scheduler["k"])
        lengths.append(rec.result.shared_steps)
    assert learned.pct_k == k
    assert learned.guarantee is not None and fixed.guarantee is not None
    assert learned.guarantee > fixed.guarantee  # the bound uses the learned k


def test_bench_runs_to_find_and_search_reduction_tables() -> None:
    from bench.time_to_find import runs_markdown, runs_table, search_reduction

    strategies = ["random", "pct-k200", "mix-pos", "mix-3", "sticky"]
    rows = runs_table(strategies, ["holes-src-zero"], hunts=2, max_runs=3)
    assert [r["strategy"] for r in rows] == strategies
    assert all(r["found"] == 2 and r["median_runs"] == 1 for r in rows)  # found at once
    assert all(r["runs"] == [1, 1] and (r["q1"], r["q3"]) == (1, 1) for r in rows)
    md = runs_markdown(rows).splitlines()
    assert md[0] == "| entry | random | pct-k200 | mix-pos | mix-3 | sticky |"
    assert md[2].startswith("| holes-src-zero | 1 (2/2)")
    assert runs_markdown(rows, quart=True).splitlines()[2].startswith("| holes-src-zero | 1 [1–1] (2/2)")
    # a hunt that did not find it counts as the budget, and the quartiles say so
    miss = runs_table(["pct-k200"], ["hmm-2017-blocking-prepare"], hunts=1, max_runs=1)
    assert miss[0]["runs"] == [None] and miss[0]["lower_bound"]
    assert "1+ [1+–1+] (0/1)" in runs_markdown(miss, quart=True)
    search = search_reduction(["holes-src-zero"], max_schedules=5)
    assert [r["reduction"] for r in search] == [False, True]
    assert all(r["found"] == "outcome" for r in search)


def test_hunt_artifact_records_the_learned_k_of_the_run_that_found_it(tmp_path, capsys) -> None:
    import json

    from pagerace.harness.cli import main

    out = tmp_path / "o"
    rc = main(["hunt", "opposite-order", "--variant", "hmm-2017", "--strategy", "pct",
               "--budget", "60", "--shrink-time", "2", "--out", str(out)])
    assert rc == 1
    text = capsys.readouterr().out
    (art,) = (out / "artifacts").glob("*.json")
    found_by = json.loads(art.read_text())["strategy_params"]["scheduler"]["found_by"]
    assert found_by["strategy"] == "pct"
    assert f"(k = {found_by['k']} steps)" in text
    assert found_by["k"] != 200

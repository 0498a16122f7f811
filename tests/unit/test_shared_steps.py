"""RunResult.shared_steps: the steps while two or more actors other than kworkers were
live (PCT's learned k counts these), checked against the schedule."""

from __future__ import annotations

from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload


def _from_schedule(rec) -> int:  # type: ignore[no-untyped-def]
    last: dict[int, int] = {}
    for i, aid in enumerate(rec.result.schedule):
        last[aid] = i
    ends = sorted(last[a.id] for a in rec.actors if not a.daemon and a.id in last)
    # an actor's last scheduled step is the one it finished in (StopIteration)
    return ends[-2] + 1 if len(ends) > 1 else rec.result.steps


def test_shared_steps_end_when_the_second_to_last_actor_finishes() -> None:
    w = load_workload("opposite-order")
    seen_shorter = False
    for seed in range(6):
        for strategy in ("random", "pct"):
            rec = run_deterministic(w, variant="v5.0", seed=seed, strategy=strategy)
            r = rec.result
            assert r.outcome.value == "clean"
            assert r.shared_steps == _from_schedule(rec)
            assert 0 < r.shared_steps <= r.steps
            seen_shorter |= r.shared_steps < r.steps
    assert seen_shorter

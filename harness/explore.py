"""Bounded exhaustive search over schedules, for small configurations.

Depth-first over scheduling choices with a preemption bound (CHESS: a context switch
away from a runnable actor costs one preemption). Each branch is a fresh run from the
initial state that replays a recorded prefix of choices and then continues without
preempting (:class:`~pagerace.harness.schedulers.exhaustive.Exhaustive`); from every
step of that run past the prefix, every other runnable actor is a branch, kept if the
prefix plus that choice stays within the bound.

No partial-order reduction: every interleaving within the bound is run (sleep sets are
left for later), so keep the configurations small.

Reports how many schedules ran, and whether the space was exhausted within the bound
(``exhausted``) or the schedule budget ran out first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.actors import program
from ..core.oracles.invariants import check_all
from ..workloads import Workload
from .engine import DeterministicEngine, Limits
from .runner import RunRecord, build_model, limits_for, validate_variant_bugs
from .schedulers import Scheduler
from .schedulers.exhaustive import Exhaustive, preemptions_of

Op = tuple[Any, ...]


def run_custom(
    w: Workload,
    *,
    variant: str,
    bugs: Sequence[str],
    seed: int,
    scheduler: Scheduler,
    strategy: str,
    limits: Limits | None = None,
    ops: list[list[Op]] | None = None,
    trace: bool = False,
    faults: Sequence[str] = (),
    kernel_hook: Callable[[Any], None] | None = None,
    options: dict[str, Any] | None = None,
) -> RunRecord:
    """One deterministic run with a scheduler object of the caller's (the search and the
    step list need to see inside it); otherwise exactly what ``run_deterministic`` does.
    ``kernel_hook(kernel)`` runs before the first step."""
    bugs = tuple(sorted(set(bugs)))
    validate_variant_bugs(variant, bugs, w)
    lim = limits or limits_for(w)
    started = time.time()
    t0 = time.perf_counter()
    m = build_model(w, variant, bugs, seed, faults)
    if ops is not None:
        m.ops = [list(o) for o in ops]
    if kernel_hook is not None:
        kernel_hook(m.kernel)
    programs = [program(m.kernel, a, o) for a, o in zip(m.actors, m.ops)]
    eng = DeterministicEngine(
        m.kernel, m.actors, programs, scheduler, seed=seed, limits=lim,
        invariants=check_all, trace=trace,
    )
    result = eng.run()
    opts = {"pct_depth": 3, "quantum": 1, "faults": list(faults)}
    opts["limits"] = {
        "max_steps": lim.max_steps, "livelock_steps": lim.livelock_steps,
        "check_every": lim.check_every,
    }
    opts.update(options or {})
    return RunRecord(
        workload=w, variant=variant, bugs=bugs, seed=seed, strategy=strategy,
        engine="deterministic", result=result, kernel=m.kernel, actors=m.actors, ops=m.ops,
        started=started, wall=time.perf_counter() - t0, options=opts,
    )


@dataclass
class Exploration:
    """What a bounded search saw."""

    schedules: int = 0
    exhausted: bool = False
    preemption_bound: int = 2
    failure: RunRecord | None = None
    elapsed: float = 0.0
    max_depth: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "strategy": "exhaustive",
            "schedules": self.schedules,
            "exhausted": self.exhausted,
            "preemption_bound": self.preemption_bound,
            "max_steps_seen": self.max_depth,
        }


def explore(
    w: Workload,
    *,
    variant: str = "v6",
    bugs: Sequence[str] = (),
    seed: int = 0,
    preemption_bound: int = 2,
    max_schedules: int = 1000,
    time_budget: float | None = None,
    stop_at_failure: bool = True,
    on_run: Callable[[RunRecord], None] | None = None,
) -> Exploration:
    """Depth-first search of ``w``'s schedules with at most ``preemption_bound``
    preemptions, up to ``max_schedules`` runs (or ``time_budget`` seconds)."""
    res = Exploration(preemption_bound=preemption_bound)
    t0 = time.perf_counter()
    lim = limits_for(w)
    # Iterative deepening over the bound (CHESS): all schedules with at most 0
    # preemptions, then at most 1, ...; a later level re-runs the earlier schedules.
    for bound in range(preemption_bound + 1):
        stack: list[list[int]] = [[]]
        while stack:
            if res.schedules >= max_schedules or (
                time_budget is not None and time.perf_counter() - t0 > time_budget
            ):
                break
            prefix = stack.pop()
            sched = Exhaustive(prefix)
            rec = run_custom(
                w, variant=variant, bugs=bugs, seed=seed, scheduler=sched,
                strategy="exhaustive", limits=lim,
            )
            res.schedules += 1
            if on_run is not None:
                on_run(rec)
            log = sched.log
            res.max_depth = max(res.max_depth, len(log))
            if rec.result.failure is not None:
                res.failure = rec
                if stop_at_failure:
                    break
            # Branch at every step past the prefix, within the bound. Pushing the
            # earliest steps first makes the latest pop first: depth first.
            choices = [c for _, c, _f in log]
            for i in range(len(prefix), len(log)):
                runnable, chosen, _forced = log[i]
                if len(runnable) < 2:
                    continue
                base = preemptions_of(log, i)
                prev = choices[i - 1] if i else -1
                for c in sorted(runnable, reverse=True):
                    if c == chosen:
                        continue
                    cost = base + (1 if prev >= 0 and c != prev and prev in runnable else 0)
                    if cost <= bound:
                        stack.append(choices[:i] + [c])
        res.preemption_bound = bound
        if stack or (res.failure is not None and stop_at_failure):
            break
    else:
        res.exhausted = True
    res.elapsed = time.perf_counter() - t0
    return res

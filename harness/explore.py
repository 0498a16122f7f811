"""Bounded exhaustive search over schedules, for small configurations.

Depth-first over scheduling choices with a preemption bound (CHESS: a context switch
away from a runnable actor costs one preemption). Each branch is a fresh run from the
initial state that replays a recorded prefix of choices and then continues without
preempting (:class:`~pagerace.harness.schedulers.exhaustive.Exhaustive`); from every
step of that run past the prefix, every other runnable actor is a branch, kept if the
prefix plus that choice stays within the bound.

Partial-order reduction (``reduction=True``, the default): sleep sets (Godefroid,
1996) over the dependency relation of :mod:`.schedulers.dependency`, from the words
each step reads and writes. At a branching step, a child already explored from the same
state (the run's own choice, then the lower actor ids first) goes to sleep in the
later children's subtrees, and stays asleep until a step dependent on it runs: running
it there would only give a run equivalent to one already explored (the same steps with
independent neighbours swapped: the same final state, the same failures). A branch
whose actor is asleep is not run (``pruned``), and a run whose own continuation picks a
sleeping actor is stopped there (``sleep_blocked``; not counted as a schedule, and the
search branches no further below that step). With a preemption bound this is
not exact by itself: the explored run equivalent to a pruned one may need more
preemptions than the bound allows (Coons, Musuvathi and McKinley, OOPSLA 2013: the
bound makes independent steps dependent). So an explored child ``b`` sleeps in a later
sibling ``c``'s subtree only when the run that covers the pruned ones costs no more:
when choosing ``b`` was free and ``b`` could not run on after its step, or when choosing
``b`` was free or ``b`` stopped after its step and ``c``'s branch was a preemption
(``_Node.sleep_for``). Running ``b`` first and then ``c`` costs at most what ``c``,
then the steps since, then switching back to ``b`` costs, and leaves a last actor that
switches away no dearer. The tests check, on the small workloads where both searches
finish, that the reduced one runs fewer schedules, reaches the same final states and
the same failures, and that a bound-blind or a wrong dependency relation would not.

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
from .schedulers.dependency import Footprint, install_recorder
from .schedulers.exhaustive import Exhaustive, Sleep, SleepBlocked, preemptions_of

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
    reduction: bool = True
    pruned: int = 0
    sleep_blocked: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "strategy": "exhaustive",
            "schedules": self.schedules,
            "exhausted": self.exhausted,
            "preemption_bound": self.preemption_bound,
            "max_steps_seen": self.max_depth,
            "reduction": "sleep-sets" if self.reduction else "none",
            "pruned": self.pruned,
            "sleep_blocked": self.sleep_blocked,
        }


class _Node:
    """A branching state of the search (the state after a prefix): the sleep set it was
    reached with and the children explored from it so far, each with the footprint of
    its first step and its *cost*: 1 if choosing it there was a preemption, plus 1 if it
    was still runnable after that step."""

    __slots__ = ("done", "sleep")

    def __init__(self, sleep: Sleep, done: list[tuple[int, Footprint, int]]):
        self.sleep = sleep
        self.done = done

    def sleep_for(self, branch_cost: int) -> Sleep:
        """The candidates to sleep in a child whose choice cost ``branch_cost``
        preemptions: the node's own sleep set, and the explored children whose
        equivalent runs cost no more preemptions than the child's would (below)."""
        return self.sleep + [(b, fb) for b, fb, k in self.done if k <= branch_cost]


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
    reduction: bool = True,
) -> Exploration:
    """Depth-first search of ``w``'s schedules with at most ``preemption_bound``
    preemptions, up to ``max_schedules`` runs (or ``time_budget`` seconds); with
    ``reduction``, sleep sets prune branches equivalent to ones already explored."""
    res = Exploration(preemption_bound=preemption_bound, reduction=reduction)
    t0 = time.perf_counter()
    lim = limits_for(w)
    hook: Callable[[Any], None] | None = None
    # Iterative deepening over the bound (CHESS): all schedules with at most 0
    # preemptions, then at most 1, ...; a later level re-runs the earlier schedules.
    for bound in range(preemption_bound + 1):
        # Each entry: a prefix to run, and the node it branches from (None: the root).
        stack: list[tuple[list[int], _Node | None, int]] = [([], None, 0)]
        while stack:
            if res.schedules >= max_schedules or (
                time_budget is not None and time.perf_counter() - t0 > time_budget
            ):
                break
            prefix, parent, branch_cost = stack.pop()
            sched = Exhaustive(prefix)
            if reduction:
                cands = None if parent is None else parent.sleep_for(branch_cost)

                def hook(kernel: Any, sched: Exhaustive = sched, cands: Sleep | None = cands) -> None:
                    sched.attach(install_recorder(kernel), cands)

            blocked = False
            try:
                rec: RunRecord | None = run_custom(
                    w, variant=variant, bugs=bugs, seed=seed, scheduler=sched,
                    strategy="exhaustive", limits=lim, kernel_hook=hook,
                )
            except SleepBlocked:
                # Its continuation reached a sleeping actor: the rest of the run is
                # equivalent to one already explored. Not a schedule; its branches
                # before that step still count.
                rec = None
                blocked = True
                res.sleep_blocked += 1
            sched.finish()
            log = sched.log
            fps = sched.footprints
            if reduction and parent is not None and len(prefix) <= len(fps):
                n = len(prefix)
                after = n >= len(log) or prefix[-1] in log[n][0]
                parent.done.append((prefix[-1], fps[n - 1], branch_cost + int(after)))
            if rec is not None:
                res.schedules += 1
                if on_run is not None:
                    on_run(rec)
                res.max_depth = max(res.max_depth, len(log))
                if rec.result.failure is not None:
                    res.failure = rec
                    if stop_at_failure:
                        break
            choices = [c for _, c, _f in log]
            # Branch at every step past the prefix, within the bound. Pushing the
            # earliest steps first makes the latest pop first: depth first.
            for i in range(len(prefix), len(log)):
                runnable, chosen, forced = log[i]
                if len(runnable) < 2:
                    continue
                sleep = sched.sleeps.get(i, [])
                asleep = {b for b, _ in sleep}
                ran = not (blocked and i == len(log) - 1)
                base = preemptions_of(log, i)
                prev = choices[i - 1] if i else -1
                node: _Node | None = None
                for c in sorted(runnable, reverse=True):
                    if c == chosen:
                        continue
                    cost = base + (1 if prev >= 0 and c != prev and prev in runnable else 0)
                    if cost > bound:
                        continue
                    if c in asleep:
                        res.pruned += 1
                        continue
                    if node is None:
                        done: list[tuple[int, Footprint, int]] = []
                        if reduction and ran:
                            own = int(
                                prev >= 0 and chosen != prev and prev in runnable and not forced
                            )
                            after = i + 1 >= len(log) or chosen in log[i + 1][0]
                            done = [(chosen, fps[i], own + int(after))]
                        node = _Node(list(sleep), done)
                    stack.append((choices[:i] + [c], node, cost))
        res.preemption_bound = bound
        if stack or (res.failure is not None and stop_at_failure):
            break
    else:
        res.exhausted = True
    res.elapsed = time.perf_counter() - t0
    return res

"""Shrinking a failing run: the same failure with fewer steps, preemptions, actors and
operations.

Hypothesis-style: one shared base (the smallest failing run so far) and small
single-purpose passes that each propose candidates; a candidate is accepted only if a
*lenient* replay of it (``Replay(strict=False)``: a recorded actor that cannot run is
replaced by the next runnable one, and past the end the run continues round robin)
fails with the same :attr:`FailureKind.family` and is smaller. The base then becomes
the replay's *actual* schedule, so the shrunk artifact replays strictly. Passes repeat
until none makes progress (a fixpoint) or the time budget runs out.

Passes:

- :func:`pass_truncate`: cut the schedule short (the round-robin tail finishes the run);
- :func:`pass_delete_chunks`: delete runs of steps, halving the chunk size;
- :func:`pass_merge_runs`: remove a preemption by giving a run of steps to the actor of
  the run before it (merging neighbouring runs of the same actor);
- :func:`pass_drop_actors`: an actor does nothing (its operation list emptied);
- :func:`pass_drop_ops`: one operation of one actor removed.

Pages are not shrunk (the workload's memory picture is kept).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .runner import RunRecord, run_deterministic
from .schedulers.replay import ScheduleDiverged

Op = tuple[Any, ...]
Ops = list[list[Op]]


@dataclass(frozen=True)
class Candidate:
    schedule: tuple[int, ...]
    ops: tuple[tuple[Op, ...], ...]


def size(rec: RunRecord) -> tuple[int, int, int]:
    """The order candidates are compared in: operations, then steps, then preemptions."""
    return (sum(len(o) for o in rec.ops), rec.result.steps, rec.result.preemptions)


@dataclass
class ShrinkResult:
    record: RunRecord
    original_steps: int
    original_preemptions: int
    original_ops: int
    tries: int = 0
    accepted: int = 0
    elapsed: float = 0.0
    passes: dict[str, int] = field(default_factory=dict)
    timed_out: bool = False

    def summary(self) -> str:
        r = self.record.result
        return (
            f"shrunk {self.original_steps} → {r.steps} steps, {self.original_preemptions} → "
            f"{r.preemptions} preemptions, {self.original_ops} → "
            f"{sum(len(o) for o in self.record.ops)} operations "
            f"({self.accepted} of {self.tries} candidates accepted in {self.elapsed:.1f} s"
            + (", time budget reached" if self.timed_out else "")
            + ")"
        )


class Shrinker:
    """Holds the base and the family to preserve; ``attempt`` tries one candidate."""

    def __init__(self, rec: RunRecord, deadline: float) -> None:
        if rec.result.failure is None:
            raise ValueError("only a failed run can be shrunk")
        self.base = rec
        self.family = rec.result.failure.kind.family
        self.deadline = deadline
        self.tries = 0
        self.accepted = 0
        self.passes: dict[str, int] = {}
        lim = rec.options.get("limits") or {}
        self.limits = {k: int(v) for k, v in lim.items()} if isinstance(lim, dict) else {}

    def out_of_time(self) -> bool:
        return time.perf_counter() > self.deadline

    def run(self, schedule: list[int], ops: Ops) -> RunRecord | None:
        b = self.base
        try:
            return run_deterministic(
                b.workload,
                variant=b.variant,
                bugs=b.bugs,
                seed=b.seed,
                schedule=schedule,
                strict=False,
                ops_override=ops,
                faults=tuple(b.options.get("faults", ())),
                max_steps=self.limits.get("max_steps"),
                livelock_steps=self.limits.get("livelock_steps"),
                check_every=self.limits.get("check_every"),
            )
        except ScheduleDiverged:  # pragma: no cover - lenient replay does not raise
            return None

    def attempt(self, schedule: list[int], ops: Ops, why: str) -> bool:
        """Accept ``(schedule, ops)`` as the new base if it fails the same way and is
        smaller."""
        self.tries += 1
        rec = self.run(schedule, ops)
        if rec is None or rec.result.failure is None:
            return False
        if rec.result.failure.kind.family != self.family:
            return False
        if size(rec) >= size(self.base):
            return False
        self.base = rec
        self.accepted += 1
        self.passes[why] = self.passes.get(why, 0) + 1
        return True

    # helpers
    @property
    def schedule(self) -> list[int]:
        return list(self.base.result.schedule)

    @property
    def ops(self) -> Ops:
        return [list(o) for o in self.base.ops]


def _runs(schedule: list[int]) -> list[tuple[int, int, int]]:
    """(actor, start, end) for each run of consecutive steps of one actor."""
    out = []
    i = 0
    while i < len(schedule):
        j = i
        while j < len(schedule) and schedule[j] == schedule[i]:
            j += 1
        out.append((schedule[i], i, j))
        i = j
    return out


def pass_truncate(sh: Shrinker) -> Iterator[bool]:
    """Shorter prefixes of the schedule: half, then quarters... of what is left."""
    n = len(sh.schedule)
    cut = n // 2
    while cut >= 1 and not sh.out_of_time():
        s = sh.schedule
        yield sh.attempt(s[: len(s) - cut], sh.ops, "truncate")
        cut //= 2


def pass_delete_chunks(sh: Shrinker) -> Iterator[bool]:
    """Delete ``size`` consecutive steps, for sizes halving down to 1."""
    chunk = max(len(sh.schedule) // 4, 1)
    while chunk >= 1:
        i = 0
        while i < len(sh.schedule) and not sh.out_of_time():
            s = sh.schedule
            ok = sh.attempt(s[:i] + s[i + chunk :], sh.ops, "delete_chunk")
            yield ok
            if not ok:
                i += chunk
        chunk //= 2


def pass_merge_runs(sh: Shrinker) -> Iterator[bool]:
    """Remove a preemption: the steps of run ``j`` go to the actor of run ``j-1``
    (then the lenient replay shifts what that actor cannot do)."""
    j = 1
    while j < len(_runs(sh.schedule)) and not sh.out_of_time():
        s = sh.schedule
        runs = _runs(s)
        if j >= len(runs):
            break
        prev_actor = runs[j - 1][0]
        _actor, lo, hi = runs[j]
        cand = s[:lo] + [prev_actor] * (hi - lo) + s[hi:]
        ok = sh.attempt(cand, sh.ops, "merge_runs")
        if not ok and j + 1 < len(runs):
            # move the switch later: swap this run with the next one
            _a2, lo2, hi2 = runs[j + 1]
            cand = s[:lo] + s[lo2:hi2] + s[lo:hi] + s[hi2:]
            ok = sh.attempt(cand, sh.ops, "move_switch")
        yield ok
        if not ok:
            j += 1


def pass_drop_actors(sh: Shrinker) -> Iterator[bool]:
    """An actor that does nothing: its operation list emptied, its steps removed."""
    for aid in range(len(sh.ops)):
        if sh.out_of_time():
            return
        ops = sh.ops
        if not ops[aid]:
            continue
        ops[aid] = []
        s = [x for x in sh.schedule if x != aid]
        yield sh.attempt(s, ops, "drop_actor")


def pass_drop_ops(sh: Shrinker) -> Iterator[bool]:
    """One operation of one actor removed (last first: earlier ones set the stage)."""
    for aid in range(len(sh.ops)):
        j = len(sh.ops[aid]) - 1
        while j >= 0 and not sh.out_of_time():
            ops = sh.ops
            if j >= len(ops[aid]):
                j = len(ops[aid]) - 1
                continue
            del ops[aid][j]
            yield sh.attempt(sh.schedule, ops, "drop_op")
            j -= 1


PASSES: list[Callable[[Shrinker], Iterator[bool]]] = [
    pass_drop_actors,
    pass_drop_ops,
    pass_truncate,
    pass_delete_chunks,
    pass_merge_runs,
]


def shrink_record(rec: RunRecord, budget_s: float = 10.0) -> ShrinkResult:
    """Shrink a failed run to a fixpoint of :data:`PASSES` or until ``budget_s``
    seconds have passed. The result's record is a run of the shrunk schedule whose
    schedule replays strictly."""
    t0 = time.perf_counter()
    sh = Shrinker(rec, t0 + budget_s)
    res = ShrinkResult(
        record=rec,
        original_steps=rec.result.steps,
        original_preemptions=rec.result.preemptions,
        original_ops=sum(len(o) for o in rec.ops),
    )
    progress = True
    while progress and not sh.out_of_time():
        progress = False
        for p in PASSES:
            for ok in p(sh):
                progress = progress or ok
                if sh.out_of_time():
                    break
    res.record = sh.base
    res.tries = sh.tries
    res.accepted = sh.accepted
    res.passes = sh.passes
    res.elapsed = time.perf_counter() - t0
    res.timed_out = sh.out_of_time()
    return res

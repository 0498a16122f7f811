"""The trace of a parallel run, and its bridge to the deterministic engine.

Every time a worker resumes an actor (one *step*: from one preemption point to the
next, exactly what one deterministic-engine step is) it first takes a ticket from the
global counter ``glob[G_TICKET]`` (an atomic fetch-add) and logs ``ticket << 16 | actor``
in its own ring in shared memory. The parent drains the rings while the run goes on
(:class:`RingReader`); merged by ticket they are the order in which steps *started*
across all processes: a schedule, one actor id per step, that the deterministic engine
can replay (:func:`replay_parallel_failure`).

The replay is lenient: two steps that overlapped in real time are serialised in ticket
order, and a step that the real run carried out while another actor was in the middle
of its own step may see a different state in the replay. When the recorded actor cannot
run at that point of the replay (it is blocked there), the replay takes the next
runnable actor and counts a divergence. The reproduction rate measured in
``docs/parallel.md`` says how often that is enough.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

import numpy as np

from .shm import W_COUNT, BlockLayout

ACTOR_BITS = 16
ACTOR_MASK = (1 << ACTOR_BITS) - 1


def encode(ticket: int, actor: int) -> int:
    return (ticket << ACTOR_BITS) | actor


def decode(entry: int) -> tuple[int, int]:
    return entry >> ACTOR_BITS, entry & ACTOR_MASK


class RingReader:
    """Copies new entries out of every worker's ring (parent side).

    Args:
        arr: the whole block as an int64 numpy array.
        lay: where the rings are.
    """

    def __init__(self, arr: np.ndarray, lay: BlockLayout) -> None:
        self.arr = arr
        self.lay = lay
        self.read = [0] * lay.workers
        self.chunks: list[list[np.ndarray]] = [[] for _ in range(lay.workers)]
        self.lost = [0] * lay.workers

    def drain(self) -> None:
        lay, arr = self.lay, self.arr
        cap = lay.ring_entries
        for wid in range(lay.workers):
            count = int(arr[lay.cw(wid, W_COUNT)])
            start = self.read[wid]
            if count <= start:
                continue
            if count - start > cap:
                # The worker lapped the ring: the oldest entries are gone.
                self.lost[wid] += count - start - cap
                start = count - cap
            base = lay.ring(wid)
            i0, i1 = start % cap, count % cap
            if i0 < i1:
                part = arr[base + i0 : base + i1].copy()
            else:
                part = np.concatenate([arr[base + i0 : base + cap], arr[base : base + i1]])
            self.chunks[wid].append(part)
            self.read[wid] = count

    def entries(self) -> np.ndarray:
        parts = [c for chunks in self.chunks for c in chunks]
        if not parts:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(parts)

    def release(self) -> None:
        del self.arr


def merge(entries: np.ndarray) -> tuple[array, int]:
    """Sort ring entries by ticket into a schedule.

    Returns:
        (schedule as ``array('i')`` of actor ids, number of tickets missing from the
        sequence: taken by a worker that died before logging them, or lapped).
    """
    if entries.size == 0:
        return array("i"), 0
    e = np.sort(entries)
    tickets = e >> ACTOR_BITS
    actors = (e & ACTOR_MASK).astype(np.int32)
    gaps = int(tickets[-1] + 1 - tickets.size)
    sched = array("i")
    sched.frombytes(actors.tobytes())
    return sched, gaps


def replay_ops(
    ops: Sequence[Sequence[tuple[Any, ...]]], started: Sequence[int]
) -> list[list[tuple[Any, ...]]]:
    """The operation lists a parallel run actually started: each actor's workload list
    repeated, cut to the number it started."""
    out: list[list[tuple[Any, ...]]] = []
    for oplist, n in zip(ops, started):
        if not oplist:
            out.append([])
            continue
        full, rest = divmod(n, len(oplist))
        out.append(list(oplist) * full + list(oplist[:rest]))
    return out


def replay_parallel_failure(record: Any, slack: int = 50_000) -> tuple[bool, str]:
    """Replay a failed parallel run's merged schedule on the deterministic engine.

    Runs :func:`~pagerace.harness.runner.run_deterministic` with the recorded schedule,
    leniently, over the operation lists the parallel run started, and compares failure
    families (``deadlock`` and ``livelock`` are one family, ``hang``).

    Args:
        record: a :class:`~pagerace.harness.runner.RunRecord` of the parallel engine.
        slack: steps allowed past the end of the schedule (round robin) for the
            failure to show.

    Returns:
        (reproduced, a one-line reason).
    """
    from ..runner import run_deterministic

    failure = record.result.failure
    if failure is None:
        return False, "the parallel run did not fail: nothing to reproduce"
    if record.options.get("watchdog_only"):
        return False, f"{failure.kind.value}: a harness verdict, not a kernel-model failure"
    schedule = list(record.result.schedule)
    ops = record.options.get("replay_ops") or record.ops
    rr = run_deterministic(
        record.workload,
        variant=record.variant,
        bugs=record.bugs,
        seed=record.seed,
        schedule=schedule,
        strict=False,
        ops_override=ops,
        max_steps=len(schedule) + slack,
    )
    got = rr.result.failure
    diverged = rr.result.scheduler.get("diverged", 0)
    if got is None:
        return False, (
            f"replay ended {rr.result.outcome} after {rr.result.steps} steps "
            f"({diverged} of {len(schedule)} recorded steps diverged); "
            f"expected {failure.kind.value}"
        )
    if got.kind.family != failure.kind.family:
        return False, f"replay failed with {got.kind.value}, expected {failure.kind.value}"
    return True, (
        f"reproduced {got.kind.value} at step {got.step} "
        f"({diverged} of {len(schedule)} recorded steps diverged)"
    )

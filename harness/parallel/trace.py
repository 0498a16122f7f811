"""The trace of a parallel run, and its bridge to the deterministic engine.

Every time a worker resumes an actor (one *step*: from one preemption point to the
next, exactly what one deterministic-engine step is), it takes a ticket from the global
counter ``glob[G_TICKET]`` (an atomic fetch-add) as the step ends and logs
``ticket << 16 | actor`` in its own ring in shared memory. The parent drains the rings
while the run goes on (:class:`RingReader`); merged by ticket they are the order in
which steps *finished* across all processes: a schedule, one actor id per step, that
the deterministic engine can replay (``reproduce.py``). (Start order
replayed the hmm-2017 deadlock in 10-12 of 20 runs, finish order in 14-16.)

The replay is lenient: two steps that overlapped in real time are serialised in ticket
order, and a step that the real run carried out while another actor was in the middle
of its own step may see a different state in the replay. When the recorded actor cannot
run at that point of the replay (it is blocked there), the replay takes the next
runnable actor and counts a divergence. The reproduction rate measured in
``docs/parallel.md`` says how often that is enough.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
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


class TicketOrder:
    """A scheduler that replays a merged parallel trace, deferring blocked actors.

    Each actor keeps the queue of its recorded steps, in ticket order. At each step the
    runnable actor whose next recorded step is earliest runs, so an actor that is
    blocked at this point of the replay (in the real run its step overlapped another's
    and won the race) keeps its steps for later instead of losing them, and every other
    actor stays on its recorded order. Past the end of the trace: round robin.
    """

    name = "ticket-order"

    def __init__(self, schedule: Sequence[int]) -> None:
        self.schedule = list(schedule)
        self.queues: list[deque[int]] = []
        self.deferred = 0
        self.past_end = 0
        self.first_deferred = -1  # the replay's first step that deferred an actor
        self._last = -1

    def start(self, n_actors: int, stream: Any) -> None:
        self.queues = [deque() for _ in range(n_actors)]
        for i, aid in enumerate(self.schedule):
            if 0 <= aid < n_actors:
                self.queues[aid].append(i)
        self.deferred = 0
        self.past_end = 0
        self.first_deferred = -1
        self._last = -1

    def choose(self, runnable: list[int], step: int) -> int:
        queues = self.queues
        best, best_pos = -1, -1
        for aid in runnable:
            q = queues[aid]
            if q and (best < 0 or q[0] < best_pos):
                best, best_pos = aid, q[0]
        if best >= 0:
            queues[best].popleft()
            if any(q and q[0] < best_pos for q in queues):
                if not self.deferred:
                    self.first_deferred = step
                self.deferred += 1
            self._last = best
            return best
        self.past_end += 1
        for aid in runnable:
            if aid > self._last:
                self._last = aid
                return aid
        self._last = runnable[0]
        return runnable[0]

    def describe(self) -> dict[str, object]:
        return {
            "strategy": self.name,
            "deferred": self.deferred,
            "first_deferred": self.first_deferred,
            "past_end": self.past_end,
        }


@dataclass(frozen=True)
class _Replayable:
    workload: Any
    variant: str
    bugs: tuple[str, ...]
    seed: int
    schedule: list[int]
    ops: list[list[tuple[Any, ...]]]
    failure: Any
    watchdog_only: bool


_WATCHDOG_ONLY = ("dead", "runaway", "stopped")


def _replayable(obj: Any) -> _Replayable:
    """The replay inputs of a parallel ``RunRecord`` or of a loaded failure artifact
    (``harness/artifacts.py``'s ``Artifact``)."""
    if hasattr(obj, "result"):
        failure = obj.result.failure
        schedule = list(obj.result.schedule)
        ops = obj.ops
        wd_only = bool(obj.options.get("watchdog_only"))
    else:
        failure = obj.failure
        schedule = list(obj.schedule)
        ops = obj.ops
        wd_only = failure is not None and failure.details.get("verdict") in _WATCHDOG_ONLY
    return _Replayable(
        obj.workload, obj.variant, tuple(obj.bugs), int(obj.seed), schedule,
        [list(o) for o in ops], failure, wd_only,
    )


def replay_ticket_order(record: Any, slack: int = 50_000) -> Any:
    """Run a parallel record's trace on the deterministic engine with :class:`TicketOrder`
    (the same model, operation lists, limits and invariants as ``run_deterministic``).

    Returns:
        The deterministic engine's :class:`~pagerace.harness.engine.RunResult`.
    """
    from ...core.actors import program
    from ...core.oracles.invariants import check_all
    from ..engine import DeterministicEngine
    from ..runner import build_model, limits_for

    rp = record if isinstance(record, _Replayable) else _replayable(record)
    m = build_model(rp.workload, rp.variant, rp.bugs, rp.seed)
    m.ops = [list(o) for o in rp.ops]
    programs = [program(m.kernel, a, o) for a, o in zip(m.actors, m.ops)]
    eng = DeterministicEngine(
        m.kernel,
        m.actors,
        programs,
        TicketOrder(rp.schedule),
        seed=rp.seed,
        limits=limits_for(rp.workload, max_steps=len(rp.schedule) + slack),
        invariants=check_all,
    )
    return eng.run()

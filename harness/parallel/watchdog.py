"""The parent's watchdog: deadlock cycles, stuck, dead and runaway workers.

The watchdog reads only shared words and process samples; it never talks to a worker.
Everything it reads comes through callables, so the unit tests drive it in-process with
recording fakes (a numpy actor table, a dict of lock owners, scripted psutil samples
and a fake clock), in the way pytest-xdist tests its schedulers with ``MockNode``.

What it finds, each poll (every ~50 ms):

- **deadlock**: the waits-for graph is built from the shared actor table (``A_STATE``
  blocked, ``A_WAIT_WORD``/``A_WAIT_MASK`` still set: the lock word of a spinning wait,
  the actor's own wait-queue entry of a sleeping one; ``A_WAIT_LOCK`` the lock) and the lock
  owners (``Kernel.lock_owner``: the page lock's ``F_OWNER``, the PTL word, the mmap
  writer). A cycle that is still there, with the same locks and no progress of its
  actors, at the next poll is a deadlock. Two polls, because the owner word of a page
  lock is written just after the lock bit and an actor's wait words just before it
  sleeps: one poll can see a half-written picture, two in a row cannot.
- **livelock** (an actor): it is in the middle of an operation, it has passed at least
  ``livelock_steps`` preemption points and ``livelock_seconds`` of wall time without
  finishing the operation. The same oracle as the deterministic engine's, with a time
  floor so that a slow machine is not a livelock.
- **dead** (a worker): its process exited, or was killed, before it said it was done.
- every ``sample_interval``, a psutil sample of each worker (status, CPU time, RSS):
  a worker whose actors made no progress and took no step for ``stuck_seconds`` is
  **stopped** (SIGSTOP, a debugger), **blocked** (sleeping, or spinning while every actor
  it runs waits on a lock) or **livelocked** (burning CPU, not waiting on any lock);
  a worker whose RSS grew by more than ``rss_limit`` bytes is **runaway**.

The hard run timeout is the engine's (``_engine.py``): it does not need to look at
anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...core.machine.layout import (
    A_PROGRESS,
    A_STATE,
    A_STEPS,
    A_WAIT_LOCK,
    A_WAIT_MASK,
    A_WAIT_WORD,
    ACTOR_BLOCKED,
    ACTOR_DONE,
    ACTOR_IDLE,
)
from ..engine import cycle_through


@dataclass(frozen=True)
class WatchdogConfig:
    """Thresholds of the watchdog.

    Attributes:
        sample_interval: seconds between psutil samples of each worker.
        livelock_seconds: wall time an actor may spend in one operation while stepping.
        livelock_steps: preemption points an actor may pass in one operation.
        stuck_seconds: wall time a worker may go without any step or progress.
        rss_limit: bytes of RSS growth after which a worker is runaway.
        busy_cpu: CPU share (of one core) above which a stuck worker counts as busy.
    """

    sample_interval: float = 0.5
    livelock_seconds: float = 1.0
    livelock_steps: int = 20_000
    stuck_seconds: float = 4.0
    rss_limit: int = 512 << 20
    busy_cpu: float = 0.10


@dataclass(frozen=True)
class ProcSample:
    """One psutil look at a worker process."""

    status: str  # psutil status string: running, sleeping, stopped, zombie, dead...
    cpu: float  # user + system seconds
    rss: int  # bytes


@dataclass(frozen=True)
class Verdict:
    """What the watchdog decided. ``kind`` is one of deadlock, livelock, blocked, dead,
    stopped, runaway; ``actors``/``workers`` are ids, ``locks`` lock words."""

    kind: str
    message: str
    workers: tuple[int, ...] = ()
    actors: tuple[int, ...] = ()
    locks: tuple[int, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


def find_cycles(waits: Mapping[int, int]) -> list[tuple[int, ...]]:
    """Cycles of a waits-for graph in which each actor waits for at most one owner.

    Args:
        waits: actor → the actor that owns the lock it waits for.

    Returns:
        Each cycle once, rotated to start at its smallest actor id, sorted. A cycle of
        one is an actor waiting for a lock it holds itself.
    """
    cycles: set[tuple[int, ...]] = set()
    for start in sorted(waits):
        cyc = cycle_through(start, lambda aid: waits.get(aid, -1))
        if cyc:
            k = cyc.index(min(cyc))
            cycles.add(tuple(cyc[k:] + cyc[:k]))
    return sorted(cycles)


def classify_stuck(
    prev: ProcSample, cur: ProcSample, dt: float, all_blocked: bool, busy_cpu: float = 0.10
) -> str:
    """Why a worker with no step and no progress is stuck.

    Returns:
        ``dead`` (zombie or gone), ``stopped`` (SIGSTOP / traced), ``blocked`` (asleep,
        or spinning while every actor it runs waits on a lock) or ``livelock`` (using
        CPU without waiting on any lock).
    """
    if cur.status in ("zombie", "dead"):
        return "dead"
    if cur.status in ("stopped", "tracing-stop"):
        return "stopped"
    if all_blocked:
        return "blocked"
    share = (cur.cpu - prev.cpu) / dt if dt > 0 else 0.0
    if cur.status == "running" or share > busy_cpu:
        return "livelock"
    return "blocked"


class Watchdog:
    """Polls the shared actor table and the worker processes.

    Args:
        cfg: thresholds.
        worker_actors: the actor ids each worker runs.
        read_actors: a copy of the actor table, shape ``(actors, ACTOR_WORDS)``.
        lock_owner: actor that holds the lock at a word, or -1.
        lock_held: whether ``load(word) & mask`` is non-zero (the wait still holds).
        exitcode: a worker's exit code, or None while it runs.
        sample: a psutil sample of a worker (``None`` if the process is gone).
        worker_steps: steps a worker has taken (its ``W_STEPS`` word).
        clock: seconds, monotonic.
        names: actor names, for messages.
    """

    def __init__(
        self,
        cfg: WatchdogConfig,
        worker_actors: Sequence[Sequence[int]],
        read_actors: Callable[[], np.ndarray],
        lock_owner: Callable[[int], int],
        lock_held: Callable[[int, int], bool],
        exitcode: Callable[[int], int | None],
        sample: Callable[[int], ProcSample | None],
        worker_steps: Callable[[int], int],
        clock: Callable[[], float],
        names: Sequence[str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.worker_actors = [list(a) for a in worker_actors]
        self.read_actors = read_actors
        self.lock_owner = lock_owner
        self.lock_held = lock_held
        self.exitcode = exitcode
        self.sample = sample
        self.worker_steps = worker_steps
        self.clock = clock
        n = sum(len(a) for a in worker_actors)
        self.names = list(names) if names is not None else [f"actor{i}" for i in range(n)]
        self.finished: set[int] = set()
        self._cycles: dict[tuple[tuple[int, ...], tuple[int, ...]], tuple[int, ...]] = {}
        now = clock()
        self._a_prog = [-1] * n
        self._a_since = [now] * n
        self._a_steps0 = [0] * n
        self._w_key: list[tuple[int, int]] = [(-1, -1)] * len(worker_actors)
        self._w_since = [now] * len(worker_actors)
        self._w_sample: list[tuple[float, ProcSample] | None] = [None] * len(worker_actors)
        self._rss0: list[int | None] = [None] * len(worker_actors)
        self._next_sample = now
        self.state: list[str] = ["ok"] * len(worker_actors)
        self.polls = 0

    def finish(self, wid: int) -> None:
        """Worker ``wid`` said it is done: its exit is expected from now on."""
        self.finished.add(wid)
        self.state[wid] = "done"

    # ------------------------------------------------------------------------------
    def poll(self) -> Verdict | None:
        self.polls += 1
        now = self.clock()
        table = self.read_actors()
        v = self._dead()
        if v is None:
            v = self._deadlock(table)
        if v is None:
            v = self._livelock(table, now)
        if v is None and now >= self._next_sample:
            self._next_sample = now + self.cfg.sample_interval
            v = self._sample_workers(table, now)
        return v

    def _dead(self) -> Verdict | None:
        for wid in range(len(self.worker_actors)):
            if wid in self.finished:
                continue
            code = self.exitcode(wid)
            if code is None:
                continue
            self.state[wid] = "dead"
            return self._dead_verdict(wid, code)
        return None

    def _dead_verdict(self, wid: int, code: int | None) -> Verdict:
        import signal

        if code is None:
            how = "is a zombie"
        elif code < 0:
            try:
                sig = signal.Signals(-code).name
            except ValueError:
                sig = f"signal {-code}"
            how = f"was killed by {sig}"
        else:
            how = f"exited with status {code} before finishing"
        acts = self.worker_actors[wid]
        return Verdict(
            "dead",
            f"worker {wid} (actors {', '.join(self.names[a] for a in acts)}) {how}",
            workers=(wid,),
            actors=tuple(acts),
            details={"exitcode": code},
        )

    def waits_for(self, table: np.ndarray) -> dict[int, tuple[int, int]]:
        """actor → (lock word, owner) for every actor blocked on a lock that is held."""
        out = {}
        for aid in range(table.shape[0]):
            if table[aid, A_STATE] != ACTOR_BLOCKED:
                continue
            word, mask = int(table[aid, A_WAIT_WORD]), int(table[aid, A_WAIT_MASK])
            if not mask or not self.lock_held(word, mask):
                continue
            # What wakes it (its own wait-queue entry when it sleeps on a queue) is not
            # what it waits for: the lock, whose owner the graph follows.
            lock = int(table[aid, A_WAIT_LOCK])
            owner = self.lock_owner(lock)
            if owner >= 0:
                out[aid] = (lock, owner)
        return out

    def _deadlock(self, table: np.ndarray) -> Verdict | None:
        waits = self.waits_for(table)
        cycles = find_cycles({a: o for a, (_w, o) in waits.items()})
        seen: dict[tuple[tuple[int, ...], tuple[int, ...]], tuple[int, ...]] = {}
        for cyc in cycles:
            key = (cyc, tuple(waits[a][0] for a in cyc))
            prog = tuple(int(table[a, A_PROGRESS]) for a in cyc)
            if self._cycles.get(key) == prog:
                names = [self.names[a] for a in cyc]
                return Verdict(
                    "deadlock",
                    "a cycle of waiters: " + " → ".join(names + names[:1]),
                    workers=tuple(sorted({self._worker_of(a) for a in cyc})),
                    actors=cyc,
                    locks=key[1],
                    details={"waits": {a: waits[a] for a in cyc}},
                )
            seen[key] = prog
        self._cycles = seen
        return None

    def _worker_of(self, aid: int) -> int:
        for wid, acts in enumerate(self.worker_actors):
            if aid in acts:
                return wid
        return -1

    def _livelock(self, table: np.ndarray, now: float) -> Verdict | None:
        cfg = self.cfg
        for aid in range(table.shape[0]):
            p = int(table[aid, A_PROGRESS])
            s = int(table[aid, A_STEPS])
            if p != self._a_prog[aid]:
                self._a_prog[aid] = p
                self._a_since[aid] = now
                self._a_steps0[aid] = s
                continue
            st = int(table[aid, A_STATE])
            if st in (ACTOR_IDLE, ACTOR_DONE):
                self._a_since[aid] = now
                self._a_steps0[aid] = s
                continue
            dt = now - self._a_since[aid]
            ds = s - self._a_steps0[aid]
            if dt >= cfg.livelock_seconds and ds >= cfg.livelock_steps:
                return Verdict(
                    "livelock",
                    f"{self.names[aid]} passed {ds} preemption points in {dt:.1f} s "
                    "without finishing its operation",
                    workers=(self._worker_of(aid),),
                    actors=(aid,),
                    details={"steps": ds, "seconds": round(dt, 3)},
                )
        return None

    def _sample_workers(self, table: np.ndarray, now: float) -> Verdict | None:
        cfg = self.cfg
        for wid, acts in enumerate(self.worker_actors):
            if wid in self.finished:
                continue
            cur = self.sample(wid)
            if cur is None:
                continue  # gone: the exit code will say how, next poll
            if self._rss0[wid] is None:
                self._rss0[wid] = cur.rss
            grown = cur.rss - (self._rss0[wid] or 0)
            if grown > cfg.rss_limit:
                self.state[wid] = "runaway"
                return Verdict(
                    "runaway",
                    f"worker {wid} grew its RSS by {grown >> 20} MiB (limit {cfg.rss_limit >> 20} MiB)",
                    workers=(wid,),
                    actors=tuple(acts),
                    details={"rss": cur.rss, "grown": grown},
                )
            key = (int(sum(int(table[a, A_PROGRESS]) for a in acts)), self.worker_steps(wid))
            prev = self._w_sample[wid]
            self._w_sample[wid] = (now, cur)
            if key != self._w_key[wid]:
                self._w_key[wid] = key
                self._w_since[wid] = now
                self.state[wid] = "ok"
                continue
            live = [a for a in acts if table[a, A_STATE] != ACTOR_DONE]
            blocked = bool(live) and all(table[a, A_STATE] == ACTOR_BLOCKED for a in live)
            if prev is None:
                continue
            kind = classify_stuck(prev[1], cur, now - prev[0], blocked, cfg.busy_cpu)
            self.state[wid] = kind
            if kind == "dead":
                return self._dead_verdict(wid, self.exitcode(wid))
            if now - self._w_since[wid] < cfg.stuck_seconds:
                continue
            idle_for = now - self._w_since[wid]
            what = {
                "stopped": "is stopped (SIGSTOP or a debugger)",
                "blocked": "is blocked",
                "livelock": "runs without progress",
            }[kind]
            return Verdict(
                kind,
                f"worker {wid} (actors {', '.join(self.names[a] for a in acts)}) {what}: "
                f"no step and no progress for {idle_for:.1f} s",
                workers=(wid,),
                actors=tuple(live),
                details={"status": cur.status, "seconds": round(idle_for, 3)},
            )
        return None


def psutil_sampler(pids: Sequence[int]) -> Callable[[int], ProcSample | None]:
    """``sample(wid)`` over one ``psutil.Process`` per worker, created once."""
    import psutil

    procs: list[Any] = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            procs.append(None)

    def sample(wid: int) -> ProcSample | None:
        p = procs[wid]
        if p is None:
            return None
        try:
            with p.oneshot():
                st = p.status()
                ct = p.cpu_times()
                rss = p.memory_info().rss
        except psutil.Error:
            return None
        return ProcSample(st, ct.user + ct.system, rss)

    return sample

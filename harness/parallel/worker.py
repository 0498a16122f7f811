"""A worker process: one simulated CPU running one or more actors over shared memory.

The worker runs the same kernel-path generators as the deterministic engine, built by
the same :func:`~pagerace.harness.runner.build_model` with the same seed, so every actor
has the operation list it has there. Only the driving differs (``docs/parallel.md``):

- a **step** (resuming an actor up to its next preemption point) ends by taking a
  ticket (``fetch_add`` on ``glob[G_TICKET]``) and logging ``ticket << 16 | actor`` in the
  worker's ring, so the parent can merge every worker's steps into one schedule. The
  ticket is taken at the end of the step, not the start: steps of two workers overlap
  in time, and the order in which they finished replays more often than the order in
  which they started (measured in ``docs/parallel.md``);
- a bare ``yield`` is a preemption point: with probability ``perturb`` the worker spins a
  random short while or calls ``os.sched_yield()`` (the LTP fuzzy-sync idea: widen race
  windows), from its own seeded stream;
- a :class:`~pagerace.core.machine.kernel.Block` parks the actor until ``load(word) & mask == 0``;
  ``Kernel._block`` has already written what it waits for into the shared actor table.
  A sleeper on a wait queue (page lock, mmap_lock) parks on its own entry's WQ_SLEEP bit,
  which only its waker clears (under the wait-queue lock, :class:`WqLock`), so the lock
  hand-off and the rwsem's queue order hold across processes as they do in one;
  The worker runs its other actors meanwhile, and when none can run it backs off
  (spins, then ``sched_yield``), watching the stop flag so the parent can always end
  the run;
- between operations (``Actor.idle``) an actor holds no lock: that is where the worker
  stops an actor at the end of the run (soft stop, ``G_STOP`` = 1) or parks it at a
  quiet point (``G_PAUSE``), acknowledging the pause once every actor it runs is idle.
  A hard stop (``G_STOP`` = 2) abandons actors wherever they are.

Each actor repeats its workload operation list until the run's duration ends or it has
run ``ops`` operations. Messages to the parent go through this worker's own pipe (no
lock shared with other workers, so a SIGKILLed worker cannot wedge the others):
``("site", code, name)``, then one of ``("done", report)``, ``("failure", failure_json,
report)`` or ``("error", traceback)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ...core.actors import program
from ...core.machine.errors import InvariantViolation
from ...core.machine.kernel import Block
from ...core.machine.layout import (
    A_STATE,
    A_STEPS,
    A_WAIT_SITE,
    ACTOR_DONE,
    ACTOR_IDLE,
    ACTOR_RUNNING,
    ACTOR_WORDS,
    G_FAILED,
    G_PAUSE,
    G_STOP,
    G_TICKET,
    G_WQ_LOCK,
    Layout,
)
from ...core.machine.state import State
from .._rng import Stream
from .shm import (
    W_ACK,
    W_COUNT,
    W_INSTEP,
    W_PID,
    W_SPIN,
    W_STATE,
    W_STEPS,
    WS_DONE,
    WS_ERROR,
    WS_FAILED,
    WS_PAUSED,
    WS_RUNNING,
    BlockLayout,
    name_worker_process,
)

# Generators of a stopped worker, kept alive on purpose (see Driver.close).
_ABANDONED: list[Any] = []

STOP_SOFT = 1
STOP_HARD = 2
_SPIN_BEFORE_YIELD = 64
EXACT_TURN = 8  # exact_trace: at most this many steps a turn under the step lock


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs (passed explicitly: no process-global settings)."""

    wid: int
    actors: tuple[int, ...]
    workload: Any
    variant: str
    bugs: tuple[str, ...]
    seed: int
    perturb: float
    ops: int | None  # operations per actor, None: until stopped
    block: BlockLayout
    parent: int
    deadline: float  # time.monotonic() after which the worker gives up on its own
    exact_trace: bool = False  # each step and its ticket under the run's step lock


class HwLock:
    """``Kernel.hw_lock`` for the parallel engine: one spin word per virtual page.

    Held only across a few non-yielding lines (a CPU's TLB lookup or page walk and its
    load or store, or the TLB shootdown of that page), never across a preemption point,
    so it spins with ``sched_yield`` backoff and cannot take part in a deadlock.
    """

    __slots__ = ("base", "me", "ppm", "words")

    def __init__(self, words: Any, base: int, ppm: int, me: int) -> None:
        self.words = words
        self.base = base
        self.ppm = ppm
        self.me = me

    def acquire(self, mm: int, vpn: int) -> None:
        w = self.base + mm * self.ppm + vpn
        cas = self.words.cas
        n = 0
        while not cas(w, 0, self.me):
            n += 1
            if n >= _SPIN_BEFORE_YIELD:
                os.sched_yield()

    def release(self, mm: int, vpn: int) -> None:
        self.words.store(self.base + mm * self.ppm + vpn, 0)


class WqLock:
    """``Kernel.wq_lock`` for the parallel engine: the wait queues' spinlock (G_WQ_LOCK),
    the model's one word for every page's hashed ``q->lock`` and every rwsem's
    ``wait_lock``. Held only across a few non-yielding lines (queueing an entry, a wake-up
    walk), never across a preemption point, so it cannot take part in a deadlock."""

    __slots__ = ("me", "w", "words")

    def __init__(self, words: Any, w: int, me: int) -> None:
        self.words = words
        self.w = w
        self.me = me

    def acquire(self) -> None:
        cas = self.words.cas
        n = 0
        while not cas(self.w, 0, self.me):
            n += 1
            if n >= _SPIN_BEFORE_YIELD:
                os.sched_yield()

    def release(self) -> None:
        self.words.store(self.w, 0)


class StopMachine:
    """``Kernel.hooks["stop_machine"]`` for the parallel engine: run an in-step check
    while every other worker is between steps (the kernel's ``stop_machine`` idea).

    In the deterministic engine an oracle called inside a step (the split check, the
    "no migration entry left after finalize" check, ``core/oracles/folio.py``) sees every
    other actor at a preemption point, because nothing else runs during the step.
    ``folio.in_stopped_world`` runs such a check first as it is and, only when it
    fails, again under this stop, whose verdict counts.
    Across processes it would read words other workers are changing under locks the
    check does not take, and even one entry read twice by numpy could differ between
    the reads. So the checking worker takes the stop word (``BlockLayout.stop_lock``)
    and waits until no other worker is inside a step (each worker's ``W_INSTEP``); a
    worker about to start a step sets its ``W_INSTEP`` first and then reads the stop
    word, and if it is taken, clears ``W_INSTEP`` and waits for it to clear (seq_cst
    stores and loads: one of the two always sees the other). A worker that waits for
    the stop word inside its own check counts as between steps meanwhile (it has done
    nothing since its check began), so two checks cannot wait for each other.

    Never held across a preemption point. When the run is stopping hard (a verdict, a
    failure elsewhere, a dead worker) the wait gives up and the check is skipped: the
    run's outcome is no longer this check's.
    """

    def __init__(
        self, words: Any, block: BlockLayout, wid: int, glob: int,
        count: Callable[[str], None] | None = None,
    ) -> None:
        self.words = words
        self.count = count  # Kernel.count: stop_machine_checks / _skipped in the events
        self.lock = block.stop_lock
        self.me = wid + 1
        self.mine = block.cw(wid, W_INSTEP)
        self.others = [block.cw(w, W_INSTEP) for w in range(block.workers) if w != wid]
        self.glob = glob
        self.stops = 0  # checks run with the world stopped (for the tests)

    def _counted(self, event: str) -> None:
        if self.count is not None:
            self.count(event)

    def _ending(self) -> bool:
        load = self.words.load
        return bool(load(self.glob + G_STOP) >= STOP_HARD or load(self.glob + G_FAILED))

    def _clear(self, w: int) -> bool:
        return not self.words.load(w)

    def _spin_until(self, done: Callable[[], bool]) -> bool:
        """Spin (yielding the CPU after a while) until ``done()``; False when the run
        is stopping hard meanwhile (the wait gives up)."""
        n = 0
        while not done():
            n += 1
            if n >= _SPIN_BEFORE_YIELD:
                os.sched_yield()
                if self._ending():
                    return False
        return True

    @contextlib.contextmanager
    def __call__(self) -> Iterator[bool]:
        words = self.words
        cas = words.cas
        if not cas(self.lock, 0, self.me):
            words.store(self.mine, 0)  # parked at this check while another check runs
            if not self._spin_until(lambda: cas(self.lock, 0, self.me)):
                self._counted("stop_machine_skipped")
                yield False
                return
            words.store(self.mine, 1)
        try:
            for w in self.others:
                if not self._spin_until(functools.partial(self._clear, w)):
                    self._counted("stop_machine_skipped")
                    yield False
                    return
            self.stops += 1
            self._counted("stop_machine_checks")
            yield True
        finally:
            words.store(self.lock, 0)

    def wait_to_step(self) -> bool:
        """Called before each step: mark this worker inside a step, unless a check of
        another worker has the world stopped (then wait for it). False: the run is
        stopping hard, take no step."""
        words = self.words
        words.store(self.mine, 1)
        if not words.load(self.lock):
            return True
        words.store(self.mine, 0)
        n = 0
        while True:
            if not words.load(self.lock):
                words.store(self.mine, 1)
                if not words.load(self.lock):
                    return True
                words.store(self.mine, 0)
            n += 1
            if n >= _SPIN_BEFORE_YIELD:
                os.sched_yield()
                if self._ending():
                    return False

    def step_done(self) -> None:
        self.words.store(self.mine, 0)


def _cycle(oplist: Sequence[tuple[Any, ...]], limit: int | None) -> Iterator[tuple[Any, ...]]:
    """The actor's operation list, repeated; at most ``limit`` operations."""
    n = 0
    while oplist and (limit is None or n < limit):
        for op in oplist:
            if limit is not None and n >= limit:
                return
            n += 1
            yield op


class Driver:
    """Drives one worker's actors. Built inside the worker process."""

    def __init__(self, spec: WorkerSpec, buf: Any, conn: Any) -> None:
        from pagerace.core.machine._atomicwords import AtomicWords

        from ..runner import build_model

        self.spec = spec
        self.conn = conn
        self.words = AtomicWords(buf)
        geo = spec.workload.geometry
        self.state = State(Layout(geo), buf=buf, words=self.words, init=False)
        m = build_model(spec.workload, spec.variant, spec.bugs, spec.seed, state=self.state)
        self.k = m.kernel
        self.actors = m.actors
        self.k.actors = m.actors
        self.k.clock = lambda: time.monotonic_ns() // 1000  # microseconds
        self.ticket = -1
        self.k.step_hook = lambda: self.ticket
        self.k.hw_lock = HwLock(self.words, spec.block.hw, geo.pages_per_mm, spec.wid + 1)
        self.k.wq_lock = WqLock(self.words, self.state.layout.GLOB + G_WQ_LOCK, spec.wid + 1)
        self.stop_machine = StopMachine(
            self.words, spec.block, spec.wid, self.state.layout.GLOB, count=self.k.count
        )
        self.k.hooks["stop_machine"] = self.stop_machine
        self.gens = {aid: program(self.k, m.actors[aid], _cycle(m.ops[aid], spec.ops)) for aid in spec.actors}
        self.live = list(spec.actors)
        self.blocked: dict[int, Block] = {}
        self.sites: dict[str, int] = {}
        lay = self.state.layout
        self.glob = lay.GLOB
        self.abase = lay.ACTOR
        b = spec.block
        self.cw = b.cw(spec.wid, 0)
        self.ring = b.ring(spec.wid)
        self.cap = b.ring_entries
        self.count = 0
        self.steps = 0
        self.stream = Stream([spec.seed, spec.wid, 0x9E27])

    # ------------------------------------------------------------------------------
    def _site_code(self, site: str) -> int:
        code = self.sites.get(site)
        if code is None:
            code = self.sites[site] = (self.spec.wid << 20) | (len(self.sites) + 1)
            self.conn.send(("site", code, site))
        return code

    def _finish(self, aid: int) -> None:
        self.gens[aid].close()
        self.live.remove(aid)
        self.blocked.pop(aid, None)
        self.words.store(self.abase + aid * ACTOR_WORDS + A_STATE, ACTOR_DONE)

    def _perturb(self) -> None:
        r = self.stream.random()
        if r >= self.spec.perturb:
            return
        if self.stream.random() < 0.5:
            for _ in range(self.stream.below(200)):
                pass
        else:
            os.sched_yield()

    def _step(self, aid: int) -> None:
        words = self.words
        a = self.actors[aid]
        aw = self.abase + aid * ACTOR_WORDS
        sm = self.stop_machine
        # StopMachine.wait_to_step's fast path, inlined (hot): in a step, then no check
        words.store(sm.mine, 1)
        if words.load(sm.lock) and not sm.wait_to_step():
            return  # the run is stopping hard while another worker's check runs
        if a.idle:
            words.store(aw + A_STATE, ACTOR_RUNNING)
        try:
            req = self.gens[aid].send(None)
        except StopIteration:
            self._finish(aid)
            return
        finally:
            t = words.fetch_add(self.glob + G_TICKET, 1)
            self.ticket = t
            words.store(self.ring + self.count % self.cap, (t << 16) | aid)
            self.count += 1
            words.store(self.cw + W_COUNT, self.count)
            words.store(sm.mine, 0)  # StopMachine.step_done, inlined (hot)
        self.steps += 1
        words.store(aw + A_STEPS, words.load(aw + A_STEPS) + 1)
        words.store(self.cw + W_STEPS, self.steps)
        if req is None:
            if a.idle:
                words.store(aw + A_STATE, ACTOR_IDLE)
            elif self.spec.perturb and not self.spec.exact_trace:
                self._perturb()
        elif type(req) is Block:
            self.blocked[aid] = req
            words.store(aw + A_WAIT_SITE, self._site_code(req.site))
        else:
            from ..engine import innermost

            fn, path, line = innermost(self.gens[aid])
            raise RuntimeError(
                f"{a.name} yielded {req!r} from {fn} ({path}:{line}); kernel paths may "
                "only yield None or a Block"
            )

    def _runnable(self, aid: int, stop: int, pause: int) -> bool:
        """Whether actor ``aid`` may take a step now (not finished with its operations,
        not parked at a quiet point, not waiting); a wait that ended is forgotten."""
        a = self.actors[aid]
        ops = self.spec.ops
        if a.idle and (stop or pause or (ops is not None and a.progress >= ops)):
            return False
        req = self.blocked.get(aid)
        if req is not None:
            if self.words.load(req.word) & req.mask:
                return False
            del self.blocked[aid]
        return True

    def _exact_turn(self, stop: int, pause: int) -> bool:
        """``exact_trace``: a turn under the run's step lock, which no other worker's
        step can overlap, so the ticket order is the order in which the steps ran. The
        turn runs this worker's actors round robin for 1 to ``EXACT_TURN`` steps (drawn
        from the worker's stream: fewer lock hand-offs than one step a turn, and turns of
        varied length). Whether an actor may run is tested under the lock: another
        worker's step may have taken what a waiter waits for since the caller looked.

        Returns:
            whether any actor ran.
        """
        words = self.words
        serving = self.spec.block.step_lock
        # A ticket lock: first come, first served. With a plain spin lock one worker
        # kept it while its actor spun on a trylock that the other worker's actor held,
        # and the watchdog took that starvation for a livelock (thp-compound, v7).
        me = words.fetch_add(serving + 1, 1)
        n = 0
        while words.load(serving) != me:
            n += 1
            if n >= _SPIN_BEFORE_YIELD:
                os.sched_yield()
                if n & 1023 == 0 and words.load(self.glob + G_STOP) >= STOP_HARD:
                    return False  # the run is over: nobody waits for this turn
        ran = 0
        try:
            budget = 1 + self.stream.below(EXACT_TURN)
            while ran < budget:
                before = ran
                for aid in tuple(self.live):
                    if ran >= budget:
                        break
                    if self._runnable(aid, stop, pause):
                        self._step(aid)
                        ran += 1
                if ran == before:
                    break
        finally:
            words.store(serving, me + 1)
        if ran and self.spec.perturb:
            self._perturb()  # after the lock: a delay under it would only stall the others
        return ran > 0

    def _pause(self, epoch: int) -> None:
        """Every actor is idle: acknowledge the quiet point and wait until it ends."""
        words = self.words
        words.store(self.cw + W_STATE, WS_PAUSED)
        words.store(self.cw + W_ACK, epoch)
        g = self.glob
        while words.load(g + G_PAUSE) == epoch and not words.load(g + G_STOP):
            time.sleep(0.0005)
        words.store(self.cw + W_STATE, WS_RUNNING)

    def run(self) -> None:
        words = self.words
        load = words.load
        g = self.glob
        actors = self.actors
        blocked = self.blocked
        spins = 0
        ops = self.spec.ops
        exact = self.spec.exact_trace
        words.store(self.cw + W_PID, os.getpid())
        words.store(self.cw + W_STATE, WS_RUNNING)
        while self.live:
            stop = load(g + G_STOP)
            if stop >= STOP_HARD or load(g + G_FAILED):
                return
            pause = load(g + G_PAUSE)
            ran = False
            for aid in tuple(self.live):
                a = actors[aid]
                if a.idle:
                    if stop or (ops is not None and a.progress >= ops):
                        self._finish(aid)
                        continue
                    if pause:
                        continue
                req = blocked.get(aid)
                if req is not None:
                    if load(req.word) & req.mask:
                        continue
                    if exact:
                        ran = True  # someone can run: take a turn below
                        continue
                    del blocked[aid]
                if exact:
                    ran = True
                    continue
                self._step(aid)
                ran = True
            if exact and ran:
                ran = self._exact_turn(stop, pause)
            if ran:
                spins = 0
                continue
            if pause and load(self.cw + W_ACK) != pause and all(actors[i].idle for i in self.live):
                self._pause(pause)
                continue
            spins += 1
            words.store(self.cw + W_SPIN, spins)
            if spins >= _SPIN_BEFORE_YIELD:
                os.sched_yield()
                if spins & 1023 == 0 and (
                    os.getppid() != self.spec.parent or time.monotonic() > self.spec.deadline
                ):
                    return

    def report(self) -> dict[str, Any]:
        """What the parent merges: statistics, counters, and where each actor stands."""
        from ..engine import innermost

        acts = {}
        for aid in self.spec.actors:
            a = self.actors[aid]
            gen = self.gens[aid]
            where = ""
            if gen.gi_frame is not None:
                fn, _path, line = innermost(gen)
                where = f"{fn}:{line}"
            acts[aid] = {
                "progress": a.progress,
                "idle": a.idle,
                "op": a.op,
                "site": a.site,
                "where": where,
                "held": {self.k.lock_name(w): s for w, s in sorted(a.held.items())},
                "blocked_on": repr(self.blocked[aid]) if aid in self.blocked else "",
            }
        return {
            "wid": self.spec.wid,
            "stats": self.k.stats,
            "events": self.k.events,
            "outcomes": [[k[0], k[1], v] for k, v in self.k.outcomes.items()],
            "steps": self.steps,
            "actors": acts,
        }

    def close(self) -> None:
        # Generators stopped in the middle of an operation are not closed: closing runs
        # their ``finally`` clauses (unlocks), which would change the shared state after
        # the verdict. They stay referenced until the process exits (``os._exit``).
        _ABANDONED.extend(self.gens.values())
        self.gens = {}
        self.state.close()


def worker_main(spec: WorkerSpec, shm: Any, conn: Any) -> None:
    """The worker process's entry point (forked: ``shm`` is the parent's mapping)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C for the run
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    name_worker_process(spec.parent, spec.wid)
    drv = None
    cw = spec.block.cw(spec.wid, 0)
    try:
        drv = Driver(spec, shm.buf, conn)
        try:
            drv.run()
            drv.words.store(cw + W_STATE, WS_DONE)
            conn.send(("done", drv.report()))
        except InvariantViolation as exc:
            drv.words.cas(drv.glob + G_FAILED, 0, drv.ticket + 1)
            drv.words.store(cw + W_STATE, WS_FAILED)
            # The failing step's own ticket (taken as the step ended, after the check).
            failure = dataclasses.replace(exc.failure, step=drv.ticket)
            conn.send(("failure", failure.to_json(), drv.report()))
    except BaseException:
        if drv is not None:
            drv.words.store(cw + W_STATE, WS_ERROR)
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", traceback.format_exc()))
    finally:
        if drv is not None:
            drv.close()
        conn.close()

"""The deterministic engine: every actor a generator in one process, a seeded
scheduler choosing who runs at each preemption point.

The loop is SimPy's ``Environment.step`` shape: pick an actor, ``send`` into its
generator, look at what it yielded. ``None`` is a plain preemption point; a
:class:`~pagerace.core.machine.kernel.Block` parks the actor until the lock word it names
changes. Anything else is our bug, reported with the file and line that yielded it.

Oracles the engine runs itself:

- deadlock: every live actor is blocked, or a new waiter closes a cycle in the
  waits-for graph (reported with the actors, locks, pages and call sites);
- livelock: one actor ran ``livelock_steps`` of its own steps without finishing an
  operation while it never blocked;
- quiet points: whenever every live actor is idle (between operations), at most every
  ``check_every`` steps, and always at the end, the global invariants run.

With the CPU model (``Kernel.cpus``), kworkers are daemons (the run ends when every other
actor is done) and, under ``PREEMPT_NONE`` / ``_VOLUNTARY``, an actor in the middle of an
operation keeps its CPU across plain preemption points (docs/internals.md).

The same (workload, variant, seed, strategy) gives the same schedule, the same final
state and so the same fingerprint, bit for bit.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import operator
import time
from array import array
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from math import floor
from typing import Any

import numpy as np

from ..core.machine.errors import (
    Failure,
    FailureKind,
    HarnessInternalError,
    InvariantViolation,
)
from ..core.machine.kernel import RESCHED, Actor, Block, Kernel
from ._rng import Stream
from .schedulers import RandomWalk, RoundRobin, Scheduler, StickyWalk

# Steps the schedule buffer grows by (4 bytes each).
_SCHEDULE_CHUNK = 1024


class Outcome(str, enum.Enum):
    CLEAN = "clean"  # every actor finished, every check passed
    FAILED = "failed"  # an oracle fired
    BUDGET = "budget"  # the step budget ran out first (not a failure)
    INTERRUPTED = "interrupted"  # SIGINT/SIGTERM cut the run short (not a failure, not clean)
    KILLED = "killed"  # a worker process was killed from outside (a harness event, not a failure)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Limits:
    """Budgets of one run.

    Attributes:
        max_steps: stop (outcome ``budget``) after this many preemption points.
        livelock_steps: an actor's own steps without finishing an operation before it is
            reported as livelocked.
        check_every: run the global invariants at a quiet point at most every this many
            steps (0: only at the end).
    """

    max_steps: int = 200_000
    livelock_steps: int = 20_000
    check_every: int = 2_000


@dataclass
class RunResult:
    outcome: Outcome
    failure: Failure | None
    steps: int
    schedule: array
    fingerprint: str
    elapsed: float
    scheduler: dict[str, Any]
    preemptions: int = 0
    quiet_checks: int = 0
    fair_turns: int = 0  # turns the livelock oracle gave to actors a scheduler starved
    # steps while at least two actors other than kworkers were live (PCT's useful k:
    # a priority change point after that has no other actor to let through)
    shared_steps: int = 0
    trace: list[tuple[int, int, str, str]] = field(default_factory=list)


def innermost(gen: Generator[Any, Any, Any]) -> tuple[str, str, int]:
    """(function, file, line) of the innermost generator a ``yield from`` chain is in."""
    g: Any = gen
    while getattr(g, "gi_yieldfrom", None) is not None and hasattr(g.gi_yieldfrom, "gi_code"):
        g = g.gi_yieldfrom
    frame = g.gi_frame
    line = frame.f_lineno if frame is not None else -1
    return g.gi_code.co_name, g.gi_code.co_filename, line


def _schedule_array(ids: list[int]) -> array:
    """``array("i", ids)`` (the schedule), made through ``bytes`` when every id fits in
    one (a C loop of a few instructions an entry, not ``PyArg_Parse`` per entry)."""
    try:
        small = bytes(ids)
    except ValueError:  # an actor id of 256 or more
        return array("i", ids)
    return array("i", np.frombuffer(small, dtype=np.uint8).astype(np.int32).tobytes())


def _switches(schedule: array) -> int:
    """Steps at which another actor ran than at the step before."""
    s = np.frombuffer(schedule, dtype=np.int32) if schedule.itemsize == 4 else np.array(schedule)
    return int(np.count_nonzero(s[1:] != s[:-1]))


def _kept_off(hold: list[int], on_cpu: list[int]) -> int:
    """The actors a held CPU keeps off it (a mask): every other actor of each CPU whose
    ``hold`` is an actor."""
    m = 0
    for cpu, h in enumerate(hold):
        if h >= 0:
            m |= on_cpu[cpu] & ~(1 << h)
    return m


def cycle_through(start: int, owner_awaited: Callable[[int], int]) -> list[int]:
    """The cycle through ``start`` of a waits-for graph in which each actor waits for at
    most one owner, in waiting order from ``start``, or [] if ``start`` is on none (it
    waits for nothing, for a free lock, or leads into a cycle it is not part of). A
    cycle of one is an actor waiting for a lock it holds itself.

    ``owner_awaited(actor)``: the owner of the lock the actor waits for, negative when
    it waits for none. Both engines find their deadlock cycles with it (the parallel
    one through :func:`pagerace.harness.parallel.watchdog.find_cycles`)."""
    seen = [start]
    cur = start
    while True:
        nxt = owner_awaited(cur)
        if nxt < 0:
            return []
        if nxt == start:
            return seen
        if nxt in seen:
            return []
        seen.append(nxt)
        cur = nxt


class DeterministicEngine:
    """Runs actors against a kernel model under a scheduler.

    Args:
        kernel: the model (its state already built).
        actors: the actors, ids ``0..n-1`` in order.
        programs: one generator per actor (its program).
        scheduler: the strategy.
        seed: seeds the engine's stream (the only source of scheduling randomness).
        limits: budgets.
        invariants: the global check, called with the kernel at quiet points and at the
            end (``final=True``); raises :class:`InvariantViolation`.
        trace: record (step, actor, kernel function, call site) per step, for the
            readable step list of an artifact.
    """

    def __init__(
        self,
        kernel: Kernel,
        actors: list[Actor],
        programs: list[Generator[Any, Any, Any]],
        scheduler: Scheduler,
        seed: int,
        limits: Limits = Limits(),
        invariants: Callable[..., None] | None = None,
        trace: bool = False,
    ) -> None:
        if len(actors) != len(programs):
            raise HarnessInternalError("one program per actor")
        self.k = kernel
        self.actors = actors
        self.programs = programs
        self.scheduler = scheduler
        self.seed = seed
        self.limits = limits
        self.invariants = invariants
        self.tracing = trace
        self.step = 0
        self._blocked: dict[int, Block] = {}
        # The kernel reads the clock at every lock taken and released: a C-level
        # callable (attrgetter bound by partial) instead of a Python method.
        clock = functools.partial(operator.attrgetter("step"), self)
        kernel.clock = clock
        kernel.step_hook = clock
        kernel.actors = actors

    # ------------------------------------------------------------------------------
    def run(self) -> RunResult:
        k = self.k
        actors = self.actors
        progs = self.programs
        limits = self.limits
        sched = self.scheduler
        stream = Stream([self.seed, 0x5EED])
        sched.start(len(actors), stream)
        choose = sched.choose
        # Who runs: ``mode`` 1 the random walk (the default strategy), 2 the sticky walk,
        # 3 round robin (the other two of ``mix``), made here inline with the same
        # choices as their ``choose`` from the same stream (a call per step is a large
        # part of a step); 0 any other strategy's ``choose``; 4 the livelock oracle's
        # fair round robin (for ``fair_until`` steps, then ``inline`` again).
        kind = type(sched)
        inline = (
            1 if kind is RandomWalk else 2 if kind is StickyWalk else 3 if kind is RoundRobin
            else 0
        )
        mode = inline
        # The sticky walk's and round robin's state (StickyWalk._last / _switch,
        # RoundRobin._cur / _left / quantum).
        s_last = -1
        s_switch = sched._switch if inline == 2 else 1.0  # type: ignore[attr-defined]
        rr_cur = -1
        rr_left = 0
        rr_quantum = sched.quantum if inline == 3 else 1  # type: ignore[attr-defined]
        # Their draws come straight from the stream's batch (Stream.random without the
        # call): ``rbuf[ri]`` is the stream's next number.
        rbuf: list[float] = []
        ri = rn = 0
        # The schedule is written by index into a list grown in chunks (no call per
        # step) and made the array of the steps taken at the end.
        sched_buf = [0] * _SCHEDULE_CHUNK
        cap = _SCHEDULE_CHUNK
        tracing = self.tracing
        trace: list[tuple[int, int, str, str]] = []
        live = list(range(len(actors)))
        n_live = len(live)
        # Sets of actors are bit masks (bit ``aid``): the live ones, the blocked ones
        # whose lock word still has the bit (``stuck``), those a held CPU keeps off it
        # (``excl``), the runnable ones (``m``).
        live_mask = (1 << n_live) - 1
        stuck = 0
        excl = 0
        # kworkers (daemons) never finish: the run ends when every other actor has.
        main_left = sum(1 for a in actors if not a.daemon)
        # Under PREEMPT_NONE / _VOLUNTARY an actor in the middle of an operation keeps
        # its CPU across a plain preemption point: the CPU's other actors (its kworker
        # too) run only once it sleeps, reaches a voluntary point or returns to user
        # space (finishes the operation). ``hold[cpu]``: that actor, or -1.
        hold_cpus = k.cpus > 0 and k.preemption != "full"
        hold = [-1] * (max(a.cpu for a in actors) + 1 if actors else 0)
        cpu_of = [a.cpu for a in actors]
        on_cpu = [0] * len(hold)  # the actors of each CPU (a mask)
        for a in actors:
            on_cpu[a.cpu] |= 1 << a.id
        fair_until = -1  # steps before this run under a fair round robin
        fair_given: dict[int, int] = {}  # actor -> its progress count at its fair window
        # actor -> (failed trylocks, contended) per site when its fair window began: what
        # grew while it spun names its loop in the livelock's message
        fair_stats: dict[int, dict[str, tuple[int, int]]] = {}
        fair_turns = 0
        blocked: dict[int, Block] = {}
        self._blocked = blocked  # the deadlock report names where each waiter waits
        load = k.words.load
        # Over the C extension's AtomicWords, the blocked actors' words are tested in one
        # call per step (any other backend, e.g. the dependency recorder, sees the loads).
        blocked_mask = (
            getattr(k.words, "blocked_mask", None)
            if type(k.words).__name__ == "AtomicWords" and len(actors) <= 63
            else None
        )
        resched = RESCHED
        failure: Failure | None = None
        step_failed = False
        outcome = Outcome.CLEAN
        max_steps = limits.max_steps
        # The next step at which the budget, the schedule buffer or the fair window
        # needs a look.
        mark = min(cap, max_steps)
        livelock = limits.livelock_steps
        invariants = self.invariants
        check_every = limits.check_every if invariants is not None else 0
        # The first step after which a quiet point runs the invariants (never without).
        next_check = check_every if check_every else max_steps + 1
        quiet_checks = 0
        checking = False  # a quiet-point check runs (an exception then is not a step's)
        # Preemptions (a switch away from an actor that could have gone on) are the
        # switches of the schedule (counted at the end) but those away from an actor that
        # could not: ``not_preempted`` counts them as they happen.
        not_preempted = 0
        shared = -1
        t0 = time.perf_counter()
        step = 0
        try:
            # ``running``: some actor other than a kworker is live. ``slow``: the
            # runnable set may not be ``live`` (some actor blocked or kept off its CPU,
            # or one finished): the next step works it out and clears ``slow`` when it
            # is ``live`` again. Until then ``runnable``, ``n``, ``m`` stay ``live``'s.
            # (Plain booleans: tested in a step without a call.)
            running = main_left > 0 and n_live > 0
            slow = False
            runnable = live
            n = n_live
            m = live_mask
            last_m = -1  # the mask last_runnable was built for
            last_runnable = live
            while running:
                if step >= mark:
                    if step >= max_steps:
                        outcome = Outcome.BUDGET
                        break
                    if step >= cap:
                        sched_buf += [0] * _SCHEDULE_CHUNK
                        cap += _SCHEDULE_CHUNK
                    if mode == 4 and step >= fair_until:
                        mode = inline
                    mark = min(cap, max_steps, fair_until if mode == 4 else max_steps)
                if slow:
                    if blocked:
                        # Which blocked actors still wait (their lock word still has the
                        # bit).
                        if blocked_mask is not None:
                            stuck = blocked_mask(blocked)  # the loop below in one C call
                        else:
                            stuck = 0
                            for b in blocked:
                                rq = blocked[b]
                                if load(rq.word) & rq.mask:
                                    stuck |= 1 << b
                    else:
                        stuck = 0
                    m = live_mask & ~(stuck | excl)
                    if m == live_mask:
                        runnable = live
                        n = n_live
                        if not blocked and not excl:
                            slow = False
                    else:
                        if m != last_m:
                            last_m = m
                            last_runnable = [b for b in live if m >> b & 1]
                        runnable = last_runnable
                        n = len(runnable)
                        if not n:
                            # (A CPU's holder is never blocked: it lets the CPU go when
                            # it sleeps. So only blocked actors empty the list.) An idle
                            # kworker waiting for work is not part of the report.
                            waiting = [
                                b for b in blocked if not (actors[b].daemon and actors[b].idle)
                            ]
                            failure = self._deadlock(sorted(waiting), everyone=True)
                            break
                    if step and not m >> sched_buf[step - 1] & 1:
                        not_preempted += 1  # the last to run cannot go on
                if mode == 1:  # RandomWalk.choose
                    if n > 1:
                        if ri == rn:
                            rbuf = stream.next_batch()
                            ri, rn = 0, len(rbuf)
                        aid = runnable[floor(rbuf[ri] * n)]  # int(): the same for >= 0
                        ri += 1
                    else:
                        aid = runnable[0]
                elif mode == 2:  # StickyWalk.choose
                    if n > 1:
                        if ri == rn:
                            rbuf = stream.next_batch()
                            ri, rn = 0, len(rbuf)
                        r = rbuf[ri]
                        ri += 1
                        if s_last >= 0 and m >> s_last & 1:
                            if r >= s_switch:
                                aid = s_last
                            else:
                                r /= s_switch  # uniform in [0, 1) again, for the pick
                                j = floor(r * n)
                                aid = s_last = runnable[j if j < n else n - 1]
                        else:
                            j = floor(r * n)
                            aid = s_last = runnable[j if j < n else n - 1]
                    else:
                        aid = s_last = runnable[0]
                elif mode == 3:  # RoundRobin.choose
                    if rr_left > 0 and rr_cur >= 0 and m >> rr_cur & 1:
                        rr_left -= 1
                        aid = rr_cur
                    else:
                        aid = runnable[0]
                        for b in runnable:
                            if b > rr_cur:
                                aid = b
                                break
                        rr_cur = aid
                        rr_left = rr_quantum - 1
                elif mode == 4:  # the fair window: the next actor after the last
                    fair_turns += 1
                    prev = sched_buf[step - 1] if step else -1
                    aid = runnable[0]
                    for b in runnable:
                        if b > prev:
                            aid = b
                            break
                else:
                    aid = choose(runnable, step)
                sched_buf[step] = aid
                a = actors[aid]
                if slow and aid in blocked:  # (blocked is empty unless slow)
                    del blocked[aid]
                self.step = step
                # One step: resume the program to its next preemption point. ``for``
                # rather than ``send``: no method call, and the end is the ``else``.
                for req in progs[aid]:  # noqa: B007 (req is the step's yield)
                    break
                else:
                    live.remove(aid)
                    live_mask &= ~(1 << aid)
                    n_live -= 1
                    slow = True
                    if not a.daemon:
                        main_left -= 1
                        if main_left == 1:
                            shared = step + 1
                    running = main_left > 0 and n_live > 0
                    req = None
                    if hold_cpus and hold[cpu_of[aid]] != -1:
                        hold[cpu_of[aid]] = -1
                        excl = _kept_off(hold, on_cpu)
                step += 1
                if tracing:
                    trace.append(self._trace_entry(step - 1, a, progs[aid], req))
                if hold_cpus and live_mask >> aid & 1:
                    # schedule() at a sleep or a voluntary point, or back to user space.
                    h = -1 if req is not None or a.idle else aid
                    if hold[cpu_of[aid]] != h:
                        hold[cpu_of[aid]] = h
                        excl = _kept_off(hold, on_cpu)
                        slow = True
                if req is not None:
                    if req is resched:
                        pass
                    elif type(req) is Block:
                        if load(req.word) & req.mask:
                            blocked[aid] = req
                            slow = True
                            cyc = self._cycle_from(aid, blocked)
                            if cyc:
                                failure = self._deadlock(cyc, everyone=False)
                                break
                        continue
                    else:
                        fn, path, line = innermost(progs[aid])
                        raise HarnessInternalError(
                            f"{a.name} yielded {req!r} from {fn} ({path}:{line}); kernel "
                            "paths may only yield None or a Block"
                        )
                s = a.steps_since_progress + 1
                a.steps_since_progress = s
                if s > livelock:
                    # Only a fair schedule can show a livelock: an actor that spins while
                    # one it waits for never gets the CPU (PCT's strict priorities do
                    # that) is starved, not livelocked. On suspicion, run one more window
                    # under a fair round robin; only an actor that still makes no progress
                    # through it is livelocked.
                    if fair_given.get(aid) != a.progress:
                        fair_given[aid] = a.progress
                        fair_stats[aid] = {site: (st[3], st[1]) for site, st in self.k.stats.items()}
                        fair_until = step + livelock
                        mode = 4
                        mark = min(cap, max_steps, fair_until)
                        a.steps_since_progress = 0
                        continue
                    failure = self._livelock(a, fair_stats.get(aid, {}), progs[aid], livelock)
                    break
                if step >= next_check:
                    for i in live:
                        if not actors[i].idle:
                            break
                    else:  # every live actor is idle: a quiet point
                        next_check = step + check_every
                        quiet_checks += 1
                        checking = True
                        invariants(k, final=False)  # type: ignore[misc]
                        checking = False
            self.step = step
            if failure is None and outcome is Outcome.CLEAN and invariants is not None:
                quiet_checks += 1
                checking = True
                invariants(k, final=True)
        except InvariantViolation as exc:
            failure = exc.failure
            # A step's program raised it (its schedule entry is written), or a check.
            if not checking:
                step_failed = True
        if failure is not None:
            outcome = Outcome.FAILED
        elapsed = time.perf_counter() - t0
        schedule = _schedule_array(sched_buf[: step + 1 if step_failed else step])
        # Fingerprint the state as the run left it, before closing the programs: closing
        # runs their ``finally`` clauses (mmap_read_unlock...), which touch the state.
        fingerprint = self._fingerprint(schedule, failure)
        for g in progs:
            # A path's cleanup after a failure is moot: the verdict is already taken.
            try:  # noqa: SIM105 (a context manager a program costs three Python calls)
                g.close()
            except Exception:
                pass
        return RunResult(
            outcome=outcome,
            failure=failure,
            steps=step,
            schedule=schedule,
            fingerprint=fingerprint,
            elapsed=elapsed,
            scheduler=sched.describe(),
            preemptions=_switches(schedule) - not_preempted,
            quiet_checks=quiet_checks,
            fair_turns=fair_turns,
            trace=trace,
            shared_steps=step if shared < 0 else shared,
        )

    # ------------------------------------------------------------------------------
    def _fingerprint(self, schedule: array, failure: Failure | None) -> str:
        h = hashlib.blake2b(digest_size=12)
        h.update(schedule.tobytes())
        h.update(self.k.s.digest())
        if failure is not None:
            h.update(failure.kind.value.encode())
        return h.hexdigest()

    def _trace_entry(
        self, step: int, a: Actor, gen: Generator[Any, Any, Any], req: Any
    ) -> tuple[int, int, str, str]:
        if getattr(gen, "gi_frame", None) is None:
            return (step, a.id, "(done)", "")
        fn, _path, line = innermost(gen)
        what = f"waits on {req.kind}:{req.target} at {req.site}" if type(req) is Block else ""
        return (step, a.id, f"{fn}:{line}", what or a.site)

    def _cycle_from(self, start: int, blocked: dict[int, Block]) -> list[int]:
        """The waits-for cycle through ``start``, or [] if there is none."""

        def owner_awaited(aid: int) -> int:
            req = blocked.get(aid)
            return -1 if req is None else self.k.blocked_by(aid, req.lock)

        return cycle_through(start, owner_awaited)

    def _deadlock(self, ids: list[int], everyone: bool) -> Failure:
        k = self.k
        parts = []
        actors, pages, sites, locks = [], [], [], []
        waiters = {}
        for aid in ids:
            a = self.actors[aid]
            wword, _mask = k.waits_for(a)
            owner = k.blocked_by(aid, wword)
            lock = k.lock_name(wword)
            oname = self.actors[owner].name if owner >= 0 else "nobody"
            held_site = self.actors[owner].held.get(wword, "?") if owner >= 0 else "-"
            req = self._blocked.get(aid)
            wsite = req.site if req is not None else "?"
            parts.append(
                f"{a.name} waits at {wsite} for {lock} held by {oname} (taken at {held_site})"
            )
            actors.append(a.name)
            locks.append(lock)
            if lock.startswith("page:"):
                pages.append(int(lock.split(":")[1]))
            waiters[a.name] = {
                "lock": lock, "owner": oname, "owner_site": held_site, "site": wsite
            }
            sites.append(held_site)
            if wsite not in sites:
                sites.append(wsite)
        for aid in ids:
            for s in self.actors[aid].held.values():
                if s not in sites:
                    sites.append(s)
        head = "every live actor is blocked" if everyone else "a cycle of waiters"
        failure = Failure(
            kind=FailureKind.DEADLOCK,
            message=f"{head}: " + "; ".join(parts),
            step=self.step,
            actors=tuple(actors),
            pages=tuple(pages),
            sites=tuple(sites),
            locks=tuple(locks),
            details={"waiters": waiters, "cycle": not everyone},
        )
        explain = k.hooks.get("all_blocked") if everyone else None
        if explain is not None:  # e.g. the eviction-liveness oracle (core/oracles/eviction.py)
            waits = {self.actors[aid].name: self._blocked.get(aid) for aid in ids}
            failure = explain(k, waits, failure)
        return failure

    def _livelock(
        self, a: Actor, before: dict[str, tuple[int, int]], gen: Generator[Any, Any, Any], window: int
    ) -> Failure:
        """The livelock of ``a``: where it spins (its innermost function now) and the sites
        whose failed trylocks (else contended acquisitions) grew during its last, fair
        window (``before``: both counts per site when the window began), with how much;
        a site that did not grow there is not named, however busy it was before (another
        actor's, finished or given up)."""
        tries, waits = [], []  # (run's total, grown in the window, site)
        for site, st in self.k.stats.items():
            t0, c0 = before.get(site, (0, 0))
            if st[3] > t0:
                tries.append((st[3], st[3] - t0, site))
            if st[1] > c0:
                waits.append((st[1], st[1] - c0, site))
        # the sites that grew, the run's busiest first: a failure's signature (its first
        # site, reports/failures.py) stays the same across seeds of one livelock
        tries.sort(key=lambda x: (-x[0], x[2]))
        waits.sort(key=lambda x: (-x[0], x[2]))
        if tries:
            worst = tries[:3]
            grew = ", ".join(f"{site} failed {n} trylocks" for _, n, site in worst)
        else:
            worst = waits[:3]
            grew = ", ".join(f"{site} contended {n} times" for _, n, site in worst)
        where = innermost(gen)[0] if getattr(gen, "gi_frame", None) is not None else "(done)"
        return Failure(
            kind=FailureKind.LIVELOCK,
            message=(
                f"{a.name} ran {a.steps_since_progress} steps in {a.op} without finishing it, "
                f"spinning in {where}"
                + (f"; in its last {window} steps under a fair schedule: {grew}" if grew else "")
            ),
            step=self.step,
            actors=(a.name,),
            sites=tuple(site for _, _, site in worst),
            details={"op": a.op, "steps": a.steps_since_progress, "where": where},
        )

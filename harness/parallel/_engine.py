"""The parallel engine's controller: the parent process of one run.

The parent builds the initial state in one shared-memory block, forks the workers,
and then only watches: it drains the workers' pipes and trace rings, polls the
:class:`~.watchdog.Watchdog`, runs the global invariants at quiet points, calls the
progress callback about once a second, and ends the run. Ending is a ladder, each rung
with a deadline, so the run always ends in bounded time with a verdict:

1. soft stop (``G_STOP`` = 1) at the end of the duration or on Ctrl-C: each actor
   finishes its current operation and stops at its next idle point;
2. hard stop (``G_STOP`` = 2) after a verdict, a worker's failure, a second signal, or
   ``stop_grace`` seconds of soft stop: workers return at their next loop turn;
3. SIGTERM, then SIGKILL, to any worker still alive ``hard_grace`` seconds later;
   every worker is joined.

Whatever happened, the ``finally`` clause reaps the workers, drops every view of the
block, closes and unlinks it, and puts the signal handlers back.

XX: the parent's waits-for graph cannot see mmap_lock readers (they are anonymous in the
shared word, as in the kernel), so a cycle through an mmap_lock held for read is found
as "blocked" by the stuck-worker check, a few seconds later, not as a cycle.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...core.machine.errors import (
    Failure,
    FailureKind,
    HarnessInternalError,
    InvalidOption,
    InvariantViolation,
)
from ...core.machine.kernel import Kernel, merge_stat
from ...core.machine.layout import (
    A_PROGRESS,
    A_STATE,
    A_WAIT_SITE,
    ACTOR_BLOCKED,
    ACTOR_DONE,
    ACTOR_IDLE,
    ACTOR_WORDS,
    G_FAILED,
    G_PAUSE,
    G_PROGRESS,
    G_STOP,
    G_TICKET,
    Layout,
)
from ...core.machine.state import State
from ...core.oracles.invariants import check_all
from ...core.variants import get_variant
from ...workloads import Workload
from ..engine import Outcome, RunResult
from ..pool import CRASH_SIGNALS
from ..runner import (
    RunRecord,
    build_model,
    build_state,
    limits_for,
    validate_variant_bugs,
    variant_workload,
)
from .shm import W_ACK, W_STATE, W_STEPS, WS_NAMES, BlockLayout, SharedBlock
from .trace import RingReader, merge, replay_ops
from .watchdog import Verdict, Watchdog, WatchdogConfig, psutil_sampler
from .worker import STOP_HARD, STOP_SOFT, WorkerSpec, worker_main

_POLL = 0.05


def _merge_stats(into: dict[str, list[int]], more: dict[str, list[int]]) -> None:
    for site, row in more.items():
        cur = into.get(site)
        if cur is None:
            into[site] = list(row)
        else:
            merge_stat(cur, row)


def _check_options(workers: int, duration: float, ops: int | None, perturb: float,
                   check_interval: float, timeout: float | None) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidOption(f"workers = {workers!r} is not valid; expected an integer >= 1")
    if not duration > 0:
        raise InvalidOption(f"duration = {duration!r} is not valid; expected seconds > 0")
    if ops is not None and (isinstance(ops, bool) or not isinstance(ops, int) or ops < 1):
        raise InvalidOption(f"ops = {ops!r} is not valid; expected an integer >= 1 or none")
    if not 0.0 <= perturb <= 1.0:
        raise InvalidOption(f"perturb = {perturb!r} is not valid; expected a rate in [0, 1]")
    if check_interval < 0:
        raise InvalidOption(f"check_interval = {check_interval!r} is not valid; expected seconds >= 0")
    if timeout is not None and not timeout > 0:
        raise InvalidOption(f"timeout = {timeout!r} is not valid; expected seconds > 0 or none")


def assign_actors(n_actors: int, workers: int) -> list[tuple[int, ...]]:
    """Actor ids per worker, dealt round robin (worker ``i`` gets ``i, i+W, ...``)."""
    return [tuple(range(wid, n_actors, workers)) for wid in range(workers)]


class _Signals:
    """SIGINT/SIGTERM handlers for the run (main thread only), restored afterwards."""

    def __init__(self) -> None:
        self.count = 0
        self.last = ""
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is signal.SIG_IGN:
                continue  # told to ignore it (a campaign worker: its parent decides)
            self._old[sig] = signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        self.count += 1
        self.last = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


class Controller:
    """One parallel run (use :func:`run_parallel`)."""

    def __init__(
        self,
        w: Workload,
        variant: str,
        bugs: tuple[str, ...],
        seed: int,
        workers: int,
        duration: float,
        ops: int | None,
        perturb: float,
        check_interval: float,
        timeout: float | None,
        progress: Callable[[dict[str, Any]], None] | None,
        watchdog: WatchdogConfig | None = None,
        stop_grace: float = 3.0,
        hard_grace: float = 1.5,
        exact_trace: bool = False,
    ) -> None:
        self.w = variant_workload(w, variant)  # v7: the geometry's thp tables
        self.variant = variant
        self.bugs = bugs
        self.seed = seed
        self.n_actors = w.n_actors()
        self.nw = min(workers, self.n_actors)
        self.duration = duration
        self.ops = ops
        self.perturb = perturb
        self.check_interval = check_interval
        self.timeout = timeout if timeout is not None else duration + 30.0
        self.progress_cb = progress
        limits = limits_for(w)
        self.wcfg = watchdog or WatchdogConfig(livelock_steps=limits.livelock_steps)
        self.stop_grace = stop_grace
        self.hard_grace = hard_grace
        self.exact_trace = exact_trace
        self.assign = assign_actors(self.n_actors, self.nw)
        self.signals = _Signals()
        # Filled by the run:
        self.failure: Failure | None = None
        self.verdict: Verdict | None = None
        self.stop_reason = ""
        self.reports: dict[int, dict[str, Any]] = {}
        self.errors: dict[int, str] = {}
        self.sites: dict[int, str] = {}
        self.quiet_checks = 0
        self._epoch = 0
        self.stats: dict[str, list[int]] = {}
        self.events: dict[str, int] = {}
        self.outcomes: dict[tuple[str, str], int] = {}
        # Set while the run goes on; dropped before the block is closed.
        self.watchdog: Any = None
        self.arr: Any = None
        self.reader: Any = None
        self.m: Any = None

    # ------------------------------------------------------------------------------
    def run(self) -> RunRecord:
        started = time.time()
        t0 = time.perf_counter()
        geo = self.w.geometry
        lay = Layout(geo)
        blk = BlockLayout(lay.words, self.nw, hw_words=geo.mms * geo.pages_per_mm)
        block = SharedBlock(blk.nbytes)
        self.block, self.blk = block, blk
        arr: np.ndarray | None = None
        state: State | None = None
        reader: RingReader | None = None
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        try:
            arr = np.frombuffer(block.buf, dtype=np.int64, count=blk.words)
            state = build_state(self.w, buf=block.buf)
            m = build_model(self.w, self.variant, self.bugs, self.seed, state=state)
            self.m = m
            m.kernel.actors = m.actors
            reader = RingReader(arr, blk)
            self.arr, self.reader = arr, reader
            self.signals.install()
            self._start_workers()
            self._loop(m.kernel)
            self._reap()
            reader.drain()
            final_ok = (
                self.failure is None
                and self.verdict is None
                and not self.errors
                and all(
                    int(arr[lay.ACTOR + a * ACTOR_WORDS + A_STATE]) != ACTOR_BLOCKED
                    for a in range(self.n_actors)
                )
                and all(r["actors"][aid]["idle"] for r in self.reports.values() for aid in r["actors"])
                and len(self.reports) == self.nw
            )
            if final_ok:
                try:
                    self.quiet_checks += 1
                    check_all(m.kernel, final=True)
                except InvariantViolation as exc:
                    self.failure = exc.failure
            return self._record(m, state, arr, reader, started, t0)
        except BaseException as exc:
            # The traceback's frames hold views of the block; drop their locals so the
            # block can close (MEASUREMENTS.md section 5).
            traceback.clear_frames(exc.__traceback__)
            raise
        finally:
            failing = sys.exc_info()[0] is not None
            self._reap()
            self.signals.restore()
            if reader is not None:
                reader.release()
            self.arr = None
            self.watchdog = None
            self.reader = None
            self.m = None
            if state is not None:
                state.close()
            del arr, state
            try:
                block.close_and_unlink()
            except BufferError:
                # Unlinked all the same; the mapping goes with the process. Do not hide
                # the exception that brought us here.
                if not failing:
                    raise

    # ------------------------------------------------------------------------------
    def _start_workers(self) -> None:
        import multiprocess

        ctx = multiprocess.get_context("fork")
        deadline = time.monotonic() + self.timeout + self.stop_grace + self.hard_grace + 5.0
        for wid in range(self.nw):
            spec = WorkerSpec(
                wid=wid,
                actors=self.assign[wid],
                workload=self.w,
                variant=self.variant,
                bugs=self.bugs,
                seed=self.seed,
                perturb=self.perturb,
                ops=self.ops,
                block=self.blk,
                parent=os.getpid(),
                deadline=deadline,
                exact_trace=self.exact_trace,
            )
            r, wconn = ctx.Pipe(duplex=False)
            p = ctx.Process(
                target=worker_main,
                args=(spec, self.block.shm, wconn),
                name=f"pagerace-worker-{wid}",
                daemon=True,
            )
            p.start()
            wconn.close()
            self.procs.append(p)
            self.conns.append(r)

    def _word(self, i: int) -> int:
        return int(self.arr[i])

    def _set_glob(self, g: int, v: int) -> None:
        self.m.kernel.words.store(self.m.state.layout.GLOB + g, v)

    def _glob(self, g: int) -> int:
        return self.m.kernel.words.load(self.m.state.layout.GLOB + g)

    def _drain(self) -> None:
        for wid, c in enumerate(self.conns):
            if c is None:
                continue
            try:
                while c.poll():
                    self._on_message(wid, c.recv())
            except (EOFError, OSError):
                c.close()
                self.conns[wid] = None

    def _on_message(self, wid: int, msg: tuple[Any, ...]) -> None:
        getattr(self, f"_on_{msg[0]}")(wid, *msg[1:])

    def _on_site(self, wid: int, code: int, name: str) -> None:
        self.sites[code] = name

    def _on_done(self, wid: int, report: dict[str, Any]) -> None:
        self.reports[wid] = report
        self.watchdog.finish(wid)

    def _on_failure(self, wid: int, failure: dict[str, Any], report: dict[str, Any]) -> None:
        self.reports[wid] = report
        self.watchdog.finish(wid)
        f = Failure.from_json(failure)
        # The first failure by ticket wins when two workers fail at once.
        if self.failure is None or f.step < self.failure.step:
            self.failure = f
            self.stop_reason = f"worker {wid} failed: {f.kind.value}"

    def _on_error(self, wid: int, tb: str) -> None:
        self.errors[wid] = tb
        self.watchdog.finish(wid)
        self.stop_reason = f"worker {wid} hit an internal error"

    # ------------------------------------------------------------------------------
    def _loop(self, k: Kernel) -> None:
        from multiprocess.connection import wait

        lay = self.m.state.layout
        arr = self.arr
        actor_rows = arr[lay.ACTOR : lay.ACTOR + self.n_actors * ACTOR_WORDS]
        words = k.words
        self.watchdog = Watchdog(
            self.wcfg,
            self.assign,
            read_actors=lambda: actor_rows.reshape(self.n_actors, ACTOR_WORDS).copy(),
            lock_owner=k.lock_owner,
            lock_held=lambda word, mask: bool(words.load(word) & mask),
            exitcode=lambda wid: self.procs[wid].exitcode,
            sample=psutil_sampler([p.pid for p in self.procs]),
            worker_steps=lambda wid: self._word(self.blk.cw(wid, W_STEPS)),
            clock=time.monotonic,
            names=[a.name for a in self.m.actors],
        )
        start = time.monotonic()
        self.t_start = start
        deadline = start + self.duration
        hard_deadline = start + self.timeout
        next_progress = start + 1.0
        next_check = start + self.check_interval if self.check_interval else float("inf")
        phase = 0  # 0 running, 1 soft stop, 2 hard stop
        t_phase = start
        sentinels = [p.sentinel for p in self.procs]
        seen_signals = 0
        while True:
            wait([c for c in self.conns if c is not None] + sentinels, timeout=_POLL)
            self._drain()
            self.reader.drain()
            now = time.monotonic()
            if all(p.exitcode is not None for p in self.procs):
                self._drain()
                break
            if self.signals.count > seen_signals:
                seen_signals = self.signals.count
                if not self.stop_reason:
                    self.stop_reason = f"interrupted ({self.signals.last})"
                want = STOP_SOFT if seen_signals == 1 else STOP_HARD
                if phase < want:
                    phase, t_phase = want, now
                    self._set_glob(G_STOP, want)
            if phase < 2 and (self.failure is not None or self.errors or self._glob(G_FAILED)):
                phase, t_phase = 2, now
                self._set_glob(G_STOP, STOP_HARD)
            if phase == 0 and now >= deadline:
                phase, t_phase = 1, now
                self.stop_reason = self.stop_reason or "duration reached"
                self._set_glob(G_STOP, STOP_SOFT)
            if self.verdict is None and self.failure is None and not self.errors:
                v = self.watchdog.poll()
                if v is not None and v.kind == "dead":
                    self._drain()  # a worker that said "done" just before exiting
                    if set(v.workers) <= self.watchdog.finished:
                        v = None
                if v is not None:
                    self.verdict = v
                    self.stop_reason = f"watchdog: {v.kind}"
                    if phase < 2:
                        phase, t_phase = 2, now
                        self._set_glob(G_STOP, STOP_HARD)
            if phase == 0 and now >= next_check:
                self._quiet_point(k)
                next_check = time.monotonic() + self.check_interval
            if phase == 1 and now - t_phase > self.stop_grace:
                phase, t_phase = 2, now
                self.stop_reason += f"; soft stop took over {self.stop_grace:.1f} s"
                self._set_glob(G_STOP, STOP_HARD)
            if now > hard_deadline and self.verdict is None and self.failure is None:
                self.verdict = self._timeout_verdict()
                self.stop_reason = "hard timeout"
                phase, t_phase = 2, now
                self._set_glob(G_STOP, STOP_HARD)
            if phase == 2 and now - t_phase > self.hard_grace:
                break
            if self.progress_cb is not None and now >= next_progress:
                next_progress = now + 1.0
                self.progress_cb(self._progress(now))
        if self.progress_cb is not None:
            self.progress_cb(self._progress(time.monotonic()))

    def _killed_from_outside(self) -> str:
        """The reason, when the watchdog found a worker dead of a signal sent from outside
        (SIGKILL, SIGTERM...; not a crash signal such as SIGSEGV, which is our bug); else
        ``""``."""
        v = self.verdict
        if v is None or v.kind != "dead":
            return ""
        code = v.details.get("exitcode")
        if not isinstance(code, int) or code >= 0:
            return ""
        if -code in CRASH_SIGNALS:
            wid = v.workers[0] if v.workers else -1
            raise HarnessInternalError(f"{v.message}: worker {wid} crashed (a bug in pagerace)")
        return f"{v.message} from outside; not a kernel failure"

    def _timeout_verdict(self) -> Verdict:
        table = self.watchdog.read_actors()
        blocked = tuple(a for a in range(self.n_actors) if table[a, A_STATE] == ACTOR_BLOCKED)
        return Verdict(
            "timeout",
            f"the run did not end within its hard timeout of {self.timeout:.1f} s",
            workers=tuple(range(self.nw)),
            actors=blocked,
        )

    def _quiet_point(self, k: Kernel) -> None:
        """Pause every worker between operations, run the global invariants, resume."""
        self._epoch += 1  # never reused: a skipped quiet point's stale acks cannot count
        epoch = self._epoch
        self._set_glob(G_PAUSE, epoch)
        limit = time.monotonic() + 1.0
        acked = False
        try:
            while time.monotonic() < limit:
                self._drain()
                acked = all(
                    wid in self.watchdog.finished
                    or self.procs[wid].exitcode is not None
                    or self._word(self.blk.cw(wid, W_ACK)) == epoch
                    for wid in range(self.nw)
                )
                if acked or self._glob(G_FAILED):
                    break
                time.sleep(0.001)
            if acked and not self._glob(G_FAILED):
                self.quiet_checks += 1
                try:
                    check_all(k, final=False)
                except InvariantViolation as exc:
                    self.failure = exc.failure
                    self.stop_reason = "quiet-point invariants"
        finally:
            self._set_glob(G_PAUSE, 0)

    def _progress(self, now: float) -> dict[str, Any]:
        elapsed = max(now - self.t_start, 1e-9)
        ops = self._glob(G_PROGRESS)
        lay = self.m.state.layout
        workers = []
        for wid, acts in enumerate(self.assign):
            wstate = WS_NAMES[self._word(self.blk.cw(wid, W_STATE))]
            wd = self.watchdog.state[wid]
            workers.append({
                "id": wid,
                "pid": self.procs[wid].pid,
                "state": wd if wd not in ("ok", "done") else wstate,
                "ops": sum(self._word(lay.ACTOR + a * ACTOR_WORDS + A_PROGRESS) for a in acts),
                "steps": self._word(self.blk.cw(wid, W_STEPS)),
            })
        return {
            "elapsed": round(elapsed, 3),
            "ops": ops,
            "ops_per_s": ops / elapsed,
            "steps": self._glob(G_TICKET),
            "failures": int(self.failure is not None or self.verdict is not None),
            "workers": workers,
        }

    def _reap(self) -> None:
        """Hard stop, then SIGTERM, then SIGKILL; join every worker."""
        procs = getattr(self, "procs", [])
        if not procs:
            return
        m = getattr(self, "m", None)
        if m is not None and getattr(self, "arr", None) is not None:
            with contextlib.suppress(Exception):
                self._set_glob(G_STOP, STOP_HARD)
        end = time.monotonic() + self.hard_grace
        for p in procs:
            p.join(max(0.0, end - time.monotonic()))
        for p in procs:
            if p.exitcode is None:
                p.terminate()
        end = time.monotonic() + self.hard_grace
        for p in procs:
            p.join(max(0.0, end - time.monotonic()))
        for p in procs:
            if p.exitcode is None:
                p.kill()
                p.join(5.0)
        if getattr(self, "arr", None) is not None:
            self._drain()
        for c in self.conns:
            if c is not None:
                c.close()
        self.conns = [None] * len(self.conns)
        self.procs_exitcodes = [p.exitcode for p in procs]
        for p in procs:
            with contextlib.suppress(ValueError):
                p.close()
        self.procs = []

    # ------------------------------------------------------------------------------
    def _failure_from_verdict(self, v: Verdict, step: int) -> Failure:
        names = [a.name for a in self.m.actors]
        held: dict[str, tuple[str, str]] = {}  # lock name → (holder, site)
        where: dict[int, dict[str, Any]] = {}
        for rep in self.reports.values():
            for aid, info in rep["actors"].items():
                where[int(aid)] = info
                for lock, site in info["held"].items():
                    held[lock] = (names[int(aid)], site)
        k = self.m.kernel
        if v.kind in ("deadlock", "blocked", "timeout"):
            kind = FailureKind.DEADLOCK
        elif v.kind == "livelock":
            kind = FailureKind.LIVELOCK
        else:
            kind = FailureKind.BUG_ON
        parts, locks, pages, sites = [], [], [], []
        waiters: dict[str, Any] = {}
        table = self.watchdog.read_actors() if self.arr is not None else None
        for aid in v.actors:
            info = where.get(aid, {})
            if v.kind == "deadlock" and table is not None:
                word, owner = v.details["waits"][aid]
                lock = k.lock_name(word)
                oname = names[owner] if owner >= 0 else "nobody"
                osite = held.get(lock, ("?", "?"))[1]
                wsite = self.sites.get(int(table[aid, A_WAIT_SITE]), "?")
                parts.append(f"{names[aid]} waits for {lock} at {wsite}, held by {oname} (taken at {osite})")
                locks.append(lock)
                if lock.startswith("page:"):
                    pages.append(int(lock.split(":")[1]))
                sites += [s for s in (wsite, osite) if s != "?" and s not in sites]
                waiters[names[aid]] = {"lock": lock, "owner": oname, "owner_site": osite, "site": wsite}
            elif info:
                sites += [s for s in info["held"].values() if s not in sites]
                if info.get("site") and info["site"] not in sites:
                    sites.append(info["site"])
        msg = v.message + (": " + "; ".join(parts) if parts else "")
        if kind is FailureKind.LIVELOCK:
            hot = sorted(((st[3], s) for s, st in self.stats.items() if st[3]), reverse=True)[:3]
            if hot:
                msg += "; " + ", ".join(f"{s} failed {n} trylocks" for n, s in hot)
                sites += [s for _n, s in hot if s not in sites]
        details: dict[str, Any] = {"verdict": v.kind, "workers": list(v.workers)}
        details.update({k2: v2 for k2, v2 in v.details.items() if k2 != "waits"})
        if waiters:
            details["waiters"] = waiters
            details["cycle"] = True
        details["where"] = {names[a]: where[a].get("where", "") for a in v.actors if a in where}
        return Failure(
            kind=kind,
            message=msg,
            step=step,
            actors=tuple(names[a] for a in v.actors),
            pages=tuple(pages),
            sites=tuple(sites),
            locks=tuple(locks),
            details=details,
        )

    def _record(
        self, m: Any, state: State, arr: np.ndarray, reader: RingReader, started: float, t0: float
    ) -> RunRecord:
        for wid in sorted(self.reports):
            rep = self.reports[wid]
            _merge_stats(self.stats, rep["stats"])
            for ev, n in rep["events"].items():
                self.events[ev] = self.events.get(ev, 0) + n
            for att, reason, n in rep["outcomes"]:
                self.outcomes[(att, reason)] = self.outcomes.get((att, reason), 0) + n
        lay = state.layout
        tickets = int(arr[lay.GLOB + G_TICKET])
        failure = self.failure
        watchdog_only = False
        outcome = Outcome.CLEAN
        if failure is None and self.signals.count > 0:
            # cut short by SIGINT/SIGTERM: never "clean" (issue 10 item 4); workers that
            # died of the same group signal are part of the interruption
            outcome = Outcome.INTERRUPTED
        elif failure is None and (killed := self._killed_from_outside()):
            # a worker killed from outside (the OOM killer, an operator's kill): a harness
            # event naming the signal, never a kernel failure (issue 10 item 5)
            outcome = Outcome.KILLED
            self.stop_reason = killed
        elif failure is None and self.verdict is not None:
            failure = self._failure_from_verdict(self.verdict, tickets)
            watchdog_only = self.verdict.kind in ("dead", "runaway", "stopped")
        if failure is None and outcome is Outcome.CLEAN and self.errors:
            wid, tb = sorted(self.errors.items())[0]
            raise HarnessInternalError(f"worker {wid} crashed:\n{tb}")
        if failure is not None:
            outcome = Outcome.FAILED
        schedule, gaps = merge(reader.entries())
        # Operations each actor started: finished ones, plus the one it is in.
        started_ops = []
        for aid, a in enumerate(m.actors):
            prog = int(arr[lay.ACTOR + aid * ACTOR_WORDS + A_PROGRESS])
            st = int(arr[lay.ACTOR + aid * ACTOR_WORDS + A_STATE])
            a.progress = prog
            a.ops_done = prog
            a.idle = st in (ACTOR_IDLE, ACTOR_DONE)
            started_ops.append(prog + (0 if a.idle else 1))
        # The returned kernel holds a private copy of the final state: the block is
        # unlinked when this function's caller returns.
        snap = State(Layout(self.w.geometry), init=False)
        snap.arr[:] = arr[: lay.words]
        k = Kernel(snap, variant=get_variant(self.variant), bugs=self.bugs, faults=tuple(self.w.faults))
        k.devices = m.kernel.devices
        k.actors = m.actors
        k.stats = self.stats
        k.events = self.events
        k.outcomes = self.outcomes
        wall = time.perf_counter() - t0
        elapsed = time.monotonic() - self.t_start
        ops_total = int(arr[lay.GLOB + G_PROGRESS])
        h = hashlib.blake2b(digest_size=12)
        h.update(schedule.tobytes())
        h.update(snap.digest())
        if failure is not None:
            h.update(failure.kind.value.encode())
        preemptions = sum(1 for i in range(1, len(schedule)) if schedule[i] != schedule[i - 1])
        result = RunResult(
            outcome=outcome,
            failure=failure,
            steps=tickets,
            schedule=schedule,
            fingerprint=h.hexdigest(),
            elapsed=elapsed,
            scheduler={"strategy": "os", "workers": self.nw, "perturb": self.perturb},
            preemptions=preemptions,
            quiet_checks=self.quiet_checks,
        )
        limits = limits_for(self.w)
        return RunRecord(
            workload=self.w,
            variant=self.variant,
            bugs=self.bugs,
            seed=self.seed,
            strategy="os",
            engine="parallel",
            result=result,
            kernel=k,
            actors=m.actors,
            ops=replay_ops(m.ops, started_ops),
            started=started,
            wall=wall,
            options={
                "workers": self.nw,
                "duration": self.duration,
                "ops": self.ops,
                "perturb": self.perturb,
                "check_interval": self.check_interval,
                "timeout": self.timeout,
                "exact_trace": self.exact_trace,
                "faults": list(self.w.faults),
                "limits": {
                    "max_steps": max(limits.max_steps, tickets + 50_000),
                    "livelock_steps": limits.livelock_steps,
                    "check_every": limits.check_every,
                },
                "stop_reason": self.stop_reason or "all operations done",
                "interrupted": self.signals.count > 0,
                "verdict": (
                    outcome.value if outcome in (Outcome.KILLED, Outcome.INTERRUPTED)
                    else self.verdict.kind if self.verdict else ("failure" if failure else "clean")
                ),
                "watchdog_only": watchdog_only,
                "ops_total": ops_total,
                "ops_per_second": ops_total / elapsed if elapsed > 0 else 0.0,
                "trace_gaps": gaps,
                "trace_lost": sum(reader.lost),
                "worker_exitcodes": getattr(self, "procs_exitcodes", []),
                "assignment": [list(a) for a in self.assign],
            },
        )


def run_parallel(
    w: Workload,
    *,
    variant: str = "v6",
    bugs: Sequence[str] = (),
    seed: int = 0,
    workers: int = 2,
    duration: float = 10.0,
    ops: int | None = None,
    perturb: float = 0.0,
    check_interval: float = 0.0,
    timeout: float | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    watchdog: WatchdogConfig | None = None,
    exact_trace: bool = False,
) -> RunRecord:
    """One run on the parallel engine: worker processes over shared memory.

    Args:
        w: the workload.
        variant: protocol variant.
        bugs: catalog bugs to switch on.
        seed: seeds the actors' operation lists (the same lists as the deterministic
            engine) and each worker's perturbation stream.
        workers: worker processes; actors are dealt to them round robin (at most one
            worker per actor).
        duration: seconds to run; each actor repeats its operation list until then.
        ops: stop each actor after this many operations (None: run for ``duration``).
        perturb: probability of a random short spin or ``sched_yield`` at each
            preemption point.
        check_interval: run the global invariants at a quiet point every this many
            seconds (0: only at the end).
        timeout: hard limit on the run's wall time (default: duration + 30 s).
        progress: called about once a second with ``{"elapsed", "ops", "ops_per_s",
            "steps", "failures", "workers": [{"id", "pid", "state", "ops", "steps"}]}``.
        watchdog: watchdog thresholds (default: from the workload's limits).
        exact_trace: run every step, and take its ticket, under one step lock shared by
            all workers: steps never overlap, so the merged trace is the order in which
            they ran and replays exactly (``docs/parallel.md``), at the price of parallel
            speed.

    Returns:
        The run's :class:`~pagerace.harness.runner.RunRecord` (``engine="parallel"``,
        ``strategy="os"``).

    Raises:
        InvalidOption: a bad option, variant or bug.
        HarnessInternalError: a worker crashed in pagerace's own code.
    """
    bugs_t = tuple(sorted(set(bugs)))
    validate_variant_bugs(variant, bugs_t, w)
    if w.cpus:
        # The workers are the OS's CPUs: the model's CPU binding, preemption models and
        # kworkers are the deterministic engine's (docs/internals.md).
        raise InvalidOption(
            f"workload {w.name!r} sets cpus = {w.cpus}, which the parallel engine does not "
            "model; run it on the deterministic engine (--engine deterministic)"
        )
    _check_options(workers, duration, ops, perturb, check_interval, timeout)
    return Controller(
        w, variant, bugs_t, seed, workers, float(duration), ops, float(perturb),
        float(check_interval), timeout, progress, watchdog, exact_trace=bool(exact_trace),
    ).run()

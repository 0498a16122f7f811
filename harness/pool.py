"""The local process pool of a hunt and a campaign: forked workers that ignore SIGINT,
take SIGTERM's default action and die with their parent, and the one-line account of a
worker that died.

A module of its own (``campaign`` re-exports every name) so that ``pagerace hunt``
starts its pool without importing the campaign (its plan, output directory and summary
code, psutil) and so that a forked worker names itself and asks for ``PR_SET_PDEATHSIG``
without importing the parallel engine (``harness/parallel``): a worker imports nothing
after the fork that its parent had not imported. psutil is imported only when a worker
died (:meth:`PoolBackend.dead_worker`), and the pool's own modules (``concurrent.futures``,
``multiprocessing``) when a pool starts, so the parallel engine's workers import
:func:`die_with_parent` from here for the cost of this file alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..core.machine.errors import HarnessInternalError

if TYPE_CHECKING:
    from concurrent.futures import Future


def die_with_parent(parent: int, name: str) -> None:
    """Name this (forked) process ``name`` (``pagerace clean`` finds it by that name) and
    ask the kernel to SIGKILL it when ``parent`` dies; if the parent died already (between
    the fork and here), exit now."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - non-Linux
        pass
    if os.getppid() != parent:
        os._exit(1)


def _worker_init(parent: int, setup: tuple[Callable[..., None], tuple[Any, ...]] | None = None) -> None:
    """A pool worker's start: Ctrl-C goes to the whole process group and only the parent
    decides what to do with it (SIGINT ignored); SIGTERM ends the worker (the default
    action, not the parent's handler inherited through fork, which turned the first
    SIGTERM into a KeyboardInterrupt the pool swallowed); the worker is named
    ``prc-<parent>`` for ``pagerace clean`` and dies with its parent (PR_SET_PDEATHSIG),
    as the parallel engine's workers do (issue 10 item 3). ``setup``: ``(function,
    args)`` called then (a hunt's workers keep their hunt's settings; inherited through
    fork, never pickled)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if setup is not None:
        setup[0](*setup[1])
    die_with_parent(parent, f"prc-{parent}")


class PoolBackend:
    """A local process pool (fork context); workers ignore SIGINT and die with the
    parent (:func:`_worker_init`, which calls ``setup``'s function with its arguments in
    each worker)."""

    def __init__(
        self, jobs: int, setup: tuple[Callable[..., None], tuple[Any, ...]] | None = None,
        task: Callable[..., Any] | None = None,
    ) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.jobs = jobs
        self.task = task  # what submit runs when not told (a campaign's run_task)
        self.pool = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_worker_init,
            initargs=(os.getpid(), setup),
        )
        self._seen: dict[int, Any] = {}  # every worker process started, by pid

    def submit(self, t: Any, fn: Callable[..., Any] | None = None) -> Future[Any]:
        """Run ``fn(t)`` in a worker; ``fn`` defaults to the pool's ``task`` (a campaign
        gives :func:`~pagerace.harness.campaign.run_task`)."""
        fn = fn or self.task
        if fn is None:
            raise HarnessInternalError("PoolBackend.submit without a function to run")
        f = self.pool.submit(fn, t)
        self._seen.update(getattr(self.pool, "_processes", None) or {})
        return f

    def dead_worker(self) -> tuple[int, int | None]:
        """(pid, exit code) of the worker whose death broke the pool. Called as the pool
        breaks: the worker dead at that moment (the pool then SIGTERMs the others), its
        exit code read once every worker was joined."""
        import psutil

        dead_now = []
        for pid in sorted(self._seen):
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    dead_now.append(pid)
            except psutil.NoSuchProcess:
                dead_now.append(pid)
            except psutil.Error:
                continue
        with contextlib.suppress(Exception):
            self.pool.shutdown(wait=True, cancel_futures=True)
        codes = {}
        for pid, p in self._seen.items():
            with contextlib.suppress(Exception):
                p.join(timeout=5)
            codes[pid] = p.exitcode
        # The cause first: an end other than SIGTERM (the pool SIGTERMs the others, maybe
        # before this call saw the first one dead), then one dead when the pool broke.
        ended = [pid for pid, c in codes.items() if c not in (None, 0)]
        ended.sort(key=lambda pid: (codes[pid] == -signal.SIGTERM, pid not in dead_now, pid))
        for pid in ended:
            code = codes[pid]
            if code == -signal.SIGTERM and sum(c == code for c in codes.values()) > 1:
                return -1, code  # the pool SIGTERMs the others: which one went first is unknown
            return pid, code
        return -1, None

    def cancel(self, f: Future[Any]) -> bool:
        return f.cancel()

    def wait(self, futures: Sequence[Any], timeout: float) -> list[Any]:
        from concurrent.futures import FIRST_COMPLETED
        from concurrent.futures import wait as futures_wait

        done, _ = futures_wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
        return [f for f in futures if f in done]

    def result(self, f: Future[Any]) -> Any:
        return f.result()

    def close(self, cancel: bool) -> None:
        procs = list((getattr(self.pool, "_processes", None) or {}).values())
        if cancel:
            # units in flight are abandoned: end the workers (ours, by pid) and reap them
            for p in procs:
                with contextlib.suppress(Exception):
                    p.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for p in procs:
            with contextlib.suppress(Exception):
                p.join(timeout=5)


def worker_death(backend: Any, role: str) -> tuple[bool, str]:
    """(killed from outside, how) of the pool worker that died (``backend.dead_worker``),
    for a one-line report naming ``role`` and its pid: from outside when a signal other
    than a crash signal ended it; a crash signal, an exit or an unknown end is the
    worker's own fault."""
    find = getattr(backend, "dead_worker", None)
    pid, code = find() if find is not None else (0, None)
    who = f"{role} {pid}" if pid > 0 else f"a {role}"
    if code is None:
        return False, f"{who} died"
    if code >= 0:
        return False, f"{who} exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    if -code in CRASH_SIGNALS:
        return False, f"{who} was killed by {name}"
    return True, f"{who} was killed by {name} from outside"


# Signals a worker dies of by its own fault: a crash, a pagerace bug. Any other signal was
# sent from outside (the OOM killer's SIGKILL, an operator's SIGTERM). The parallel
# engine's workers are judged by the same set.
CRASH_SIGNALS = frozenset(
    int(s) for s in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE)
)

__all__ = ["CRASH_SIGNALS", "PoolBackend", "die_with_parent", "worker_death"]

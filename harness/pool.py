"""The local process pools of a campaign (:class:`PoolBackend`, ``concurrent.futures``)
and of a hunt (:class:`ForkPool`, ``os.fork`` and pipes): forked workers that ignore
SIGINT, take SIGTERM's default action and die with their parent, and the one-line
account of a worker that died.

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
import pickle
import select
import signal
import time
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


class WorkerDied(HarnessInternalError):
    """A :class:`ForkPool` worker ended (its result pipe closed) or could not be handed a
    task: the pool is broken. :func:`worker_death` says how the worker ended."""


class _Task:
    """One task handed to a :class:`ForkPool` worker: done once its result came back."""

    __slots__ = ("done", "error", "value", "worker")

    def __init__(self, worker: int) -> None:
        self.worker = worker  # the pid of the worker that runs it
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None


# A message on a pipe: its length (8 bytes, little-endian), then its pickle.
_LEN = 8


class ForkPool:
    """A hunt's worker processes: ``jobs`` children forked at once with ``os.fork``, each
    fed tasks through a pipe of its own and answering through another, that run
    ``fn(task)`` for each task in turn.

    Why not :class:`PoolBackend`: ``concurrent.futures.process`` and the ``multiprocessing``
    modules it imports cost ~25 ms of the parent's CPU before its first fork (while the
    second core idles) and a pool of threads in the parent (a call queue feeder, a result
    manager) ~20 ms more over a 1,000-run hunt; this needs ``select`` and ``pickle``
    (numpy imports it), and no thread. What the hunt relies on is the same: each worker
    ignores SIGINT, takes SIGTERM's default action, is named ``prc-<parent>`` and dies
    with the parent (:func:`_worker_init`, ``setup`` called there, inherited through fork,
    never pickled); a task's exception comes back as its result's; a worker that ends
    (a kill from outside, a crash, an exit) breaks the pool: the next :meth:`wait`,
    :meth:`result` or :meth:`submit` raises :class:`WorkerDied` and :meth:`dead_worker`
    says which worker and how (:func:`worker_death`).

    A task goes to the worker with the fewest tasks in flight (the first such), so a worker
    whose tasks take longer gets fewer; results are read from every worker as they come
    (:meth:`wait`), so none blocks on a full pipe while the parent waits for another.
    """

    def __init__(
        self, jobs: int, setup: tuple[Callable[..., None], tuple[Any, ...]] | None, fn: Callable[[Any], Any],
    ) -> None:
        self.fn = fn
        self.pids: list[int] = []  # in fork order
        self._task_w: dict[int, int] = {}  # pid -> the write end of its task pipe
        self._res_r: dict[int, int] = {}  # pid -> the read end of its result pipe
        self._by_fd: dict[int, int] = {}  # result fd -> pid
        self._buf: dict[int, bytearray] = {}  # pid -> bytes of a result not read whole yet
        self._inflight: dict[int, list[_Task]] = {}  # pid -> its tasks, in order
        self._dead: list[int] = []  # workers whose result pipe closed, in the order seen
        self._codes: dict[int, int] = {}  # pid -> exit code of a reaped worker (-signal)
        parent = os.getpid()
        try:
            for _ in range(jobs):
                self._fork(parent, setup)
        except BaseException:
            self.close(cancel=True)
            raise

    def _fork(self, parent: int, setup: tuple[Callable[..., None], tuple[Any, ...]] | None) -> None:
        task_r, task_w = os.pipe()
        res_r, res_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the parent's stack
            code = 1
            try:
                os.close(task_w)
                os.close(res_r)
                for fd in (*self._task_w.values(), *self._res_r.values()):
                    os.close(fd)  # the other workers' ends: their pipes must close with the parent
                _worker_init(parent, setup)
                _serve(task_r, res_w, self.fn)
                code = 0
            finally:
                os._exit(code)
        os.close(task_r)
        os.close(res_w)
        self.pids.append(pid)
        self._task_w[pid], self._res_r[pid], self._by_fd[res_r] = task_w, res_r, pid
        self._buf[pid], self._inflight[pid] = bytearray(), []

    def submit(self, t: Any) -> _Task:
        """Hand ``t`` to the worker with the fewest tasks in flight.

        Raises:
            WorkerDied: a worker ended (this one's pipe is closed, or one was seen dead).
        """
        if self._dead:
            raise WorkerDied("a hunt worker ended")
        pid = min(self.pids, key=lambda p: len(self._inflight[p]))
        task = _Task(pid)
        data = pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            _write_all(self._task_w[pid], len(data).to_bytes(_LEN, "little") + data)
        except OSError:  # EPIPE: it ended; its result pipe says so at the next read
            self._dead.append(pid)
            raise WorkerDied(f"hunt worker {pid} ended") from None
        self._inflight[pid].append(task)
        return task

    def wait(self, tasks: Sequence[_Task], timeout: float) -> list[_Task]:
        """Read results as they come until one of ``tasks`` is done or ``timeout`` seconds
        passed; the done ones.

        Raises:
            WorkerDied: a worker's result pipe closed.
        """
        end = time.monotonic() + timeout
        while True:
            done = [t for t in tasks if t.done]
            if done:
                return done
            if self._dead:
                raise WorkerDied("a hunt worker ended")
            left = end - time.monotonic()
            if left <= 0:
                return []
            ready, _, _ = select.select(list(self._by_fd), [], [], left)
            for fd in ready:
                self._read(self._by_fd[fd])

    def _read(self, pid: int) -> None:
        chunk = os.read(self._res_r[pid], 1 << 20)
        if not chunk:  # end of file: the worker ended
            del self._by_fd[self._res_r[pid]]
            self._dead.append(pid)
            return
        buf = self._buf[pid]
        buf += chunk
        while len(buf) >= _LEN:
            n = int.from_bytes(buf[:_LEN], "little")
            if len(buf) < _LEN + n:
                break
            ok, value = pickle.loads(buf[_LEN:_LEN + n])
            del buf[:_LEN + n]
            task = self._inflight[pid].pop(0)
            task.done = True
            if ok:
                task.value = value
            else:
                task.error = value

    def result(self, task: _Task) -> Any:
        """A done task's value; its exception raised here when it raised one."""
        if task.error is not None:
            raise task.error
        return task.value

    def dead_worker(self) -> tuple[int, int | None]:
        """(pid, exit code: ``-signal`` when a signal ended it) of the worker that broke the
        pool: the first whose result pipe closed (or that could not take a task); the
        others are ended (SIGKILL) and every worker reaped."""
        self.close(cancel=True)
        if not self._dead:
            return -1, None
        pid = self._dead[0]
        return pid, self._codes.get(pid)

    def close(self, cancel: bool) -> None:
        """End the workers and reap them: at once when ``cancel`` (tasks in flight are
        abandoned), else by closing their task pipes (each ends when it reads the end of
        its pipe). Safe to call more than once.

        ``cancel`` sends SIGKILL, not SIGTERM: a worker holds nothing to clean up, and a
        stopped worker (SIGSTOP, a debugger) takes no SIGTERM until it is continued, so
        the ``waitpid`` below would wait for it forever (the concurrent.futures pool
        bounded its join instead, and left such a worker behind)."""
        if cancel:
            for pid in self.pids:
                if pid not in self._codes:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        for fd in self._task_w.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._task_w = {}
        for pid in self.pids:
            if pid in self._codes:
                continue
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:  # reaped by someone else: its end is unknown
                continue
            self._codes[pid] = os.waitstatus_to_exitcode(status)
        for fd in self._res_r.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._res_r, self._by_fd = {}, {}


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd: int, n: int) -> bytes | None:
    """``n`` bytes from ``fd``, or None at the end of file."""
    parts, left = [], n
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _serve(task_r: int, res_w: int, fn: Callable[[Any], Any]) -> None:
    """A :class:`ForkPool` worker's loop: read a task, answer ``(True, fn(task))`` or
    ``(False, the exception)``; return at the end of the task pipe (the pool closed)."""
    while True:
        head = _read_exactly(task_r, _LEN)
        if head is None:
            return
        data = _read_exactly(task_r, int.from_bytes(head, "little"))
        if data is None:
            return
        try:
            answer: tuple[bool, Any] = (True, fn(pickle.loads(data)))
        except Exception as exc:  # the task's own error, raised in the parent by result()
            answer = (False, exc)
        try:
            out = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an exception that does not pickle: say what it was
            out = pickle.dumps((False, HarnessInternalError(
                f"a hunt worker's task raised {answer[1]!r}, which does not pickle ({exc})")))
        _write_all(res_w, len(out).to_bytes(_LEN, "little") + out)


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

__all__ = ["CRASH_SIGNALS", "ForkPool", "PoolBackend", "WorkerDied", "die_with_parent", "worker_death"]

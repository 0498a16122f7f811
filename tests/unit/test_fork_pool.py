"""``pool.ForkPool``, the hunt's worker processes (os.fork and two pipes per worker, no
thread, no ``multiprocessing``): results and a task's own exception come back, tasks go
to the worker with the fewest in flight, a worker that ends (killed from outside, a
crash signal, an exit) breaks the pool and is named with how it ended, and every worker
is reaped (the conftest guard fails a test that leaves one)."""

from __future__ import annotations

import faulthandler
import os
import signal
from typing import Any

import pytest
from pagerace.core.machine.errors import InvalidOption
from pagerace.harness.pool import ForkPool, WorkerDied, worker_death

_SETTING: list[int] = []


def _keep(x: int) -> None:
    _SETTING.append(x)


def _task(t: Any) -> Any:
    """What the test workers run: ``("pid",)`` -> (pid, the setting it was forked with);
    ``("raise", msg)``; ``("exit", code)``; ``("kill", sig)`` (itself); ``("big", n)``."""
    what = t[0]
    if what == "pid":
        return os.getpid(), list(_SETTING), signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if what == "raise":
        raise InvalidOption(t[1])
    if what == "exit":
        os._exit(t[1])
    if what == "kill":
        faulthandler.disable()  # pytest's, inherited: no stack dump on stderr
        os.kill(os.getpid(), t[1])
    if what == "big":
        return b"x" * t[1]
    return t


def _get(p: ForkPool, task: Any) -> Any:
    assert p.wait([task], 30) == [task]
    return p.result(task)


def test_results_exceptions_and_the_setting_inherited_through_fork() -> None:
    p = ForkPool(2, (_keep, (7,)), _task)
    try:
        tasks = [p.submit(("pid",)) for _ in range(4)]
        got = [_get(p, t) for t in tasks]
        # the first task of each worker, then the second: fewest in flight, first such
        assert [g[0] for g in got] == [p.pids[0], p.pids[1], p.pids[0], p.pids[1]]
        assert all(g[1] == [7] and g[2] for g in got)  # setup ran there; SIGINT ignored
        assert _SETTING == []  # not here
        # a result larger than a pipe holds, while the other worker's waits to be read
        big, small = p.submit(("big", 1 << 20)), p.submit(("echo",))
        assert _get(p, big) == b"x" * (1 << 20) and _get(p, small) == ("echo",)
        bad = p.submit(("raise", "no such thing"))
        with pytest.raises(InvalidOption, match="no such thing"):
            _get(p, bad)
        assert _get(p, p.submit(("echo", 1))) == ("echo", 1)  # the worker goes on
    finally:
        p.close(cancel=False)
    assert p._codes == dict.fromkeys(p.pids, 0)  # idle workers end at the end of their pipe


@pytest.mark.parametrize(
    ("task", "code", "outside", "how"),
    [
        (("kill", signal.SIGKILL), -signal.SIGKILL, True, "was killed by SIGKILL from outside"),
        (("kill", signal.SIGSEGV), -signal.SIGSEGV, False, "was killed by SIGSEGV"),
        (("exit", 7), 7, False, "exited with code 7"),
    ],
    ids=["sigkill", "sigsegv", "exit"],
)
def test_a_worker_that_ends_breaks_the_pool_and_is_named(
    task: Any, code: int, outside: bool, how: str
) -> None:
    p = ForkPool(2, None, _task)
    try:
        ok = p.submit(("echo",))
        assert _get(p, ok) == ("echo",)
        victim = p.submit(task)
        with pytest.raises(WorkerDied):
            p.wait([victim], 30)
        with pytest.raises(WorkerDied):
            p.submit(("echo",))
        assert p.dead_worker() == (victim.worker, code)
        assert worker_death(p, "hunt worker") == (outside, f"hunt worker {victim.worker} {how}")
    finally:
        p.close(cancel=True)
    assert set(p._codes) == set(p.pids)  # both reaped; the other one SIGKILLed


def test_a_submit_to_a_worker_already_gone_is_a_worker_death() -> None:
    p = ForkPool(1, None, _task)
    try:
        pid = p.pids[0]
        os.kill(pid, signal.SIGKILL)
        # wait until it has ended, without reaping it (the pool reaps it): every fd of it
        # closed (its result pipe closes a little earlier than its task pipe may)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        with pytest.raises(WorkerDied, match=str(pid)):
            p.submit(("echo",))
        assert p.dead_worker() == (pid, -signal.SIGKILL)
    finally:
        p.close(cancel=True)


def test_close_with_tasks_in_flight_ends_the_workers_at_once_even_a_stopped_one() -> None:
    p = ForkPool(2, None, _task)
    stopped = p.submit(("kill", signal.SIGSTOP))  # a worker that will never answer
    os.waitid(os.P_PID, stopped.worker, os.WSTOPPED | os.WNOWAIT)  # it has stopped
    p.close(cancel=True)  # a SIGTERM would wait for a SIGCONT: this returned
    p.close(cancel=True)  # again: nothing left to do
    assert sorted(p._codes.values()) == [-signal.SIGKILL, -signal.SIGKILL]
    assert p._res_r == {} and p._task_w == {}  # the pool's ends of the pipes are closed

"""The test guard of tests/conftest.py (issue 10 item 2): it knows multiprocessing's
resource tracker by the pid the module records, whatever the tracker's command line reads
(empty or the parent's between fork and exec: the old guard killed it and the default run
flaked 8 times in 23), it still catches a child a test leaves, and it never touches a
process it does not own: one that existed before the test, or one that is not this
process's descendant."""

from __future__ import annotations

import multiprocessing.resource_tracker as rt
import os
import signal
from collections.abc import Iterator

import conftest as guard  # tests/conftest.py (pytest puts tests/ on sys.path)
import psutil
import pytest


@pytest.fixture
def blocked_child() -> Iterator[int]:
    """A forked child that blocks on a pipe and never execs: its command line is this
    process's, as a freshly forked resource tracker's is before its exec."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    try:
        yield pid
    finally:
        os.close(w)  # the child's read returns: it exits
        os.waitpid(pid, 0)


def test_a_tracker_caught_between_fork_and_exec_is_not_a_leak(
    blocked_child: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "resource_tracker" not in " ".join(psutil.Process(blocked_child).cmdline())
    # the leak check fires on such a child when it is not the tracker...
    assert [p.pid for p in guard._live_children({blocked_child})] == [blocked_child]
    # ...and spares it when the module records it as the tracker, whatever its cmdline
    monkeypatch.setattr(rt._resource_tracker, "_pid", blocked_child)
    assert guard._live_children({blocked_child}) == []


def test_the_guard_reports_and_ends_only_children_started_during_the_test() -> None:
    me = psutil.Process()
    old = _sleeper()  # before the snapshot: not the test's
    try:
        before = guard.Snapshot(me)
        new = _sleeper()
        problems = guard.leaks(before)
        assert len(problems) == 1 and problems[0].startswith(f"left child processes running: pid {new} (")
        assert not psutil.pid_exists(new) or psutil.Process(new).status() == psutil.STATUS_ZOMBIE
        assert psutil.Process(old).is_running()  # not killed: it was there before
        assert guard.leaks(guard.Snapshot(me)) == []
    finally:
        os.kill(old, signal.SIGKILL)
        os.waitpid(old, 0)


def test_a_process_that_is_not_a_descendant_is_never_seen() -> None:
    """A grandchild whose parent exited is re-parented away from us: not ours to kill."""
    r, w = os.pipe()
    mid = os.fork()
    if mid == 0:  # pragma: no cover - the child
        os.close(r)
        grand = os.fork()
        if grand == 0:
            os.close(w)
            signal.pause()
            os._exit(0)
        os.write(w, grand.to_bytes(4, "little"))
        os._exit(0)
    os.close(w)
    grand = int.from_bytes(os.read(r, 4), "little")
    os.close(r)
    os.waitpid(mid, 0)
    try:
        me = psutil.Process()
        assert grand not in guard._child_pids(me)
        assert psutil.Process(grand).ppid() != os.getpid()
    finally:
        os.kill(grand, signal.SIGKILL)


def _sleeper() -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        signal.pause()
        os._exit(0)
    return pid

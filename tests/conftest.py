"""Test-suite plumbing: the ``slow`` tier switch and the per-test leak guard.

``--run-slow`` runs tests marked ``slow``; without it they are skipped (trio's
``--run-slow``). The autouse guard is in the spirit of Hypothesis's PRNG-leak hook: a
test fails if it changed the global ``random`` or ``np.random`` state (pagerace must
draw only from streams it seeds itself), left a child process running, or left a
``/dev/shm`` segment named ``pagerace*`` or ``psm_*`` behind. It costs a few hundred
microseconds a test: two state snapshots, one ``/dev/shm`` listing and one scan of
this process's children.
"""

from __future__ import annotations

import os
import random
import re
import sys

import numpy as np
import psutil
import pytest

_SHM_DIR = "/dev/shm"
_SHM_PREFIXES = ("pagerace", "psm_")
# Long-lived helpers the multiprocessing machinery starts once per session on purpose.
_SESSION_HELPERS = ("resource_tracker", "forkserver")
# The parallel engine names its block pagerace_<parent pid>_<nonce> (harness/parallel/shm.py).
_PID_NAME = re.compile(r"^pagerace_(\d+)_")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", default=False, help="also run tests marked slow"
    )


def pytest_configure(config: pytest.Config) -> None:
    # Hypothesis's failure report touches mypy_extensions.TypedDict, whose deprecation
    # warning `filterwarnings = error` would turn into an INTERNALERROR that hides the
    # falsifying example.
    config.addinivalue_line(
        "filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow test: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _shm_entries() -> set[str]:
    try:
        names = os.listdir(_SHM_DIR)
    except OSError:
        return set()
    return {n for n in names if n.startswith(_SHM_PREFIXES)}


# Names of the segments this process created (``SharedMemory(create=True)``, from
# multiprocessing or its ``multiprocess`` fork): a ``psm_*`` name says nothing of its
# creator, and another run on the same machine (a campaign beside the tests, another
# test session) makes them too.
_CREATED: set[str] = set()


def _record_creations() -> None:
    for mod_name in ("multiprocessing.shared_memory", "multiprocess.shared_memory"):
        try:
            mod = __import__(mod_name, fromlist=["SharedMemory"])
        except ImportError:
            continue
        cls = mod.SharedMemory
        if getattr(cls, "_pagerace_guard", False):
            continue
        orig = cls.__init__

        def init(self: object, *args: object, __orig: object = orig, **kw: object) -> None:
            __orig(self, *args, **kw)  # type: ignore[operator]
            create = kw.get("create", args[1] if len(args) > 1 else False)
            if create:
                _CREATED.add(str(self.name).lstrip("/"))  # type: ignore[attr-defined]

        cls.__init__ = init
        cls._pagerace_guard = True


_record_creations()


def _is_ours(name: str, mine: set[int]) -> bool:
    """Whether a new segment belongs to this test process rather than to another run on
    the same machine: by the pid in its name (the parallel engine's), else because this
    process created it, else because this process or one of its children has it mapped
    or open. A segment nobody here made or uses is someone else's, never a leak of ours
    (a campaign beside the tests makes ``psm_*`` segments too)."""
    m = _PID_NAME.match(name)
    if m:
        return int(m.group(1)) in mine
    return name in _CREATED or _used_by(name, mine)


def _used_by(name: str, pids: set[int]) -> bool:
    """Whether one of ``pids`` has the segment open or mapped. Only called for a
    candidate leak, so its cost does not matter."""
    path = os.path.join(_SHM_DIR, name)
    for pid in sorted(pids):
        try:
            proc = psutil.Process(pid)
            if any(m.path == path for m in proc.memory_maps(grouped=True)):
                return True
            if any(f.path == path for f in proc.open_files()):
                return True
        except (psutil.Error, OSError):
            continue
    return False


def _kids(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return out


_HAVE_PROC_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def _child_pids(me: psutil.Process) -> set[int]:
    """This process's descendants: from /proc's children lists (microseconds), else
    psutil's scan of every process (milliseconds)."""
    if not _HAVE_PROC_CHILDREN:
        return {c.pid for c in me.children(recursive=True)}
    seen: set[int] = set()
    stack = _kids(me.pid)
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack.extend(_kids(pid))
    return seen


def _session_helper_pids() -> set[int]:
    """The pids of the long-lived helpers multiprocessing (and its ``multiprocess`` fork)
    start once per session on purpose: the resource tracker and the fork server. Known by
    the pid their own module records, not by their command line: a helper caught between
    fork and exec has an empty or borrowed command line, and a guard that judged it by
    that killed the tracker (issue 10: 8 flakes in 23 runs under load)."""
    pids: set[int] = set()
    for mod_name in ("multiprocessing", "multiprocess"):
        for sub, obj, attr in (
            ("resource_tracker", "_resource_tracker", "_pid"),
            ("forkserver", "_forkserver", "_forkserver_pid"),
        ):
            mod = sys.modules.get(f"{mod_name}.{sub}")
            pid = getattr(getattr(mod, obj, None), attr, None)
            if isinstance(pid, int):
                pids.add(pid)
    return pids


def _live_children(pids: set[int]) -> list[psutil.Process]:
    out = []
    helpers = _session_helper_pids()
    for pid in sorted(pids - helpers):
        try:
            child = psutil.Process(pid)
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if any(h in cmd for h in _SESSION_HELPERS):
            continue
        out.append(child)
    return out


class Snapshot:
    """What the guard compares after a test: the global PRNG states, the ``/dev/shm``
    entries and this process's descendants before it."""

    def __init__(self, me: psutil.Process) -> None:
        self.me = me
        self.py_state = random.getstate()
        self.np_state = np.random.get_state()
        self.shm = _shm_entries()
        self.children = _child_pids(me)


def leaks(before: Snapshot) -> list[str]:
    """What the test changed or left since ``before`` (restoring the PRNG states, and
    killing the child processes it left: only descendants of this process that did not
    exist before it and are not the session's multiprocessing helpers)."""
    me = before.me
    problems = []
    if random.getstate() != before.py_state:
        random.setstate(before.py_state)
        problems.append("changed the global `random` state (draw from a seeded stream)")
    np_now = np.random.get_state()
    np_state = before.np_state
    if np_now[0] != np_state[0] or np_now[2:] != np_state[2:] or not np.array_equal(
        np_now[1], np_state[1]
    ):
        np.random.set_state(np_state)
        problems.append("changed the global `np.random` state (pass a seeded Generator)")
    new_pids = _child_pids(me) - before.children
    left = _live_children(new_pids) if new_pids else []
    if left:
        desc = ", ".join(f"pid {c.pid} ({c.name()})" for c in left)
        for c in left:
            try:
                c.kill()
                c.wait(5)
            except psutil.Error:
                pass
        problems.append(f"left child processes running: {desc}")
    new_shm = _shm_entries() - before.shm
    if new_shm:
        mine = {me.pid} | _child_pids(me)
        leaked = sorted(n for n in new_shm if _is_ours(n, mine))
        if leaked:
            problems.append(f"left shared-memory segments in {_SHM_DIR}: {', '.join(leaked)}")
    return problems


@pytest.fixture(autouse=True)
def _leak_guard() -> object:
    before = Snapshot(psutil.Process())
    yield
    problems = leaks(before)
    if problems:
        pytest.fail("leak guard: this test " + "; ".join(problems), pytrace=False)

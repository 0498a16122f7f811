"""The shared-memory block of one parallel run, and the cleanup of dead runs' leftovers.

One ``multiprocess.shared_memory.SharedMemory`` block holds, in int64 words:

- the model's :class:`~pagerace.core.machine.layout.Layout` words (``[0, layout.words)``), built by
  the parent with :func:`~pagerace.harness.runner.build_state`;
- per worker, :data:`CTRL_WORDS` control words (its state, its quiet-point
  acknowledgement, how many ring entries it wrote, its steps, its pid);
- the step lock's two words (``exact_trace``: a worker holds it across one whole step
  and its ticket, so the trace is a total order);
- one hardware-access lock word per virtual page (``Kernel.hw_lock``: a CPU's TLB
  lookup or page walk and its load or store are one atomic step, as in hardware, and a
  TLB shootdown waits for an access in flight);
- per worker, a ring of :data:`RING_ENTRIES` trace entries ``ticket << 16 | actor``.

The block is named ``pagerace_<parent pid>_<nonce>`` so that ``pagerace clean`` can tell
a dead run's leftover from a live one. Workers are forked and use the parent's mapping;
nobody attaches by name, and the block is *not* registered with the stdlib resource
tracker: the tracker would start a helper process and could unlink the block behind our
back (or warn about it at exit). The parent unlinks it itself on every exit path.

Worker processes rename themselves ``prw-<parent pid>-<worker>`` (``prctl(PR_SET_NAME)``)
and ask the kernel to SIGKILL them when the parent dies (``PR_SET_PDEATHSIG``), so a
killed parent leaves no running worker; ``clean_leftovers`` kills any that survive.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psutil

from ..pool import die_with_parent as die_with_parent

SHM_DIR = "/dev/shm"
SHM_PREFIX = "pagerace_"
_SHM_RE = re.compile(r"^pagerace_(\d+)_([0-9a-f]+)$")
# prw-<parent>-<worker>: a parallel run's worker; prc-<parent>: a campaign's pool worker.
_PROC_RE = re.compile(r"^pr[wc]-(\d+)(?:-\d+)?$")

# Per worker control words.
(
    W_STATE,  # one of WS_*
    W_ACK,  # the last quiet-point epoch this worker acknowledged
    W_COUNT,  # ring entries written so far (monotonic; entry i sits at i % RING_ENTRIES)
    W_STEPS,  # preemption points passed (tickets taken)
    W_PID,
    W_SPIN,  # backoff rounds with nothing runnable (blocked-spinning)
    W_INSTEP,  # 1 while the worker is inside a step (StopMachine waits for 0)
) = range(7)
CTRL_WORDS = 8
WS_STARTING, WS_RUNNING, WS_PAUSED, WS_DONE, WS_FAILED, WS_ERROR = range(6)
WS_NAMES = ("starting", "running", "paused", "done", "failed", "error")

# Trace ring: 2**18 entries (2 MiB) a worker. The parent drains every ~50 ms; a worker
# would need millions of kernel steps a second to lap it.
RING_ENTRIES = 1 << 18


@dataclass(frozen=True)
class BlockLayout:
    """Where the control words and trace rings sit after the model's words."""

    model_words: int
    workers: int
    hw_words: int = 0
    ring_entries: int = RING_ENTRIES

    @property
    def ctrl(self) -> int:
        return self.model_words

    @property
    def step_lock(self) -> int:
        """The run's step lock (``exact_trace``: one step at a time, any worker), a
        ticket lock: this word is the ticket now served, the next one the next ticket."""
        return self.model_words + self.workers * CTRL_WORDS

    @property
    def stop_lock(self) -> int:
        """The stop-machine word (``StopMachine`` in worker.py): 0, or the worker id + 1
        of the worker running an in-step check while every other worker is between
        steps."""
        return self.step_lock + 2

    @property
    def hw(self) -> int:
        """First hardware-access lock word (one per virtual page of every mm)."""
        return self.step_lock + 3

    @property
    def rings(self) -> int:
        return self.hw + self.hw_words

    @property
    def words(self) -> int:
        return self.rings + self.workers * self.ring_entries

    @property
    def nbytes(self) -> int:
        return self.words * 8

    def cw(self, wid: int, field: int) -> int:
        """Word index of control field ``field`` of worker ``wid``."""
        return self.model_words + wid * CTRL_WORDS + field

    def ring(self, wid: int) -> int:
        """Word index of worker ``wid``'s first ring entry."""
        return self.rings + wid * self.ring_entries


class _NoTracker:
    """Stands in for ``resource_tracker`` while our block is created and unlinked."""

    @staticmethod
    def register(name: str, rtype: str) -> None:
        return None

    @staticmethod
    def unregister(name: str, rtype: str) -> None:
        return None


@contextlib.contextmanager
def _untracked() -> Iterator[None]:
    from multiprocess import shared_memory as sm

    real = sm.resource_tracker
    sm.resource_tracker = _NoTracker
    try:
        yield
    finally:
        sm.resource_tracker = real


def new_block_name() -> str:
    return f"{SHM_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"


class SharedBlock:
    """The run's segment: created by the parent, unlinked by the parent only.

    Args:
        nbytes: size of the block.
    """

    def __init__(self, nbytes: int) -> None:
        from multiprocess.shared_memory import SharedMemory

        self.name = new_block_name()
        with _untracked():
            self.shm = SharedMemory(name=self.name, create=True, size=nbytes)
        self.owner = os.getpid()
        self._unlinked = False
        # Nobody attaches by name (workers are forked with the mapping), so the name goes
        # at once: a parent SIGKILLed mid-run leaves nothing in /dev/shm (issue 10 item 3:
        # 9 of 13 trials left the segment). The memory lives while a mapping does.
        self._unlinked = True
        with _untracked(), contextlib.suppress(FileNotFoundError):
            self.shm.unlink()

    @property
    def buf(self) -> Any:
        return self.shm.buf

    def close_and_unlink(self) -> None:
        """Close the mapping (every view and AtomicWords must be gone) and unlink.

        Unlinks even when closing fails, so the name never outlives the run.
        """
        try:
            self.shm.close()
        finally:
            if not self._unlinked and os.getpid() == self.owner:
                self._unlinked = True
                with _untracked(), contextlib.suppress(FileNotFoundError):
                    self.shm.unlink()


# ----------------------------------------------------------------------------------------
# Worker process identity.


def name_worker_process(parent: int, wid: int) -> None:
    """Name this (worker) process ``prw-<parent>-<wid>`` and make it die with its parent."""
    die_with_parent(parent, f"prw-{parent}-{wid}")


def _wait_dead(proc: psutil.Process, timeout: float) -> None:
    """Wait until ``proc`` is gone or a zombie (dead: its own parent reaps it).

    Raises:
        psutil.TimeoutExpired: still running after ``timeout`` seconds.
    """
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)
    raise psutil.TimeoutExpired(timeout, proc.pid, proc.name())


def _alive(pid: int) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def clean_leftovers(dry_run: bool = False) -> list[str]:
    """Remove what dead parallel runs and campaigns left behind: ``/dev/shm/pagerace_<pid>_*``
    segments whose parent process is gone, and ``prw-<pid>-<n>`` (parallel run) and
    ``prc-<pid>`` (campaign) worker processes whose parent is gone.

    Args:
        dry_run: only say what would be removed.

    Returns:
        One line per segment removed and per process killed (or that would be).
    """
    out: list[str] = []
    verb_kill = "would kill" if dry_run else "killed"
    for proc in psutil.process_iter(["pid", "name", "ppid"]):
        m = _PROC_RE.match(proc.info.get("name") or "")
        if not m:
            continue
        parent = int(m.group(1))
        if proc.info.get("ppid") == parent and _alive(parent):
            continue
        if not dry_run:
            try:
                proc.kill()
                _wait_dead(proc, 2.0)
            except psutil.NoSuchProcess:
                continue
            except psutil.Error as exc:
                out.append(f"could not kill worker process {proc.pid}: {exc}")
                continue
        out.append(
            f"{verb_kill} worker process {proc.pid} ({proc.info['name']}) of dead run {parent}"
        )
    verb_rm = "would remove" if dry_run else "removed"
    try:
        names = sorted(os.listdir(SHM_DIR))
    except OSError:
        names = []
    for name in names:
        m = _SHM_RE.match(name)
        if not m or _alive(int(m.group(1))):
            continue
        path = os.path.join(SHM_DIR, name)
        try:
            size = os.stat(path).st_size
            if not dry_run:
                os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            out.append(f"could not remove {path}: {exc}")
            continue
        out.append(f"{verb_rm} shared-memory segment {path} ({size} bytes) of dead run {m.group(1)}")
    return out

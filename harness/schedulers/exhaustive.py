"""The scheduler of the bounded exhaustive search (``harness/explore.py``).

One run of the search replays a recorded *prefix* of choices, then continues without
preempting: the actor that ran last keeps running while it can, else the lowest
runnable id runs. Every step is logged with its runnable set, so the explorer can branch
at any step of the run: a context switch away from a runnable actor costs one
preemption (CHESS, Musuvathi & Qadeer, PLDI 2007), a switch after the last actor blocked
or finished is free. For fairness, an actor that ran ``fair_quantum`` steps in a row
hands over to the next runnable one (a free switch, marked in the log): a thread
spinning in a retry loop would otherwise starve the thread it waits for, which no real
scheduler does (CHESS's fair scheduling).

With a recorder attached (:meth:`Exhaustive.attach`, the search's partial-order
reduction), the scheduler also keeps the footprint of every step it logged
(:mod:`.dependency`): ``footprints[i]`` is what step ``i`` read and wrote; and, given
the sleep set the search reached its prefix with (:meth:`Exhaustive.attach`), it keeps
the sleep set of every later step (``sleeps[i]``) and stops the run with
:class:`SleepBlocked` as soon as its own continuation would run a sleeping actor: from
there on the run is equivalent to one the search already ran.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...core.machine.words import RecordingWords
from .._rng import Stream
from .dependency import Footprint, dependent

Sleep = list[tuple[int, Footprint]]


class SleepBlocked(Exception):
    """The run's continuation reached a sleeping actor (the run is redundant)."""

    def __init__(self, step: int) -> None:
        super().__init__(f"step {step}: the continuation runs a sleeping actor")
        self.step = step


class Exhaustive:
    name = "exhaustive"

    def __init__(self, prefix: Sequence[int] = (), fair_quantum: int = 64) -> None:
        self.prefix = list(prefix)
        self.fair_quantum = fair_quantum
        self.log: list[tuple[tuple[int, ...], int, bool]] = []
        self.diverged = 0
        self._last = -1
        self._run = 0
        self.recorder: RecordingWords | None = None
        self.footprints: list[Footprint] = []
        self.sleeps: dict[int, Sleep] = {}
        self._sleep: Sleep | None = None
        self._candidates: Sleep = []

    def attach(self, recorder: RecordingWords, candidates: Sleep | None = None) -> None:
        """Keep the footprint of every step from now on. ``candidates``: the sleep set
        of the state before the prefix's last step plus the children already explored
        from it; those independent of that last step make the sleep set the
        continuation starts with (``None``: the root, an empty sleep set)."""
        self.recorder = recorder
        self._candidates = list(candidates or [])

    def finish(self) -> None:
        """Close the footprint of the last step (after the run)."""
        if self.recorder is not None and len(self.footprints) < len(self.log):
            self.footprints.append(self.recorder.take())

    def start(self, n_actors: int, stream: Stream) -> None:
        self.log = []
        self.diverged = 0
        self._last = -1
        self._run = 0
        self.footprints = []
        self.sleeps = {}
        self._sleep = None
        if self.recorder is not None:
            self.recorder.take()

    def choose(self, runnable: list[int], step: int) -> int:
        sleep = self._sleep
        if self.recorder is not None and self.log:
            fp = self.recorder.take()
            self.footprints.append(fp)
            n = len(self.log)
            if sleep is not None:
                sleep = [(b, fb) for b, fb in sleep if not dependent(fp, fb)]
            elif n == len(self.prefix) and n:
                a = self.log[-1][1]
                sleep = [(b, fb) for b, fb in self._candidates if b != a and not dependent(fp, fb)]
            self._sleep = sleep
        elif self.recorder is not None and not self.prefix:
            sleep = self._sleep = []
        forced = False
        if step < len(self.prefix) and self.prefix[step] in runnable:
            c = self.prefix[step]
        else:
            if step < len(self.prefix):
                self.diverged += 1
            if self._last in runnable and self._run < self.fair_quantum:
                c = self._last
            else:
                forced = self._last in runnable
                c = next((x for x in runnable if x > self._last), runnable[0])
        self._run = self._run + 1 if c == self._last else 1
        self.log.append((tuple(runnable), c, forced))
        self._last = c
        if sleep is not None:
            self.sleeps[len(self.log) - 1] = sleep
            if any(b == c for b, _ in sleep):
                raise SleepBlocked(step)
        return c

    def describe(self) -> dict[str, object]:
        return {"strategy": self.name, "prefix": len(self.prefix), "diverged": self.diverged}


def preemptions_of(log: Sequence[tuple[Sequence[int], int, bool]], upto: int) -> int:
    """Preemptions in the first ``upto`` steps of a logged run (fairness hand-overs are
    free)."""
    n = 0
    prev = -1
    for runnable, c, forced in log[:upto]:
        if prev >= 0 and c != prev and prev in runnable and not forced:
            n += 1
        prev = c
    return n

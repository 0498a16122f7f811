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
"""

from __future__ import annotations

from collections.abc import Sequence

from .._rng import Stream


class Exhaustive:
    name = "exhaustive"

    def __init__(self, prefix: Sequence[int] = (), fair_quantum: int = 64) -> None:
        self.prefix = list(prefix)
        self.fair_quantum = fair_quantum
        self.log: list[tuple[tuple[int, ...], int, bool]] = []
        self.diverged = 0
        self._last = -1
        self._run = 0

    def start(self, n_actors: int, stream: Stream) -> None:
        self.log = []
        self.diverged = 0
        self._last = -1
        self._run = 0

    def choose(self, runnable: list[int], step: int) -> int:
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

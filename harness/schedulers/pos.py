"""POS: partial order sampling (Yuan, Yang and Gu, CAV 2018).

Every pending event carries a random priority; the runnable actor whose pending event
has the highest priority runs. When a step runs, the actor's next event is new and
draws a new priority, and every other actor whose pending event *races* with the step
that ran (they touch a common word and one of them writes it:
:func:`~.dependency.dependent`) draws a new priority too. Events that do not race keep
their order, so POS samples partial orders (Mazurkiewicz traces) far more evenly than
the random walk, which samples interleavings and so favours the traces that have many.

Here the events are the steps between preemption points, and an actor's pending step is
only known once it runs: its footprint is predicted by the footprint of the actor's last
step (the same loop iteration, the same lock retried; an actor that waits for a lock
read its word in that step). The prediction is only used to decide which priorities to
redraw, so a wrong one costs sampling quality, never a wrong run.
"""

from __future__ import annotations

from ...core.machine.words import RecordingWords
from .._rng import Stream
from .dependency import EMPTY, Footprint, dependent


class POS:
    name = "pos"
    records_words = True  # the runner installs a words recorder (attach)

    def __init__(self) -> None:
        self.recorder: RecordingWords | None = None
        self._prio: list[float] = []
        self._pending: list[Footprint] = []
        self._last = -1
        self.redraws = 0

    def attach(self, recorder: RecordingWords) -> None:
        self.recorder = recorder

    def start(self, n_actors: int, stream: Stream) -> None:
        self._random = stream.random
        self._prio = [self._random() for _ in range(n_actors)]
        self._pending = [EMPTY] * n_actors
        self._last = -1
        self.redraws = 0
        if self.recorder is not None:
            self.recorder.take()

    def choose(self, runnable: list[int], step: int) -> int:
        last = self._last
        if last >= 0:
            fp = self.recorder.take() if self.recorder is not None else EMPTY
            self._pending[last] = fp
            self._prio[last] = self._random()
            pend = self._pending
            prio = self._prio
            for b in runnable:
                if b != last and dependent(fp, pend[b]):
                    prio[b] = self._random()
                    self.redraws += 1
        if len(runnable) == 1:
            best = runnable[0]
        else:
            prio = self._prio
            best = runnable[0]
            for aid in runnable:
                if prio[aid] > prio[best]:
                    best = aid
        self._last = best
        return best

    def describe(self) -> dict[str, object]:
        return {"strategy": self.name, "redraws": self.redraws}

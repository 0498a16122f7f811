"""Replay of a recorded schedule.

The schedule is the list of actor ids that ran, one per step. ``strict`` replay raises
:class:`ScheduleDiverged` when the recorded actor is not runnable (the run is not the
one recorded); lenient replay (used by the shrinker and by replays of parallel-engine
traces) takes the next runnable id after the recorded one. Past the end of the
schedule, both continue round robin so the run can finish.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._rng import Stream


class ScheduleDiverged(Exception):
    """The recorded actor could not run at this step."""

    def __init__(self, step: int, wanted: int, runnable: list[int]) -> None:
        super().__init__(
            f"step {step}: the schedule says actor {wanted} runs, but only {runnable} can"
        )
        self.step = step


class Replay:
    name = "replay"

    def __init__(self, schedule: Sequence[int], strict: bool = True) -> None:
        self.schedule = list(schedule)
        self.strict = strict
        self.diverged = 0
        self._last = -1

    def start(self, n_actors: int, stream: Stream) -> None:
        self.diverged = 0
        self._last = -1

    def choose(self, runnable: list[int], step: int) -> int:
        if step < len(self.schedule):
            want = self.schedule[step]
            if want in runnable:
                self._last = want
                return want
            if self.strict:
                raise ScheduleDiverged(step, want, runnable)
            self.diverged += 1
        else:
            want = self._last
        for aid in runnable:
            if aid > want:
                self._last = aid
                return aid
        self._last = runnable[0]
        return runnable[0]

    def describe(self) -> dict[str, object]:
        return {"strategy": self.name, "strict": self.strict, "diverged": self.diverged}

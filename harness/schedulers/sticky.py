"""Sticky random walk: a random walk over time slices of random length.

At each preemption point the actor that ran last keeps the CPU with probability
``1 - 1/quantum`` (if it is still runnable); otherwise a uniformly random runnable actor
runs (possibly the same one). A slice is thus about ``quantum`` steps long on average,
geometrically distributed, and who runs next is random. One draw per choice among two
or more actors, as the random walk; with ``quantum = 1`` it makes the random walk's
choices from the same draws.

Between the random walk, which switches almost every step when many actors are runnable,
and round robin, whose slices are fixed and whose order is not random. Per run it finds
``fault-without-ref`` (``evict-vs-fault``) about four times as often as the random walk
and ``insert-no-stable-check`` a little more often, and the pin and page-cache races
less often (docs/PERFORMANCE.md, "The default strategy ``mix``"), so ``mix`` gives it
one turn in three.
"""

from __future__ import annotations

from .._rng import Stream


class StickyWalk:
    name = "sticky"

    def __init__(self, quantum: int = 4) -> None:
        if quantum < 1:
            raise ValueError(f"sticky walk quantum must be >= 1, got {quantum}")
        self.quantum = quantum
        self._switch = 1.0 / quantum
        self._last = -1

    def start(self, n_actors: int, stream: Stream) -> None:
        self._random = stream.random
        self._last = -1

    def choose(self, runnable: list[int], step: int) -> int:
        if len(runnable) == 1:
            self._last = runnable[0]
            return self._last
        r = self._random()
        if self._last in runnable:
            if r >= self._switch:
                return self._last
            r /= self._switch  # r < switch: uniform in [0, 1) again, reused for the pick
        self._last = runnable[min(int(r * len(runnable)), len(runnable) - 1)]
        return self._last

    def describe(self) -> dict[str, object]:
        return {"strategy": self.name, "quantum": self.quantum}

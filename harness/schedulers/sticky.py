"""Sticky random walk: a random walk over time slices of random length.

At each preemption point the actor that ran last keeps the CPU with probability
``1 - 1/quantum`` (if it is still runnable); otherwise a uniformly random runnable actor
runs (possibly the same one). A slice is thus about ``quantum`` steps long on average,
geometrically distributed, and who runs next is random. ``quantum = 1`` is the plain
random walk's distribution (not its stream: the walk draws once per choice either way).

Between the random walk, which switches almost every step when many actors are runnable,
and round robin, whose slices are fixed, it finds races that need one actor to run a
stretch of several steps while another sits still at a random point: on
``pagecache-vs-compaction`` (``move-mapping-no-freeze``) the speculative reference must
land inside compaction's check-to-switch window, which a run of steps reaches more often
than a step-by-step interleaving does.
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

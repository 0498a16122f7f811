"""Seeded random walk: at every preemption point, a uniformly random runnable actor."""

from __future__ import annotations

from .._rng import Stream


class RandomWalk:
    name = "random"

    def __init__(self) -> None:
        self._stream: Stream | None = None

    def start(self, n_actors: int, stream: Stream) -> None:
        self._stream = stream
        self._random = stream.random

    def choose(self, runnable: list[int], step: int) -> int:
        if len(runnable) == 1:
            return runnable[0]
        return runnable[int(self._random() * len(runnable))]

    def describe(self) -> dict[str, object]:
        return {"strategy": self.name}

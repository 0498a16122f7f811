"""Round robin: each actor runs ``quantum`` preemption points, then the next one."""

from __future__ import annotations

from .._rng import Stream


class RoundRobin:
    name = "rr"

    def __init__(self, quantum: int = 1) -> None:
        if quantum < 1:
            raise ValueError(f"round-robin quantum must be >= 1, got {quantum}")
        self.quantum = quantum
        self._cur = -1
        self._left = 0

    def start(self, n_actors: int, stream: Stream) -> None:
        self._cur = -1
        self._left = 0

    def choose(self, runnable: list[int], step: int) -> int:
        if self._left > 0 and self._cur in runnable:
            self._left -= 1
            return self._cur
        nxt = runnable[0]
        for aid in runnable:
            if aid > self._cur:
                nxt = aid
                break
        self._cur = nxt
        self._left = self.quantum - 1
        return nxt

    def describe(self) -> dict[str, object]:
        return {"strategy": self.name, "quantum": self.quantum}

"""PCT: probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010).

Each actor gets a distinct random priority above ``depth``; ``depth - 1`` change points
are drawn uniformly from the first ``k`` steps. The highest-priority runnable actor runs;
at the i-th change point the actor that would run drops to priority ``depth - i``.
For a bug of depth ``d`` the chance a run finds it is at least ``1 / (n * k**(d-1))``
with ``n`` actors and ``k`` steps.
"""

from __future__ import annotations

from .._rng import Stream


class PCT:
    name = "pct"

    def __init__(self, depth: int = 3, k: int = 2000) -> None:
        if depth < 1:
            raise ValueError(f"PCT depth must be >= 1, got {depth}")
        if k < 1:
            raise ValueError(f"PCT step estimate k must be >= 1, got {k}")
        self.depth = depth
        self.k = k
        self.n = 0
        self._prio: list[int] = []
        self._changes: dict[int, int] = {}

    def start(self, n_actors: int, stream: Stream) -> None:
        self.n = n_actors
        gen = stream.generator()
        perm = gen.permutation(n_actors).tolist()
        self._prio = [self.depth + p for p in perm]
        points = sorted(int(x) for x in gen.integers(1, self.k + 1, size=self.depth - 1))
        self._changes = {}
        for i, pt in enumerate(points, start=1):
            while pt in self._changes:
                pt += 1
            self._changes[pt] = self.depth - i

    def choose(self, runnable: list[int], step: int) -> int:
        prio = self._prio
        best = runnable[0]
        for aid in runnable:
            if prio[aid] > prio[best]:
                best = aid
        low = self._changes.get(step)
        if low is not None:
            prio[best] = low
            best = runnable[0]
            for aid in runnable:
                if prio[aid] > prio[best]:
                    best = aid
        return best

    def guarantee(self) -> float:
        """The lower bound ``1 / (n k^(d-1))`` on hitting a given depth-d bug per run."""
        n = max(self.n, 1)
        return 1.0 / (n * float(self.k) ** (self.depth - 1))

    def describe(self) -> dict[str, object]:
        return {
            "strategy": self.name,
            "depth": self.depth,
            "k": self.k,
            "actors": self.n,
            "guarantee": self.guarantee(),
        }

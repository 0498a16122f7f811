"""URW and SURW: (selectively) uniform random walk (ASPLOS 2025, "Selectively Uniform
Concurrency Testing").

The random walk picks a runnable actor uniformly at every step, which does not sample
interleavings uniformly: an actor with few steps left is as likely to run as one with
many, so interleavings that put a short actor's steps late are rare. URW runs each
runnable actor with probability proportional to its number of *remaining* steps; when
no actor blocks, every interleaving is then equally likely (the weights are the
multinomial counts of the ways to finish the run).

SURW applies this to the *interesting* steps only: here those that write a word, or read
a word another actor wrote last (a page lock, a PTE, a refcount changing hands); a step
that only reads what its own actor or nobody wrote is not. An actor whose last step was
not interesting keeps the CPU (such a step commutes with what the others did so far),
and the weighted choice is made over the remaining interesting steps. This is the SURW
shape with the set of interesting events fixed to "writes and reads of others' writes"
(the paper lets the user pick them); the accesses are the words recorder's
(:mod:`.dependency`).

The remaining counts need each actor's total: ``counts`` (steps per actor, from an
earlier run of the same workload: the hunt passes the previous run's, recorded in
``describe()`` and the artifact). Without them every actor starts at the same estimate;
an actor that outlives its estimate keeps weight 1.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...core.machine.words import RecordingWords
from .._rng import Stream


class SURW:
    records_words = True

    def __init__(self, counts: Sequence[int] = (), selective: bool = True) -> None:
        self.counts = [max(1, int(c)) for c in counts]
        self.selective = selective
        self.name = "surw" if selective else "urw"
        self.recorder: RecordingWords | None = None
        self._done: list[int] = []
        self.observed: list[int] = []
        self._last = -1
        self._last_interesting = True
        self._touched: dict[int, int] = {}  # word -> the actor that wrote it last

    def attach(self, recorder: RecordingWords) -> None:
        self.recorder = recorder

    def start(self, n_actors: int, stream: Stream) -> None:
        self._random = stream.random
        base = self.counts if len(self.counts) == n_actors else [64] * n_actors
        self._total = list(base)
        self._done = [0] * n_actors
        self.observed = [0] * n_actors
        self._last = -1
        self._last_interesting = True
        self._touched = {}
        if self.recorder is not None:
            self.recorder.take()

    def _interesting(self, aid: int) -> bool:
        """Whether the step ``aid`` just ran wrote a word or read another actor's write."""
        if self.recorder is None:
            return True
        reads, writes = self.recorder.take()
        writer = self._touched
        hit = bool(writes)
        if not hit:
            for w in reads:
                o = writer.get(w, aid)
                if o != aid:
                    hit = True
                    break
        for w in writes:
            writer[w] = aid
        return hit

    def choose(self, runnable: list[int], step: int) -> int:
        last = self._last
        if last >= 0:
            hit = self._interesting(last) if self.selective else True
            self._last_interesting = hit
            self.observed[last] += int(hit)
            if hit:
                self._done[last] += 1
        if len(runnable) == 1:
            c = runnable[0]
        elif self.selective and not self._last_interesting and last in runnable:
            c = last
        else:
            weights = [max(1, self._total[a] - self._done[a]) for a in runnable]
            x = self._random() * sum(weights)
            c = runnable[-1]
            for a, wt in zip(runnable, weights):
                if x < wt:
                    c = a
                    break
                x -= wt
        self._last = c
        return c

    def describe(self) -> dict[str, object]:
        return {
            "strategy": self.name,
            "counts": list(self.counts),
            "observed": list(self.observed),
        }

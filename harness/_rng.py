"""The engine's one seeded random stream.

Every scheduling choice draws from one :class:`Stream` that the engine owns, built from
a ``numpy.random.Generator`` seeded explicitly. Draws come in batches (a numpy call per
batch) because a per-call ``Generator.integers`` costs about a microsecond, more than a
whole preemption point should. The first batch is small and each next one twice the
last, up to 4096 numbers: a run of a few hundred steps (``hunt``'s are) then makes no
4096 numbers it never uses (about 70 us a run, a few percent of one). The numbers are
the same whatever the batch sizes: ``Generator.random(a)`` then ``random(b)`` gives
``random(a + b)``.
"""

from __future__ import annotations

import numpy as np

_BATCH = 4096  # the largest batch
_FIRST_BATCH = 64


class Stream:
    """A seeded stream of floats in [0, 1) and bounded ints."""

    __slots__ = ("_buf", "_gen", "_i", "_n")

    def __init__(self, seed: int | list[int]) -> None:
        self._gen = np.random.default_rng(seed)
        self._buf: list[float] = []
        self._i = 0
        self._n = _FIRST_BATCH  # the next batch's size

    def _refill(self) -> list[float]:
        n = self._n
        self._buf = buf = self._gen.random(n).tolist()
        if n < _BATCH:
            self._n = n * 2
        return buf

    def random(self) -> float:
        i = self._i
        if i >= len(self._buf):
            self._refill()
            i = 0
        self._i = i + 1
        return self._buf[i]

    def next_batch(self) -> list[float]:
        """The rest of the current batch, or a new one; the stream counts all of it as
        drawn (the deterministic engine's inline strategies read it directly)."""
        i = self._i
        if i >= len(self._buf):
            self._refill()
            i = 0
        rest = self._buf[i:] if i else self._buf
        self._i = len(self._buf)
        return rest

    def below(self, n: int) -> int:
        """A uniform int in ``[0, n)``."""
        return int(self.random() * n)

    def generator(self) -> np.random.Generator:
        """The underlying generator, for bulk draws (e.g. PCT's change points; before
        any number is drawn from the stream, or the batches' sizes would show)."""
        return self._gen

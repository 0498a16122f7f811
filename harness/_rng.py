"""The engine's one seeded random stream.

Every scheduling choice draws from one :class:`Stream` that the engine owns: the numbers
of ``numpy.random.default_rng(seed).random()``, seeded explicitly. Draws come in batches
(one call per batch) because a per-call ``Generator.integers`` costs about a
microsecond, more than a whole preemption point should. The first batch is small and
each next one twice the last, up to 4096 numbers: a run of a few hundred steps (``hunt``'s
are) then makes no 4096 numbers it never uses (about 70 us a run, a few percent of one).
The numbers are the same whatever the batch sizes: ``Generator.random(a)`` then
``random(b)`` gives ``random(a + b)``.

The seeding and the batches are computed in C where the extension is built
(core/machine/seeding.py: numpy's ``SeedSequence`` and ``PCG64``, the same numbers), and
by numpy as before without it. A numpy ``Generator`` in the same state is built only
when asked (:meth:`Stream.generator`).
"""

from __future__ import annotations

import numpy as np

from ..core.machine.errors import HarnessInternalError
from ..core.machine.seeding import generator, pcg

_BATCH = 4096  # the largest batch
_FIRST_BATCH = 64


class Stream:
    """A seeded stream of floats in [0, 1) and bounded ints."""

    __slots__ = ("_buf", "_draw", "_gen", "_i", "_n", "_seed")

    def __init__(self, seed: int | list[int]) -> None:
        self._seed = seed
        c = pcg(seed)
        self._gen: np.random.Generator | None = None
        if c is not None:
            self._draw = c.random
        else:
            self._draw = self._numpy_draw
            self._gen = generator(seed)
        self._buf: list[float] = []
        self._i = 0
        self._n = _FIRST_BATCH  # the next batch's size

    def _numpy_draw(self, n: int) -> list[float]:
        assert self._gen is not None
        out: list[float] = self._gen.random(n).tolist()
        return out

    def _refill(self) -> list[float]:
        n = self._n
        self._buf = buf = self._draw(n)
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
        """The underlying numpy generator, for bulk draws (e.g. PCT's change points),
        asked before any number is drawn from the stream (or the batches' sizes would
        show; an internal error otherwise). The stream's own batches then come from it,
        after the bulk draws, as they always did."""
        if self._buf:
            raise HarnessInternalError(
                "Stream.generator() asked after the stream drew numbers: its bulk draws "
                "would depend on the batch sizes"
            )
        gen = self._gen
        if gen is None:
            gen = self._gen = generator(self._seed)
            self._draw = self._numpy_draw
        return gen

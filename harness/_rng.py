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

from typing import Any

import numpy as np

_BATCH = 4096  # the largest batch
_FIRST_BATCH = 64
_M32 = 0xFFFFFFFF


def generator(seed: int | list[int]) -> np.random.Generator:
    """``np.random.default_rng(seed)``: the same generator (the same state, so the same
    numbers), seeded for about a fifth less. numpy's ``SeedSequence`` turns a list of
    ints into 32-bit words with a numpy scalar, an array and a concatenation per int;
    a ``uint32`` array is taken as the words themselves. So the words are made here, by
    numpy's rule (an int's 32-bit words lowest first, 0 as one word), and handed over as
    that array. A seed of another form (negative, not an int) goes to ``default_rng``
    itself, which gives its numbers or its refusal. tests/unit/test_rng_seed.py compares
    the states."""
    if type(seed) is int:
        seed_ints: Any = (seed,)
    elif type(seed) is list or type(seed) is tuple:
        seed_ints = seed
    else:
        return np.random.default_rng(seed)
    words: list[int] = []
    for n in seed_ints:
        if type(n) is not int or n < 0:
            return np.random.default_rng(seed)
        if not n:
            words.append(0)
        while n:
            words.append(n & _M32)
            n >>= 32
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(np.array(words, dtype=np.uint32)))
    )


class Stream:
    """A seeded stream of floats in [0, 1) and bounded ints."""

    __slots__ = ("_buf", "_gen", "_i", "_n")

    def __init__(self, seed: int | list[int]) -> None:
        self._gen = generator(seed)
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

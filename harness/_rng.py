"""The engine's one seeded random stream.

Every scheduling choice draws from one :class:`Stream` that the engine owns: the numbers
of ``numpy.random.default_rng(seed).random()``, seeded explicitly. Draws come in batches
(one call per batch) because a per-call ``Generator.integers`` costs about a
microsecond, more than a whole preemption point should. The first batch is small and
each next one twice the last, up to 4096 numbers: a run of a few hundred steps (``hunt``'s
are) then makes no 4096 numbers it never uses (about 70 us a run, a few percent of one).
The numbers are the same whatever the batch sizes: ``Generator.random(a)`` then
``random(b)`` gives ``random(a + b)``.

The seeding and the batches are computed by the C extension ``_cpcg`` (numpy's
``SeedSequence`` and ``PCG64``, the same numbers: tests/unit/test_rng_c.py) where it is
built: numpy's seeding builds three objects and an ``np.errstate`` each time, about 24 us,
twice a run (this stream and the CPU actor's, workloads/_schema.py). Without the
extension, or for a seed of another form, numpy draws them as before. A numpy
``Generator`` in the same state is built only when asked (:meth:`Stream.generator`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.machine.errors import HarnessInternalError

try:
    from ._cpcg import new as _cpcg_new
except ImportError:  # not built (no C compiler with 128-bit integers): numpy draws
    _cpcg_new = None

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


def pcg(seed: Any) -> Any:
    """The C stream of ``default_rng(seed)`` (``raw(n)``: ``bit_generator.random_raw(n)
    .tolist()``, ``random(n)``: ``Generator.random(n).tolist()``, ``state()``), or None:
    the extension is not built, or the seed is of a form :func:`generator` hands to
    ``default_rng`` itself (the caller then uses numpy)."""
    new = _cpcg_new
    return None if new is None else new(seed)


def pcg_generator(seed: Any, c: Any) -> np.random.Generator:
    """A numpy ``Generator`` in the state of the C stream ``c`` of ``seed`` (seeded as
    ``default_rng(seed)``, then moved to where ``c`` is: the same state as if numpy had
    made the draws itself, as the C stream keeps no 32-bit half buffered)."""
    gen = generator(seed)
    state, inc = c.state()
    gen.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": state, "inc": inc},
        "has_uint32": 0,
        "uinteger": 0,
    }
    return gen


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

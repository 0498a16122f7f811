"""Seeded numpy streams for the engine and the workloads: :func:`generator` is
``numpy.random.default_rng(seed)`` seeded for less, :func:`pcg` the same stream in C
(numpy's ``SeedSequence`` and ``PCG64``, the same numbers: tests/unit/test_rng_c.py), and
:func:`pcg_generator` a numpy ``Generator`` moved to where a C stream is.

The C extension ``_cpcg`` (core/machine/_cpcg.c) is optional: numpy's seeding builds
three objects and an ``np.errstate`` each time, about 24 us, twice a run (the engine's
``Stream``, harness/_rng.py, and the CPU actor's stream, workloads/_schema.py). Without
it, or for a seed of another form, :func:`pcg` gives None and the callers draw through
numpy as before. Here, below both callers: the workloads must not import the harness.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    from ._cpcg import new as _cpcg_new
except ImportError:  # not built (no C compiler with 128-bit integers): numpy draws
    _cpcg_new = None

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

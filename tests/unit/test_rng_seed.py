"""``harness._rng.generator`` is ``np.random.default_rng``: the same bit generator state
(so the same numbers) for every seed form the engine and the actor kinds pass (an int,
a list of ints, ints of one, two or three 32-bit words, 0), and the same refusal, from
``default_rng`` itself, for a seed numpy refuses."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from pagerace.harness._rng import Stream, generator


def _seeds() -> list[Any]:
    r = random.Random(20261201)
    pick = [0, 1, 0x5EED, 0xAC7, 2**32 - 1, 2**32, 2**64 + 5]
    out: list[Any] = [0, 1, 2**32, [], [0], [0, 0], [7, 0x5EED], [7, 2, 0xAC7]]
    for _ in range(300):
        n = r.choice([1, 2, 3, 4, 5, 7])
        e = [r.choice(pick + [r.randrange(2**32), r.randrange(2**80)]) for _ in range(n)]
        out.append(e if r.random() < 0.7 else e[0])
    return out


@pytest.mark.parametrize("chunk", range(4))
def test_generator_is_default_rng(chunk: int) -> None:
    seeds = _seeds()
    for seed in seeds[chunk::4]:
        a, b = np.random.default_rng(seed), generator(seed)
        assert a.bit_generator.state == b.bit_generator.state, seed
        assert a.random(3).tolist() == b.random(3).tolist(), seed
        assert a.integers(0, 1000, 3).tolist() == b.integers(0, 1000, 3).tolist(), seed


@pytest.mark.parametrize("seed", [-1, [3, -2], 1.5, [1, 2.0], "12", [True, 3], np.int64(4)])
def test_other_seed_forms_are_numpys_own(seed: Any) -> None:
    try:
        want: Any = np.random.default_rng(seed).bit_generator.state
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):
            generator(seed)
        return
    assert generator(seed).bit_generator.state == want


def test_stream_numbers_unchanged() -> None:
    s = Stream([12, 0x5EED])
    assert [s.random() for _ in range(200)] == np.random.default_rng([12, 0x5EED]).random(
        200
    ).tolist()

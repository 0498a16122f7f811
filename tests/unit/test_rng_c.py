"""The C streams (``core.machine._cpcg``: numpy's ``SeedSequence`` and ``PCG64`` in C) give
numpy's numbers: the seeded state of ``default_rng(seed)`` for thousands of seeds of every
form the engine and the actors pass (ints, lists, ints of one, two or three 32-bit words,
ints beyond 2**64, 0, the engine's / workers' / actors' triples), the same floats and raw
words batch after batch, the same state after mixed use of the C stream and a numpy
generator built from it; ``Stream.generator()`` only before a draw (an internal error
after); and without the extension everything falls back to numpy with the same numbers
(in process, and in a fresh interpreter where the extension cannot be imported)."""

from __future__ import annotations

import random
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from pagerace.core.machine import seeding
from pagerace.core.machine.errors import HarnessInternalError
from pagerace.core.machine.seeding import pcg, pcg_generator
from pagerace.harness._rng import Stream
from pagerace.workloads import actor_programs, load_workload
from pagerace.workloads._schema import _ActorStream, _cpu_ops, _Raw32, numpy_raw

_cpcg = pytest.importorskip("pagerace.core.machine._cpcg")


def _seeds(n: int, salt: int) -> list[Any]:
    r = random.Random(20261201 + salt)
    pick = [0, 1, 0x5EED, 0xAC7, 0x9E27, 0x6D1DE, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63,
            2**64 - 1, 2**64, 2**64 + 5, 2**96 + 3, 2**128 - 1]
    out: list[Any] = [0, 1, 2**32, 2**64, 2**200 + 1, [], [0], [0, 0], [7, 0x5EED],
                      [7, 2, 0xAC7], (5, 1, 0x9E27), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                                                       13, 14, 15, 16, 17, 2**70]]
    while len(out) < n:
        form = r.randrange(6)
        if form == 0:  # the engine's, a worker's, an actor's triple
            out.append([r.randrange(2**40), r.randrange(8), r.choice([0xAC7, 0x9E27])])
        elif form == 1:
            out.append([r.randrange(2**34), 0x5EED])
        elif form == 2:
            out.append(r.choice([r.randrange(2**32), r.randrange(2**64), r.randrange(2**140)]))
        else:
            k = r.choice([1, 2, 3, 4, 5, 7, 9])
            e = [r.choice([*pick, r.randrange(2**32), r.randrange(2**80)]) for _ in range(k)]
            out.append(e if form < 5 else tuple(e))
    return out


def _state(gen: np.random.Generator) -> tuple[int, int]:
    st = gen.bit_generator.state
    assert st["has_uint32"] == 0
    return st["state"]["state"], st["state"]["inc"]


@pytest.mark.parametrize("chunk", range(4))
def test_seeding_is_numpys(chunk: int) -> None:
    for seed in _seeds(4000, chunk)[chunk::4] if chunk else _seeds(1000, 0):
        c = pcg(seed)
        assert c is not None, seed
        assert c.state() == _state(np.random.default_rng(seed)), seed


def test_numbers_batch_after_batch() -> None:
    """Floats (Stream's batches: 64, 128, ... 4096) and raw words (the CPU kind's), in
    turns, against numpy's own calls on one generator."""
    for seed in _seeds(120, 9):
        c, g = pcg(seed), np.random.default_rng(seed)
        for n in (64, 128, 256, 0, 1, 4096, 3):
            assert c.random(n) == g.random(n).tolist(), (seed, n)
            assert c.raw(n % 17) == g.bit_generator.random_raw(n % 17).tolist(), (seed, n)
        assert c.state() == _state(g)


def test_other_seed_forms_are_left_to_numpy() -> None:
    """The forms ``generator`` hands to ``default_rng`` itself: no C stream, and the
    Stream then draws numpy's numbers (or its refusal)."""
    for seed in [-1, [3, -2], 1.5, [1, 2.0], "12", [True, 3], True, np.int64(4), [[1, 2]],
                 [np.uint32(3)], None, {1: 2}, range(3), -(2**70)]:
        assert pcg(seed) is None, seed
    s = Stream(np.int64(4))
    assert [s.random() for _ in range(70)] == np.random.default_rng(4).random(70).tolist()
    with pytest.raises(ValueError):
        Stream(-1)


def test_bad_counts() -> None:
    c = pcg(3)
    with pytest.raises(ValueError, match="count must be >= 0, got -1"):
        c.random(-1)
    with pytest.raises(TypeError):
        c.raw("4")
    assert c.state() == _state(np.random.default_rng(3))  # nothing drawn


def test_stream_is_numpys_stream() -> None:
    """``random``, ``below`` and ``next_batch`` mixed, across batch boundaries (64, 128,
    ... then 4096 at a time), against one ``Generator.random`` array."""
    r = random.Random(4)
    seeds: list[Any] = [[12, 0x5EED], [5, 3, 0x6D1DE], [2**33, 1, 0x9E27], 0, 2**70]
    for seed in seeds:
        s = Stream(seed)
        want = np.random.default_rng(seed).random(30000).tolist()
        i = 0
        while i < 20000:
            how = r.randrange(3)
            if how == 0:
                assert s.random() == want[i]
                i += 1
            elif how == 1:
                n = r.randrange(1, 50)
                assert s.below(n) == int(want[i] * n)
                i += 1
            else:
                batch = s.next_batch()
                assert batch and batch == want[i : i + len(batch)]
                i += len(batch)


def test_generator_before_draws_then_batches_follow_it() -> None:
    """PCT's use: bulk draws from ``generator()`` first, then the stream's batches
    continue from that generator, as they always did."""
    for seed in [[7, 0x5EED], [2**40 + 1, 0x5EED]]:
        s = Stream(seed)
        gen = s.generator()
        assert gen is s.generator()
        ref = np.random.default_rng(seed)
        assert _state(gen) == _state(ref)
        assert gen.permutation(5).tolist() == ref.permutation(5).tolist()
        assert gen.integers(1, 201, size=3).tolist() == ref.integers(1, 201, size=3).tolist()
        assert [s.random() for _ in range(200)] == ref.random(200).tolist()


def test_generator_after_a_draw_is_an_internal_error() -> None:
    """Silent before the first draw (above), raised after it, with or without the
    extension (the batches' sizes would show in the bulk draws)."""
    for use_c in (True, False):
        s = Stream([1, 0x5EED]) if use_c else _fallback_stream([1, 0x5EED])
        s.random()
        with pytest.raises(HarnessInternalError, match="after the stream drew"):
            s.generator()
        s = Stream([1, 0x5EED]) if use_c else _fallback_stream([1, 0x5EED])
        s.next_batch()
        with pytest.raises(HarnessInternalError):
            s.generator()


def _fallback_stream(seed: Any) -> Stream:
    saved = seeding._cpcg_new
    seeding._cpcg_new = None
    try:
        return Stream(seed)
    finally:
        seeding._cpcg_new = saved


def test_actor_stream_mixed_use_keeps_numpys_state() -> None:
    """Raw words from C, then numpy calls (a numpy generator moved to the C stream's
    state), then raw words again (from numpy now): numpy's numbers throughout, and the
    same final state, including 32-bit draws (numpy's buffered half) after the move."""
    for seed in _seeds(200, 5):
        if type(seed) is not list:
            continue
        a, g = _ActorStream(seed), np.random.default_rng(seed)
        assert a.raw(7) == g.bit_generator.random_raw(7).tolist()
        assert not isinstance(a._gen, np.random.Generator) and a.drawn
        assert a.integers(0, 1000, 5).tolist() == g.integers(0, 1000, 5).tolist()
        assert a.integers(0, 2**31, 3, dtype=np.uint32).tolist() == g.integers(
            0, 2**31, 3, dtype=np.uint32
        ).tolist()
        assert a.raw(3) == g.bit_generator.random_raw(3).tolist()
        assert a.random() == g.random()
        assert a.bit_generator.state == g.bit_generator.state


def test_pcg_generator_is_at_the_c_streams_state() -> None:
    seeds: list[Any] = [[3, 4, 0xAC7], 2**65 + 9]
    for seed in seeds:
        c, g = pcg(seed), np.random.default_rng(seed)
        c.random(100)
        g.random(100)
        moved = pcg_generator(seed, c)
        assert moved.bit_generator.state == g.bit_generator.state
        assert moved.random(10).tolist() == g.random(10).tolist()


def test_cpu_kind_from_c_and_from_numpy() -> None:
    """The CPU kind's operations from an actor stream (computed in C) and from a numpy
    generator (``_Raw32`` over its bit generator's raw words), the same; the actor
    stream counts as drawn, builds no numpy generator, and is left where ``_Raw32``
    leaves numpy's (its batches drawn whole: the next raw words agree)."""
    p = {"mm": 1, "range": [3, 3 + (3 << 30)], "ops": 60, "write_ratio": 0.3, "hot": []}
    for s in range(40):
        seed = [s, 2, 0xAC7]
        a, g = _ActorStream(seed), np.random.default_rng(seed)
        assert _cpu_ops(p, a) == _cpu_ops(p, g)
        assert a.drawn and a._gen is None
        assert a.raw(5) == g.bit_generator.random_raw(5).tolist()


def test_c_cpu_ops_are_raw32s() -> None:
    """``cpu_ops`` in C against ``_Raw32.cpu_ops`` (tests/unit/test_actor_streams.py
    checks that one against numpy's calls): spans with many rejections (3 << 30, 2**32 -
    1), small spans, a span of 1, hot lists, first batches smaller than a run's (refills
    of 16) and larger, write ratios 0 and 1, offsets; the same operations and the same
    stream state after."""
    r = random.Random(11)
    spans = [1, 2, 3, 7, 8, 100, 3 << 30, (1 << 31) + 1, (1 << 32) - 5, (1 << 32) - 1]
    for case in range(3000):
        span = spans[case % len(spans)] if case < 1500 else r.randrange(1, 1 << 32)
        hot = [] if r.random() < 0.7 else [r.randrange(1 << 20) for _ in range(span)] if (
            span < 50) else []
        off = 0 if hot else r.choice([0, 5, r.randrange(1 << 40)])
        n = r.randrange(0, 60)
        first = r.choice([n + (n + 1) // 2 + 1, 1, 4, 0, r.randrange(200)])
        wr = r.choice([0.0, 1.0, r.random()])
        mm = r.randrange(4)
        seed = [r.randrange(1 << 40), r.randrange(8), 0xAC7]
        c, g = pcg(seed), np.random.default_rng(seed)
        want = _Raw32(numpy_raw(g.bit_generator), first).cpu_ops(n, span, off, wr, mm, hot)
        assert c.cpu_ops(n, span, off, wr, mm, hot, first) == want, (case, seed)
        assert c.state() == _state(g), (case, seed)


def test_c_cpu_ops_refuses_bad_arguments() -> None:
    c = pcg(1)
    for args, exc in [((3, 0, 0, 0.5, 0, [], 5), ValueError), ((3, 1 << 32, 0, 0.5, 0, [], 5),
                      ValueError), ((3, 4, 0, 0.5, 0, (1, 2, 3, 4), 5), TypeError),
                      ((3, 4, 0, "x", 0, [], 5), TypeError), ((-1, 4, 0, 0.5, 0, [], 5),
                      ValueError), ((3, 4, 0, 0.5, 0, []), TypeError)]:
        with pytest.raises(exc):
            c.cpu_ops(*args)
    with pytest.raises(IndexError):  # a hot list shorter than the span
        c.cpu_ops(50, 4, 0, 0.5, 0, [7], 10)
    assert c.cpu_ops(3, 1, 9, 1.0, 2, [], 1) == [("write", 2, 9)] * 3  # span 1: no draw


def test_fallback_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the extension (``_cpcg_new`` None, as when it failed to import): no C
    stream, the same numbers from numpy, and the same operation lists."""
    w = load_workload("opposite-order")
    with_c = [actor_programs(w, s) for s in range(6)]
    monkeypatch.setattr(seeding, "_cpcg_new", None)
    assert pcg([1, 2]) is None
    a = _ActorStream([4, 2, 0xAC7])
    assert a.raw(5) == np.random.default_rng([4, 2, 0xAC7]).bit_generator.random_raw(5).tolist()
    assert isinstance(a._gen, np.random.Generator)
    s = Stream([9, 0x5EED])
    assert s._gen is not None
    assert [s.random() for _ in range(300)] == np.random.default_rng([9, 0x5EED]).random(
        300
    ).tolist()
    from pagerace.workloads import _schema

    _schema._SEEDLESS.clear()
    assert [actor_programs(w, s) for s in range(6)] == with_c


_PROBE = """
import sys
sys.modules["pagerace.core.machine._cpcg"] = None  # the import fails as when it was not built
from pagerace.core.machine import seeding
assert seeding._cpcg_new is None and seeding.pcg(3) is None
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload
w = load_workload("opposite-order")
for strategy in ("random", "pct"):
    for seed in range(4):
        r = run_deterministic(w, variant="v5.0", seed=seed, strategy=strategy).result
        print(strategy, seed, r.steps, r.schedule.tolist())
"""


def test_fallback_in_a_fresh_interpreter() -> None:
    """A pure-Python install (the extension not importable): runs work and make the same
    schedules as with the extension."""
    from pagerace.harness.runner import run_deterministic

    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    w = load_workload("opposite-order")
    want = []
    for strategy in ("random", "pct"):
        for seed in range(4):
            r = run_deterministic(w, variant="v5.0", seed=seed, strategy=strategy).result
            want.append(f"{strategy} {seed} {r.steps} {r.schedule.tolist()}")
    assert out[:-1] == want

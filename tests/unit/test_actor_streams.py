"""The actors' operation lists are drawn more cheaply than one numpy call a number, and
are still the very lists the plain draws give (the fingerprints hash them): the CPU
kind's batched draws (``_Raw32``) against ``Generator.integers`` / ``random`` one at a
time, the lazy stream of a kind that draws nothing, and ``actor_programs`` against the
plain algorithm (a ``default_rng([seed, actor, 0xAC7])`` per actor) for every workload."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from pagerace.workloads import ACTOR_KINDS, actor_programs, load_workload, workload_names
from pagerace.workloads._schema import _SEEDLESS, _cpu_ops, _Raw32, numpy_raw


def _cpu_ops_plain(p: Mapping[str, Any], rng: np.random.Generator) -> list[tuple[Any, ...]]:
    """The CPU kind as it was written first: two numpy calls an operation."""
    lo, hi = p["range"]
    hot = [int(x) for x in p["hot"]]
    ops = []
    for _ in range(int(p["ops"])):
        vpn = hot[int(rng.integers(len(hot)))] if hot else int(rng.integers(lo, hi))
        kind = "write" if rng.random() < float(p["write_ratio"]) else "read"
        ops.append((kind, int(p["mm"]), vpn))
    return ops


def _programs_plain(w: Any, seed: int) -> list[tuple[str, str, dict[str, Any], Any]]:
    """``actor_programs`` without its shortcuts: every actor gets its generator."""
    out = []
    aid = 0
    per_kind: dict[str, int] = {}
    for spec in w.actors:
        fn, defaults, _doc = ACTOR_KINDS[spec.kind]
        if spec.kind == "cpu":
            fn = _cpu_ops_plain
        params = {**defaults, **spec.params}
        for _ in range(spec.count):
            i = per_kind.get(spec.kind, 0)
            per_kind[spec.kind] = i + 1
            ops = fn(params, np.random.default_rng([seed, aid, 0xAC7]))
            out.append((f"{spec.kind}{i}", spec.kind, params, ops))
            aid += 1
    return out


def _outcome(fn: Any, p: Mapping[str, Any], seed: list[int]) -> tuple[Any, str]:
    try:
        return fn(p, np.random.default_rng(seed)), ""
    except Exception as exc:  # the same refusal (numpy's ValueError) from both
        return None, repr(exc)


def test_cpu_ops_draw_the_same_numbers_as_one_call_each() -> None:
    """Spans of every size: small (no rejection possible for a power of two, rare
    otherwise), large enough that Lemire's method rejects often (3 * 2**30: one draw in
    four), the 32-bit limit and beyond (numpy's other algorithms: drawn one at a time),
    a single hot page (a span of 1 draws nothing), empty and reversed ranges (refused)."""
    r = random.Random(7)
    spans = [1, 2, 3, 5, 7, 8, 100, 3 << 30, (1 << 31) + 1, (1 << 32) - 5, (1 << 32) - 1,
             1 << 32, (1 << 32) + 1, 1 << 40, 0, -1]
    rejected = 0
    for case in range(1500):
        span = spans[case % len(spans)] if case < 600 else r.randrange(1, 1 << 24)
        lo = r.randrange(0, 1 << 20)
        hot = [] if r.random() < 0.8 else [r.randrange(64) for _ in range(r.randrange(1, 5))]
        p = {"mm": r.randrange(3), "range": [lo, lo + span], "ops": r.randrange(0, 40),
             "write_ratio": r.choice([0.0, 1.0, r.random()]), "hot": hot}
        seed = [r.randrange(1 << 40), r.randrange(8), 0xAC7]
        assert _outcome(_cpu_ops, p, seed) == _outcome(_cpu_ops_plain, p, seed), (p, seed)
        if span == 3 << 30 and not hot and p["ops"] > 8:
            rejected += 1
    assert rejected  # the rejection loop ran (a quarter of those draws reject)


_M32 = 0xFFFFFFFF


def _next64(r: _Raw32) -> int:
    """The next raw 64-bit output of ``r``'s batches (refilled 16 at a time)."""
    if r._i >= len(r._raw):
        r._raw, r._i = r._refill(16), 0
    r._i += 1
    return r._raw[r._i - 1]


def _next32(r: _Raw32) -> int:
    """The buffered high half of an output, else a new output's low half."""
    h = r._half
    if h >= 0:
        r._half = -1
        return h
    x = _next64(r)
    r._half = x >> 32
    return x & _M32


def _bounded(r: _Raw32, span: int) -> int:
    """``integers(0, span)`` one at a time from ``r``'s state: the reference of
    ``_Raw32.cpu_ops`` (Lemire's bounded draw on 32-bit words, numpy's
    ``buffered_bounded_lemire_uint32``)."""
    if span == 1:
        return 0
    m = _next32(r) * span
    if m & _M32 < span:
        threshold = (_M32 - span + 1) % span
        while m & _M32 < threshold:
            m = _next32(r) * span
    return m >> 32


def _double(r: _Raw32) -> float:
    """``random()`` one at a time: the top 53 bits of the next 64-bit output."""
    return (_next64(r) >> 11) * (1.0 / 9007199254740992.0)


def test_raw32_rejects_as_numpy_does() -> None:
    """A span whose rejection threshold is a quarter of the 32-bit words: the batched
    draws follow numpy through every rejection and every buffered half word."""
    span = 3 << 30
    for seed in range(20):
        g = np.random.default_rng(seed)
        want = [int(g.integers(0, span)) if j % 3 else float(g.random()) for j in range(300)]
        d = _Raw32(numpy_raw(np.random.default_rng(seed).bit_generator), 4)  # refills often
        got = [_bounded(d, span) if j % 3 else _double(d) for j in range(300)]
        assert got == want


def test_raw32_cpu_ops_are_its_calls() -> None:
    """``_Raw32.cpu_ops`` (the CPU kind's loop, its draws written out) against
    ``_bounded`` then ``_double`` an operation (checked against numpy above), through
    rejections (span 3 << 30), refills (a batch of 4), a span of 1, hot lists, and the
    state it leaves for the next draw."""
    for seed in range(30):
        for span, hot in [(3 << 30, []), (7, []), (1, [5]), (3, [9, 4, 2]), (1 << 31, [])]:
            off = 0 if hot else 100
            n = 5 + seed % 40
            a = _Raw32(numpy_raw(np.random.default_rng(seed).bit_generator), 4)
            b = _Raw32(numpy_raw(np.random.default_rng(seed).bit_generator), 4)
            want = []
            for _ in range(n):
                i = _bounded(a, span) + off
                want.append(("write" if _double(a) < 0.4 else "read", 2, hot[i] if hot else i))
            assert b.cpu_ops(n, span, off, 0.4, 2, hot) == want
            assert [_bounded(b, span) for _ in range(9)] == [_bounded(a, span) for _ in range(9)]


@pytest.mark.parametrize("name", workload_names())
def test_actor_programs_are_the_plain_draws(name: str) -> None:
    w = load_workload(name)
    for seed in (0, 1, 2, 977, 2**33 + 5):
        assert actor_programs(w, seed) == _programs_plain(w, seed)
        assert actor_programs(w, seed) == _programs_plain(w, seed)  # the cached lists too


def test_a_kind_that_draws_nothing_builds_no_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver migrating its whole range draws nothing: its list is the same for every
    seed and built once; a driver moving chunks draws its starts, differently per seed.
    (A stream is seeded through the C stream, ``pcg``, or numpy's, ``generator``: both
    counted.)"""
    from pagerace.workloads import _schema

    w = load_workload("opposite-order")
    built: list[Any] = []
    real, real_pcg = _schema.generator, _schema.pcg

    def counting(seed: Any = None) -> np.random.Generator:
        built.append(seed)
        return real(seed)

    def counting_pcg(seed: Any) -> Any:
        built.append(seed)
        return real_pcg(seed)

    monkeypatch.setattr(_schema, "generator", counting)
    monkeypatch.setattr(_schema, "pcg", counting_pcg)
    _SEEDLESS.clear()
    first = actor_programs(w, 1)
    # The CPU only (seeded once by pcg, or by pcg then generator without the extension).
    assert {(e[1], e[2]) for e in built} == {(2, 0xAC7)}
    built.clear()
    again = actor_programs(w, 2)
    assert {e[1] for e in built} == {2}
    assert [p[3] for p in first[:2]] == [p[3] for p in again[:2]]  # the drivers' lists
    first[0][3].append(("idle", 1))  # a caller's copy: the cached list is not touched
    assert actor_programs(w, 3)[0][3] == again[0][3]
    monkeypatch.undo()
    table = dict(w.raw)
    table["actor"] = [dict(table["actor"][0], chunk=2, ops=6)]
    from pagerace.workloads import parse_workload

    wc = parse_workload(table, "chunks")
    lists = {tuple(actor_programs(wc, s)[0][3]) for s in range(8)}
    assert len(lists) > 1

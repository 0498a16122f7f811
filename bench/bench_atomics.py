"""Per-op cost of the two words backends and of a plain numpy element write.

``measure()`` times, in one run and one process: AtomicWords (the C extension)
load / store / cas / fetch_add, PlainWords (the pure-Python reference) load / store /
cas / fetch_add, numpy ``arr[i] = v``, and an empty ``for`` loop as the baseline. Each
figure is the median over ``repeats`` rounds of ``n`` calls, in ns per op, and includes
the loop overhead (the ``empty_loop`` figure), as the tables in
shared/MEASUREMENTS.md section 2 do. Rounds interleave the ops so that drift in the
machine's speed hits them all alike.

Run ``python bench/bench_atomics.py`` (after ``pip install -e .``) to print the table.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any

import numpy as np

NWORDS = 64
IDX = 5


def _loop_empty(_obj: Any, n: int) -> int:
    r = range(n)
    t0 = perf_counter_ns()
    for _ in r:
        pass
    return perf_counter_ns() - t0


def _loop_load(w: Any, n: int) -> int:
    f = w.load
    r = range(n)
    t0 = perf_counter_ns()
    for _ in r:
        f(IDX)
    return perf_counter_ns() - t0


def _loop_store(w: Any, n: int) -> int:
    f = w.store
    r = range(n)
    t0 = perf_counter_ns()
    for _ in r:
        f(IDX, 7)
    return perf_counter_ns() - t0


def _loop_cas(w: Any, n: int) -> int:
    # The word holds 7 after the store loop, so cas(7 -> 7) succeeds on every call:
    # the uncontended trylock cost.
    f = w.cas
    r = range(n)
    t0 = perf_counter_ns()
    for _ in r:
        f(IDX, 7, 7)
    return perf_counter_ns() - t0


def _loop_fetch_add(w: Any, n: int) -> int:
    # Its own word, which grows by n per round: far from int64 overflow (PlainWords
    # would raise), and past the small-int cache, so the returned old value is a fresh
    # int object, as for most real flag words. load/store/cas keep seeing 7 on IDX.
    f = w.fetch_add
    r = range(n)
    t0 = perf_counter_ns()
    for _ in r:
        f(IDX + 1, 1)
    return perf_counter_ns() - t0


def _loop_numpy_setitem(arr: Any, n: int) -> int:
    r = range(n)
    t0 = perf_counter_ns()
    for _ in r:
        arr[IDX] = 7
    return perf_counter_ns() - t0


def measure(n: int = 200_000, repeats: int = 5) -> dict[str, float]:
    """Median ns per op over ``repeats`` rounds of ``n`` calls each.

    Returns:
        ``{"atomic_load", "atomic_store", "atomic_cas", "atomic_fetch_add",
        "plain_load", "plain_store", "plain_cas", "plain_fetch_add",
        "numpy_setitem", "empty_loop"}`` mapped to ns/op (loop overhead included).

    Raises:
        ImportError: the C extension is not built.
    """
    from pagerace.core.machine._atomicwords import AtomicWords
    from pagerace.core.machine.words import PlainWords

    arr_a = np.zeros(NWORDS, dtype=np.int64)
    arr_p = np.zeros(NWORDS, dtype=np.int64)
    arr_n = np.zeros(NWORDS, dtype=np.int64)
    aw = AtomicWords(arr_a)
    pw = PlainWords(arr_p)
    try:
        cases: list[tuple[str, Callable[[Any, int], int], Any]] = [
            ("empty_loop", _loop_empty, None),
            ("atomic_load", _loop_load, aw),
            ("atomic_store", _loop_store, aw),
            ("atomic_cas", _loop_cas, aw),
            ("atomic_fetch_add", _loop_fetch_add, aw),
            ("plain_load", _loop_load, pw),
            ("plain_store", _loop_store, pw),
            ("plain_cas", _loop_cas, pw),
            ("plain_fetch_add", _loop_fetch_add, pw),
            ("numpy_setitem", _loop_numpy_setitem, arr_n),
        ]
        for _name, fn, obj in cases:  # warm-up round, not timed
            fn(obj, min(n, 10_000))
        samples: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        for _ in range(repeats):
            for name, fn, obj in cases:
                samples[name].append(fn(obj, n) / n)
        return {name: statistics.median(vals) for name, vals in samples.items()}
    finally:
        aw.release()
        pw.release()


if __name__ == "__main__":
    results = measure()
    width = max(len(k) for k in results)
    for key, ns in results.items():
        print(f"{key:<{width}}  {ns:7.1f} ns/op")

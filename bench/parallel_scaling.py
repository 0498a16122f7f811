"""Parallel scaling: kernel operations per second of the parallel engine with 1, 2 and 4
workers on ``default``, and the cost of one shared-memory atomic against a plain numpy
element write.

Throughput of one run is the sum of the actors' finished operations (``Actor.progress``
of the returned record) divided by the run's measured time (``RunResult.elapsed``); the
figure is the median over runs with different seeds. A run that an oracle stops early
still counts with the operations it did in the time it ran (the note says how many).
Workers beyond the number of actors stay unused (the engine deals actors round robin).

The atomic cost comes from ``bench/bench_atomics.py`` (``measure``): ns per call of
``AtomicWords.cas`` / ``store`` / ``fetch_add`` and of ``arr[i] = v`` in the same process,
loop overhead included in both.
"""

from __future__ import annotations

import importlib
import os

from ._machine import Figure, Log, Target, median, quiet, unavailable

SCALING_TARGET = Target(">=", 1.8, "parallel engine: 2 workers ≥1.8× the throughput of 1")
WORKERS = (1, 2, 4)


def run(quick: bool = False, log: Log = quiet) -> list[Figure]:
    figs: list[Figure] = []
    figs.extend(_scaling(quick, log))
    figs.extend(_atomics(quick, log))
    return figs


def _scaling(quick: bool, log: Log) -> list[Figure]:
    try:
        mod = importlib.import_module("pagerace.harness.parallel")
        run_parallel = mod.run_parallel
    except (ImportError, AttributeError) as exc:
        why = f"no parallel engine (harness/parallel.py: {exc})"
        out = [unavailable(f"parallel.workers{n}.ops_per_s", f"parallel engine, {n} workers",
                           "ops/s", why) for n in WORKERS]
        out.append(unavailable("parallel.speedup_2v1", "parallel 2 workers / 1 worker", "ratio",
                               why, target=SCALING_TARGET))
        return out
    from pagerace.workloads import load_workload

    w = load_workload("default")
    duration = 0.5 if quick else 3.0
    repeats = 1 if quick else 3
    rates: dict[int, list[float]] = {n: [] for n in WORKERS}
    early: dict[int, list[float]] = {n: [] for n in WORKERS}
    cpu_workers: dict[int, list[float]] = {n: [] for n in WORKERS}
    cpu_parent: dict[int, list[float]] = {n: [] for n in WORKERS}
    # Interleaved rounds, so drift in the machine's speed hits every worker count alike.
    # A run an oracle stops early measures mostly start-up: up to 3x the runs are tried
    # to get ``repeats`` that ran their whole duration.
    for seed in range(repeats * 3):
        need = [n for n in WORKERS if len(rates[n]) < repeats]
        if not need:
            break
        for n in need:
            log(f"parallel scaling: {n} workers, seed {seed}")
            t0 = os.times()
            rec = run_parallel(w, seed=seed, workers=n, duration=duration)
            t1 = os.times()
            ops = sum(a.progress for a in rec.actors)
            el = rec.result.elapsed
            if el > 0:
                (rates if rec.result.failure is None else early)[n].append(ops / el)
                if rec.result.failure is None:
                    wall = max(t1.elapsed - t0.elapsed, 1e-9)
                    cpu_workers[n].append(
                        (t1.children_user + t1.children_system - t0.children_user
                         - t0.children_system) / wall)
                    cpu_parent[n].append((t1.user + t1.system - t0.user - t0.system) / wall)
    failed = {n: len(early[n]) for n in WORKERS}
    actors = w.n_actors()
    figs = []
    med: dict[int, float | None] = {}
    for n in WORKERS:
        note = []
        if rates[n]:
            med[n] = median(rates[n])
        elif early[n]:
            med[n] = median(early[n])
            note.append("every run was stopped early by an oracle: median of those short runs")
        else:
            med[n] = None
        if failed[n]:
            note.append(f"{failed[n]} runs stopped early by an oracle (a failure found) were "
                        "left out" if rates[n] else f"{failed[n]} runs stopped early")
        if n > actors:
            note.append(f"default has {actors} actors: only {actors} workers get one")
        figs.append(
            Figure(
                f"parallel.workers{n}.ops_per_s",
                f"parallel engine on default, {n} worker{'s' if n > 1 else ''}",
                med[n],
                "ops/s",
                how=f"sum(Actor.progress)/RunResult.elapsed, {duration:g} s runs, median of "
                f"{len(rates[n]) or len(early[n])}",
                note="; ".join(note),
            )
        )
    for n in WORKERS:
        if cpu_workers[n]:
            figs.append(
                Figure(
                    f"parallel.workers{n}.worker_cores",
                    f"CPU the {n} worker{'s' if n > 1 else ''} got (cores)",
                    median(cpu_workers[n]),
                    "cores",
                    how="reaped children's user+system CPU seconds / wall seconds of run_parallel "
                    "(os.times), median over the clean runs",
                )
            )
            figs.append(
                Figure(
                    f"parallel.workers{n}.parent_cores",
                    f"CPU the parent (watchdog) used with {n} worker{'s' if n > 1 else ''} (cores)",
                    median(cpu_parent[n]),
                    "cores",
                    how="this process's user+system CPU seconds / wall seconds of run_parallel",
                )
            )
    m1, m2 = med[1], med[2]
    figs.append(
        Figure(
            "parallel.speedup_2v1",
            "parallel 2 workers / 1 worker",
            (m2 / m1) if m1 and m2 else None,
            "ratio",
            how="the two medians above, same run",
            target=SCALING_TARGET,
        )
    )
    return figs


def _atomics(quick: bool, log: Log) -> list[Figure]:
    log("parallel scaling: atomic op cost")
    try:
        from .bench_atomics import measure
    except ImportError as exc:  # pragma: no cover - bench_atomics is in the tree
        return [unavailable("atomics.cas_vs_numpy", "AtomicWords.cas / numpy write", "ratio", str(exc))]
    try:
        r = measure(50_000 if quick else 200_000, 3 if quick else 7)
    except ImportError as exc:
        why = f"C extension not built ({exc})"
        return [unavailable("atomics.cas_vs_numpy", "AtomicWords.cas / numpy write", "ratio", why)]
    how = "bench_atomics.measure: median ns per call, loop overhead included"
    return [
        Figure("atomics.atomic_cas_ns", "AtomicWords.cas", r["atomic_cas"], "ns/op", how=how),
        Figure("atomics.atomic_store_ns", "AtomicWords.store", r["atomic_store"], "ns/op", how=how),
        Figure("atomics.atomic_fetch_add_ns", "AtomicWords.fetch_add", r["atomic_fetch_add"],
               "ns/op", how=how),
        Figure("atomics.numpy_setitem_ns", "numpy arr[i] = v", r["numpy_setitem"], "ns/op", how=how),
        Figure("atomics.empty_loop_ns", "empty loop (overhead in all of these)", r["empty_loop"],
               "ns/op", how=how),
        Figure("atomics.cas_vs_numpy", "AtomicWords.cas / numpy write", r["atomic_cas"] / r["numpy_setitem"],
               "ratio", how="the two figures above, same run"),
        Figure("atomics.store_vs_numpy", "AtomicWords.store / numpy write",
               r["atomic_store"] / r["numpy_setitem"], "ratio", how="same run"),
    ]

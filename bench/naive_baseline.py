"""The naive baseline: the catalog bugs hunted the way people do without pagerace.

Python threads (``threading``), one per actor, each runs the same kernel-path generators
(:func:`harness.runner.build_model` → :func:`core.actors.program`) over the same state at
full speed, with a random short sleep (``time.sleep(uniform(0, 100 µs))``) between
preemption points. A thread that yields a :class:`Block` spins on the lock word with
``time.sleep(0)`` until it clears. Failure detection is what such a test can do:

- an :class:`InvariantViolation` raised inside a thread (the same local checks);
- a per-thread no-progress timeout: a thread that has not finished an operation for
  ``stall`` seconds is a hang (reported as a deadlock if it is waiting on a lock, else a
  livelock; either counts for an entry whose oracle is a hang);
- every live thread blocked on a lock that is still held, seen twice 10 ms apart
  (deadlock);
- the same global invariants (``check_all``) once every thread has finished.

A hunt repeats such runs with fresh seeds until one fails with one of the entry's oracle
kinds or the per-hunt wall-clock budget, the same as pagerace's, runs out. The figure
per entry is the ratio of median times to find, baseline / pagerace (default strategy);
a hunt that did not find it within the budget counts as the budget, which makes the
ratio a lower bound when the baseline ran out in most hunts.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Mapping
from typing import Any

from ._machine import Deadline, Figure, Log, Target, median, quartiles, quiet, unavailable
from .time_to_find import SEED_STRIDE, Entry, Hunt, default_strategy, resolve_entries

RATIO_TARGET = Target(">=", 10.0, "every catalog entry ≥10× faster than the naive threaded baseline")
HANG = {"deadlock", "livelock"}  # the baseline cannot tell these apart reliably: either counts
SLEEP_MAX = 100e-6  # seconds: the random sleep between steps is uniform in [0, SLEEP_MAX)


def threaded_run(
    e: Entry, seed: int, deadline: float, stall: float
) -> tuple[Any, int]:
    """One run of ``e`` on threads; (Failure or None, steps taken)."""
    from pagerace.core.actors import program
    from pagerace.core.machine.errors import Failure, FailureKind, InvariantViolation
    from pagerace.core.machine.kernel import Block
    from pagerace.core.oracles.invariants import check_all
    from pagerace.harness.runner import build_model

    m = build_model(e.workload, e.variant or "v6", e.bugs, seed)
    k = m.kernel
    k.actors = m.actors
    load = k.words.load
    n = len(m.actors)
    gens = [program(k, a, ops) for a, ops in zip(m.actors, m.ops)]
    stop = threading.Event()
    failures: list[Any] = []
    blocked: list[Block | None] = [None] * n
    done = [False] * n  # the thread has exited (finished, failed or stopped)
    finished = [False] * n  # the thread ran its program to the end
    steps = [0] * n
    last_progress = [time.perf_counter()] * n

    def body(aid: int) -> None:
        rng = random.Random(seed * 7919 + aid)
        gen = gens[aid]
        a = m.actors[aid]
        seen = a.progress
        try:
            while not stop.is_set():
                try:
                    req = gen.send(None)
                except StopIteration:
                    finished[aid] = True
                    break
                steps[aid] += 1
                if a.progress != seen:
                    seen = a.progress
                    last_progress[aid] = time.perf_counter()
                if type(req) is Block:
                    blocked[aid] = req
                    while load(req.word) & req.mask and not stop.is_set():
                        time.sleep(0)
                    blocked[aid] = None
                else:
                    time.sleep(rng.random() * SLEEP_MAX)
        except InvariantViolation as exc:
            failures.append(exc.failure)
            stop.set()
        except Exception as exc:  # a crash inside a path is a failure a tester would see too
            failures.append(Failure(kind=FailureKind.BUG_ON, message=f"{type(exc).__name__}: {exc}"))
            stop.set()
        finally:
            done[aid] = True

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    suspect = 0
    while not stop.is_set():
        time.sleep(0.005)
        now = time.perf_counter()
        live = [i for i in range(n) if not done[i]]
        if not live:
            break
        if now >= deadline:
            stop.set()
            break
        waits = [blocked[i] for i in live]
        if all(w is not None and load(w.word) & w.mask for w in waits):
            suspect += 1
            if suspect >= 2:
                names = [m.actors[i].name for i in live]
                failures.append(Failure(kind=FailureKind.DEADLOCK,
                                        message=f"every live thread is blocked: {names}"))
                stop.set()
                break
        else:
            suspect = 0
        for i in live:
            if now - last_progress[i] > stall:
                # A hang: stuck on a lock (deadlock) or running in place (livelock); the
                # hunt counts either for an entry whose oracle is a hang.
                w = blocked[i]
                kind = FailureKind.DEADLOCK if w is not None else FailureKind.LIVELOCK
                failures.append(Failure(kind=kind, message=(
                    f"{m.actors[i].name} finished no operation for {stall} s"
                    + (f", blocked on {w.kind}:{w.target}" if w is not None else ""))))
                stop.set()
                break
    stop.set()
    for t in threads:
        t.join(timeout=5.0)
    for g in gens:
        # a generator still running in a stuck thread, or its cleanup raising
        with contextlib.suppress(Exception):
            g.close()
    if not failures and all(finished):
        try:
            check_all(k, final=True)
        except InvariantViolation as exc:
            failures.append(exc.failure)
    return (failures[0] if failures else None), sum(steps)


def naive_hunt(e: Entry, base: int, budget: float, stall: float) -> Hunt:
    t0 = time.perf_counter()
    end = t0 + budget
    runs = points = other = 0
    while True:
        failure, steps = threaded_run(e, base * SEED_STRIDE + runs, end, stall)
        runs += 1
        points += steps
        if failure is not None:
            if failure.kind.value in e.oracle or (
                failure.kind.value in HANG and HANG & set(e.oracle)
            ):
                return Hunt(True, runs, points, time.perf_counter() - t0, failure.kind.value,
                            None, other)
            other += 1
        if time.perf_counter() >= end:
            return Hunt(False, runs, points, time.perf_counter() - t0, None, None, other)


def run(
    quick: bool = False,
    log: Log = quiet,
    pagerace: Mapping[str, tuple[float, bool]] | None = None,
    time_cap: float | None = None,
    best: Mapping[str, tuple[float, bool, str]] | None = None,
) -> list[Figure]:
    """``pagerace``: bug -> (median seconds to find by the default strategy, lower bound?)
    from the time-to-find benchmark of the same run; measured here when not given.
    ``best``: bug -> (median by the entry's best strategy, lower bound?, strategy), for a
    second ratio beside the target's."""
    from .time_to_find import deterministic_hunter

    n_hunts = 2 if quick else 10  # issue 13 item 6: over 10 hunts, with the spread
    budget = 0.5 if quick else 10.0
    stall = 0.5  # about 5,000 steps of a thread at the baseline's speed (pagerace: 4,000-20,000)
    cap = Deadline(time_cap if time_cap is not None else (4.0 if quick else 240.0))
    entries = resolve_entries()
    figs: list[Figure] = []
    ratios: list[tuple[str, float, bool]] = []
    hunted = [e for e in entries if not e.why_not]
    dflt = default_strategy()
    for i, e in enumerate(entries):
        label = f"{e.name}: naive threads / pagerace"
        if e.why_not:
            figs.append(unavailable(f"naive.{e.name}.ratio", label, "ratio", e.why_not))
            continue
        log(f"naive baseline: {e.name}")
        if pagerace is not None and e.name in pagerace:
            pr_s, pr_lb = pagerace[e.name]
        else:
            hunter = deterministic_hunter("pct" if dflt == "pct" else "random", 3)
            hs = [hunter(e, b + 1, budget) for b in range(3)]
            pr_s = median([h.seconds if h.found else max(h.seconds, budget) for h in hs])
            pr_lb = sum(not h.found for h in hs) * 2 >= len(hs)
        share = cap.left() / max(1, len(hunted) - hunted.index(e))
        t_cell = time.perf_counter()
        hunts: list[Hunt] = []
        for b in range(n_hunts):
            spent = time.perf_counter() - t_cell
            if cap.over() or (b and spent + spent / b > share):
                break
            hunts.append(naive_hunt(e, b + 1, budget, stall))
            if len(hunts) >= 2 and not any(h.found for h in hunts):
                break
        if not hunts:
            figs.append(Figure(f"naive.{e.name}.ratio", label, None, "ratio",
                               note="not measured: the benchmark's time cap ran out before it"))
            continue
        found = sum(h.found for h in hunts)
        secs = [h.seconds if h.found else max(h.seconds, budget) for h in hunts]
        base_s = median(secs)
        base_lb = (len(hunts) - found) * 2 >= len(hunts)
        q1, q3 = quartiles(secs)
        note = [
            f"baseline found it in {found}/{len(hunts)} hunts of ≤{budget:g} s; "
            f"quartiles {q1:.3g}-{q3:.3g} s"
        ]
        if base_lb:
            note.append("baseline median is the budget: the ratio is a lower bound")
        value: float | None
        if pr_lb and base_lb:
            value = None
            note.append("neither pagerace nor the baseline found it within the budget")
        else:
            value = base_s / max(pr_s, 1e-6)
            if pr_lb:
                note.append("pagerace's median is a lower bound too: the ratio is an upper bound")
        figs.append(
            Figure(
                f"naive.{e.name}.baseline_s",
                f"{e.name}: naive threads, seconds to find",
                base_s,
                "s",
                how=f"median over {len(hunts)} hunts (threads, random sleeps, {stall:g} s stall timeout)",
                note="; ".join(note[:2]),
                lower_bound=base_lb,
                extra={
                    "runs": [h.runs for h in hunts],
                    "seconds": secs,
                    "q1": q1,
                    "q3": q3,
                    "found": found,
                    "hunts": len(hunts),
                },
            )
        )
        figs.append(
            Figure(
                f"naive.{e.name}.ratio",
                label,
                value,
                "ratio",
                how=f"baseline median / pagerace median ({pr_s:.4g} s by the default strategy)",
                note="; ".join(note),
                lower_bound=base_lb and not pr_lb,
            )
        )
        if best is not None and e.name in best:
            b_s, b_lb, b_key = best[e.name]
            figs.append(
                Figure(
                    f"naive.{e.name}.ratio_best",
                    f"{e.name}: naive threads / pagerace's best strategy ({b_key})",
                    None if (b_lb and base_lb) else base_s / max(b_s, 1e-6),
                    "ratio",
                    how=f"baseline median / the smallest median over strategies ({b_s:.4g} s)",
                    note="neither found it within the budget" if (b_lb and base_lb) else (
                        "lower bound (baseline ran out of budget)" if base_lb and not b_lb else ""),
                    lower_bound=base_lb and not b_lb,
                )
            )
        if value is not None:
            ratios.append((e.name, value, base_lb and not pr_lb))
        del i
    worst = min(ratios, key=lambda r: r[1]) if ratios else None
    figs.append(
        Figure(
            "naive.min_ratio",
            "worst entry: naive baseline / pagerace" + (f" ({worst[0]})" if worst else ""),
            worst[1] if worst else None,
            "ratio",
            how="min over hunted entries of the ratio of median times to find",
            note=("" if len(ratios) == len(entries) else
                  f"{len(entries) - len(ratios)} catalog entries without a ratio in this build"),
            target=RATIO_TARGET,
            lower_bound=worst[2] if worst else False,
        )
    )
    return figs

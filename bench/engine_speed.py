"""Engine speed: preemption points per second of the deterministic engine, one core.

For ``default`` and for the busiest workload (the most steps per run among
``workloads/*.toml``), each seed is one :func:`run_deterministic` run with the default
strategy; its speed is ``RunResult.steps / RunResult.elapsed`` (the engine loop plus the
invariant checks it runs, not building the model). The figure is the median over seeds.

The floor for this design is a bare Python generator switch: ``for _ in gen: pass`` over
a generator that only yields, measured in the same process right before; the ratio
engine / floor says how close the engine is to what generators alone allow.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections.abc import Iterator

from ._machine import Figure, Log, Target, median, quiet, variant_for

POINTS_TARGET = Target(">=", 500_000, "≥500,000 preemption points/s on default, one core")


def _just_yield(n: int) -> Iterator[None]:
    for _ in range(n):
        yield


def generator_floor(n: int, rounds: int) -> float:
    """Median yields/s of ``for _ in gen: pass`` over a generator that only yields."""
    rates = []
    for _ in range(rounds):
        g = _just_yield(n)
        t0 = time.perf_counter()
        for _ in g:
            pass
        rates.append(n / (time.perf_counter() - t0))
    return median(rates)


def engine_rates(
    name: str, seeds: range, variant: str | None = None
) -> tuple[list[float], list[int]]:
    """Per-seed (steps/s, steps) of the deterministic engine on workload ``name`` (on
    ``variant``, or the first variant that has every path it needs, v6 first)."""
    from pagerace.harness.runner import run_deterministic
    from pagerace.workloads import load_workload

    w = load_workload(name)
    variant = variant or variant_for(w)
    rates: list[float] = []
    steps: list[int] = []
    for seed in seeds:
        rec = run_deterministic(w, variant=variant or "v6", seed=seed)
        r = rec.result
        if r.elapsed > 0 and r.steps:
            rates.append(r.steps / r.elapsed)
            steps.append(r.steps)
    return rates, steps


def busiest_workload(probe_seeds: int = 3, thp: bool = False) -> tuple[str, float]:
    """The workload with the most steps per run (median over a few seeds); with ``thp``,
    among the workloads that need large folios (v7's own), run on v7."""
    from pagerace.workloads import load_workload, workload_names

    best, best_steps = "default", -1.0
    for name in workload_names():
        try:
            w = load_workload(name)
        except Exception:  # a half-written workload of another helper: skip it
            continue
        if variant_for(w) is None or thp != ("thp" in w.needs):
            continue
        try:
            _, steps = engine_rates(name, range(probe_seeds), "v7" if thp else None)
        except Exception:
            continue
        if steps and median(steps) > best_steps:
            best, best_steps = name, median(steps)
    return best, best_steps


def _engine_figures(
    tag: str,
    name: str,
    what: str,
    floor: float,
    n_seeds: int,
    log: Log,
    variant: str | None = None,
    how: str = "RunResult.steps/RunResult.elapsed, random strategy",
    target: Target | None = None,
    note: str = "",
) -> list[Figure]:
    """``engine.{tag}.points_per_s`` (the median over ``n_seeds`` seeds of the engine on
    workload ``name``, after one warm-up run; on ``variant`` when given, named in the
    labels) and ``engine.{tag}.vs_floor`` (that figure over the generator floor)."""
    on = f", {variant}" if variant else ""
    log(f"engine speed: {name}" + (f" ({variant})" if variant else ""))
    # warm-up run (imports, caches) not counted
    engine_rates(name, range(10_000, 10_001), variant)
    rates, steps = engine_rates(name, range(n_seeds), variant)
    rate = median(rates) if rates else None
    per_run = median(steps) if steps else 0
    return [
        Figure(
            f"engine.{tag}.points_per_s",
            f"deterministic engine on {what}{on}",
            rate,
            "points/s",
            how=f"{how}, median over {len(rates)} seeds (median {per_run:.0f} steps per run)",
            note=note,
            target=target,
            extra={"workload": name, "median_steps_per_run": per_run},
        ),
        Figure(
            f"engine.{tag}.vs_floor",
            f"engine on {what}{on} / generator floor",
            (rate / floor) if rate else None,
            "ratio",
            how="the figure above divided by the generator floor of the same run",
        ),
    ]


def run(quick: bool = False, log: Log = quiet) -> list[Figure]:
    n_seeds = 8 if quick else 40
    floor_n = 200_000 if quick else 2_000_000
    floor_rounds = 3 if quick else 7

    log("engine speed: generator floor")
    floor = generator_floor(floor_n, floor_rounds)
    log("engine speed: busiest workload")
    busiest, busiest_steps = busiest_workload(2 if quick else 3)
    figs = [
        Figure(
            "engine.floor.yields_per_s",
            "bare generator switch (floor)",
            floor,
            "yields/s",
            how=f"for _ in gen: pass over a generator that only yields; median of {floor_rounds} "
            f"rounds of {floor_n:,}",
        )
    ]
    figs += _engine_figures("default", "default", "default", floor, n_seeds, log,
                            target=POINTS_TARGET)
    figs += _engine_figures(
        "busiest", busiest, f"busiest workload ({busiest})", floor, n_seeds, log,
        note=f"busiest = most steps per run among workloads/*.toml ({busiest_steps:.0f} median on "
        "the probe seeds)",
    )
    # v7 (issue 15): the same engine on Linux 7.0's generation, on default (v7's 4K paths)
    # and on its busiest large-folio workload.
    log("engine speed: busiest thp workload (v7)")
    busiest_thp, thp_steps = busiest_workload(2 if quick else 3, thp=True)
    figs += _engine_figures("v7_default", "default", "default", floor, n_seeds, log,
                            variant="v7", how="as above on variant v7")
    figs += _engine_figures(
        "v7_busiest_thp", busiest_thp, f"busiest thp workload ({busiest_thp})", floor, n_seeds,
        log, variant="v7", how="as above on variant v7",
        note=f"most steps per run among the workloads that need thp ({thp_steps:.0f} median on "
        "the probe seeds)",
    )
    return figs


def profile(seconds: float = 5.0, top: int = 25, workload: str = "default") -> str:
    """cProfile summary of the deterministic engine on ``workload``: top functions by
    cumulative and by total (own) time, over as many seeds as fit in ``seconds``."""
    from pagerace.harness.runner import run_deterministic
    from pagerace.workloads import load_workload

    w = load_workload(workload)
    variant = variant_for(w) or "v6"
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    seed = 0
    steps = 0
    prof.enable()
    while time.perf_counter() - t0 < seconds:
        steps += run_deterministic(w, variant=variant, seed=seed).result.steps
        seed += 1
    prof.disable()
    out = io.StringIO()
    out.write(f"# cProfile of {seed} runs of {workload} ({steps:,} preemption points)\n\n")
    st = pstats.Stats(prof)
    total = st.total_tt  # type: ignore[attr-defined]
    calls = sum(v[1] for v in st.stats.values())  # type: ignore[attr-defined]
    by_file: dict[str, float] = {}
    for (path, _line, _fn), (_cc, _nc, tt, _ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        name = path.rsplit("/", 2)
        key = "/".join(name[-2:]) if len(name) > 1 else path
        if key == "~":
            key = "built-ins (C: words ops, numpy, dict, list)"
        by_file[key] = by_file.get(key, 0.0) + tt
    out.write(f"{calls:,} function calls: {calls / max(steps, 1):.1f} per preemption point; "
              f"{total / max(steps, 1) * 1e6:.2f} µs per point under the profiler\n\n")
    out.write("## own time by file\n")
    for key, tt in sorted(by_file.items(), key=lambda kv: -kv[1])[:15]:
        out.write(f"  {tt / total * 100:5.1f}%  {tt:7.3f} s  {key}\n")
    out.write("\n")
    for key, title in (("cumulative", "by cumulative time"), ("tottime", "by total (own) time")):
        out.write(f"## top {top} {title}\n")
        st = pstats.Stats(prof, stream=out)
        st.strip_dirs().sort_stats(key).print_stats(top)
    return out.getvalue()

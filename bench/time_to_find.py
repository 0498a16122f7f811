"""Time to find: how long each catalog bug takes to show up, per search strategy.

For every entry of ``core.bugs.CATALOG`` whose workload exists, with the entry's toggle
switched on (none for an intrinsic bug) on its first variant in this build, a *hunt*
runs one run after another with fresh seeds until a run fails with one of the entry's
oracle kinds, or the per-hunt wall-clock budget runs out. ``N`` hunts with different base
seeds give the medians of runs, preemption points and seconds to the first failure.
A hunt that ran out of budget counts as the budget (a lower bound; the figure's note
says how many did).

Strategies: seeded random walk, PCT with depth 2 and 3, bounded exhaustive search
(helper D's ``harness/hunt.py``) and the parallel engine with and without random delays
at preemption points (``harness/parallel.run_parallel``), each where this build has it.
The measured per-run hit probability (hunts that found it / runs) stands beside PCT's
lower bound ``1/(n k^(d-1))`` (``PCT.describe()["guarantee"]``).
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._machine import Deadline, Figure, Log, Target, median, quiet, unavailable

FIND_TARGET = Target("<", 5.0, "every catalog entry found in a median under 5 s (default strategy)")
SEED_STRIDE = 1_000_003  # base seed b hunts with run seeds b*SEED_STRIDE + 0, 1, 2...


@dataclass
class Hunt:
    found: bool
    runs: int
    points: int
    seconds: float
    kind: str | None = None
    guarantee: float | None = None
    other_failures: int = 0
    exhausted: bool = False  # a bounded search covered its whole space without finding it


@dataclass
class Entry:
    """One catalog bug, resolved against this build."""

    name: str
    workload: Any  # Workload, or None when missing
    variant: str | None
    bugs: tuple[str, ...]
    oracle: tuple[str, ...]
    why_not: str = ""  # non-empty: cannot be hunted in this build


# A hunt strategy: (entry, base seed, budget seconds) -> Hunt.
HuntFn = Callable[[Entry, int, float], Hunt]


def resolve_entries() -> list[Entry]:
    """Every catalog entry, with its workload and variant when this build has them."""
    from pagerace.core.bugs import CATALOG
    from pagerace.core.variants import VARIANTS
    from pagerace.workloads import load_workload, workload_names

    have = set(workload_names())
    out = []
    for name in sorted(CATALOG):
        e = CATALOG[name]
        bugs = () if e.intrinsic else (name,)
        variant = next((v for v in e.variants if v in VARIANTS), None)
        if e.workload not in have:
            out.append(Entry(name, None, variant, bugs, e.oracle, f"workload {e.workload!r} missing"))
            continue
        try:
            w = load_workload(e.workload)
        except Exception as exc:  # another helper's workload half-written
            out.append(Entry(name, None, variant, bugs, e.oracle, f"workload {e.workload!r}: {exc}"))
            continue
        if variant is None:
            out.append(
                Entry(name, w, None, bugs, e.oracle, f"variant {'/'.join(e.variants)} missing")
            )
            continue
        if not set(w.needs) <= VARIANTS[variant].provides:
            out.append(
                Entry(name, w, variant, bugs, e.oracle, f"variant {variant} lacks {w.needs}")
            )
            continue
        out.append(Entry(name, w, variant, bugs, e.oracle))
    return out


def _has(module: str, attr: str) -> bool:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return False
    return hasattr(mod, attr)


def deterministic_hunter(strategy: str, depth: int = 3) -> HuntFn:
    """A hunt over :func:`run_deterministic` with ``strategy``."""

    def hunt(e: Entry, base: int, budget: float) -> Hunt:
        from pagerace.harness.runner import run_deterministic

        t0 = time.perf_counter()
        runs = points = other = 0
        guarantee = None
        while True:
            rec = run_deterministic(
                e.workload,
                variant=e.variant or "v6",
                bugs=e.bugs,
                seed=base * SEED_STRIDE + runs,
                strategy=strategy,
                pct_depth=depth,
            )
            runs += 1
            r = rec.result
            points += r.steps
            g = r.scheduler.get("guarantee")
            if g is not None:
                guarantee = float(g)
            if r.failure is not None:
                if r.failure.kind.value in e.oracle:
                    return Hunt(True, runs, points, time.perf_counter() - t0,
                                r.failure.kind.value, guarantee, other)
                other += 1
            if time.perf_counter() - t0 >= budget:
                return Hunt(False, runs, points, time.perf_counter() - t0, None, guarantee, other)

    return hunt


class _StepCounter:
    """Counts the preemption points of every run ``harness/hunt.py`` starts (a hunt
    result has runs and seconds but no total of steps): wraps the two run functions it
    calls, ``run_deterministic`` (random, PCT) and ``explore.run_custom`` (exhaustive),
    for the duration of a ``with`` block."""

    def __init__(self) -> None:
        self.points = 0
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> _StepCounter:
        for modname, attr in (("pagerace.harness.hunt", "run_deterministic"),
                              ("pagerace.harness.explore", "run_custom")):
            try:
                mod = importlib.import_module(modname)
            except ImportError:
                continue
            orig = getattr(mod, attr, None)
            if orig is None:
                continue

            def counted(*args: Any, _orig: Any = orig, **kw: Any) -> Any:
                rec = _orig(*args, **kw)
                self.points += int(rec.result.steps)
                return rec

            setattr(mod, attr, counted)
            self._saved.append((mod, attr, orig))
        return self

    def __exit__(self, *exc: object) -> None:
        for mod, attr, orig in reversed(self._saved):
            setattr(mod, attr, orig)
        self._saved.clear()


def hunt_module_hunter(
    strategy: str, depth: int = 3, pct_k: int | None = None
) -> HuntFn | None:
    """A hunter over ``harness/hunt.py``'s :func:`hunt` (no shrinking), or None when this
    build has no such module or strategy. A failure of a kind outside the entry's oracle
    does not end the hunt: it goes on from the next seed with what is left of the budget
    (an exhaustive search, which stops at its first failure, ends there)."""
    try:
        mod = importlib.import_module("pagerace.harness.hunt")
    except ImportError:
        return None
    fn = getattr(mod, "hunt", None)
    budget_cls = getattr(mod, "Budget", None)
    extra: dict[str, Any] = {}
    if pct_k is not None:
        if fn is None or "pct_k" not in inspect.signature(fn).parameters:
            return None
        extra["pct_k"] = pct_k
    if fn is None or budget_cls is None or strategy not in getattr(mod, "HUNT_STRATEGIES", ()):
        return None

    def hunt(e: Entry, base: int, budget: float) -> Hunt:
        t0 = time.perf_counter()
        runs = other = 0
        guarantee: float | None = None
        seed = base * SEED_STRIDE
        with _StepCounter() as counter:
            while True:
                left = budget - (time.perf_counter() - t0)
                res = None
                if left > 0:
                    res = fn(
                        e.workload, variant=e.variant, bugs=e.bugs,
                        budget=budget_cls(seconds=left), strategy=strategy, pct_depth=depth,
                        base_seed=seed, shrink=False, **extra,
                    )
                    runs += res.runs
                    if res.guarantee is not None:
                        guarantee = float(res.guarantee)
                took = time.perf_counter() - t0
                if res is None or res.found is None:
                    exhausted = bool(res is not None and res.search.get("exhausted"))
                    return Hunt(False, runs, counter.points, took, None, guarantee, other,
                                exhausted)
                kind = res.found.result.failure.kind.value
                if kind in e.oracle:
                    return Hunt(True, runs, counter.points, took, kind, guarantee, other)
                other += 1
                if strategy == "exhaustive" or not res.seeds:
                    return Hunt(False, runs, counter.points, took, None, guarantee, other)
                seed = res.seeds[-1] + 1

    return hunt


PERTURB_RATE = 0.2  # "with perturbation": a random delay at 20% of preemption points


def parallel_hunter(perturb: bool, duration: float) -> HuntFn | None:
    """A hunt of repeated ``run_parallel`` runs (2 workers, ``duration`` s each, with a
    random delay at ``PERTURB_RATE`` of preemption points if ``perturb``), or None if this
    build has no parallel engine."""
    try:
        mod = importlib.import_module("pagerace.harness.parallel")
    except ImportError:
        return None
    run_parallel = getattr(mod, "run_parallel", None)
    if run_parallel is None:
        return None

    def hunt(e: Entry, base: int, budget: float) -> Hunt:
        t0 = time.perf_counter()
        runs = points = other = 0
        while True:
            left = budget - (time.perf_counter() - t0)
            rec = run_parallel(
                e.workload,
                variant=e.variant,
                bugs=e.bugs,
                seed=base * SEED_STRIDE + runs,
                workers=2,
                duration=max(0.2, min(duration, left)),
                perturb=PERTURB_RATE if perturb else 0.0,
            )
            runs += 1
            r = rec.result
            points += int(getattr(r, "steps", 0) or 0)
            if r.failure is not None:
                if r.failure.kind.value in e.oracle:
                    return Hunt(True, runs, points, time.perf_counter() - t0,
                                r.failure.kind.value, None, other)
                other += 1
            if time.perf_counter() - t0 >= budget:
                return Hunt(False, runs, points, time.perf_counter() - t0, None, None, other)

    return hunt


def default_strategy() -> str:
    """The strategy ``harness.hunt.hunt`` uses by default, else ``random`` (the default of
    ``run_deterministic``)."""
    try:
        mod = importlib.import_module("pagerace.harness.hunt")
        return str(inspect.signature(mod.hunt).parameters["strategy"].default)
    except (ImportError, AttributeError, KeyError, TypeError, ValueError):
        return "random"


def strategies(parallel_duration: float = 1.0) -> list[tuple[str, str, HuntFn | None, str]]:
    """(key, label, hunter or None, why not available); each parallel run lasts at most
    ``parallel_duration`` seconds."""
    via_hunt = _has("pagerace.harness.hunt", "hunt")

    def det(strategy: str, depth: int) -> HuntFn:
        h = hunt_module_hunter(strategy, depth) if via_hunt else None
        return h if h is not None else deterministic_hunter(strategy, depth)

    out: list[tuple[str, str, HuntFn | None, str]] = [
        ("random", "random walk", det("random", 3), ""),
        ("pct2", "PCT d=2", det("pct", 2), ""),
        ("pct3", "PCT d=3", det("pct", 3), ""),
        ("rr", "round robin", det("rr", 3), ""),
        ("mix", "mix: rr, then sticky / rr / random by seed", det("mix", 3), ""),
    ]
    for key, label in (("sticky", "sticky walk"), ("pos", "POS"), ("urw", "URW"), ("surw", "SURW")):
        h = hunt_module_hunter(key) if via_hunt else None
        out.append((key, label, h, "" if h else f"no {label} in this build"))
    ex = hunt_module_hunter("exhaustive") if via_hunt else None
    out.append(
        ("exhaustive", "bounded exhaustive", ex,
         "" if ex else "no exhaustive search (harness/hunt.py) in this build")
    )
    for perturb in (False, True):
        p = parallel_hunter(perturb, duration=parallel_duration)
        key = "parallel_perturb" if perturb else "parallel"
        label = "parallel engine" + (f" + delays {PERTURB_RATE:g}" if perturb else "")
        out.append((key, label, p, "" if p else "no parallel engine (harness/parallel.py) in this build"))
    return out


def summarize(
    bug: str, key: str, label: str, hunts: Sequence[Hunt], budget: float, planned: int
) -> list[Figure]:
    """Figures of one (bug, strategy) cell."""
    n = len(hunts)
    if n == 0:
        why = "not measured: the benchmark's time cap ran out before this cell"
        return [Figure(f"ttf.{bug}.{key}.seconds", f"{bug} / {label}: seconds to find", None, "s",
                       note=why)]
    found = sum(h.found for h in hunts)
    runs_total = sum(h.runs for h in hunts)
    secs = [h.seconds if h.found else max(h.seconds, budget) for h in hunts]
    censored = n - found
    note_parts = [f"{found}/{n} hunts found it"]
    if censored:
        note_parts.append(
            f"{censored} not found within the {budget:g} s budget (counted as the budget"
            + ("; median is a lower bound" if censored * 2 >= n else "")
            + ")"
        )
    if n < planned and n >= 2 and not found:
        note_parts.append(f"stopped after {n} hunts that all ran out of budget")
    elif n < planned:
        note_parts.append(f"{n} of {planned} planned hunts (time cap of the benchmark)")
    exhausted = sum(h.exhausted for h in hunts)
    if exhausted:
        note_parts.append(f"{exhausted} searches covered their whole bounded space without it")
    others = sum(h.other_failures for h in hunts)
    if others:
        note_parts.append(f"{others} runs failed with another kind first")
    note = "; ".join(note_parts)
    base = f"ttf.{bug}.{key}"
    row = {"bug": bug, "strategy": key, "strategy_label": label, "hunts": n, "found": found,
           "budget_s": budget, "censored": censored}
    p_hit = found / runs_total if runs_total else None
    guarantees = [h.guarantee for h in hunts if h.guarantee is not None]
    figs = [
        Figure(f"{base}.seconds", f"{bug} / {label}: seconds to find", median(secs) if n else None,
               "s", how=f"median over {n} hunts", note=note, extra=row,
               lower_bound=censored * 2 >= n),
        Figure(f"{base}.runs", f"{bug} / {label}: runs to find",
               median([h.runs for h in hunts]) if n else None, "runs", how=f"median over {n} hunts"),
        Figure(f"{base}.points", f"{bug} / {label}: preemption points to find",
               median([h.points for h in hunts]) if n else None, "points",
               how=f"median over {n} hunts"),
        Figure(f"{base}.p_hit", f"{bug} / {label}: measured per-run hit probability", p_hit,
               "1/run", how="hunts that found it / runs over all hunts"),
    ]
    if guarantees:
        figs.append(
            Figure(f"{base}.pct_bound", f"{bug} / {label}: PCT lower bound 1/(n k^(d-1))",
                   median(guarantees), "1/run", how='PCT.describe()["guarantee"]')
        )
    return figs


def run(quick: bool = False, log: Log = quiet, time_cap: float | None = None) -> list[Figure]:
    n_hunts = 3 if quick else 20
    budget = 0.5 if quick else 10.0
    cap = Deadline(time_cap if time_cap is not None else (8.0 if quick else 360.0))
    entries = resolve_entries()
    strats = strategies(parallel_duration=0.3 if quick else 1.0)
    dflt_key = default_key()
    figs: list[Figure] = []
    cells = [(e, s) for e in entries if not e.why_not for s in strats if s[2] is not None]
    # The default strategy's cells first: the target needs them most. Then, for the
    # quick run, round robin over the strategies (each is exercised even if the cap cuts
    # the rest); for the full run, entry by entry.
    rank = {e.name: i for i, e in enumerate(entries)}
    if quick:
        cells.sort(key=lambda c: (c[1][0] != dflt_key, rank[c[0].name], strats.index(c[1])))
        per_strategy: dict[str, int] = {}
        keyed = []
        for c in cells:
            i = per_strategy.get(c[1][0], 0)
            per_strategy[c[1][0]] = i + 1
            keyed.append(((c[1][0] != dflt_key) and i > 0, i, strats.index(c[1]), c))
        cells = [k[-1] for k in sorted(keyed, key=lambda k: k[:3])]
    else:
        cells.sort(key=lambda c: (c[1][0] != dflt_key, rank[c[0].name], strats.index(c[1])))
    cell_secs: dict[tuple[str, str], list[Hunt]] = {}
    errors: dict[tuple[str, str], str] = {}
    for i, (e, (key, label, hunter, _why)) in enumerate(cells):
        assert hunter is not None
        hunts: list[Hunt] = []
        # The default strategy's cells (the target) get all their hunts while the cap
        # lasts; the others an even share of what is left, and at least one hunt: no new
        # hunt starts when one more of the mean length so far would overrun the share.
        share = cap.left() / max(1, len(cells) - i)
        t_cell = time.perf_counter()
        log(f"time to find: {e.name} / {label}")
        for b in range(n_hunts):
            spent = time.perf_counter() - t_cell
            if cap.over() or (b and key != dflt_key and spent + spent / b > share):
                break
            try:
                hunts.append(hunter(e, b + 1, budget))
            except Exception as exc:  # one broken strategy must not hide the others
                errors[(e.name, key)] = f"error: {type(exc).__name__}: {exc}"
                break
            # Two hunts that both ran out: the median will be the budget; stop paying for it.
            if len(hunts) >= 2 and not any(h.found for h in hunts):
                break
        cell_secs[(e.name, key)] = hunts
    for e in entries:
        for key, label, hunter, why in strats:
            if e.why_not:
                figs.append(unavailable(f"ttf.{e.name}.{key}.seconds",
                                        f"{e.name} / {label}: seconds to find", "s", e.why_not))
                continue
            if hunter is None:
                figs.append(unavailable(f"ttf.{e.name}.{key}.seconds",
                                        f"{e.name} / {label}: seconds to find", "s", why))
                continue
            if (e.name, key) in errors:
                figs.append(Figure(f"ttf.{e.name}.{key}.seconds",
                                   f"{e.name} / {label}: seconds to find", None, "s",
                                   note=errors[(e.name, key)]))
                continue
            hunts = cell_secs.get((e.name, key), [])
            figs.extend(summarize(e.name, key, label, hunts, budget, n_hunts))
    # The target: the worst median over entries, by the default strategy.
    worst: float | None = None
    worst_lb = False
    missing = []
    for e in entries:
        f = next((f for f in figs if f.name == f"ttf.{e.name}.{dflt_key}.seconds"), None)
        if f is None or f.value is None:
            missing.append(e.name)
            continue
        if worst is None or f.value > worst:
            worst = f.value
        worst_lb = worst_lb or f.lower_bound
    figs.append(
        Figure(
            "ttf.worst_default_median_s",
            f"slowest catalog entry, default strategy ({dflt_key})",
            worst,
            "s",
            how="max over hunted entries of the median seconds to find",
            note="; ".join(
                x for x in (
                    f"not hunted in this build: {', '.join(missing)}" if missing else "",
                    "an entry was not found within the budget in most hunts" if worst_lb else "",
                ) if x
            ),
            target=FIND_TARGET,
            lower_bound=worst_lb,
        )
    )
    # Beside it, with the best strategy for each entry (which one differs per entry).
    best = best_medians(figs)
    if best:
        slow = max(best.items(), key=lambda kv: (kv[1][0], kv[1][1]))
        figs.append(
            Figure(
                "ttf.worst_best_median_s",
                f"slowest catalog entry, its best strategy ({slow[0]}: {slow[1][2]})",
                slow[1][0],
                "s",
                how="max over entries of (min over strategies of the median seconds to find)",
                note="; ".join(f"{b}: {k}" for b, (_v, _lb, k) in sorted(best.items())),
                lower_bound=slow[1][1],
            )
        )
    return figs


def best_medians(figs: Sequence[Figure]) -> dict[str, tuple[float, bool, str]]:
    """bug -> (smallest median seconds to find over strategies, lower bound?, strategy)."""
    out: dict[str, tuple[float, bool, str]] = {}
    for f in figs:
        parts = f.name.split(".")
        if len(parts) != 4 or parts[0] != "ttf" or parts[3] != "seconds" or f.value is None:
            continue
        cur = out.get(parts[1])
        # a found median beats any lower bound; then the smaller one
        if cur is None or (f.lower_bound, f.value) < (cur[1], cur[0]):
            out[parts[1]] = (f.value, f.lower_bound, parts[2])
    return out


def default_key() -> str:
    """The figure key of the default hunt strategy (``random``, ``pct3``...)."""
    dflt = default_strategy()
    return {"random": "random", "pct": "pct3"}.get(dflt, dflt)


def default_medians_lb(figs: Sequence[Figure]) -> dict[str, tuple[float, bool]]:
    """bug -> (median seconds to find by the default strategy, is it a lower bound), from
    :func:`run`'s figures."""
    key = default_key()
    out = {}
    for f in figs:
        parts = f.name.split(".")
        is_cell = len(parts) == 4 and parts[0] == "ttf" and parts[2] == key
        if is_cell and parts[3] == "seconds" and f.value is not None:
            out[parts[1]] = (f.value, f.lower_bound)
    return out


def table(figs: Sequence[Figure]) -> str:
    """One row per (bug, strategy)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    order: list[tuple[str, str]] = []
    for f in figs:
        parts = f.name.split(".")
        if parts[0] != "ttf" or len(parts) != 4:
            continue
        cell = (parts[1], parts[2])
        if cell not in rows:
            rows[cell] = {}
            order.append(cell)
        rows[cell][parts[3]] = f
    lines = [f"{'bug':<26} {'strategy':<18} {'median s':>9} {'runs':>8} {'points':>10} "
             f"{'found':>6} {'p/run':>9} {'PCT bound':>9}"]
    for cell in order:
        r = rows[cell]
        sec = r.get("seconds")
        if sec is None or sec.value is None:
            lines.append(f"{cell[0]:<26} {cell[1]:<18} {sec.note if sec else ''}")
            continue

        def v(key: str, fmt: str, r: dict[str, Any] = r) -> str:
            f = r.get(key)
            return format(f.value, fmt) if f is not None and f.value is not None else "-"

        ex = sec.extra
        plus = "+" if sec.lower_bound else " "
        lines.append(
            f"{cell[0]:<26} {cell[1]:<18} {v('seconds', '9.3f')}{plus}"
            f"{v('runs', '8.0f')} {v('points', '10.0f')} {ex['found']:>3}/{ex['hunts']:<2} "
            f"{v('p_hit', '9.2e')} {v('pct_bound', '9.2e')}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Runs to find, per strategy (issue 13 item 6): hunts with a budget in runs, not seconds,
# so the figure is the search's own and not the machine's.

RUNS_STRATEGIES = ("random", "pct", "pct-k200", "rr", "sticky", "mix", "pos", "urw", "surw")

# The mix before 2 December 2026: random walk / PCT d=3 / round robin (quantum 1) by turns.
# ``mix-3`` measures it against today's ``mix``; ``mix-pos`` is it with POS in the random
# walk's turn.
MIX_3 = (("random", 3), ("pct", 3), ("rr", 3))


def _rotation(turns: Sequence[tuple[str, int]]) -> Callable[[int], Any]:
    from pagerace.harness.hunt import Turn

    return lambda i: Turn(*turns[i % len(turns)])


def runs_to_find(
    entry: Entry, strategy: str, hunts: int, max_runs: int
) -> list[int | None]:
    """Runs to the first failure of one of ``entry``'s oracle kinds in ``hunts`` hunts
    (base seeds ``b * SEED_STRIDE``), each of at most ``max_runs`` runs; ``None`` for a
    hunt that did not find it. ``pct-k200`` is PCT d=3 with ``k`` fixed to 200 (the
    learned ``k`` is ``pct``'s default). A failure of another kind counts as a run and the
    hunt goes on from the next seed. ``mix-3``: the mix before today's (random / PCT /
    round robin by turns); ``mix-pos``: that with POS in the random walk's turn."""
    from pagerace.harness.hunt import Budget, hunt

    extra: dict[str, Any] = {}
    strat = strategy
    if strategy == "pct-k200":
        strat, extra = "pct", {"pct_k": 200}
    elif strategy in ("mix-3", "mix-pos"):
        pos = strategy == "mix-pos"
        strat = "mix"
        extra = {"turns": _rotation([("pos" if pos and s == "random" else s, d) for s, d in MIX_3])}
    return _runs_to_find(entry, strat, extra, hunts, max_runs, hunt, Budget)


def _runs_to_find(
    entry: Entry, strat: str, extra: dict[str, Any], hunts: int, max_runs: int,
    hunt: Any, Budget: Any,
) -> list[int | None]:
    out: list[int | None] = []
    for b in range(1, hunts + 1):
        seed = b * SEED_STRIDE
        used = 0
        got: int | None = None
        while used < max_runs:
            res = hunt(entry.workload, variant=entry.variant or "v6", bugs=entry.bugs,
                       budget=Budget(runs=max_runs - used), strategy=strat,
                       base_seed=seed, shrink=False, **extra)
            used += res.runs
            if res.found is None:
                break
            if res.found.result.failure.kind.value in entry.oracle:
                got = used
                break
            seed = res.seeds[-1] + 1
        out.append(got)
    return out


def quartiles(got: Sequence[int | None], max_runs: int) -> tuple[float, float, float]:
    """Lower quartile, median and upper quartile of runs to find, a hunt that did not find
    it counted as ``max_runs`` (numpy's default linear interpolation)."""
    import numpy as np

    v = np.array([g if g is not None else max_runs for g in got], dtype=float)
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return float(q1), float(med), float(q3)


def runs_table(
    strategies: Sequence[str] = RUNS_STRATEGIES,
    entries: Sequence[str] = (),
    hunts: int = 5,
    max_runs: int = 100,
    log: Log = quiet,
) -> list[dict[str, Any]]:
    """One row per (catalog entry, strategy): median runs to find over ``hunts`` hunts
    and the quartiles (a hunt that did not find it counts as ``max_runs`` and makes a
    figure a lower bound when it reaches ``max_runs``), and every hunt's runs
    (``runs``: ``None`` where it did not find it)."""
    rows = []
    for e in resolve_entries():
        if e.why_not or (entries and e.name not in entries):
            continue
        for st in strategies:
            t0 = time.perf_counter()
            got = runs_to_find(e, st, hunts, max_runs)
            found = [g for g in got if g is not None]
            q1, med, q3 = quartiles(got, max_runs)
            rows.append({
                "bug": e.name, "workload": e.workload.name, "variant": e.variant,
                "strategy": st, "hunts": hunts, "found": len(found), "median_runs": med,
                "q1": q1, "q3": q3, "max_runs": max_runs, "runs": got,
                "lower_bound": 2 * (hunts - len(found)) >= hunts,
                "seconds": time.perf_counter() - t0,
            })
            log(f"runs to find: {e.name} / {st}: {med:g}{'+' if rows[-1]['lower_bound'] else ''}"
                f" [{q1:g}-{q3:g}] ({len(found)}/{hunts} found, {rows[-1]['seconds']:.1f} s)")
    return rows


def _fmt_runs(r: dict[str, Any], v: float) -> str:
    return f"{v:g}{'+' if v >= r.get('max_runs', float('inf')) else ''}"


def runs_markdown(rows: Sequence[dict[str, Any]], quart: bool = False) -> str:
    """The runs-to-find rows as a markdown table, one row per entry, one column per
    strategy: the median (``12+``: a lower bound, most hunts ran out of runs), with
    ``quart`` the quartiles ``[q1-q3]``, and the hunts that found it."""
    strategies: list[str] = []
    bugs: list[str] = []
    cell: dict[tuple[str, str], str] = {}
    for r in rows:
        if r["strategy"] not in strategies:
            strategies.append(r["strategy"])
        if r["bug"] not in bugs:
            bugs.append(r["bug"])
        med = r["median_runs"]
        q = f" [{_fmt_runs(r, r['q1'])}–{_fmt_runs(r, r['q3'])}]" if quart and "q1" in r else ""
        cell[(r["bug"], r["strategy"])] = (
            f"{med:g}{'+' if r['lower_bound'] else ''}{q} ({r['found']}/{r['hunts']})"
        )
    head = "| entry | " + " | ".join(strategies) + " |"
    sep = "|---|" + "---|" * len(strategies)
    lines = [head, sep]
    for b in bugs:
        lines.append(f"| {b} | " + " | ".join(cell.get((b, s), "-") for s in strategies) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.time_to_find [--hunts N] [--max-runs R] [--strategies a,b]
    [--entries x,y] [--quartiles] [--json FILE]``: the runs-to-find table (markdown) of
    the catalog entries."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.time_to_find")
    p.add_argument("--hunts", type=int, default=5)
    p.add_argument("--max-runs", type=int, default=100)
    p.add_argument("--strategies", default=",".join(RUNS_STRATEGIES))
    p.add_argument("--entries", default="")
    p.add_argument("--quartiles", action="store_true", help="show [q1-q3] in each cell")
    p.add_argument("--json", default="", metavar="FILE", help="also write the rows (every hunt's runs)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    rows = runs_table(
        [s for s in args.strategies.split(",") if s],
        [x for x in args.entries.split(",") if x],
        hunts=args.hunts, max_runs=args.max_runs,
        log=(lambda m: print(m, flush=True)) if args.verbose else quiet,
    )
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(runs_markdown(rows, quart=args.quartiles))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# ----------------------------------------------------------------------------------------
# The bounded search with and without sleep sets (issue 13 item 4).


def search_reduction(
    entries: Sequence[str] = (), bound: int = 2, max_schedules: int = 300,
    seconds: float = 60.0, log: Log = quiet,
) -> list[dict[str, Any]]:
    """For each catalog entry, the bounded search (``bound`` preemptions) without and
    with sleep sets until the first failure or ``max_schedules`` schedules or
    ``seconds``: schedules run, branches pruned, redundant runs stopped, what it found
    and the seconds it took."""
    from pagerace.harness.explore import explore

    rows = []
    for e in resolve_entries():
        if e.why_not or (entries and e.name not in entries):
            continue
        for reduction in (False, True):
            t0 = time.perf_counter()
            r = explore(e.workload, variant=e.variant or "v6", bugs=e.bugs,
                        preemption_bound=bound, max_schedules=max_schedules,
                        time_budget=seconds, reduction=reduction)
            f = r.failure.result.failure if r.failure is not None else None
            rows.append({
                "bug": e.name, "reduction": reduction, "schedules": r.schedules,
                "pruned": r.pruned, "sleep_blocked": r.sleep_blocked,
                "exhausted": r.exhausted, "found": f.kind.value if f is not None else "",
                "seconds": time.perf_counter() - t0,
            })
            log(f"search: {e.name} reduction={reduction}: {rows[-1]}")
    return rows

"""Hunting: run seeds until the first failure or the budget, then shrink it.

:func:`hunt` runs ``base, base+1, ...`` with the chosen strategy (``mix``, the default,
gives each run its own: :func:`mix_turn`; ``random``, ``pct``...;
``exhaustive`` runs the bounded search of ``harness/explore.py`` instead, whose runs
count against the same budget) until an oracle fires or the budget (a number of runs or
seconds) is spent, then shrinks the failing run (``harness/shrink.py``).

URW and SURW weigh each actor by its remaining steps: each run takes the per-actor
counts of the run before it (its ``observed`` counts when it was URW / SURW itself).

PCT's step estimate ``k`` fits the run: unless the workload or the caller fixes it, each
PCT run of a hunt takes the median length of the runs the hunt already made
(:func:`learned_k`), so its ``depth - 1`` priority change points fall inside the run
instead of mostly after its end. The length counted is the run's *shared* steps
(``RunResult.shared_steps``): the steps while at least two actors other than kworkers
were live. A change point after that has no other actor to let through and is wasted;
on ``opposite-order`` (hmm-2017) PCT runs are about 285 steps long, of which about 213
shared, and the deadlock needs its first change point near step 100. The first run,
with nothing to learn from, uses the static estimate of ``run_deterministic``. The
``k`` a run used is in its scheduler record (``describe()``, hence the artifact's
``strategy_params``) and in the reported guarantee ``1/(n k^(d-1))``; the hunt's runs
are a function of its arguments, so the same hunt learns the same ``k`` again.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.machine.errors import InvalidOption
from ..workloads import Workload
from .explore import explore
from .runner import RunRecord, run_deterministic, validate_variant_bugs
from .shrink import ShrinkResult, shrink_record

HUNT_STRATEGIES = ("mix", "random", "pct", "rr", "sticky", "pos", "urw", "surw", "exhaustive")


@dataclass(frozen=True)
class Turn:
    """One run's strategy in ``mix``: the strategy, PCT's depth, the quantum (round
    robin's slice; the sticky walk's mean slice)."""

    strategy: str
    depth: int = 3
    quantum: int = 1


# The default: no one strategy finds every kind of race. The random walk misses
# livelocks that need actors in lockstep (round robin with quantum 1 finds them at once);
# round robin misses races that need one actor to sit still at a random point (the
# random walk finds them); some races need one actor to run a window of a few steps
# while another waits, which round robin with a quantum of that size, or the sticky
# walk's random slices, hit far more often than a step-by-step random walk. ``mix`` runs
# round robin (quantum 1) first, then rotates sticky walk (mean slice 3) / round robin /
# random walk over consecutive seeds, round robin's quantum stepping through
# ``MIX_RR_QUANTA`` (windows of 2 to 8 steps) from one of its turns to the next.
# Chosen from the per-run hit rates of every strategy on every catalog entry (seeds
# 7,000-7,149, 20,000-20,399 and 40,000-40,599), then measured as runs to find on other
# seeds (docs/PERFORMANCE.md, "The default strategy"): no entry needs more runs than
# with the random walk alone, and three need half or less. The order of the quanta puts
# first those that hit the catalog's pin and hole races most often (4, then 5); that
# is a choice fitted to the catalog, and a quantum order is all it fixes. PCT is not in
# it: on no catalog entry does it find what these three do not find sooner
# (``--strategy pct`` is there, with its probabilistic guarantee).
MIX_HEAD = (Turn("rr", quantum=1),)
MIX_RR_QUANTA = (4, 5, 3, 6, 2, 8)
STICKY_QUANTUM = 3


def mix_turn(i: int) -> Turn:
    """The strategy of the ``i``-th run (0-based) of a ``mix`` hunt: ``MIX_HEAD``, then
    sticky walk / round robin (quantum from ``MIX_RR_QUANTA`` by turns) / random walk."""
    if i < len(MIX_HEAD):
        return MIX_HEAD[i]
    j = i - len(MIX_HEAD)
    slot, rnd = j % 3, j // 3
    if slot == 0:
        return Turn("sticky", quantum=STICKY_QUANTUM)
    if slot == 1:
        return Turn("rr", quantum=MIX_RR_QUANTA[rnd % len(MIX_RR_QUANTA)])
    return Turn("random")


def learned_k(steps: Sequence[int]) -> int | None:
    """PCT's step estimate from the lengths (shared steps) of the runs made so far:
    their median (the median, not the maximum: a PCT run that starved an actor runs a
    whole fair window more); ``None`` before the first run."""
    if not steps:
        return None
    return max(1, int(statistics.median_low(steps)))


@dataclass(frozen=True)
class Budget:
    runs: int | None = None
    seconds: float | None = None

    def __str__(self) -> str:
        return f"{self.runs} runs" if self.runs is not None else f"{self.seconds:g} s"


def parse_budget(text: str) -> Budget:
    """``200-runs`` / ``200runs`` / ``200 runs`` → runs; anything else is a duration read
    by the one duration parser (``commands/_options.parse_duration``): ``45`` (seconds,
    as everywhere), ``500ms``, ``30s``, ``2m``, ``1h30m``.

    Raises:
        InvalidOption: anything else, naming the value and both forms.
    """
    from .commands._options import DURATION_FORMS, parse_duration

    t = text.strip().lower()
    m = re.fullmatch(r"(\d+)\s*-?\s*runs?", t)
    if m:
        n = int(m.group(1))
        if n < 1:
            raise InvalidOption(f"--budget {text!r}: a budget must be at least 1 run")
        return Budget(runs=n)
    try:
        secs = parse_duration(t, "--budget")
    except InvalidOption:
        raise InvalidOption(
            f"--budget {text!r}: not a budget; use a number of runs (200-runs) or a time: {DURATION_FORMS}"
        ) from None
    assert secs is not None
    return Budget(seconds=secs)


@dataclass
class HuntResult:
    found: RunRecord | None
    runs: int
    seconds: float
    seeds: list[int] = field(default_factory=list)
    shrunk: ShrinkResult | None = None
    strategy: str = "random"
    search: dict[str, Any] = field(default_factory=dict)
    guarantee: float | None = None
    pct_k: int | None = None  # the step estimate of the last PCT run

    @property
    def seeds_to_find(self) -> int:
        return self.runs if self.found is not None else -1


def hunt(
    w: Workload,
    *,
    variant: str = "v6",
    bugs: Sequence[str] = (),
    budget: Budget = Budget(runs=100),
    strategy: str = "mix",
    pct_depth: int = 3,
    base_seed: int = 0,
    shrink: bool = True,
    shrink_budget: float = 10.0,
    preemption_bound: int = 2,
    on_run: Callable[[RunRecord], None] | None = None,
    pct_k: int | None = None,
    turns: Callable[[int], Turn] = mix_turn,
) -> HuntResult:
    """Run seeds until the first failure or ``budget``; shrink what was found.
    ``on_run(record)`` sees every run that did not fail (for its CSV rows).
    ``pct_k``: PCT's step estimate; ``None`` learns it from the hunt's runs
    (:func:`learned_k`) unless the workload sets one. ``turns``: the strategy of each run
    of a ``mix`` hunt (default :func:`mix_turn`; the benchmark measures others)."""

    def clean(rec: RunRecord) -> None:
        if on_run is not None and rec.result.failure is None:
            on_run(rec)

    if strategy not in HUNT_STRATEGIES:
        raise InvalidOption(
            f"unknown hunt strategy {strategy!r}; valid: {', '.join(HUNT_STRATEGIES)}"
        )
    validate_variant_bugs(variant, bugs, w)
    t0 = time.perf_counter()
    res = HuntResult(found=None, runs=0, seconds=0.0, strategy=strategy)
    if strategy == "exhaustive":
        ex = explore(
            w, variant=variant, bugs=bugs, seed=base_seed, preemption_bound=preemption_bound,
            max_schedules=budget.runs if budget.runs is not None else 1 << 30,
            time_budget=budget.seconds, on_run=clean,
        )
        res.runs = ex.schedules
        res.found = ex.failure
        res.search = ex.describe()
        res.seeds = [base_seed]
    else:
        seed = base_seed
        lengths: list[int] = []
        counts: list[int] = []  # steps per actor of the last run (URW / SURW weights)
        while True:
            if budget.runs is not None and res.runs >= budget.runs:
                break
            if budget.seconds is not None and time.perf_counter() - t0 >= budget.seconds:
                break
            if strategy == "mix":
                turn = turns(res.runs)
            else:
                quantum = STICKY_QUANTUM if strategy == "sticky" else 1
                turn = Turn(strategy, pct_depth, quantum)
            strat, depth = turn.strategy, turn.depth
            k = None
            if strat == "pct":
                k = pct_k or (None if w.pct_k else learned_k(lengths))
            rec = run_deterministic(
                w, variant=variant, bugs=bugs, seed=seed, strategy=strat, pct_depth=depth,
                quantum=turn.quantum, pct_k=k, counts=counts if strat in ("urw", "surw") else (),
            )
            lengths.append(rec.result.shared_steps)
            observed = rec.result.scheduler.get("observed")
            if isinstance(observed, list):
                counts = [int(c) for c in observed]
            else:
                counts = [0] * len(rec.actors)
                for aid in rec.result.schedule:
                    counts[aid] += 1
            res.runs += 1
            res.seeds.append(seed)
            if strat == "pct":
                g = rec.result.scheduler.get("guarantee")
                res.guarantee = float(g) if g is not None else None
                res.pct_k = int(rec.result.scheduler["k"])
            if rec.result.failure is not None:
                res.found = rec
                break
            clean(rec)
            seed += 1
    res.seconds = time.perf_counter() - t0
    if res.found is not None and shrink:
        res.shrunk = shrink_record(res.found, shrink_budget)
        # The shrunk run replays a schedule; keep what found it (PCT's learned k, the
        # URW / SURW counts) in its scheduler record, hence in its artifact.
        shrunk = res.shrunk.record.result
        shrunk.scheduler = {**shrunk.scheduler, "found_by": res.found.result.scheduler}
    return res


__all__ = [
    "HUNT_STRATEGIES",
    "MIX_HEAD",
    "MIX_RR_QUANTA",
    "STICKY_QUANTUM",
    "Budget",
    "HuntResult",
    "Turn",
    "hunt",
    "learned_k",
    "mix_turn",
    "parse_budget",
]

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

A hunt over worker processes (``jobs > 1``) gives the result of ``jobs=1``, run for run.
Run ``i`` uses seed ``base + i`` and its turn ``turns(i)``, a function of ``i`` alone, so
runs can be made out of order: the parent hands chunks of consecutive run indices
(:data:`CHUNK` at most) to a pool of forked workers (``pool.ForkPool``: SIGINT
ignored, they die with the parent), a few chunks ahead, and takes their results strictly
in run order. A worker returns per run a :class:`RunDone`: failed or not, shared steps,
PCT's ``k`` and guarantee, and a clean run's CSV rows already checked and formatted
(``output.format_run``), which the parent only appends; the contention of a chunk's
clean runs is summed in the worker and comes with the chunk's first clean run, and the
parent's writer takes a chunk whole or not at all (``output.FormattedRows.hold``). The hunt ends at the first
failing run index; the parent makes that run again in-process (same seed, same turn:
the same run, which it checks by fingerprint) for the shrinker and the artifact, and
drops whatever the workers made after it. A budget of N runs makes exactly N; a budget
in seconds stops handing out chunks at the deadline and takes the chunks already out.
What depends on earlier runs cannot be made ahead: PCT's learned ``k`` (unless the caller
or the workload fixes it), URW / SURW's counts and the exhaustive search run in this
process whatever ``jobs`` says (a ``mix`` whose ``turns`` give such a turn goes on in
this process from the chunk that holds it).
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..core.machine.errors import HarnessInternalError, InvalidOption, StoppedFromOutside
from ..workloads import Workload
from .output import ContentionSums, FormattedRows, chunk_rows, format_run, run_id
from .pct_k import learned_k
from .runner import RunRecord, run_deterministic, validate_variant_bugs

if TYPE_CHECKING:
    from .shrink import ShrinkResult

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
    jobs: int = 1  # worker processes the hunt used (1: it ran in this process)

    @property
    def seeds_to_find(self) -> int:
        return self.runs if self.found is not None else -1


@dataclass(frozen=True)
class RunDone:
    """One run of a hunt as the hunt keeps it, made in this process or in a worker (a
    small picklable record: no model, no generator).

    Attributes:
        index: the run's index in the hunt (0-based); its seed is ``base + index``.
        failed: an oracle fired.
        shared_steps: ``RunResult.shared_steps`` (what PCT's learned ``k`` is made of).
        counts: steps per actor (URW / SURW's weights for the next run).
        pct_k, guarantee: a PCT run's step estimate and guarantee (``None`` otherwise).
        fingerprint, kind: the run's fingerprint and failure kind ("" when clean).
        rows: a clean run's CSV rows, checked and formatted (``output.format_run``),
            when the hunt was asked for them (``on_clean``); ``None`` otherwise.
    """

    index: int
    seed: int
    failed: bool
    shared_steps: int
    counts: tuple[int, ...]
    pct_k: int | None
    guarantee: float | None
    fingerprint: str
    kind: str
    rows: FormattedRows | None = None


# Run indices per chunk a worker makes at a time: small, so the first failure is never
# far behind the parent, large enough that the pool's per-chunk cost (a few hundred
# microseconds) stays far below the runs' (about 3 ms a run on opposite-order).
CHUNK = 16
# Chunks handed out per worker ahead of the one the parent waits for.
AHEAD = 2


@dataclass(frozen=True)
class _Settings:
    """What every run of one hunt shares; each worker gets it once, when the pool forks
    it (never pickled), and keeps it in :data:`_SETTINGS`."""

    w: Workload
    variant: str
    bugs: tuple[str, ...]
    pct_k: int | None
    rows: bool


_SETTINGS: _Settings | None = None  # set in a hunt's worker processes only


def _keep_settings(settings: _Settings) -> None:
    global _SETTINGS
    _SETTINGS = settings


def _needs_history(turn: Turn, pct_k: int | None, w: Workload) -> bool:
    """Does the run depend on earlier runs of the hunt (URW / SURW's counts, PCT's
    learned ``k``)? Such a run cannot be made ahead by a worker."""
    return turn.strategy in ("urw", "surw") or (turn.strategy == "pct" and not pct_k and not w.pct_k)


def _run(s: _Settings, seed: int, turn: Turn, k: int | None, counts: Sequence[int]) -> RunRecord:
    strat = turn.strategy
    return run_deterministic(
        s.w, variant=s.variant, bugs=s.bugs, seed=seed, strategy=strat, pct_depth=turn.depth,
        quantum=turn.quantum, pct_k=k, counts=counts if strat in ("urw", "surw") else (),
    )


def _done(rec: RunRecord, index: int, rows: bool, sums: ContentionSums | None = None) -> RunDone:
    """``rows``: format a clean run's rows; its contention into ``sums`` when given, else
    summed alone and carried with its rows for the writer to merge (``FormattedRows.sums``)."""
    r = rec.result
    observed = r.scheduler.get("observed")
    if isinstance(observed, list):
        counts = tuple(int(c) for c in observed)
    else:
        counts = tuple(r.schedule.count(a) for a in range(len(rec.actors)))
    pct = rec.strategy == "pct"
    g = r.scheduler.get("guarantee") if pct else None
    failed = r.failure is not None
    formatted = None
    if rows and not failed:
        own = ContentionSums() if sums is None else sums
        formatted = format_run(rec, run_id(rec), "", sums=own)
        if sums is None:
            formatted = replace(formatted, sums=own)
    return RunDone(
        index=index, seed=rec.seed, failed=failed, shared_steps=r.shared_steps, counts=counts,
        pct_k=int(r.scheduler["k"]) if pct else None, guarantee=float(g) if g is not None else None,
        fingerprint=r.fingerprint, kind=r.failure.kind.value if r.failure is not None else "",
        rows=formatted,
    )


def _run_chunk(chunk: tuple[int, int, tuple[Turn, ...]]) -> list[RunDone]:
    """A worker's task: runs ``start, start+1, ...`` (seeds from ``seed``), one per turn,
    up to the first that fails."""
    start, seed, turns = chunk
    s = _SETTINGS
    if s is None:  # pragma: no cover - only a pool made by _pooled calls this
        raise HarnessInternalError("a hunt chunk ran in a process without the hunt's settings")
    out = []
    sums = ContentionSums() if s.rows else None
    for j, turn in enumerate(turns):
        done = _done(_run(s, seed + j, turn, s.pct_k, ()), start + j, s.rows, sums)
        out.append(done)
        if done.failed:
            break
    if sums is not None:  # the chunk's rows, taken whole by the parent's writer
        # the clean runs are the chunk's first ones (it stops at a failure)
        whole = chunk_rows([d.rows for d in out if d.rows is not None], sums)
        for i, f in enumerate(whole):
            out[i] = replace(out[i], rows=f)
    return out


class _Hunt:
    """One hunt's loops: :meth:`sequential` in this process, :meth:`pooled` over worker
    processes; both take runs strictly in run order into ``res`` (:meth:`take`)."""

    def __init__(
        self, s: _Settings, res: HuntResult, base_seed: int, budget: Budget, t0: float,
        turn_of: Callable[[int], Turn],
        on_run: Callable[[RunRecord], None] | None, on_clean: Callable[[RunDone], None] | None,
    ) -> None:
        self.s, self.res, self.base, self.budget, self.t0 = s, res, base_seed, budget, t0
        self.turn_of, self.on_run, self.on_clean = turn_of, on_run, on_clean
        self.lengths: list[int] = []  # shared steps of every run taken (PCT's learned k)
        self.counts: list[int] = []  # steps per actor of the last run (URW / SURW weights)

    def budget_left(self, made: int) -> bool:
        b = self.budget
        if b.runs is not None and made >= b.runs:
            return False
        return b.seconds is None or time.perf_counter() - self.t0 < b.seconds

    def take(self, d: RunDone) -> None:
        res = self.res
        if d.index != res.runs:
            raise HarnessInternalError(f"hunt: run {d.index} came back where run {res.runs} was due")
        self.lengths.append(d.shared_steps)
        self.counts = list(d.counts)
        res.runs += 1
        res.seeds.append(d.seed)
        if d.pct_k is not None:
            res.guarantee = d.guarantee
            res.pct_k = d.pct_k

    def sequential(self) -> RunRecord | None:
        """Run in this process from run ``res.runs`` on; the failing run's record."""
        s, res = self.s, self.res
        while self.budget_left(res.runs):
            turn = self.turn_of(res.runs)
            k = None
            if turn.strategy == "pct":
                k = s.pct_k or (None if s.w.pct_k else learned_k(self.lengths))
            rec = _run(s, self.base + res.runs, turn, k, self.counts)
            d = _done(rec, res.runs, self.on_clean is not None)
            self.take(d)
            if d.failed:
                return rec
            if self.on_run is not None:
                self.on_run(rec)
            if self.on_clean is not None:
                self.on_clean(d)
        return None

    def pooled(self, jobs: int) -> RunDone | None:
        """Run over ``jobs`` worker processes from run ``res.runs`` on, until the first
        failure (returned), the budget, or a turn that needs earlier runs (the caller
        goes on with :meth:`sequential`).

        Raises:
            StoppedFromOutside: a worker was killed from outside (exit 130).
            HarnessInternalError: a worker crashed or exited.
        """
        from .pool import ForkPool, WorkerDied, worker_death

        s, res, budget = self.s, self.res, self.budget
        made = res.runs  # runs handed out so far
        chunk = CHUNK if budget.runs is None else max(1, min(CHUNK, -(-budget.runs // (4 * jobs))))
        backend = ForkPool(jobs, (_keep_settings, (s,)), _run_chunk)
        pending: deque[Any] = deque()
        history = False  # a turn that needs earlier runs is next: stop handing out
        failed: RunDone | None = None
        try:
            while True:
                while not history and len(pending) < AHEAD * jobs and self.budget_left(made):
                    n = chunk
                    if budget.runs is not None:  # the last chunks shrink: the workers end together
                        n = min(n, max(1, -(-(budget.runs - made) // (AHEAD * jobs))))
                    turns = tuple(self.turn_of(i) for i in range(made, made + n))
                    if any(_needs_history(t, s.pct_k, s.w) for t in turns):
                        history = True
                        break
                    pending.append(backend.submit((made, self.base + made, turns)))
                    made += n
                if not pending:
                    break
                f = pending[0]
                if not backend.wait([f], 0.5):
                    continue
                pending.popleft()
                results: list[RunDone] = backend.result(f)
                for d in results:
                    self.take(d)
                    if d.failed:
                        failed = d
                        break
                    if self.on_clean is not None:
                        self.on_clean(d)
                if failed is not None:
                    break
        except WorkerDied:  # from a wait, or from a submit to a pool already broken
            outside, why = worker_death(backend, "hunt worker")
            if outside:  # the OOM killer, an operator: exit 130, as campaign
                raise StoppedFromOutside(
                    f"{why} (not a kernel failure); the rows of the {res.runs} runs "
                    "taken are written"
                ) from None
            raise HarnessInternalError(f"hunt: {why}; the runs before it are kept") from None
        finally:
            backend.close(cancel=bool(pending))
        return failed


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
    jobs: int = 1,
    on_clean: Callable[[RunDone], None] | None = None,
) -> HuntResult:
    """Run seeds until the first failure or ``budget``; shrink what was found.
    ``on_run(record)`` sees every run that did not fail (for its CSV rows; in this
    process only: not with ``jobs > 1``). ``on_clean(done)`` sees them too, in run
    order, as :class:`RunDone` with their CSV rows formatted (``done.rows``), wherever
    they ran. ``pct_k``: PCT's step estimate; ``None`` learns it from the hunt's runs
    (:func:`learned_k`) unless the workload sets one. ``turns``: the strategy of each run
    of a ``mix`` hunt (default :func:`mix_turn`; the benchmark measures others).
    ``jobs``: worker processes (1: this process); the result is the same whatever it is
    (module docstring); the strategies whose runs depend on earlier runs ignore it.

    Raises:
        InvalidOption: bad strategy, variant, bug or ``jobs``; ``on_run`` with ``jobs > 1``.
        HarnessInternalError: a worker died, or the failing run made again did not fail
            the same way.
    """
    if strategy not in HUNT_STRATEGIES:
        raise InvalidOption(
            f"unknown hunt strategy {strategy!r}; valid: {', '.join(HUNT_STRATEGIES)}"
        )
    if jobs < 1:
        raise InvalidOption(f"jobs={jobs}: a hunt needs at least 1 job")
    if on_run is not None and jobs > 1:
        raise InvalidOption(
            "hunt(on_run=...) needs each run's record, which stays in its worker: "
            "with jobs > 1 pass on_clean (each clean run's CSV rows) instead"
        )
    validate_variant_bugs(variant, bugs, w)
    t0 = time.perf_counter()
    res = HuntResult(found=None, runs=0, seconds=0.0, strategy=strategy)
    if strategy == "exhaustive":

        made = [0]  # schedules explored so far

        def clean(rec: RunRecord) -> None:
            made[0] += 1
            if rec.result.failure is not None:
                return
            if on_run is not None:
                on_run(rec)
            if on_clean is not None:
                on_clean(_done(rec, made[0] - 1, True))

        from .explore import explore  # imported here: a hunt of seeds never needs it

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
        if strategy == "mix":
            turn_of = turns
        else:
            fixed = Turn(strategy, pct_depth, STICKY_QUANTUM if strategy == "sticky" else 1)

            def turn_of(i: int) -> Turn:
                return fixed
        s = _Settings(w, variant, tuple(bugs), pct_k, on_clean is not None)
        h = _Hunt(s, res, base_seed, budget, t0, turn_of, on_run, on_clean)
        if jobs > 1 and not _needs_history(turn_of(0), pct_k, w):
            res.jobs = jobs
            failed = h.pooled(jobs)
            if failed is not None:
                res.found = _again(h, failed)
            else:
                res.found = h.sequential()  # a turn that needs earlier runs, or nothing left
        else:
            res.found = h.sequential()
    res.seconds = time.perf_counter() - t0
    if res.found is not None and shrink:
        from .shrink import shrink_record  # imported here: only a failure is shrunk

        res.shrunk = shrink_record(res.found, shrink_budget)
        # The shrunk run replays a schedule; keep what found it (PCT's learned k, the
        # URW / SURW counts) in its scheduler record, hence in its artifact.
        shrunk = res.shrunk.record.result
        shrunk.scheduler = {**shrunk.scheduler, "found_by": res.found.result.scheduler}
    return res


def _again(h: _Hunt, d: RunDone) -> RunRecord:
    """The failing run a worker found, made again in this process (same seed, same turn,
    same fixed ``k``: the same run) for the shrinker and the artifact.

    Raises:
        HarnessInternalError: it did not fail the same way (same fingerprint and kind).
    """
    rec = _run(h.s, d.seed, h.turn_of(d.index), h.s.pct_k, ())
    r = rec.result
    kind = r.failure.kind.value if r.failure is not None else "no failure"
    if r.fingerprint != d.fingerprint or kind != d.kind:
        raise HarnessInternalError(
            f"hunt: run {d.index} (seed {d.seed}) failed with {d.kind} (fingerprint {d.fingerprint}) "
            f"in a worker but gave {kind} (fingerprint {r.fingerprint}) made again in this process"
        )
    return rec


__all__ = [
    "CHUNK",
    "HUNT_STRATEGIES",
    "MIX_HEAD",
    "MIX_RR_QUANTA",
    "STICKY_QUANTUM",
    "Budget",
    "HuntResult",
    "RunDone",
    "Turn",
    "hunt",
    "learned_k",
    "mix_turn",
    "parse_budget",
]

"""A/B comparison of two variants on the same workloads and the same seeds, paired.

Each (workload, seed) runs under variant A and under variant B on the deterministic
engine with the same strategy: the actors' programs come from the seed alone, so the two
runs of a pair do the same operations and differ only by the protocol (and the schedule
it leads to). Per workload :func:`compare` gives

- the failure counts of each side and the pairs where only one side failed (its seeds);
- the exact McNemar test on those discordant pairs: under "A and B fail alike" each
  discordant pair is a fair coin, so the two-sided p-value is
  ``min(1, 2 * P(Binomial(b + c, 1/2) <= min(b, c)))``;
- the failure kinds of each side, and those only one side has;
- per lock call site, contended acquisitions per run on each side; per migration
  attempt and reason, pages per run on each side.

The verdict (:attr:`Comparison.verdict`): ``worse`` when on some workload B fails in a
way A never does there (a failure kind A does not have: a failure is a bug, however
rare), or B fails significantly more often (p < ``alpha``); ``better`` when the same
holds the other way round and B is nowhere worse; ``same`` otherwise.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..workloads import Workload
from . import plugins
from .hunt import mix_turn
from .output import contention_row, outcome_columns
from .runner import RunRecord, run_deterministic, validate_variant_bugs

COMPARE_STRATEGIES = ("mix", "random", "pct", "rr")


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` pairs where only A failed and ``c``
    where only B failed (1.0 when there is no discordant pair)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass
class Side:
    """One variant's runs of one workload."""

    variant: str
    runs: int = 0
    failed: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    first_seed: dict[str, int] = field(default_factory=dict)  # failure kind -> first seed
    contended: Counter[str] = field(default_factory=Counter)  # site -> contended, all runs
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (attempt, column)

    def add(self, seed: int, rec: RunRecord) -> None:
        self.runs += 1
        f = rec.result.failure
        if f is not None:
            self.failed += 1
            self.kinds[f.kind.value] += 1
            self.first_seed.setdefault(f.kind.value, seed)
        for site, st in rec.kernel.stats.items():  # contention.csv's counter, per run
            self.contended[site] += contention_row(site, st)["contended"]
        for attempt, cols in outcome_columns(rec.kernel.outcomes).items():
            for col, n in cols.items():
                self.outcomes[(attempt, col)] += int(n)

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "runs": self.runs,
            "failed": self.failed,
            "failure_rate": self.failed / self.runs if self.runs else 0.0,
            "kinds": dict(sorted(self.kinds.items())),
            "first_seed": dict(sorted(self.first_seed.items())),
        }


@dataclass
class WorkloadComparison:
    workload: str
    strategy: str
    a: Side
    b: Side
    only_a: list[tuple[int, str]] = field(default_factory=list)  # (seed, A's failure kind)
    only_b: list[tuple[int, str]] = field(default_factory=list)
    alpha: float = 0.05
    pct_depth: int = 3

    @property
    def p_value(self) -> float:
        return mcnemar_exact(len(self.only_a), len(self.only_b))

    @property
    def kinds_only_a(self) -> list[str]:
        return sorted(set(self.a.kinds) - set(self.b.kinds))

    @property
    def kinds_only_b(self) -> list[str]:
        return sorted(set(self.b.kinds) - set(self.a.kinds))

    @property
    def verdict(self) -> str:
        worse = bool(self.kinds_only_b) or (len(self.only_b) > len(self.only_a) and self.p_value < self.alpha)
        better = bool(self.kinds_only_a) or (
            len(self.only_a) > len(self.only_b) and self.p_value < self.alpha
        )
        if worse:
            return "worse"
        return "better" if better else "same"

    def contention_diff(self, top: int = 5) -> list[tuple[str, float, float]]:
        """The ``top`` lock sites whose contended acquisitions per run differ most:
        (site, A per run, B per run)."""
        sites = sorted(set(self.a.contended) | set(self.b.contended))
        rows = [(s, self.a.contended[s] / max(1, self.a.runs), self.b.contended[s] / max(1, self.b.runs))
                for s in sites]
        rows = [r for r in rows if r[1] != r[2]]
        rows.sort(key=lambda r: (-abs(r[2] - r[1]), r[0]))
        return rows[:top]

    def outcome_diff(self, top: int = 5) -> list[tuple[str, str, float, float]]:
        """The ``top`` (attempt, reason) page counts per run that differ most:
        (attempt, reason, A per run, B per run); ``collected`` is left out (a sum)."""
        keys = sorted((set(self.a.outcomes) | set(self.b.outcomes)) - {k for k in self.a.outcomes
                                                                         if k[1] == "collected"})
        rows = [(att, col, self.a.outcomes[(att, col)] / max(1, self.a.runs),
                 self.b.outcomes[(att, col)] / max(1, self.b.runs))
                for att, col in keys if col != "collected"]
        rows = [r for r in rows if r[2] != r[3]]
        rows.sort(key=lambda r: (-abs(r[3] - r[2]), r[0], r[1]))
        return rows[:top]

    def to_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "strategy": self.strategy,
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "only_a": [{"seed": s, "kind": k} for s, k in self.only_a],
            "only_b": [{"seed": s, "kind": k} for s, k in self.only_b],
            "p_value": self.p_value,
            "kinds_only_a": self.kinds_only_a,
            "kinds_only_b": self.kinds_only_b,
            "verdict": self.verdict,
            "contention": [
                {"site": s, "a_per_run": x, "b_per_run": y} for s, x, y in self.contention_diff()
            ],
            "outcomes": [
                {"attempt": att, "reason": col, "a_per_run": x, "b_per_run": y}
                for att, col, x, y in self.outcome_diff()
            ],
        }


@dataclass
class Comparison:
    a: str
    b: str
    seeds: list[int]
    workloads: list[WorkloadComparison]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (workload, why)

    @property
    def verdict(self) -> str:
        vs = {w.verdict for w in self.workloads}
        if "worse" in vs:
            return "worse"
        return "better" if "better" in vs else "same"

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "seeds": _ranges(self.seeds),
            "verdict": self.verdict,
            "workloads": [w.to_json() for w in self.workloads],
            "skipped": [{"workload": w, "why": why} for w, why in self.skipped],
        }


def _strategy_of(strategy: str, i: int, pct_depth: int) -> tuple[str, int, int]:
    """(strategy, PCT depth, quantum) of the ``i``-th seed."""
    if strategy == "mix":
        t = mix_turn(i)
        return t.strategy, t.depth, t.quantum
    return strategy, pct_depth, 1


def compare(
    workloads: Iterable[Workload],
    a: str,
    b: str,
    seeds: Sequence[int],
    *,
    bugs_a: Sequence[str] = (),
    bugs_b: Sequence[str] = (),
    strategy: str = "mix",
    pct_depth: int = 3,
    alpha: float = 0.05,
    max_steps: int | None = None,
    on_pair: Callable[[str, int], None] | None = None,
) -> Comparison:
    """Run every (workload, seed) under ``a`` and ``b``; a workload one of the two cannot
    run (it needs a path the variant lacks) is skipped with the reason.

    Raises:
        InvalidOption: an unknown variant, bug or strategy.
    """
    from ..core.machine.errors import InvalidOption

    if strategy not in COMPARE_STRATEGIES:
        raise InvalidOption(f"unknown strategy {strategy!r}; valid: {', '.join(COMPARE_STRATEGIES)}")
    validate_variant_bugs(a, bugs_a)
    validate_variant_bugs(b, bugs_b)
    out = Comparison(a, b, list(seeds), [])
    for w in workloads:
        try:
            validate_variant_bugs(a, bugs_a, w)
            validate_variant_bugs(b, bugs_b, w)
        except InvalidOption as exc:
            out.skipped.append((w.name, str(exc)))
            continue
        wc = WorkloadComparison(w.name, strategy, Side(a), Side(b), alpha=alpha, pct_depth=pct_depth)
        for i, seed in enumerate(seeds):
            strat, depth, quantum = _strategy_of(strategy, i, pct_depth)
            ra = run_deterministic(w, variant=a, bugs=bugs_a, seed=seed, strategy=strat,
                                   pct_depth=depth, quantum=quantum, max_steps=max_steps)
            rb = run_deterministic(w, variant=b, bugs=bugs_b, seed=seed, strategy=strat,
                                   pct_depth=depth, quantum=quantum, max_steps=max_steps)
            wc.a.add(seed, ra)
            wc.b.add(seed, rb)
            fa, fb = ra.result.failure, rb.result.failure
            if fa is not None and fb is None:
                wc.only_a.append((seed, fa.kind.value))
            elif fb is not None and fa is None:
                wc.only_b.append((seed, fb.kind.value))
            if on_pair is not None:
                on_pair(w.name, seed)
        out.workloads.append(wc)
    return out


def _ranges(seeds: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` → ``"1-3,7"``."""
    parts: list[str] = []
    ss = sorted(set(seeds))
    i = 0
    while i < len(ss):
        j = i
        while j + 1 < len(ss) and ss[j + 1] == ss[j] + 1:
            j += 1
        parts.append(str(ss[i]) if i == j else f"{ss[i]}-{ss[j]}")
        i = j + 1
    return ",".join(parts)


def format_text(c: Comparison, bugs_a: Sequence[str] = (), bugs_b: Sequence[str] = ()) -> list[str]:
    """The comparison as text lines, the verdict first."""
    na = c.a + (f" +{'+'.join(bugs_a)}" if bugs_a else "")
    nb = c.b + (f" +{'+'.join(bugs_b)}" if bugs_b else "")
    lines = [f"verdict: {nb} is {_VERDICT_WORDS[c.verdict]} {na} "
             f"(A = {na}, B = {nb}; seeds {_ranges(c.seeds)}, paired)"]
    worst = defaultdict(list)
    for w in c.workloads:
        worst[w.verdict].append(w.workload)
    for v in ("worse", "better"):
        if worst[v]:
            lines.append(f"  {v} on: {', '.join(worst[v])}")
    lines.append("")
    lines.append(f"{'workload':<28} {'A failed':>9} {'B failed':>9} {'only A':>7} {'only B':>7} "
                 f"{'p (McNemar)':>11}  verdict")
    for w in c.workloads:
        lines.append(
            f"{w.workload:<28} {_rate(w.a):>9} {_rate(w.b):>9} {len(w.only_a):>7} {len(w.only_b):>7} "
            f"{w.p_value:>11.3g}  {w.verdict}"
        )
    for w in c.workloads:
        if not (w.only_a or w.only_b or w.a.failed or w.b.failed or w.contention_diff() or w.outcome_diff()):
            continue
        lines.append("")
        lines.append(f"{w.workload}:")
        for side, label in ((w.a, "A"), (w.b, "B")):
            if side.kinds:
                kinds = ", ".join(
                    f"{k} x{n} (first seed {side.first_seed[k]})" for k, n in sorted(side.kinds.items())
                )
                lines.append(f"  {label} failures: {kinds}")
        if w.kinds_only_b:
            lines.append(f"  failure kinds only B has: {', '.join(w.kinds_only_b)}")
        if w.kinds_only_a:
            lines.append(f"  failure kinds only A has: {', '.join(w.kinds_only_a)}")
        for pairs, label, variant, bugs in ((w.only_a, "A", c.a, bugs_a), (w.only_b, "B", c.b, bugs_b)):
            if pairs:
                shown = ", ".join(f"{s} ({k})" for s, k in pairs[:8])
                more = f" and {len(pairs) - 8} more" if len(pairs) > 8 else ""
                lines.append(f"  only {label} failed on seeds: {shown}{more}")
                s0, _k = pairs[0]
                strat, depth, quantum = _strategy_of(w.strategy, c.seeds.index(s0), w.pct_depth)
                pd = f" --pct-depth {depth}" if strat == "pct" else ""
                pd += f" --quantum {quantum}" if strat in ("rr", "sticky") and quantum != 1 else ""
                bug = "".join(f" --bug {x}" for x in bugs)
                owner = plugins.owner("variants", variant)
                plug = f" --plugin {owner.spec}" if owner is not None else ""
                lines.append(f"    rerun: pagerace{plug} run {w.workload} --variant {variant}{bug} "
                             f"--seed {s0} --strategy {strat}{pd}")
        cd = w.contention_diff()
        if cd:
            lines.append("  contended acquisitions per run (A -> B):")
            lines.extend(f"    {s:<52} {x:8.2f} -> {y:8.2f}" for s, x, y in cd)
        od = w.outcome_diff()
        if od:
            lines.append("  migration outcomes, pages per run (A -> B):")
            lines.extend(f"    {att + ' ' + col:<52} {x:8.2f} -> {y:8.2f}" for att, col, x, y in od)
    for name, why in c.skipped:
        lines.append(f"skipped {name}: {why}")
    return lines


_VERDICT_WORDS = {"worse": "WORSE than", "better": "better than", "same": "no different from"}


def _rate(s: Side) -> str:
    return f"{s.failed}/{s.runs}"

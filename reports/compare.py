"""Tonight against last night: what changed beyond noise.

A :class:`Finding` is a ``regression`` (the nightly job should alert: exit 1), an
``improvement`` or a ``notice`` (worth a look, no alert). What is compared:

- **new failure kinds**: a (workload, variant, kind) that fails tonight and never failed
  in the baseline: a regression. The bug toggles are not part of this key, so turning a
  historical bug back on is seen even though its configuration is new.
- **failure rates** per workload × variant × bugs: a two-proportion z-test (two-sided,
  ``alpha``, 1 % by default); up is a regression, down an improvement. The Wilson 95 %
  intervals are shown beside it. A configuration with no exact baseline match (a bug set
  the baseline did not run) is compared with the baseline's run of the same workload and
  variant without bugs, or else with its only configuration there.
- **reproduction**: the share of replayed failures that reproduced, per workload × variant
  × kind, by the same test; rarer is a regression.
- **contention hot spots**: the top call sites by contentions per run; a site entering or
  leaving the top, or a contention ratio that moved significantly and by more than
  ``min_shift`` (relative), is a notice.
- **coverage**: configurations the baseline ran and tonight did not (a notice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from . import aggregate as agg
from .load import Dataset

SEVERITIES = ("regression", "improvement", "notice")


@dataclass(frozen=True)
class Finding:
    severity: str  # regression, improvement, notice
    category: str  # new failure kind, failure rate, reproduction, contention, coverage
    subject: str  # what it is about (workload × variant × ...)
    detail: str  # the numbers


@dataclass
class Comparison:
    findings: list[Finding] = field(default_factory=list)
    rates: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "regression"]

    def frame(self) -> pd.DataFrame:
        """The findings as a table, regressions first."""
        df = pd.DataFrame(
            [(f.severity, f.category, f.subject, f.detail) for f in self.findings],
            columns=["severity", "category", "subject", "detail"],
        )
        order = {s: i for i, s in enumerate(SEVERITIES)}
        return df.sort_values("severity", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def two_proportion_z(k1: float, n1: float, k2: float, n2: float) -> tuple[float, float]:
    """z statistic and two-sided p-value of ``k2/n2`` against ``k1/n1`` (pooled).
    (0, 1) when either side is empty or both rates are 0 % or 100 %."""
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (k2 / n2 - k1 / n1) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(lo: float, hi: float) -> str:
    return f"[{_pct(lo)}, {_pct(hi)}]"


def _subject(*parts: object) -> str:
    return " × ".join(str(p) for p in parts if p not in ("", None))


def compare(
    current: Dataset, baseline: Dataset, alpha: float = 0.01, top: int = 5, min_shift: float = 0.25
) -> Comparison:
    """Compare ``current`` with ``baseline`` (see the module docstring)."""
    cmp = Comparison()
    if baseline.runs.empty:
        # last night produced nothing (a crashed job): every kind would look new
        cmp.findings.append(
            Finding("notice", "coverage", str(baseline.path), "the baseline has no runs; nothing compared")
        )
        return cmp
    _new_kinds(current, baseline, cmp)
    _rates(current, baseline, cmp, alpha)
    _reproduction(current, baseline, cmp, alpha)
    _contention(current, baseline, cmp, alpha, top, min_shift)
    _coverage(current, baseline, cmp)
    return cmp


def _kinds(ds: Dataset) -> pd.DataFrame:
    r = ds.runs
    f = r[r["outcome"] == "failed"]
    return f.groupby(["workload", "variant", "failure_kind"]).size().rename("n").reset_index()


def _new_kinds(cur: Dataset, base: Dataset, cmp: Comparison) -> None:
    kc, kb = _kinds(cur), _kinds(base)
    seen = set(zip(kb["workload"], kb["variant"], kb["failure_kind"]))
    now = set(zip(kc["workload"], kc["variant"], kc["failure_kind"]))
    runs_c = cur.runs.groupby(["workload", "variant"]).size()
    for w, v, kind, n in kc.itertuples(index=False):
        if (w, v, kind) in seen:
            continue
        ex = cur.failures[
            (cur.failures["workload"] == w) & (cur.failures["variant"] == v) & (cur.failures["kind"] == kind)
        ]
        art = f"; e.g. {ex['artifact'].iloc[0]}" if len(ex) and ex["artifact"].iloc[0] else ""
        bugs = ""
        if len(ex):
            b = sorted(set(ex["bugs"].astype(str)))
            bugs = f" (bugs: {', '.join(x or 'none' for x in b)})"
        cmp.findings.append(
            Finding(
                "regression",
                "new failure kind",
                _subject(w, v, kind),
                f"{n} of {int(runs_c.get((w, v), 0))} runs failed with {kind}{bugs}; "
                f"never in the baseline{art}",
            )
        )
    for w, v, kind, n in kb.itertuples(index=False):
        if (w, v, kind) not in now and (w, v) in runs_c.index:
            cmp.findings.append(
                Finding(
                    "improvement",
                    "failure kind gone",
                    _subject(w, v, kind),
                    f"{n} baseline runs failed with {kind}; none tonight ({int(runs_c[(w, v)])} runs)",
                )
            )


def _baseline_row(
    base: pd.DataFrame, b: pd.DataFrame, workload: str, variant: str, bugs: str
) -> tuple[str, pd.Series] | None:
    """The baseline configuration a current one is compared with: the same bugs; else,
    for a bug set the baseline did not run, the baseline's run of the same workload and
    variant without bugs (the unpatched configuration), or its only configuration there.
    Returns (the baseline's bugs, its rate row), or None when there is none of these
    (several bug sets, none of them "none")."""
    for key in ((workload, variant, bugs), (workload, variant, "none")):
        if key in b.index:
            return key[2], b.loc[key]
    same = base[(base["workload"] == workload) & (base["variant"] == variant)]
    return (str(same.iloc[0]["bugs"]), same.iloc[0]) if len(same) == 1 else None


def _match(cur: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """Current rate rows joined with their baseline row (:func:`_baseline_row`)."""
    b = base.set_index(agg.GROUP)
    rows = []
    for r in cur.itertuples(index=False):
        key = (r.workload, r.variant, r.bugs)
        found = _baseline_row(base, b, *key)
        if found is None:
            continue
        base_bugs, m = found
        rows.append(
            (
                *key,
                base_bugs,
                m["runs"],
                m["failed"],
                m["ci_lo"],
                m["ci_hi"],
                r.runs,
                r.failed,
                r.ci_lo,
                r.ci_hi,
            )
        )
    return pd.DataFrame(
        rows,
        columns=[
            "workload",
            "variant",
            "bugs",
            "baseline_bugs",
            "base_runs",
            "base_failed",
            "base_lo",
            "base_hi",
            "runs",
            "failed",
            "ci_lo",
            "ci_hi",
        ],
    )


def _rates(cur: Dataset, base: Dataset, cmp: Comparison, alpha: float) -> None:
    rc, rb = agg.failure_rates(cur), agg.failure_rates(base)
    m = _match(rc, rb)
    zs, ps = [], []
    for r in m.itertuples(index=False):
        z, p = two_proportion_z(r.base_failed, r.base_runs, r.failed, r.runs)
        zs.append(z)
        ps.append(p)
        if p >= alpha:
            continue
        up = z > 0
        overlap = not (r.ci_lo > r.base_hi or r.ci_hi < r.base_lo)
        vs = "" if r.bugs == r.baseline_bugs else f" (baseline bugs: {r.baseline_bugs})"
        cmp.findings.append(
            Finding(
                "regression" if up else "improvement",
                "failure rate",
                _subject(r.workload, r.variant, r.bugs),
                f"{_pct(r.base_failed / r.base_runs)} {_ci(r.base_lo, r.base_hi)} of {r.base_runs} → "
                f"{_pct(r.failed / r.runs)} {_ci(r.ci_lo, r.ci_hi)} of {r.runs}{vs}; z={z:+.2f}, p={p:.2g}"
                + ("" if overlap else ", intervals do not overlap"),
            )
        )
    m["z"] = zs
    m["p"] = ps
    cmp.rates = m


def _reproduction(cur: Dataset, base: Dataset, cmp: Comparison, alpha: float) -> None:
    def by(ds: Dataset) -> pd.DataFrame:
        f = ds.failures
        f = f[f["reproduced"] != ""]
        if f.empty:
            return pd.DataFrame(columns=["workload", "variant", "kind", "n", "k"])
        return (
            f.assign(_y=(f["reproduced"] == "yes").astype(int))
            .groupby(["workload", "variant", "kind"])
            .agg(n=("_y", "size"), k=("_y", "sum"))
            .reset_index()
        )

    c, b = by(cur), by(base)
    j = c.merge(b, on=["workload", "variant", "kind"], suffixes=("", "_b"))
    for r in j.itertuples(index=False):
        z, p = two_proportion_z(r.k_b, r.n_b, r.k, r.n)
        if p >= alpha or z >= 0:
            continue
        cmp.findings.append(
            Finding(
                "regression",
                "reproduction",
                _subject(r.workload, r.variant, r.kind),
                f"replays reproduced {_pct(r.k_b / r.n_b)} of {r.n_b} → {_pct(r.k / r.n)} of {r.n}; "
                f"z={z:+.2f}, p={p:.2g}",
            )
        )


def _contention(
    cur: Dataset, base: Dataset, cmp: Comparison, alpha: float, top: int, min_shift: float
) -> None:
    sc = agg.contention_by_site(cur, top=None)
    sb = agg.contention_by_site(base, top=None)
    if sc.empty or sb.empty:
        return
    nc, nb = max(1, len(cur.runs)), max(1, len(base.runs))
    sc = sc.assign(per_run=sc["contended"] / nc).sort_values("per_run", ascending=False, kind="stable")
    sb = sb.assign(per_run=sb["contended"] / nb).sort_values("per_run", ascending=False, kind="stable")
    tc = [s for s, v in zip(sc["site"], sc["per_run"]) if v > 0][:top]
    tb = [s for s, v in zip(sb["site"], sb["per_run"]) if v > 0][:top]
    ic = sc.set_index("site")
    ib = sb.set_index("site")
    for s in tc:
        if s not in tb:
            was = f"{ib.loc[s, 'per_run']:.2f}" if s in ib.index else "0"
            cmp.findings.append(
                Finding(
                    "notice",
                    "contention",
                    s,
                    f"entered the top {top} hot spots: {was} → {ic.loc[s, 'per_run']:.2f} "
                    f"contentions per run (rank {tc.index(s) + 1})",
                )
            )
    for s in tb:
        if s not in tc:
            now = f"{ic.loc[s, 'per_run']:.2f}" if s in ic.index else "0"
            cmp.findings.append(
                Finding(
                    "notice",
                    "contention",
                    s,
                    f"left the top {top} hot spots: {ib.loc[s, 'per_run']:.2f} → {now} contentions per run",
                )
            )
    for s in sorted(set(tc) & set(tb)):
        a = ib.loc[s, "acquired"] + ib.loc[s, "trylock_failures"]
        b = ic.loc[s, "acquired"] + ic.loc[s, "trylock_failures"]
        ka, kb = ib.loc[s, "contended"], ic.loc[s, "contended"]
        z, p = two_proportion_z(ka, a, kb, b)
        ra, rb = (ka / a if a else 0.0), (kb / b if b else 0.0)
        if p < alpha and ra > 0 and abs(rb - ra) / ra > min_shift:
            cmp.findings.append(
                Finding(
                    "notice",
                    "contention",
                    s,
                    f"contention ratio {_pct(ra)} → {_pct(rb)} of acquisitions; z={z:+.2f}, p={p:.2g}",
                )
            )


def _coverage(cur: Dataset, base: Dataset, cmp: Comparison) -> None:
    gc = set(map(tuple, cur.runs[agg.GROUP].drop_duplicates().to_numpy().tolist()))
    gb = base.runs[agg.GROUP].drop_duplicates()
    curwv = {(w, v) for w, v, _ in gc}
    for w, v, b in gb.itertuples(index=False):
        if (w, v, b) not in gc and (w, v) not in curwv:
            n = int(
                ((base.runs["workload"] == w) & (base.runs["variant"] == v) & (base.runs["bugs"] == b)).sum()
            )
            cmp.findings.append(
                Finding(
                    "notice",
                    "coverage",
                    _subject(w, v, b or "none"),
                    f"the baseline ran it {n} times; tonight did not run it",
                )
            )

"""pagerace.reports: CSV schemas, and the morning report over a directory of runs.

``schema`` has no third-party import (the engines write rows with it). Everything else
(``load``, ``aggregate``, ``compare``, ``failures``, ``plots``, ``html``, ``junit``) needs
pandas and matplotlib and is imported only when a report is built, so ``import pagerace``
stays light.

:func:`build_report` is what ``pagerace report`` runs: load a directory (and a baseline,
and the nights of ``--history``), aggregate, group the failures by signature, compare,
write the figures and, on request, the one-page HTML summary.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from .compare import Comparison, Finding
    from .load import Dataset

__all__ = ["Report", "build_report"]

PERCENT = ("rate", "ci_lo", "ci_hi", "contention", "success")
WIDTH = 100  # the text report fits a 100-column terminal
# shorter headers for the text tables (the HTML keeps the CSV names)
SHORT = {
    "lock_contended": "locked",
    "hole_populated": "holes",
    "refcount_changed": "refcount",
    "not_isolated": "not_iso",
    "alloc_failed": "no_alloc",
    "copy_error": "copy_err",
    "collected": "collect",
    "migrated": "migrat",
    "restored": "restor",
    "reproduced": "reprod",
    "replayed": "replay",
    "failures": "fails",
    "contention": "ratio",
    "wait_avg": "avg_wait",
    "trylock_failures": "try_fail",
}


@dataclass
class Report:
    """The tables, failures, comparison, history and files of one report."""

    current: Dataset
    baseline: Dataset | None
    overview: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    comparison: Comparison | None
    failures: pd.DataFrame | None = None  # failures by signature (failures.failure_groups)
    history: pd.DataFrame | None = None  # per signature over the nights (failures.history)
    history_rates: pd.DataFrame | None = None
    configurations: int = 0  # configurations run; tables["failure rate"] lists the failing/changed
    figures: dict[str, Path] = field(default_factory=dict)
    html: Path | None = None

    @property
    def regressions(self) -> int:
        return len(self.comparison.regressions) if self.comparison is not None else 0

    def verdict(self) -> tuple[str, str]:
        """(``bad``/``good``/``info``, one line): what the morning reader sees first."""
        o = self.overview
        runs, failed = int(o.get("runs", 0)), int(o.get("failed", 0))
        nsig = 0 if self.failures is None else len(self.failures)
        fails = (
            f"{failed} of {runs} runs failed ({nsig} signature{'s' if nsig != 1 else ''})"
            if failed
            else f"all {runs} runs clean"
        )
        if self.comparison is not None:
            base = self.baseline.path if self.baseline is not None else "?"
            if self.regressions:
                return "bad", f"REGRESSION: {self.regressions} against {base}; {fails}"
            return ("good", f"no regression against {base}; {fails}")
        return (
            "bad" if failed else "info",
            f"{'FAILURES' if failed else 'CLEAN'}: {fails}; no baseline given",
        )

    def grouped_findings(self) -> list[tuple[str, list[Finding]]]:
        """The comparison's findings grouped per configuration (workload × variant),
        groups with a regression first; contention findings last, as one group."""
        if self.comparison is None:
            return []
        groups: dict[str, list[Finding]] = {}
        for f in self.comparison.findings:
            key = "lock contention" if f.category == "contention" else " × ".join(f.subject.split(" × ")[:2])
            groups.setdefault(key, []).append(f)
        order = {"regression": 0, "improvement": 1, "notice": 2}
        for fs in groups.values():
            fs.sort(key=lambda f: order.get(f.severity, 3))
        return sorted(
            groups.items(),
            key=lambda kv: (kv[0] == "lock contention", order.get(kv[1][0].severity, 3), kv[0]),
        )

    def text(self) -> str:
        """The report as text that fits :data:`WIDTH` columns: the verdict first, then
        what changed, the failures by signature, and the tables."""
        o = self.overview
        verdict = self.verdict()[1]
        lines = [
            f"pagerace report: {self.current.path}",
            verdict,
            _wrap(
                f"{o.get('runs', 0)} runs in {self.configurations} configurations, {o.get('failed', 0)} "
                f"failed, {o.get('budget', 0)} out of budget; campaigns: {o.get('campaigns', '-')}; "
                f"pagerace {o.get('versions', '-')}; engines: {o.get('engines', '-')}",
                "",
            ),
        ]
        if self.comparison is not None:
            lines += [
                "",
                f"== changes since {self.baseline.path if self.baseline else '?'}, by configuration ==",
            ]
            groups = self.grouped_findings()
            if not groups:
                lines.append("nothing changed beyond noise")
            for key, fs in groups:
                nreg = sum(f.severity == "regression" for f in fs)
                lines.append(f"{key}" + (f"  ({nreg} regression{'s' if nreg > 1 else ''})" if nreg else ""))
                for f in fs:
                    what = f.category if f.category == "contention" else f"{f.category} {_rest(f.subject)}"
                    lines.append(_wrap(f"[{f.severity}] {what.strip()}: {f.detail}", "      ", "  "))
        if self.failures is not None and not self.failures.empty:
            lines += ["", f"== failures by signature ({len(self.failures)}) =="]
            for i, r in enumerate(self.failures.itertuples(index=False), 1):
                at = f"  [{r.where}]" if r.where else ""
                lines.append(_wrap(f"[{i}] {r.signature}{at}", "    "))
                lines.append(
                    _wrap(
                        f"{r.count} failure(s), first seed {r.first_seed}: {r.configurations}", "    ", "    "
                    )
                )
                lines.append(_wrap(r.message, "    ", "    "))
                if r.replay:
                    lines += [f"    $ {r.replay}", f"    $ {r.shrink}"]
        if self.history is not None:
            nights = len(self.history_rates) if self.history_rates is not None else 0
            lines += ["", f"== history over {nights} nights (failures with the signature / runs) =="]
            lines.append(text_table(self.history, widths={"signature": 46}))
        for title, df in self.tables.items():
            lines += ["", f"== {title} ==", text_table(df)]
        for name, p in self.figures.items():
            lines.append(f"figure {name}: {p}")
        if self.html is not None:
            lines.append(f"html: {self.html}")
        lines += ["", verdict]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The report as one JSON document (``pagerace report --format json``)."""
        cls, verdict = self.verdict()
        doc: dict[str, Any] = {
            "directory": str(self.current.path),
            "verdict": verdict,
            "status": cls,
            "regressions": self.regressions,
            "overview": self.overview,
            "configurations": self.configurations,
            "failures": _records(self.failures),
            "tables": {
                _table_key(title): {"title": title, "rows": _records(df)} for title, df in self.tables.items()
            },
        }
        if self.comparison is not None:
            doc["baseline"] = str(self.baseline.path) if self.baseline is not None else None
            doc["findings"] = [
                {"configuration": key, **f.__dict__} for key, fs in self.grouped_findings() for f in fs
            ]
        if self.history is not None:
            doc["history"] = _records(self.history)
        doc["figures"] = {k: str(v) for k, v in self.figures.items()}
        doc["html"] = str(self.html) if self.html is not None else None
        return doc


TABLE_KEYS = (
    ("failure rate", "failure_rates"),
    ("lock contention", "contention"),
    ("migration outcomes", "migration_outcomes"),
    ("page-cache", "page_cache"),
    ("trylock", "trylock_rates"),
    ("reproduction", "reproduction"),
)


def _table_key(title: str) -> str:
    """The stable JSON key of a table (its title carries numbers such as the top N)."""
    for prefix, key in TABLE_KEYS:
        if title.startswith(prefix):
            return key
    return title


def _rest(subject: str) -> str:
    parts = subject.split(" × ")
    return " × ".join(parts[2:])


def _wrap(text: str, indent: str, first: str = "") -> str:
    return textwrap.fill(
        str(text),
        WIDTH,
        initial_indent=first,
        subsequent_indent=indent,
        break_on_hyphens=False,
        break_long_words=False,
    )


def _records(df: pd.DataFrame | None) -> list[dict[str, Any]]:
    if df is None or df.empty:
        return []
    import json

    return list(json.loads(df.to_json(orient="records")))


def text_table(df: pd.DataFrame, shares: tuple[str, ...] = (), widths: dict[str, int] | None = None) -> str:
    """``df`` as fixed-width text: rates as percentages, floats with 1 decimal, text
    cells cut to ``widths`` (default 24 characters, 36 for call sites and signatures), some
    headers shortened (:data:`SHORT`) so tables stay narrow; an empty
    contention ratio prints as ``wait only``."""
    if df.empty:
        return "(none)"
    d = df.copy()
    widths = widths or {}
    for c in d.columns:
        if c == "contention":
            d[c] = d[c].map(lambda v: "wait only" if v != v else f"{100 * float(v):.1f}%")
        elif c in PERCENT or c in shares:
            d[c] = d[c].map(lambda v: "" if v != v else f"{100 * float(v):.1f}%")
        elif d[c].dtype.kind == "f":
            d[c] = d[c].map(lambda v: "" if v != v else f"{v:,.1f}")
        elif d[c].dtype.kind in "OSU" or str(d[c].dtype) == "string":
            w = widths.get(str(c), 36 if c in ("site", "signature") else 24)
            d[c] = d[c].astype(str).map(lambda v, w=w: v if len(v) <= w else v[: w - 1] + "…")
    return str(d.rename(columns=SHORT).to_string(index=False))


def _rate_table(rates: pd.DataFrame, comparison: Comparison | None) -> pd.DataFrame:
    """The failing or changed configurations, CI as one column, the baseline beside."""
    from . import aggregate as agg

    changed: set[tuple[str, str, str]] = set()
    base: dict[tuple[str, str, str], str] = {}
    if comparison is not None:
        # a rate that moved (its exact configuration), and what failed in the baseline
        for f in comparison.findings:
            parts = f.subject.split(" × ")
            if f.category == "failure rate" and len(parts) == 3:
                changed.add((parts[0], parts[1], parts[2]))
        for r in comparison.rates.itertuples(index=False):
            other = "" if r.bugs == r.baseline_bugs else f" ({r.baseline_bugs})"
            base[(r.workload, r.variant, r.bugs)] = f"{int(r.base_failed)}/{int(r.base_runs)}{other}"
            if r.base_failed:
                changed.add((r.workload, r.variant, r.bugs))
    t = agg.interesting_rates(rates, changed)
    if t.empty:
        return t
    out = t[["workload", "variant", "bugs", "runs", "failed", "rate"]].copy()
    out["95% CI"] = [f"{100 * lo:.1f}-{100 * hi:.1f}%" for lo, hi in zip(t["ci_lo"], t["ci_hi"])]
    if comparison is not None:
        out["baseline"] = [
            base.get((w, v, b), "-") for w, v, b in zip(t["workload"], t["variant"], t["bugs"])
        ]
    return out


def _ci_column(df: pd.DataFrame) -> pd.DataFrame:
    """``ci_lo`` and ``ci_hi`` as one ``95% CI`` text column (narrower tables)."""
    if df.empty or "ci_lo" not in df.columns:
        return df
    ci = ["" if lo != lo else f"{100 * lo:.1f}-{100 * hi:.1f}%" for lo, hi in zip(df["ci_lo"], df["ci_hi"])]
    out = df.drop(columns=["ci_hi"]).rename(columns={"ci_lo": "95% CI"})
    out["95% CI"] = ci
    return out


def _contention(t: pd.DataFrame, top: int) -> dict[str, pd.DataFrame]:
    """The contention table under its title; the time unit goes in the title when all
    rows share it (one engine), which keeps the table narrow."""
    units = sorted(set(t["unit"])) if not t.empty else []
    if len(units) == 1:
        t = t.drop(columns=["unit"])
    unit = f" (times in {units[0]})" if len(units) == 1 else ""
    return {f"lock contention: top {top} call sites, per run of each variant{unit}": t}


def _nonzero(df: pd.DataFrame, keep: Sequence[str]) -> pd.DataFrame:
    """``df`` without the numeric columns that are 0 everywhere (except ``keep``)."""
    if df.empty:
        return df
    cols = [
        c for c in df.columns if c in keep or df[c].dtype.kind not in "iuf" or df[c].fillna(0).abs().sum() > 0
    ]
    return df[cols]


def build_report(
    directory: str | os.PathLike[str],
    baseline: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    html: bool = False,
    top: int = 10,
    alpha: float = 0.01,
    figures: bool = True,
    history: Sequence[str | os.PathLike[str]] = (),
) -> Report:
    """Aggregate ``directory`` (and compare with ``baseline``; and follow the failure
    signatures over the nights of ``history``, oldest first, ``directory`` appended as
    the last night if not among them); write figures (and the HTML page) into ``out``
    (default ``directory/report``).

    Raises:
        BadCsv: a directory without runs.csv, or a file that does not match its schema.
    """
    from . import aggregate as agg
    from . import failures as fl
    from .compare import compare
    from .load import load_dir

    cur = load_dir(directory)
    base = load_dir(baseline) if baseline is not None else None
    comparison = compare(cur, base, alpha=alpha) if base is not None else None
    rates = agg.failure_rates(cur)
    outcomes = agg.migration_outcomes(cur)
    tables: dict[str, pd.DataFrame] = {
        "failure rate of the failing or changed configurations (the rest ran clean)": _rate_table(
            rates, comparison
        ),
        **_contention(agg.contention_table(cur, top=top), top),
        "migration outcomes (pages) per attempt kind": _nonzero(
            outcomes, ["variant", "attempt", "runs", "collected", "migrated", "success"]
        ),
        "page-cache operations (not migrations)": agg.page_cache_ops(cur),
        "trylock failure rate per call site": _ci_column(agg.trylock_rates(cur).head(top)),
        "reproduction of failures by replay": _nonzero(
            _ci_column(agg.reproduction(cur)).dropna(axis=1, how="all"),
            ["failures", "replayed", "reproduced"],
        ),
    }
    rep = Report(
        cur,
        base,
        agg.overview(cur),
        tables,
        comparison,
        failures=fl.failure_groups(cur),
        configurations=len(rates),
    )
    if history:
        dirs = fl.night_dirs(history)
        if Path(directory).resolve() not in {d.resolve() for d in dirs}:
            dirs.append(Path(directory))
        nights = [cur if d.resolve() == Path(directory).resolve() else load_dir(d) for d in dirs]
        rep.history, rep.history_rates = fl.history(nights)
    outp = Path(out) if out is not None else Path(directory) / "report"
    if figures or html:
        from .plots import write_figures

        rep.figures = write_figures(cur, outp, baseline=base, history=rep.history_rates)
    if html:
        from .html import write_page

        rep.html = write_page(rep, outp / "index.html", shares=list(agg.SKIP_REASONS))
    return rep

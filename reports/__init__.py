"""pagerace.reports: CSV schemas, and the morning report over a directory of runs.

``schema`` has no third-party import (the engines write rows with it). Everything else
(``load``, ``aggregate``, ``compare``, ``plots``, ``html``) needs pandas and matplotlib and
is imported only when a report is built, so ``import pagerace`` stays light.

:func:`build_report` is what ``pagerace report`` runs: load a directory (and a baseline),
aggregate, compare, write the figures and, on request, the one-page HTML summary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from .compare import Comparison
    from .load import Dataset

__all__ = ["Report", "build_report"]

PERCENT = ("rate", "ci_lo", "ci_hi", "contention", "success")


@dataclass
class Report:
    """The tables, comparison and files of one report."""

    current: Dataset
    baseline: Dataset | None
    overview: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    comparison: Comparison | None
    figures: dict[str, Path] = field(default_factory=dict)
    html: Path | None = None

    @property
    def regressions(self) -> int:
        return len(self.comparison.regressions) if self.comparison is not None else 0

    def text(self) -> str:
        """Every table as fixed-width text (what the command prints)."""
        o = self.overview
        lines = [
            f"pagerace report: {self.current.path}",
            f"{o.get('runs', 0)} runs, {o.get('failed', 0)} failed, {o.get('budget', 0)} out of budget; "
            f"campaigns: {o.get('campaigns', '-')}; pagerace {o.get('versions', '-')}; "
            f"engines: {o.get('engines', '-')}",
        ]
        for title, df in self.tables.items():
            lines += ["", f"== {title} ==", text_table(df)]
        if self.comparison is not None:
            lines += ["", f"== comparison with {self.baseline.path if self.baseline else '?'} =="]
            f = self.comparison.frame()
            if f.empty:
                lines.append("nothing changed beyond noise")
            for r in f.itertuples(index=False):
                lines.append(f"[{r.severity}] {r.category}: {r.subject}: {r.detail}")
            lines.append(f"{self.regressions} regression(s)" if self.regressions else "no regression")
        for name, p in self.figures.items():
            lines.append(f"figure {name}: {p}")
        if self.html is not None:
            lines.append(f"html: {self.html}")
        return "\n".join(lines)


def text_table(df: pd.DataFrame, shares: tuple[str, ...] = ()) -> str:
    """``df`` as fixed-width text: rates as percentages, floats with 2 decimals."""
    if df.empty:
        return "(none)"
    d = df.copy()
    for c in d.columns:
        if c in PERCENT or c in shares:
            d[c] = d[c].map(lambda v: "" if v != v else f"{100 * float(v):.1f}%")
        elif d[c].dtype.kind == "f":
            d[c] = d[c].map(lambda v: "" if v != v else f"{v:,.2f}")
    return str(d.to_string(index=False))


def build_report(
    directory: str | os.PathLike[str],
    baseline: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    html: bool = False,
    top: int = 10,
    alpha: float = 0.01,
    figures: bool = True,
) -> Report:
    """Aggregate ``directory`` (and compare with ``baseline``); write figures (and the HTML
    page) into ``out`` (default ``directory/report``).

    Raises:
        BadCsv: a directory without runs.csv, or a file that does not match its schema.
    """
    from . import aggregate as agg
    from .compare import compare
    from .load import load_dir

    cur = load_dir(directory)
    base = load_dir(baseline) if baseline is not None else None
    skip_cols = list(agg.SKIP_REASONS)
    tables: dict[str, pd.DataFrame] = {
        "failure rate per workload × variant × bugs (95% Wilson CI)": agg.failure_rates(cur),
        f"top {top} contended lock call sites (per variant)": agg.contention_by_site(
            cur, top=top, by=["variant"]
        ),
        "trylock failure rate per call site": agg.trylock_rates(cur),
        "migration outcomes (pages) per attempt kind": agg.migration_outcomes(cur),
        "reproduction of failures by replay": agg.reproduction(cur),
    }
    comparison = compare(cur, base, alpha=alpha) if base is not None else None
    rep = Report(cur, base, agg.overview(cur), tables, comparison)
    outp = Path(out) if out is not None else Path(directory) / "report"
    if figures or html:
        from .plots import write_figures

        rep.figures = write_figures(cur, outp)
    if html:
        from .html import write_page

        rep.html = write_page(rep, outp / "index.html", shares=skip_cols)
    return rep

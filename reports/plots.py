"""The report's figures (matplotlib, Agg backend: no display needed), as PNG files.

- ``contention.png``: the most contended lock call sites (contentions and failed
  trylocks, summed over runs);
- ``failure_rate.png``: failure rate per workload × variant × bugs with 95 % Wilson
  intervals;
- ``outcome_mix.png``: per migration attempt kind, the share of collected pages that
  migrated and that were skipped for each reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window

import matplotlib.pyplot as plt
import numpy as np

from . import aggregate as agg
from .load import Dataset

DPI = 100
# one fixed colour per end state, so figures from different nights compare at a glance
END_COLORS = {
    "migrated": "#4f9d4f",
    "lock_contended": "#f2a93b",
    "pinned": "#c0504d",
    "not_isolated": "#8064a2",
    "alloc_failed": "#7f5f3f",
    "copy_error": "#e377c2",
    "hole_populated": "#4bacc6",
    "refcount_changed": "#bcbd22",
    "other": "#999999",
}


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
    return path


def _empty(path: Path, title: str, why: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.4, why, ha="center", va="center")
    return _save(fig, path)


def contention_figure(ds: Dataset, path: Path, top: int = 12) -> Path:
    title = "Lock contention by call site"
    t = agg.contention_by_site(ds, top=top)
    t = t[t["contended"] + t["trylock_failures"] > 0]
    if t.empty:
        return _empty(path, title, "no contention recorded")
    t = t.iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(t) + 1.4))
    y = np.arange(len(t))
    waited = (t["contended"] - t["trylock_failures"]).clip(lower=0)
    ax.barh(y, waited, color="#c0504d", label="waited for the lock")
    ax.barh(y, t["trylock_failures"], left=waited, color="#f2a93b", label="trylock failed")
    ax.set_yticks(y, [s if len(s) <= 48 else s[:45] + "..." for s in t["site"]], fontsize=8)
    ax.set_xlabel(f"contentions, summed over {int(ds.runs.shape[0])} runs")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def failure_rate_figure(ds: Dataset, path: Path) -> Path:
    """Horizontal bars, one per workload × variant × bugs (so a nightly plan of many
    configurations stays readable), grouped by workload, coloured by variant."""
    title = "Failure rate by variant (95% Wilson interval)"
    r = agg.failure_rates(ds)
    if r.empty:
        return _empty(path, title, "no runs")
    r = r.iloc[::-1].reset_index(drop=True)  # first configuration on top
    labels = [
        f"{w} · {v}" + ("" if b == "none" else f" +{b}")
        for w, v, b in zip(r["workload"], r["variant"], r["bugs"])
    ]
    y = np.arange(len(r))
    rate = r["rate"].to_numpy() * 100
    hi = r["ci_hi"].to_numpy() * 100
    # clip: at 0 % the Wilson bound can sit a rounding error above the rate
    err = np.vstack([rate - r["ci_lo"].to_numpy() * 100, hi - rate]).clip(min=0)
    variants = sorted(r["variant"].unique())
    colors = plt.get_cmap("tab10")
    col = [colors(variants.index(v) % 10) for v in r["variant"]]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(r) + 1.5))
    ax.barh(y, rate, color=col, xerr=err, capsize=2, ecolor="#333333", height=0.7)
    right = min(110.0, float(hi.max()) * 1.2 + 6)
    for yi, (k, n) in enumerate(zip(r["failed"], r["runs"])):
        ax.text(hi[yi] + right * 0.01, yi, f"{k}/{n}", va="center", fontsize=7)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlim(0, right)
    ax.set_ylim(-0.7, len(r) - 0.3)
    ax.set_xlabel("failed runs (%)")
    ax.set_title(title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors(i % 10)) for i in range(len(variants))]
    ax.legend(handles, variants, fontsize=8, loc="lower right")
    return _save(fig, path)


def outcome_mix_figure(ds: Dataset, path: Path) -> Path:
    title = "Migration outcome mix (share of collected pages)"
    m = agg.outcome_mix(ds)
    if m.empty:
        return _empty(path, title, "no migration attempts recorded")
    ends = [c for c in m.columns if c != "attempt" and float(m[c].sum()) > 0]
    if not ends:
        return _empty(path, title, "no pages collected")
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(m) + 1.6))
    y = np.arange(len(m))
    left = np.zeros(len(m))
    for e in ends:
        vals = m[e].to_numpy() * 100
        ax.barh(y, vals, left=left, color=END_COLORS.get(e, "#999999"), label=e)
        left += vals
    ax.set_yticks(y, list(m["attempt"]))
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of collected pages")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=min(4, len(ends)), loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return _save(fig, path)


FIGURES = {
    "contention.png": contention_figure,
    "failure_rate.png": failure_rate_figure,
    "outcome_mix.png": outcome_mix_figure,
}


def write_figures(ds: Dataset, out: str | os.PathLike[str]) -> dict[str, Path]:
    """Write every figure into ``out`` (created); returns name → path."""
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    return {name: fn(ds, o / name) for name, fn in FIGURES.items()}


__all__ = ["FIGURES", "contention_figure", "failure_rate_figure", "outcome_mix_figure", "write_figures"]

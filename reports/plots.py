"""The report's figures (matplotlib, Agg backend: no display needed), as PNG files.

- ``contention.png``: one panel per variant, its most contended lock call sites
  (waits and failed trylocks per run);
- ``failure_rate.png``: failure rate of the failing configurations (workload × variant
  × bugs) with 95 % Wilson intervals, the baseline's rate beside each;
- ``outcome_mix.png``: per variant and migration attempt kind, the share of collected
  pages that migrated and that were skipped for each reason (page-cache reads and
  writes are not migrations: left out);
- ``history.png`` (with ``--history``): each failure signature's rate night by night.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

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


def contention_figure(ds: Dataset, path: Path, top: int = 8) -> Path:
    """One panel per variant: its most contended call sites, contentions per run, split
    into waits and failed trylocks (wait-only sites such as ``wait_on_page_locked``
    included)."""
    title = "Lock contention per run, by variant"
    t = agg.contention_table(ds, top=None)
    t = t[t["cont/run"] > 0]
    if t.empty:
        return _empty(path, title, "no contention recorded")
    tf = agg.contention_by_site(ds, top=None, by=["variant"]).set_index(["variant", "site"])
    variants = sorted(t["variant"].unique())
    per = {v: t[t["variant"] == v].head(top).iloc[::-1] for v in variants}
    rows = sum(len(x) for x in per.values())
    fig, axes = plt.subplots(
        len(variants), 1, figsize=(8, 0.3 * rows + 1.1 * len(variants) + 0.6), squeeze=False
    )
    n = agg.runs_per(ds, ["variant"])
    for ax, v in zip(axes[:, 0], variants):
        x = per[v]
        y = np.arange(len(x))
        runs = max(1, int(n.get(v, 1)))
        tf_fail = np.array([float(tf.loc[(v, s), "trylock_failures"]) for s in x["site"]]) / runs
        waited = (x["cont/run"].to_numpy() - tf_fail).clip(min=0)
        ax.barh(y, waited, color="#c0504d", label="waited for the lock")
        ax.barh(y, tf_fail, left=waited, color="#f2a93b", label="trylock failed")
        ax.set_yticks(y, [s if len(s) <= 44 else s[:41] + "..." for s in x["site"]], fontsize=8)
        ax.set_title(f"{v} ({runs} runs)", fontsize=9, loc="left")
        ax.set_xlabel("contentions per run", fontsize=8)  # each panel its own scale
    axes[0, 0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _failing_keys(r: pd.DataFrame) -> set[tuple[str, str, str]]:
    return {(w, v, b) for w, v, b, k in zip(r["workload"], r["variant"], r["bugs"], r["failed"]) if k > 0}


def failure_rate_figure(ds: Dataset, path: Path, baseline: Dataset | None = None) -> Path:
    """Horizontal bars, one per failing configuration (tonight or in the baseline):
    tonight's rate with its Wilson interval, coloured by variant, and the baseline's
    rate as a grey bar beneath it. Configurations that ran clean on both sides are
    counted in the title, not drawn."""
    title = "Failure rate of the failing configurations (95% Wilson interval)"
    r = agg.failure_rates(ds)
    if r.empty:
        return _empty(path, title, "no runs")
    rb = agg.failure_rates(baseline) if baseline is not None else r.iloc[0:0]
    keys = _failing_keys(r) | _failing_keys(rb)
    show = r[[(w, v, b) in keys for w, v, b in zip(r["workload"], r["variant"], r["bugs"])]]
    clean = len(r) - len(show)
    if show.empty:
        return _empty(path, title, f"all {len(r)} configurations ran clean")
    show = show.iloc[::-1].reset_index(drop=True)  # first configuration on top
    labels = [
        f"{w} · {v}" + ("" if b == "none" else f" +{b}")
        for w, v, b in zip(show["workload"], show["variant"], show["bugs"])
    ]
    y = np.arange(len(show))
    rate = show["rate"].to_numpy() * 100
    hi = show["ci_hi"].to_numpy() * 100
    # clip: at 0 % the Wilson bound can sit a rounding error above the rate
    err = np.vstack([rate - show["ci_lo"].to_numpy() * 100, hi - rate]).clip(min=0)
    variants = sorted(r["variant"].unique())
    colors = plt.get_cmap("tab10")
    col = [colors(variants.index(v) % 10) for v in show["variant"]]
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(show) + 1.6))
    h = 0.38 if baseline is not None else 0.7
    ax.barh(
        y + (h / 2 if baseline is not None else 0),
        rate,
        color=col,
        xerr=err,
        capsize=2,
        ecolor="#333333",
        height=h,
    )
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors(i % 10)) for i in range(len(variants))]
    names = list(variants)
    if baseline is not None:
        bi = rb.set_index(agg.GROUP)
        brate = np.array(
            [
                100 * float(bi.loc[k, "rate"]) if k in bi.index else 0.0
                for k in zip(show["workload"], show["variant"], show["bugs"])
            ]
        )
        ax.barh(y - h / 2, brate, color="#bbbbbb", height=h)
        handles.append(plt.Rectangle((0, 0), 1, 1, color="#bbbbbb"))
        names.append("baseline")
    right = min(112.0, float(hi.max()) * 1.2 + 8)
    for yi, (k, n) in enumerate(zip(show["failed"], show["runs"])):
        ax.text(
            hi[yi] + right * 0.01,
            yi + (h / 2 if baseline is not None else 0),
            f"{k}/{n}",
            va="center",
            fontsize=7,
        )
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlim(0, right)
    ax.set_ylim(-0.7, len(show) - 0.3)
    ax.set_xlabel("failed runs (%)" + (f"; {clean} clean configuration(s) not shown" if clean else ""))
    ax.set_title(title, fontsize=10)
    ax.legend(handles, names, fontsize=8, loc="lower right")
    return _save(fig, path)


def outcome_mix_figure(ds: Dataset, path: Path) -> Path:
    """Per variant × migration attempt kind, the share of collected pages by end state
    (page-cache reads and writes are not migrations and are left out)."""
    title = "Migration outcome mix per variant (share of collected pages)"
    m = agg.outcome_mix(ds, by=["variant"])
    if m.empty:
        return _empty(path, title, "no migration attempts recorded")
    ends = [c for c in m.columns if c not in ("attempt", "variant") and float(m[c].sum()) > 0]
    if not ends:
        return _empty(path, title, "no pages collected")
    m = m.iloc[::-1].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(m) + 1.8))
    y = np.arange(len(m))
    left = np.zeros(len(m))
    for e in ends:
        vals = m[e].to_numpy() * 100
        ax.barh(y, vals, left=left, color=END_COLORS.get(e, "#999999"), label=e)
        left += vals
    ax.set_yticks(y, [f"{v} · {a}" for v, a in zip(m["variant"], m["attempt"])], fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of collected pages")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=min(4, len(ends)), loc="upper center", bbox_to_anchor=(0.5, -0.3))
    return _save(fig, path)


def history_figure(rates: pd.DataFrame, path: Path, top: int = 8) -> Path:
    """The failure rate of each signature night by night (the ``top`` with the most
    failures in all), one line each."""
    title = "Failure rate per signature, night by night"
    if rates is None or rates.empty or rates.shape[1] == 0:
        return _empty(path, title, "no failure in any night")
    cols = list(rates.sum().sort_values(ascending=False, kind="stable").index[:top])
    fig, ax = plt.subplots(figsize=(8, 2.8 + 0.18 * len(cols)))
    x = np.arange(len(rates))
    for c in cols:
        ax.plot(x, rates[c].to_numpy() * 100, marker="o", label=c if len(c) <= 60 else c[:57] + "...")
    ax.set_xticks(x, [str(i) for i in rates.index], fontsize=8, rotation=20 if len(rates) > 6 else 0)
    ax.set_ylabel("% of the night's runs")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1)
    return _save(fig, path)


FIGURES = {
    "contention.png": contention_figure,
    "failure_rate.png": failure_rate_figure,
    "outcome_mix.png": outcome_mix_figure,
}


def write_figures(
    ds: Dataset,
    out: str | os.PathLike[str],
    baseline: Dataset | None = None,
    history: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Write every figure into ``out`` (created), the baseline drawn beside tonight's
    rates, and ``history.png`` when ``history`` (per-night rates) is given; returns
    name → path."""
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    figs = {
        "failure_rate.png": failure_rate_figure(ds, o / "failure_rate.png", baseline),
        "contention.png": contention_figure(ds, o / "contention.png"),
        "outcome_mix.png": outcome_mix_figure(ds, o / "outcome_mix.png"),
    }
    if history is not None:
        figs["history.png"] = history_figure(history, o / "history.png")
    return figs


__all__ = [
    "FIGURES",
    "contention_figure",
    "failure_rate_figure",
    "history_figure",
    "outcome_mix_figure",
    "write_figures",
]

"""Aggregation across runs: the tables of the morning report.

Every function takes a :class:`~.load.Dataset` and returns a plain DataFrame, one row per
group, sorted the way the report shows it. Rates come with Wilson score intervals
(95 %), which behave at 0 % and 100 % and for small counts, where the normal
approximation does not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .load import Dataset
from .schema import OUTCOME_REASONS

Z95 = 1.959963984540054
GROUP = ["workload", "variant", "bugs"]
SKIP_REASONS = [r for r in OUTCOME_REASONS if r not in ("collected", "migrated", "restored")]
# outcomes.csv rows that are page-cache operations, not migration attempts: their "other"
# column is a read or write that completed, not a page that failed to migrate
PAGE_CACHE_ATTEMPTS = ("file_read", "file_write", "readahead")


def wilson(
    k: np.ndarray | pd.Series | int, n: np.ndarray | pd.Series | int, z: float = Z95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of ``k`` successes in ``n`` trials (0..1; (0, 1) when n = 0)."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(n > 0, k / n, 0.0)
        den = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / den
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
        lo = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
        hi = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    return lo, hi


def _bugs_label(df: pd.DataFrame) -> pd.DataFrame:
    if "bugs" in df.columns:
        df = df.copy()
        df["bugs"] = df["bugs"].astype(str).replace({"": "none", "<NA>": "none"})
    return df


def overview(ds: Dataset) -> dict[str, object]:
    """Headline numbers: runs, failures, campaigns, versions, engines, time span."""
    r = ds.runs
    if r.empty:
        return {"runs": 0, "failed": 0}
    return {
        "runs": len(r),
        "failed": int((r["outcome"] == "failed").sum()),
        "budget": int((r["outcome"] == "budget").sum()),
        "configurations": int(r.groupby(GROUP).ngroups),
        "campaigns": ", ".join(sorted(x for x in r["campaign"].unique() if x)) or "-",
        "versions": ", ".join(sorted(r["pagerace_version"].unique())),
        "engines": ", ".join(sorted(r["engine"].unique())),
        "run_time_s": float(r["wall_s"].sum()),
        "first_run": float(r["started"].min()),
        "last_run": float(r["started"].max()),
    }


def failure_rates(ds: Dataset) -> pd.DataFrame:
    """Per workload × variant × bugs: runs, failed, budget, failure rate and its 95 % CI,
    and the failure kinds seen (most frequent first)."""
    r = _bugs_label(ds.runs)
    cols = [*GROUP, "runs", "failed", "budget", "rate", "ci_lo", "ci_hi", "kinds"]
    if r.empty:
        return pd.DataFrame(columns=cols)
    g = r.groupby(GROUP, sort=True)
    out = pd.DataFrame(
        {
            "runs": g.size(),
            "failed": g["outcome"].apply(lambda s: int((s == "failed").sum())),
            "budget": g["outcome"].apply(lambda s: int((s == "budget").sum())),
        }
    ).reset_index()
    out["rate"] = out["failed"] / out["runs"]
    out["ci_lo"], out["ci_hi"] = wilson(out["failed"], out["runs"])
    kinds = (
        r[r["outcome"] == "failed"]
        .groupby(GROUP)["failure_kind"]
        .apply(
            lambda s: ", ".join(
                f"{k} {n}"
                for k, n in s.value_counts().sort_index().sort_values(ascending=False, kind="stable").items()
            )
        )
    )
    out = out.merge(kinds.rename("kinds").reset_index(), on=GROUP, how="left")
    out["kinds"] = out["kinds"].fillna("")
    return out[cols]


def failure_kinds(ds: Dataset) -> pd.DataFrame:
    """Per workload × variant × bugs × failure kind: how many runs failed that way."""
    r = _bugs_label(ds.runs)
    f = r[r["outcome"] == "failed"]
    if f.empty:
        return pd.DataFrame(columns=[*GROUP, "kind", "count"])
    return (
        f.groupby([*GROUP, "failure_kind"])
        .size()
        .rename("count")
        .reset_index()
        .rename(columns={"failure_kind": "kind"})
        .sort_values([*GROUP, "count"], ascending=[True, True, True, False], kind="stable")
        .reset_index(drop=True)
    )


def contention_by_site(ds: Dataset, top: int | None = 10, by: list[str] | None = None) -> pd.DataFrame:
    """Lock call sites, most contended first: totals over all runs of acquisitions,
    contentions (waits plus failed trylocks), trylock attempts and failures, waits and
    wait time, with the contention ratio, the mean wait and hold, and ``runs``, the runs
    that reached the site (the sum of the rows' ``runs``: contention.csv holds sums per
    configuration and batch, or, written by an older pagerace, one row per run). ``by``
    adds grouping columns (e.g. ``["variant"]``)."""
    c = _bugs_label(ds.contention)
    keys = [*(by or []), "site", "time_unit"]
    cols = [
        *keys,
        "runs",
        "acquired",
        "contended",
        "contention",
        "trylock_attempts",
        "trylock_failures",
        "waits",
        "wait_total",
        "wait_max",
        "wait_avg",
        "hold_avg",
    ]
    if c.empty:
        return pd.DataFrame(columns=cols)
    g = c.groupby(keys, sort=True)
    out = g.agg(
        runs=("runs", "sum"),
        acquired=("acquired", "sum"),
        contended=("contended", "sum"),
        trylock_attempts=("trylock_attempts", "sum"),
        trylock_failures=("trylock_failures", "sum"),
        waits=("waits", "sum"),
        wait_total=("wait_total", "sum"),
        wait_max=("wait_max", "max"),
        holds=("holds", "sum"),
        hold_total=("hold_total", "sum"),
    ).reset_index()
    attempts = out["acquired"] + out["trylock_failures"]
    # a site that only waits (wait_on_page_locked: acquired = 0) has no ratio, not 0 %
    out["contention"] = np.where(
        attempts > 0,
        out["contended"] / attempts.where(attempts > 0, 1),
        np.where(out["waits"] > 0, np.nan, 0.0),
    )
    out["wait_avg"] = np.where(
        out["waits"] > 0, out["wait_total"] / out["waits"].where(out["waits"] > 0, 1), 0.0
    )
    out["hold_avg"] = np.where(
        out["holds"] > 0, out["hold_total"] / out["holds"].where(out["holds"] > 0, 1), 0.0
    )
    out = out.sort_values(["contended", "waits", "site"], ascending=[False, False, True], kind="stable")
    if top is not None:
        out = out.head(top)
    return out[cols].reset_index(drop=True)


def runs_per(ds: Dataset, by: list[str]) -> pd.Series:
    """Number of runs per ``by`` group (the denominator of the per-run rates)."""
    r = _bugs_label(ds.runs)
    if not by:
        return pd.Series({(): len(r)})
    return r.groupby(by).size()


def contention_table(ds: Dataset, top: int | None = 10, by: list[str] | None = None) -> pd.DataFrame:
    """The narrow contention table of the report, most contended per run first: per
    ``by`` (default: variant) × call site, per run of that group (every run counts, not
    only those that reached the site): contentions, waits, wait time and acquisitions;
    the mean wait; and the contention ratio, empty for a site that only waits
    (``wait_on_page_locked`` never acquires, so a ratio of 0 % would hide the most
    contended sites)."""
    by = ["variant"] if by is None else by
    t = contention_by_site(ds, top=None, by=by)
    cols = [*by, "site", "cont/run", "waits/run", "wait/run", "wait_avg", "acq/run", "contention", "unit"]
    if t.empty:
        return pd.DataFrame(columns=cols)
    n = runs_per(ds, by)
    denom = (
        np.array([float(n.get(tuple(k) if len(by) > 1 else k[0], 0)) for k in t[by].itertuples(index=False)])
        if by
        else np.full(len(t), float(len(ds.runs)))
    )
    denom = np.where(denom > 0, denom, 1.0)
    out = t.assign(
        **{
            "cont/run": t["contended"] / denom,
            "waits/run": t["waits"] / denom,
            "wait/run": t["wait_total"] / denom,
            "acq/run": t["acquired"] / denom,
            "unit": t["time_unit"],
        }
    )
    out = out[out["contended"] + out["waits"] + out["acquired"] > 0]
    out = out.sort_values(["cont/run", "waits/run", "site"], ascending=[False, False, True], kind="stable")
    if top is not None:
        out = out.head(top)
    return out[cols].reset_index(drop=True)


def interesting_rates(rates: pd.DataFrame, changed: set[tuple[str, str, str]] | None = None) -> pd.DataFrame:
    """The failure-rate rows worth a line: configurations that failed, or that a
    comparison finding names (``changed``: (workload, variant, bugs) keys)."""
    if rates.empty:
        return rates
    keep = rates["failed"] > 0
    if changed:
        keep |= np.array(
            [(w, v, b) in changed for w, v, b in zip(rates["workload"], rates["variant"], rates["bugs"])],
            dtype=bool,
        )
    return rates[keep].reset_index(drop=True)


def trylock_rates(ds: Dataset) -> pd.DataFrame:
    """Per variant × call site with trylocks: attempts, failures, failure rate, 95 % CI."""
    c = _bugs_label(ds.contention)
    cols = ["variant", "site", "attempts", "failures", "rate", "ci_lo", "ci_hi"]
    c = c[c["trylock_attempts"] > 0] if not c.empty else c
    if c.empty:
        return pd.DataFrame(columns=cols)
    out = (
        c.groupby(["variant", "site"])
        .agg(attempts=("trylock_attempts", "sum"), failures=("trylock_failures", "sum"))
        .reset_index()
    )
    out["rate"] = out["failures"] / out["attempts"]
    out["ci_lo"], out["ci_hi"] = wilson(out["failures"], out["attempts"])
    return out.sort_values(["rate", "attempts"], ascending=[False, False], kind="stable").reset_index(
        drop=True
    )[cols]


def _migrations(ds: Dataset, page_cache: bool = False) -> pd.DataFrame:
    o = ds.outcomes
    if o.empty:
        return o
    pc = o["attempt"].isin(PAGE_CACHE_ATTEMPTS)
    return o[pc] if page_cache else o[~pc]


def migration_outcomes(ds: Dataset) -> pd.DataFrame:
    """Per variant × migration attempt kind: pages collected, migrated, the success rate
    (migrated / collected) and each skip reason's share of the collected pages.
    Page-cache reads and writes (:data:`PAGE_CACHE_ATTEMPTS`) are not migrations and
    are left out (:func:`page_cache_ops` has them)."""
    o = _migrations(ds)
    reasons = [r for r in OUTCOME_REASONS if r != "collected"]
    cols = [
        "variant",
        "attempt",
        "runs",
        "collected",
        "migrated",
        "success",
        *[f"{r}" for r in SKIP_REASONS],
        "restored",
    ]
    if o.empty:
        return pd.DataFrame(columns=cols)
    out = (
        o.groupby(["variant", "attempt"])
        .agg(runs=("run_id", "nunique"), collected=("collected", "sum"), **{r: (r, "sum") for r in reasons})
        .reset_index()
    )
    coll = out["collected"].where(out["collected"] > 0, 1)
    out["success"] = np.where(out["collected"] > 0, out["migrated"] / coll, 0.0)
    return out[cols].sort_values(["variant", "attempt"]).reset_index(drop=True)


def page_cache_ops(ds: Dataset) -> pd.DataFrame:
    """Per variant × page-cache operation (buffered read, write, readahead): the counts
    by end state (``other`` is an operation that completed)."""
    o = _migrations(ds, page_cache=True)
    cols = ["variant", "attempt", "runs", *[r for r in OUTCOME_REASONS if r != "collected"]]
    if o.empty:
        return pd.DataFrame(columns=cols)
    reasons = [r for r in OUTCOME_REASONS if r != "collected"]
    out = (
        o.groupby(["variant", "attempt"])
        .agg(runs=("run_id", "nunique"), **{r: (r, "sum") for r in reasons})
        .reset_index()
    )
    nz = [r for r in reasons if out[r].sum() > 0]
    return out[["variant", "attempt", "runs", *nz]]


def outcome_mix(ds: Dataset, by: list[str] | None = None) -> pd.DataFrame:
    """Per migration attempt kind (and ``by``, e.g. ``["variant"]``): the share of
    collected pages each end state accounts for (migrated and every skip reason), rows
    summing to 1 (the outcome-mix figure). Page-cache operations are left out."""
    o = _migrations(ds)
    ends = ["migrated", *SKIP_REASONS]
    keys = [*(by or []), "attempt"]
    if o.empty:
        return pd.DataFrame(columns=[*keys, *ends])
    s = o.groupby(keys)[ends].sum()
    tot = s.sum(axis=1).where(s.sum(axis=1) > 0, 1)
    return s.div(tot, axis=0).reset_index()


def reproduction(ds: Dataset) -> pd.DataFrame:
    """Per workload × variant × bugs × kind: failures, how many were replayed, how many
    reproduced, and the reproduction rate among the replayed with its 95 % CI."""
    f = _bugs_label(ds.failures)
    cols = [*GROUP, "kind", "failures", "replayed", "reproduced", "rate", "ci_lo", "ci_hi", "shrunk_steps"]
    if f.empty:
        return pd.DataFrame(columns=cols)
    f = f.assign(
        _rep=(f["reproduced"] != "").astype(int),
        _yes=(f["reproduced"] == "yes").astype(int),
        _shr=f["shrunk_steps"].where(f["shrunk_steps"] >= 0),
    )
    out = (
        f.groupby([*GROUP, "kind"])
        .agg(
            failures=("run_id", "size"),
            replayed=("_rep", "sum"),
            reproduced=("_yes", "sum"),
            shrunk_steps=("_shr", "median"),
        )
        .reset_index()
    )
    out["rate"] = np.where(
        out["replayed"] > 0, out["reproduced"] / out["replayed"].where(out["replayed"] > 0, 1), np.nan
    )
    out["ci_lo"], out["ci_hi"] = wilson(out["reproduced"], out["replayed"])
    out.loc[out["replayed"] == 0, ["ci_lo", "ci_hi"]] = np.nan
    return out[cols]

"""Failures grouped by signature, and their history over several nights.

A **signature** names a failure the way a syzbot title does: the failure kind and the
kernel function (with the model's function:line) where it happened, so that the 61
livelocks of one bug read as one line and two bugs that fire the same oracle read as two.

- a failure seen by a local check (a ``VM_BUG_ON``, a livelock's trylock site, a
  deadlock's lock site) is titled by its first call site: ``livelock in
  migrate_vma_collect_pmd:folio_trylock``; the line is where that call site sits in the
  artifact's step list (``migrate_vma_collect_pmd:412``);
- a failure seen by a global oracle (``lost_write``, a refcount or mapcount invariant:
  ``sites`` is ``global_invariants``) is titled by the last path that took the lock of
  the page it names, which the artifact records as ``last_touch``: ``lost_write after
  dmirror_devmem_fault_alloc_and_copy:lock_dst``. An artifact written before that field
  existed falls back to the oracle's name.

The artifacts are read from the output directory (their path in ``failures.csv`` is
relative to it); a missing or unreadable artifact only loses the line number.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .load import Dataset

GLOBAL = "global_invariants"
FAILURE_COLUMNS = [
    "signature",
    "kind",
    "where",
    "count",
    "configurations",
    "first_seed",
    "message",
    "artifact",
    "replay",
    "shrink",
]


@dataclass(frozen=True)
class Signature:
    title: str  # "livelock in migrate_vma_collect_pmd:folio_trylock"
    kind: str
    where: str  # model function:line, "" when unknown


def read_artifact(directory: str | os.PathLike[str], rel: str) -> dict[str, Any] | None:
    """The JSON document of the artifact ``rel`` (relative to ``directory``), or None."""
    if not rel:
        return None
    try:
        doc = json.loads((Path(directory) / rel).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _where_in_steps(steps: Any, site: str, actors: Sequence[str]) -> str:
    """function:line of the last step at ``site`` (an actor's own step first)."""
    if not isinstance(steps, list):
        return ""
    fn = site.split(":", 1)[0] + ":"
    exact = same_fn = ""
    for st in reversed(steps):
        if not isinstance(st, list) or len(st) < 4:
            continue
        actor, where, s = str(st[1]), str(st[2]), str(st[3])
        at = s.split(" at ", 1)[1] if " at " in s else s
        if at == site:
            if not actors or actor in actors:
                return where
            exact = exact or where
        elif at.startswith(fn):
            # a step's label is the actor's last lock site: a failed trylock leaves the
            # label of the lock before it, in the same kernel function
            same_fn = same_fn or where
    return exact or same_fn


def signature(kind: str, sites: str, actors: str, doc: dict[str, Any] | None) -> Signature:
    """The signature of one failure: ``kind``, ``sites`` and ``actors`` as failures.csv
    writes them (';'-joined), ``doc`` its artifact (or None)."""
    site_list = [s for s in str(sites).split(";") if s]
    actor_list = [a for a in str(actors).split(";") if a]
    if not site_list or all(s.startswith(GLOBAL) for s in site_list):
        touch = doc.get("last_touch") if doc else None
        if isinstance(touch, dict) and touch.get("site"):
            return Signature(f"{kind} after {touch['site']}", kind, str(touch.get("where", "")))
        oracle = site_list[0] if site_list else "an unnamed site"
        return Signature(f"{kind} in {oracle}", kind, "")
    site = site_list[0]
    where = _where_in_steps(doc.get("steps") if doc else None, site, actor_list)
    return Signature(f"{kind} in {site}", kind, where)


def commands(directory: str | os.PathLike[str], rel: str) -> tuple[str, str]:
    """The ``pagerace replay`` and ``pagerace shrink`` command lines of an artifact."""
    if not rel:
        return "", ""
    p = shlex.quote(str(Path(directory) / rel))
    return f"pagerace replay {p} --steps", f"pagerace shrink {p}"


def _is_global(sites: str) -> bool:
    site_list = [x for x in str(sites).split(";") if x]
    return not site_list or all(x.startswith(GLOBAL) for x in site_list)


def signatures(ds: Dataset, lines: bool = False) -> pd.DataFrame:
    """failures.csv with its signature: the columns of failures.csv plus ``signature``
    (the title), ``title`` and ``where``. Only a global oracle's failures need their
    artifact for the title; ``lines`` reads every artifact for ``where`` too (else
    ``where`` is left empty: :func:`failure_groups` reads the first failure's only, so
    a night of many failures is not a night of JSON parsing)."""
    f = ds.failures
    if f.empty:
        return f.assign(signature=pd.Series(dtype="string"), title="", where="")
    sig = [
        signature(k, s, a, read_artifact(ds.path, art) if lines or _is_global(s) else None)
        for k, s, a, art in zip(f["kind"], f["sites"], f["actors"], f["artifact"])
    ]
    return f.assign(
        signature=[x.title for x in sig], title=[x.title for x in sig], where=[x.where for x in sig]
    )


def failure_groups(ds: Dataset) -> pd.DataFrame:
    """One row per signature (kind and kernel function; the line shown is the first
    failure's), most frequent first: how many failures, in which
    configurations, the first one (lowest seed) with its message, artifact and the
    commands to replay and shrink it."""
    f = signatures(ds)
    if f.empty:
        return pd.DataFrame(columns=FAILURE_COLUMNS)
    f = f.assign(bugs=f["bugs"].astype(str).replace({"": "none"}))
    rows = []
    for sig, g in f.groupby("title", sort=True):
        g = g.sort_values(["seed", "workload", "variant", "bugs"], kind="stable")
        first = g.iloc[0]
        cfg = g.groupby(["workload", "variant", "bugs"]).size().sort_values(ascending=False, kind="stable")
        replay, shrink = commands(ds.path, str(first["artifact"]))
        rows.append(
            {
                "signature": sig,
                "kind": first["kind"],
                "where": first["where"]
                or signature(
                    str(first["kind"]),
                    str(first["sites"]),
                    str(first["actors"]),
                    read_artifact(ds.path, str(first["artifact"])),
                ).where,
                "count": len(g),
                "configurations": ", ".join(f"{w} × {v} × {b} ({n})" for (w, v, b), n in cfg.items()),
                "first_seed": int(first["seed"]),
                "message": str(first["message"]),
                "artifact": str(first["artifact"]),
                "replay": replay,
                "shrink": shrink,
            }
        )
    out = pd.DataFrame(rows, columns=FAILURE_COLUMNS)
    return out.sort_values(["count", "signature"], ascending=[False, True], kind="stable").reset_index(
        drop=True
    )


# -- history over several nights ----------------------------------------------------------
def night_dirs(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Output directories of the nights named by ``paths``: each path is a night (it has
    runs.csv) or a directory of nights (its subdirectories with a runs.csv, sorted by
    name, which a dated layout such as ``2026-11-21/`` sorts by date)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "runs.csv").exists() or not p.is_dir():
            out.append(p)
            continue
        subs = sorted(d for d in p.iterdir() if d.is_dir() and (d / "runs.csv").exists())
        out.extend(subs if subs else [p])
    return out


HISTORY_COLUMNS = ["signature", "first_seen", "last_seen", "nights", "failures", "series"]


def history(
    nights: Sequence[Dataset], names: Sequence[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per signature over ``nights`` (oldest first): first and last night it was seen, on
    how many nights, how many failures in all, and the per-night series ``k/n`` (failures
    with that signature / runs that night). Signatures are matched by title (kind and
    kernel function), not by line.

    Returns ``(table, rates)``: the table, and the per-night rates as a frame (one row
    per night, one column per signature) for the figure.
    """
    labels = list(names) if names is not None else [Path(d.path).name for d in nights]
    counts: dict[str, list[int]] = {}
    runs = [len(d.runs) for d in nights]
    for i, d in enumerate(nights):
        s = signatures(d)
        for sig, n in s.groupby("title").size().items():
            counts.setdefault(str(sig), [0] * len(nights))[i] = int(n)
    rows = []
    for sig, c in counts.items():
        seen = [i for i, k in enumerate(c) if k]
        rows.append(
            {
                "signature": sig,
                "first_seen": labels[seen[0]],
                "last_seen": labels[seen[-1]],
                "nights": len(seen),
                "failures": sum(c),
                "series": " ".join(f"{k}/{n}" for k, n in zip(c, runs)),
                "_last": seen[-1],
                "_first": seen[0],
            }
        )
    table = pd.DataFrame(rows, columns=[*HISTORY_COLUMNS, "_last", "_first"])
    table = (
        table.sort_values(["_last", "_first", "failures"], ascending=[False, False, False], kind="stable")
        .drop(columns=["_last", "_first"])
        .reset_index(drop=True)
    )
    rates = pd.DataFrame(
        {sig: [k / n if n else float("nan") for k, n in zip(c, runs)] for sig, c in counts.items()},
        index=pd.Index(labels, name="night"),
    )
    return table, rates


__all__ = [
    "FAILURE_COLUMNS",
    "HISTORY_COLUMNS",
    "Signature",
    "commands",
    "failure_groups",
    "history",
    "night_dirs",
    "read_artifact",
    "signature",
    "signatures",
]

"""A finished run → CSV rows (``reports/schema.py``) and, when it failed, its artifact.

:func:`write_run` is what ``pagerace run`` and campaigns call: it writes the failure
artifact first (atomically), then appends the run's rows to ``runs.csv``,
``contention.csv``, ``outcomes.csv`` and (when it failed) ``failures.csv``. Rows are
built completely before any file is touched, so an error leaves no half-written output.

Outcome rows (``outcomes.csv``), one per migration attempt kind (``to_device``,
``to_system``, ``fault``, ``evict``...), fold the kernel's ``outcome(attempt, reason)``
counts onto the schema's reason columns:

- a reason with a column of its own goes there (``migrated``, ``lock_contended``,
  ``pinned``, ``not_isolated``, ``alloc_failed``, ``copy_error``, ``restored``,
  ``hole_populated``, ``refcount_changed``); ``migrated_hole`` (a hole filled with a new
  page) counts as ``migrated``;
- ``hole_collected`` (a hole marked MIGRATE by collect) has no column: the hole is
  counted again by how it ended (``migrated``, ``hole_populated`` or a skip reason);
- every other reason (``no_destination``... and whatever paths add later) is summed
  into ``other``.

``collected`` is then the number of entries the attempt accounted for, each by how it
ended: ``migrated + lock_contended + pinned + not_isolated + alloc_failed + copy_error +
hole_populated + refcount_changed + other``. ``restored`` is left out: it is a follow-up
of a skip already counted (the page's mapping was put back after ``pinned``,
``not_isolated``, ``refcount_changed`` or a missing destination).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..core.machine.errors import Failure
from ..core.machine.kernel import STAT_FIELDS
from ..reports.schema import CONTENTION, FAILURES, OUTCOME_REASONS, OUTCOMES, RUNS, SCHEMAS, append_rows
from .artifacts import write_artifact
from .runner import RunRecord

ARTIFACT_DIR = "artifacts"

# Kernel outcome reasons that go to a column of another name.
REASON_ALIASES = {"migrated_hole": "migrated"}
# Reasons that are not a page's end state (see the module docstring).
NOT_COUNTED = {"hole_collected"}
# Columns that do not add up to `collected`.
FOLLOW_UPS = {"restored"}
_NO_MIN = 1 << 62


@dataclass(frozen=True)
class WrittenRun:
    """What :func:`write_run` wrote: the run's id and its artifact (None if clean)."""

    run_id: str
    artifact_path: Path | None


def run_id(record: RunRecord) -> str:
    """``workload-variant-s<seed>-strategy-engine-<nonce>``: readable and unique.

    The nonce is random: run ids name rows and files, they never feed the model.
    """
    return (
        f"{record.workload.name}-{record.variant}-s{record.seed}-{record.strategy}-"
        f"{record.engine}-{uuid.uuid4().hex[:8]}"
    )


def key_columns(record: RunRecord, rid: str) -> dict[str, Any]:
    """The columns that name the run in every CSV file."""
    return {
        "run_id": rid,
        "workload": record.workload.name,
        "variant": record.variant,
        "bugs": "+".join(record.bugs),
        "engine": record.engine,
        "seed": record.seed,
    }


def failure_columns(f: Failure) -> dict[str, Any]:
    """The failures.csv columns that describe the failure itself (a run's row, and the
    row ``pagerace replay`` writes for an artifact's failure it did not reproduce)."""
    return {
        "kind": f.kind.value,
        "message": f.message,
        "step": f.step,
        "actors": ";".join(f.actors),
        "pages": ";".join(str(p) for p in f.pages),
        "sites": ";".join(f.sites),
        "locks": ";".join(f.locks),
    }


def outcome_columns(outcomes: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """Kernel ``(attempt, reason) → count`` → ``attempt → {column: pages}`` (sorted by
    attempt), including ``collected`` as the module docstring defines it."""
    cols = list(OUTCOME_REASONS)
    by_attempt: dict[str, dict[str, int]] = {}
    for (attempt, reason), n in sorted(outcomes.items()):
        row = by_attempt.setdefault(attempt, dict.fromkeys(cols, 0))
        if reason in NOT_COUNTED:
            continue
        col = REASON_ALIASES.get(reason, reason)
        if col not in row or col == "collected":
            col = "other"
        row[col] += int(n)
    for row in by_attempt.values():
        row["collected"] = sum(v for c, v in row.items() if c not in FOLLOW_UPS and c != "collected")
    return by_attempt


def contention_row(site: str, st: list[int]) -> dict[str, Any]:
    d = dict(zip(STAT_FIELDS, (int(x) for x in st)))
    for k in ("wait_min", "hold_min"):
        if d[k] >= _NO_MIN:
            d[k] = 0
    d["wait_avg"] = d["wait_total"] / d["waits"] if d["waits"] else 0.0
    d["hold_avg"] = d["hold_total"] / d["holds"] if d["holds"] else 0.0
    d["site"] = site
    return d


def rows_for(
    record: RunRecord, run_id: str, artifact_rel: str, campaign: str = ""
) -> dict[str, list[dict[str, Any]]]:
    """Every CSV row of one run, keyed by schema file name (``runs.csv``...).

    Args:
        record: the finished run.
        run_id: its id (:func:`run_id`).
        artifact_rel: the artifact's path relative to the output directory, "" if none.
        campaign: the campaign id, "" for a single run.
    """
    r = record.result
    f = r.failure
    common = key_columns(record, run_id)
    runs = {
        **common,
        "campaign": campaign,
        "strategy": record.strategy,
        "strategy_params": json.dumps(
            {
                **{k: record.options[k] for k in ("pct_depth", "quantum") if k in record.options},
                **r.scheduler,
            },
            sort_keys=True,
            default=str,
        ),
        "steps": r.steps,
        "preemptions": r.preemptions,
        "duration_s": float(r.elapsed),
        "wall_s": float(record.wall),
        "outcome": r.outcome.value,
        "failure_kind": f.kind.value if f else "",
        "failure_step": f.step if f else -1,
        "fingerprint": r.fingerprint,
        "artifact": artifact_rel,
        "actors": len(record.actors),
        "ops": sum(a.progress for a in record.actors),
        "sigbus": sum(a.sigbus for a in record.actors),
        "started": f"{record.started:.3f}",  # full precision (floats are written with 6 digits)
        "pagerace_version": __version__,
    }
    unit = "steps" if record.engine == "deterministic" else "us"
    contention = [
        {**common, **contention_row(site, st), "time_unit": unit}
        for site, st in sorted(record.kernel.stats.items())
    ]
    outcomes = [
        {**common, "attempt": attempt, **cols}
        for attempt, cols in outcome_columns(record.kernel.outcomes).items()
    ]
    out: dict[str, list[dict[str, Any]]] = {
        RUNS.file: [runs],
        CONTENTION.file: contention,
        OUTCOMES.file: outcomes,
        FAILURES.file: [],
    }
    if f is not None:
        out[FAILURES.file].append(
            {
                **common,
                **failure_columns(f),
                "artifact": artifact_rel,
                "reproduced": "",
                "shrunk_steps": -1,
            }
        )
    return out


def append_all(out_dir: str | os.PathLike[str], rows: dict[str, list[dict[str, Any]]]) -> None:
    """Append every file's rows (validated against its schema first, so an unknown column
    raises before any file is written)."""
    from ..reports.schema import format_row

    for file, lst in rows.items():
        for row in lst:
            format_row(SCHEMAS[file], row)
    for file, lst in rows.items():
        append_rows(out_dir, SCHEMAS[file], lst)


def write_run(out_dir: str | os.PathLike[str], record: RunRecord, campaign: str = "") -> WrittenRun:
    """Write a finished run: its artifact when it failed (first, atomically), then all
    its rows. Returns the run id and the artifact's path (None when it did not fail)."""
    out = Path(out_dir)
    rid = run_id(record)
    art: Path | None = None
    rel = ""
    if record.result.failure is not None:
        rel = f"{ARTIFACT_DIR}/{rid}.json"
        art = write_artifact(out / rel, record, rid)
    append_all(out, rows_for(record, rid, rel, campaign))
    return WrittenRun(rid, art)

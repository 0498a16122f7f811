"""CSV schemas: the files every run appends to, and what each column means.

Each schema is versioned (``SCHEMA_VERSION``); every file starts with its header row,
and every row carries the schema version in its ``schema`` column, so a report can refuse
or convert a file written by another version. ``docs/csv-schemas.md`` is generated from
these definitions (``python -m pagerace.reports.schema``), so the documentation cannot
drift from the code.

This module has no pandas import: the engines write rows with the standard ``csv``
module (appending one complete line per row, flushed, so a crash loses at most the rows
in flight); ``reports/`` reads them with pandas.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # "int", "float", "str", "bool"
    unit: str
    doc: str


@dataclass(frozen=True)
class CsvSchema:
    file: str
    doc: str
    columns: tuple[Column, ...]
    # The column names, once (format_row runs for every row of every run).
    name_tuple: tuple[str, ...] = field(init=False, repr=False, compare=False)
    name_set: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name_tuple", tuple(c.name for c in self.columns))
        object.__setattr__(self, "name_set", frozenset(self.name_tuple))

    @property
    def names(self) -> list[str]:
        return list(self.name_tuple)


def _c(name: str, dtype: str, unit: str, doc: str) -> Column:
    return Column(name, dtype, unit, doc)


_COMMON = (
    _c("schema", "int", "", "CSV schema version of this row"),
    _c("run_id", "str", "", "unique id of the run (workload-variant-seed-strategy-engine, plus a nonce)"),
)

RUNS = CsvSchema(
    "runs.csv",
    "One row per run.",
    _COMMON
    + (
        _c("campaign", "str", "", "campaign id, empty for a single `pagerace run`"),
        _c("workload", "str", "", "workload name"),
        _c("variant", "str", "", "protocol variant (hmm-2017, v5.0, v6)"),
        _c("bugs", "str", "", "catalog bug toggles switched on, '+'-joined, empty for none"),
        _c("engine", "str", "", "deterministic or parallel"),
        _c("seed", "int", "", "the run's seed"),
        _c("strategy", "str", "", "scheduling strategy (random, pct, rr, replay; parallel: os)"),
        _c("strategy_params", "str", "", "strategy parameters as JSON (PCT depth, k, bound)"),
        _c("steps", "int", "preemption points", "preemption points executed (parallel: events ticketed)"),
        _c("preemptions", "int", "switches", "switches away from an actor that could have continued"),
        _c("duration_s", "float", "s", "wall-clock time of the engine loop"),
        _c("wall_s", "float", "s", "wall-clock time of the whole run including model build"),
        _c("outcome", "str", "", "clean, failed, budget (step budget ran out, not a failure), "
           "interrupted (SIGINT/SIGTERM cut the run short) or killed (a worker was killed from "
           "outside; not a failure)"),
        _c("failure_kind", "str", "", "oracle that fired (deadlock, livelock, lost_write...), empty if none"),
        _c("failure_step", "int", "step", "step at which the failure was seen, -1 if none"),
        _c("fingerprint", "str", "", "hash of the schedule, final state and failure kind"),
        _c("artifact", "str", "", "path of the failure artifact, relative to the output dir; empty if none"),
        _c("actors", "int", "", "number of actors"),
        _c("ops", "int", "", "operations completed by all actors"),
        _c("sigbus", "int", "", "SIGBUS deliveries (expected only with injected errors)"),
        _c("started", "float", "unix s", "when the run started"),
        _c("pagerace_version", "str", "", "pagerace version that ran it"),
    ),
)

FAILURES = CsvSchema(
    "failures.csv",
    "One row per failure found.",
    _COMMON
    + (
        _c("workload", "str", "", "workload name"),
        _c("variant", "str", "", "protocol variant"),
        _c("bugs", "str", "", "bug toggles, '+'-joined"),
        _c("engine", "str", "", "engine that found it"),
        _c("seed", "int", "", "seed"),
        _c("kind", "str", "", "failure kind (the oracle)"),
        _c("message", "str", "", "what the oracle saw"),
        _c("step", "int", "step", "step at which it was seen"),
        _c("actors", "str", "", "actors involved, ';'-joined"),
        _c("pages", "str", "", "page frame numbers involved, ';'-joined"),
        _c("sites", "str", "", "call sites involved, ';'-joined"),
        _c("locks", "str", "", "locks involved, ';'-joined"),
        _c("artifact", "str", "", "artifact path relative to the output dir"),
        _c("reproduced", "str", "", "replay verdict: yes, no, or empty when not replayed"),
        _c("shrunk_steps", "int", "steps", "length of the shrunk schedule, -1 when not shrunk"),
    ),
)

CONTENTION = CsvSchema(
    "contention.csv",
    "Per lock call site and run: the columns of the kernel's /proc/lock_stat. Times are in "
    "engine steps for the deterministic engine and microseconds for the parallel one "
    "(see time_unit).",
    _COMMON
    + (
        _c("workload", "str", "", "workload name"),
        _c("variant", "str", "", "protocol variant"),
        _c("bugs", "str", "", "bug toggles"),
        _c("engine", "str", "", "engine"),
        _c("seed", "int", "", "seed"),
        _c("site", "str", "", "call site: kernel function and what it locks (function:lock)"),
        _c("time_unit", "str", "", "steps or us"),
        _c("acquired", "int", "", "successful acquisitions"),
        _c("contended", "int", "", "acquisitions that had to wait, plus failed trylocks"),
        _c("trylock_attempts", "int", "", "trylock calls"),
        _c("trylock_failures", "int", "", "trylock calls that failed"),
        _c("waits", "int", "", "blocking waits"),
        _c("wait_min", "int", "time_unit", "shortest wait (0 when no wait)"),
        _c("wait_max", "int", "time_unit", "longest wait"),
        _c("wait_total", "int", "time_unit", "sum of waits"),
        _c("wait_avg", "float", "time_unit", "wait_total / waits"),
        _c("holds", "int", "", "releases measured"),
        _c("hold_min", "int", "time_unit", "shortest hold"),
        _c("hold_max", "int", "time_unit", "longest hold"),
        _c("hold_total", "int", "time_unit", "sum of holds"),
        _c("hold_avg", "float", "time_unit", "hold_total / holds"),
    ),
)

OUTCOMES = CsvSchema(
    "outcomes.csv",
    "Per run and migration attempt kind (to_device, to_system, fault, evict, coherent, "
    "compaction...): how many pages each reason accounts for.",
    _COMMON
    + (
        _c("workload", "str", "", "workload name"),
        _c("variant", "str", "", "protocol variant"),
        _c("bugs", "str", "", "bug toggles"),
        _c("engine", "str", "", "engine"),
        _c("seed", "int", "", "seed"),
        _c("attempt", "str", "", "migration attempt kind"),
        _c(
            "collected",
            "int",
            "pages",
            "pages that reached a verdict: migrated + every skip reason below except restored "
            "(restored counts mappings put back, a subset of the skipped pages)",
        ),
        _c("migrated", "int", "pages", "pages migrated (including holes populated)"),
        _c("lock_contended", "int", "pages", "skipped: page lock trylock failed"),
        _c("pinned", "int", "pages", "skipped: extra references (pinned) or unmap failed"),
        _c("not_isolated", "int", "pages", "skipped: LRU isolation failed"),
        _c("alloc_failed", "int", "pages", "skipped: destination allocation failed"),
        _c("copy_error", "int", "pages", "skipped: copy failed (MIGRATE_PFN_ERROR)"),
        _c("restored", "int", "pages", "mappings restored to the source page"),
        _c("hole_populated", "int", "pages", "holes filled by someone else meanwhile"),
        _c("refcount_changed", "int", "pages", "folio_migrate_mapping found an unexpected refcount"),
        _c("other", "int", "pages", "any other reason (see the run's events)"),
    ),
)

SCHEMAS = {s.file: s for s in (RUNS, FAILURES, CONTENTION, OUTCOMES)}
OUTCOME_REASONS = [c.name for c in OUTCOMES.columns[8:]]


def format_row(schema: CsvSchema, row: Mapping[str, Any]) -> list[str]:
    """The row's cells in column order; unknown keys are an error, missing ones empty."""
    if not schema.name_set.issuperset(row):
        extra = set(row) - schema.name_set
        raise KeyError(f"{schema.file}: no such column(s): {', '.join(sorted(extra))}")
    out = []
    get = row.get
    for name in schema.name_tuple:
        v = get(name, SCHEMA_VERSION if name == "schema" else "")
        t = type(v)
        if t is str:
            out.append(v)
        elif t is int:
            out.append(str(v))
        elif isinstance(v, bool):
            out.append("yes" if v else "no")
        elif isinstance(v, float):
            out.append(repr(v))  # shortest round-trip form: no precision lost (unix times!)
        else:
            out.append(str(v))
    return out


def append_rows(
    directory: str | os.PathLike[str], schema: CsvSchema, rows: Iterable[Mapping[str, Any]]
) -> int:
    """Append complete rows to ``directory/schema.file`` (writing the header first if the
    file is new). All rows are formatted before the file is touched and written with one
    ``write`` + ``fsync``, so a crash never leaves a half row. Returns rows written."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    n = 0
    for row in rows:
        w.writerow(format_row(schema, row))
        n += 1
    if n == 0:
        return 0
    path = Path(directory) / schema.file
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    data = buf.getvalue()
    if new:
        hb = io.StringIO()
        csv.writer(hb, lineterminator="\n").writerow(schema.names)
        data = hb.getvalue() + data
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return n


def markdown() -> str:
    """The documentation page for all schemas."""
    lines = [
        "# CSV schemas",
        "",
        f"Schema version {SCHEMA_VERSION}. Generated from `reports/schema.py` "
        "(`python -m pagerace.reports.schema > docs/csv-schemas.md`).",
        "",
        "Every file starts with a header row. Every row carries the schema version in "
        "`schema` and the run in `run_id`, so files from many runs and campaigns "
        "concatenate. Lists inside a cell are `;`-joined; bug toggles are `+`-joined.",
        "",
    ]
    for s in SCHEMAS.values():
        lines += [f"## `{s.file}`", "", s.doc, "", "| column | type | unit | meaning |", "|---|---|---|---|"]
        for c in s.columns:
            lines.append(f"| `{c.name}` | {c.dtype} | {c.unit} | {c.doc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.stdout.write(markdown() + "\n")

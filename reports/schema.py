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
    # the version every row of this file carries in its `schema` column
    version: int = SCHEMA_VERSION
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

# contention.csv: the sums of lock statistics per configuration and call site, one row
# per batch of runs (harness/output.py RowWriter); version 1 had one row per run and site
# (CONTENTION_V1, still read: reports/load.py, upgrade_contention below).
CONTENTION = CsvSchema(
    "contention.csv",
    "Per configuration (workload × variant × bugs × engine × strategy) and lock call site, "
    "the columns of the kernel's /proc/lock_stat summed over the runs of one batch: a "
    "writer (`pagerace run`, `hunt`, `campaign`) writes one row per configuration and site "
    "each time it writes a batch of runs, so a campaign writes about (batches × "
    "configurations × sites) rows, not (runs × sites). Sum the rows of a configuration to "
    "get its totals; per-run rates divide by its runs in runs.csv (every run counts, also "
    "those that never reached the site). Times are in engine steps for the deterministic "
    "engine and microseconds for the parallel one (see time_unit).",
    (
        _COMMON[0],
        _c("run_id", "str", "", "the last run summed into this row (for `pagerace run`: the run); "
           "the row counts only when that run is in runs.csv"),
        _c("workload", "str", "", "workload name"),
        _c("variant", "str", "", "protocol variant"),
        _c("bugs", "str", "", "bug toggles"),
        _c("engine", "str", "", "engine"),
        _c("strategy", "str", "", "scheduling strategy"),
        _c("runs", "int", "runs", "runs summed into this row (those of the batch that reached the site)"),
        _c("site", "str", "", "call site: kernel function and what it locks (function:lock)"),
        _c("time_unit", "str", "", "steps or us"),
        _c("acquired", "int", "", "successful acquisitions"),
        _c("contended", "int", "", "acquisitions that had to wait, plus failed trylocks"),
        _c("trylock_attempts", "int", "", "trylock calls"),
        _c("trylock_failures", "int", "", "trylock calls that failed"),
        _c("waits", "int", "", "blocking waits"),
        _c("wait_min", "int", "time_unit", "shortest wait (0 when no wait)"),
        _c("wait_max", "int", "time_unit", "longest wait"),
        _c("wait_total", "int", "time_unit", "sum of waits (mean wait: wait_total / waits)"),
        _c("holds", "int", "", "releases measured"),
        _c("hold_min", "int", "time_unit", "shortest hold (0 when none)"),
        _c("hold_max", "int", "time_unit", "longest hold"),
        _c("hold_total", "int", "time_unit", "sum of holds (mean hold: hold_total / holds)"),
    ),
    version=2,
)

CONTENTION_V1 = CsvSchema(
    "contention.csv",
    "Version 1 (pagerace before the per-configuration rows): per lock call site and run. "
    "Still read by `pagerace report` (and upgraded in place before anything appends to it).",
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
# Schemas of earlier versions that are still read, by file name.
OLD_SCHEMAS = {CONTENTION.file: (CONTENTION_V1,)}
OUTCOME_REASONS = [c.name for c in OUTCOMES.columns[8:]]


def format_row(schema: CsvSchema, row: Mapping[str, Any]) -> list[str]:
    """The row's cells in column order; unknown keys are an error, missing ones empty."""
    if not schema.name_set.issuperset(row):
        extra = set(row) - schema.name_set
        raise KeyError(f"{schema.file}: no such column(s): {', '.join(sorted(extra))}")
    out = []
    get = row.get
    for name in schema.name_tuple:
        v = get(name, schema.version if name == "schema" else "")
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


def upgrade_contention(directory: str | os.PathLike[str]) -> int:
    """Rewrite a version-1 ``contention.csv`` of ``directory`` (one row per run and site)
    in the current schema, so that new rows can be appended to it: each old row becomes
    one row of ``runs`` 1, its ``strategy`` taken from the run's ``runs.csv`` row (empty
    for a run that is not there: an orphan, dropped as before). Written to a temporary
    file, synced and renamed over the old one, so a crash leaves one or the other.
    Returns the rows converted (0 when the file is absent or already current)."""
    path = Path(directory) / CONTENTION.file
    if not path.exists():
        return 0
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or rows[0] != CONTENTION_V1.names:
        return 0
    strategy: dict[str, str] = {}
    runs = Path(directory) / RUNS.file
    if runs.exists():
        with runs.open(newline="") as fh:
            for r in csv.DictReader(fh):
                strategy[r.get("run_id") or ""] = r.get("strategy") or ""
    old = CONTENTION_V1.names
    body = []
    for cells in rows[1:]:
        if len(cells) != len(old):
            continue  # a torn last line
        d = dict(zip(old, cells))
        d.update(schema=str(CONTENTION.version), runs="1", strategy=strategy.get(d["run_id"], ""))
        body.append([d.get(n, "") for n in CONTENTION.names])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CONTENTION.names)
    w.writerows(body)
    tmp = path.with_name(path.name + ".upgrade.tmp")
    with tmp.open("w", newline="") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return len(body)


CONFIG_COLUMNS = ("workload", "variant", "bugs", "engine", "strategy")
# docs/csv-schemas.md is markdown() up to this line; what follows it is written by hand
HAND_WRITTEN = "<!-- written by hand below this line: measurements, not generated -->"


def uncovered_runs(
    runs: Iterable[Mapping[str, str]], contention: Iterable[Mapping[str, str]]
) -> set[str]:
    """The runs a crash inside a ``runs.csv`` write left without their contention.

    A contention row sums runs of one configuration up to the run its ``run_id`` names,
    and counts only when that run is in ``runs.csv``. A batch cut inside its ``runs.csv``
    write keeps a first part of its runs there while the configuration's row names a run
    of the lost part: that row is an orphan, and the runs of its configuration after the
    last run named by a row that is not an orphan are in ``runs.csv`` with no contention
    counted. Those are returned (rows in file order, as dicts with ``run_id`` and the
    :data:`CONFIG_COLUMNS`); a directory written without a crash has none."""
    runs = list(runs)
    have = {r["run_id"] for r in runs}
    kept: set[str] = set()
    lost: set[tuple[str, ...]] = set()
    for c in contention:
        if c["run_id"] in have:
            kept.add(c["run_id"])
        else:
            lost.add(tuple(c[k] for k in CONFIG_COLUMNS))
    if not lost:
        return set()
    tail: dict[tuple[str, ...], list[str]] = {}
    for r in runs:
        cfg = tuple(r[k] for k in CONFIG_COLUMNS)
        if cfg not in lost:
            continue
        if r["run_id"] in kept:
            tail[cfg] = []  # covered up to here
        else:
            tail.setdefault(cfg, []).append(r["run_id"])
    return {rid for ids in tail.values() for rid in ids}


def markdown() -> str:
    """The documentation page for all schemas."""
    lines = [
        "# CSV schemas",
        "",
        "Generated from `reports/schema.py` "
        "(`python -m pagerace.reports.schema > docs/csv-schemas.md`; a test checks that this "
        "page is what it prints, up to the hand-written notes at the end).",
        "",
        "Every file starts with a header row. Every row carries its file's schema version in "
        "`schema` and a run in `run_id`, so files from many runs and campaigns "
        "concatenate. Lists inside a cell are `;`-joined; bug toggles are `+`-joined.",
        "",
    ]
    for s in SCHEMAS.values():
        lines += [f"## `{s.file}`", "", f"Schema version {s.version}. {s.doc}", ""]
        lines += ["| column | type | unit | meaning |", "|---|---|---|---|"]
        for c in s.columns:
            lines.append(f"| `{c.name}` | {c.dtype} | {c.unit} | {c.doc} |")
        lines.append("")
        for o in OLD_SCHEMAS.get(s.file, ()):
            gone = [n for n in o.names if n not in s.name_set]
            lines += [
                f"Version {o.version} of `{s.file}` (still read by `pagerace report`): one row "
                f"per run and site, with the columns above except `runs` and `strategy`, "
                f"and with {', '.join(f'`{n}`' for n in gone)}.",
                "",
            ]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.stdout.write(markdown() + "\n")

"""A finished run → CSV rows (``reports/schema.py``) and, when it failed, its artifact.

:func:`write_run` is what ``pagerace run`` calls: it writes the failure artifact first
(atomically), then appends the run's rows to ``failures.csv`` (when it failed),
``contention.csv``, ``outcomes.csv`` and ``runs.csv`` last. Rows are built and checked
against their schemas completely before any file is touched, so an error leaves no
half-written output.

Many runs (``pagerace hunt``, and campaigns through the same API) go through a
:class:`RowWriter`, which keeps the hot loop free of file system calls: each run's rows are
checked and formatted when the run is added, and written in batches, one ``write`` and one
``fsync`` per file per batch, ``runs.csv`` last. What a crash can cost is in the class's
docstring. A hunt formats its clean runs with :func:`format_run`: the lines
``format_rows(rows_for(...))`` gives, byte for byte, made straight from the record.

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

import csv
import io
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..core.machine.errors import Failure, HarnessInternalError
from ..core.machine.kernel import STAT_FIELDS, merge_stat
from ..reports.schema import (
    CONTENTION,
    FAILURES,
    OUTCOME_REASONS,
    OUTCOMES,
    RUNS,
    SCHEMAS,
    CsvSchema,
    format_row,
    upgrade_contention,
)
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
        f"{record.engine}-{os.urandom(4).hex()}"
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


def contention_row(site: str, st: Sequence[int], runs: int = 1) -> dict[str, Any]:
    """A call site's statistics row (the kernel's, or summed over ``runs`` runs) as
    contention.csv counters: a minimum with no wait or hold behind it (``_NO_MIN``) is 0."""
    d: dict[str, Any] = dict(zip(STAT_FIELDS, (int(x) for x in st)))
    for k in ("wait_min", "hold_min"):
        if d[k] >= _NO_MIN:
            d[k] = 0
    d["site"] = site
    d["runs"] = int(runs)
    return d


# contention.csv: the columns that name a row (configuration and site), and the counters
# summed over runs; the two minima and maxima combine as min / max (see ContentionSums).
CONTENTION_KEY = ("workload", "variant", "bugs", "engine", "strategy", "site", "time_unit")
_CONFIG = 5  # CONTENTION_KEY[:5]: the configuration
_SUMMED = ("runs", "acquired", "contended", "trylock_attempts", "trylock_failures", "waits",
           "wait_total", "holds", "hold_total")
_MAXED = ("wait_max", "hold_max")
_NEEDED = frozenset((*CONTENTION_KEY, *_SUMMED, *_MAXED, "wait_min", "hold_min", "run_id"))


_RUNS = len(STAT_FIELDS)  # where a ContentionSums accumulator keeps its runs


class ContentionSums:
    """contention.csv rows of many runs summed per configuration and call site (the
    :data:`CONTENTION_KEY` columns): counts and totals add up, ``wait_max``/``hold_max``
    are the largest, ``wait_min``/``hold_min`` the smallest over the runs that waited
    (held) at all, 0 when none did. Every row of a configuration carries the same
    ``run_id``: the last run of that configuration added (whichever sites it reached),
    so the rows of one configuration and batch are kept or dropped together
    (:func:`pagerace.reports.schema.uncovered_runs`). Rows come out sorted by key.

    Runs come in as their kernel statistics (:meth:`add_stats`: one run, straight from
    ``Kernel.stats``) or as contention.csv rows already summed (:meth:`add`); both are
    kept as ``[*STAT_FIELDS, runs]`` per configuration and site (the kernel's statistics
    row, a minimum with no wait or hold behind it as ``_NO_MIN``, merged by the kernel's
    ``merge_stat``, as the parallel engine merges its workers' rows), and become rows in
    :meth:`rows`."""

    def __init__(self) -> None:
        # (workload, variant, bugs, engine, strategy, time_unit) -> site -> [*stats, runs]
        self._sums: dict[tuple[str, ...], dict[str, list[int]]] = {}
        self._last: dict[tuple[str, ...], str] = {}  # configuration -> its last run

    def __len__(self) -> int:
        return sum(len(d) for d in self._sums.values())

    def add_stats(self, config: tuple[str, ...], run: str, stats: Mapping[str, Sequence[int]]) -> None:
        """One run's ``Kernel.stats`` (site -> STAT_FIELDS values); ``config`` is
        (workload, variant, bugs, engine, strategy, time_unit), ``run`` its run id."""
        self._last[config[:_CONFIG]] = run
        d = self._sums.get(config)
        if d is None:
            d = self._sums[config] = {}
        for site, st in stats.items():
            acc = d.get(site)
            if acc is None:
                d[site] = [*st, 1]
            else:
                merge_stat(acc, st)
                acc[_RUNS] += 1

    def add(self, row: Mapping[str, Any]) -> None:
        """A contention.csv row (the sum of ``row["runs"]`` runs)."""
        config = (row["workload"], row["variant"], row["bugs"], row["engine"], row["strategy"],
                  row["time_unit"])
        self._last[config[:_CONFIG]] = row["run_id"]
        st = [row[k] for k in STAT_FIELDS]
        if not row["waits"]:
            st[6] = _NO_MIN
        if not row["holds"]:
            st[10] = _NO_MIN
        d = self._sums.get(config)
        if d is None:
            d = self._sums[config] = {}
        acc = d.get(row["site"])
        if acc is None:
            d[row["site"]] = [*st, row["runs"]]
        else:
            merge_stat(acc, st)
            acc[_RUNS] += row["runs"]

    def merge(self, other: ContentionSums) -> None:
        """Add the sums of ``other`` (another chunk of runs, made after those of this one),
        as :meth:`add` of each of ``other.rows()`` would, without making the rows: its
        configurations' last runs replace these (those with a row: a configuration
        whose runs reached no site keeps its last run here), its sites merge
        (``merge_stat``)."""
        for config, d in other._sums.items():
            if not d:
                continue
            self._last[config[:_CONFIG]] = other._last[config[:_CONFIG]]
            mine = self._sums.get(config)
            if mine is None:
                mine = self._sums[config] = {}
            for site, st in d.items():
                acc = mine.get(site)
                if acc is None:
                    mine[site] = st[:]
                else:
                    merge_stat(acc, st)
                    acc[_RUNS] += st[_RUNS]

    def copy(self) -> ContentionSums:
        """The same sums, sharing nothing with these."""
        new = ContentionSums()
        new.merge(self)
        new._last.update(self._last)
        return new

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for config, d in self._sums.items():
            head = dict(zip(("workload", "variant", "bugs", "engine", "strategy"), config))
            head["run_id"] = self._last[config[:_CONFIG]]
            head["time_unit"] = config[_CONFIG]
            for site, acc in d.items():
                out.append({**head, **contention_row(site, acc[:_RUNS], acc[_RUNS])})
        out.sort(key=lambda r: tuple(r[k] for k in CONTENTION_KEY))
        return out

    def clear(self) -> None:
        self._sums.clear()
        self._last.clear()


def _run_contention(
    record: RunRecord, run_id: str, bugs: str, sums: ContentionSums | None,
) -> list[dict[str, Any]]:
    """A run's contention: into ``sums`` when given (none returned), else its own rows,
    one per site. ``bugs``: the run's bugs as its rows write them."""
    config = (record.workload.name, record.variant, bugs, record.engine, record.strategy,
              "steps" if record.engine == "deterministic" else "us")
    if sums is not None:
        sums.add_stats(config, run_id, record.kernel.stats)
        return []
    one = ContentionSums()
    one.add_stats(config, run_id, record.kernel.stats)
    return one.rows()


def rows_for(
    record: RunRecord, run_id: str, artifact_rel: str, campaign: str = "",
    sums: ContentionSums | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Every CSV row of one run, keyed by schema file name (``runs.csv``...).

    Args:
        record: the finished run.
        run_id: its id (:func:`run_id`).
        artifact_rel: the artifact's path relative to the output directory, "" if none.
        campaign: the campaign id, "" for a single run.
        sums: where the run's contention goes instead of its own ``contention.csv`` rows
            (a hunt worker sums a chunk of runs there, see ``harness/hunt.py``); ``None``:
            the run's rows, one per site.
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
    contention = _run_contention(record, run_id, common["bugs"], sums)
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


@dataclass(frozen=True)
class FormattedRows:
    """One run's rows as :meth:`RowWriter.add` buffers them (:func:`format_rows`): the
    cells of each file but ``contention.csv``, in column order, and the contention rows,
    checked (the writer sums them per batch, so they stay rows). Picklable: a hunt's
    workers format their runs' rows and the parent only appends them
    (``harness/hunt.py``).

    A run formatted by :func:`format_run` (a hunt's) has its lines in ``text`` rather
    than cells. A hunt worker sums the contention of a chunk of consecutive runs itself:
    the chunk's first clean run carries the chunk's contention, summed (``sums``, which
    the writer merges as it would add its rows: ``runs`` = the chunk's clean runs,
    ``run_id`` its last clean run) and the others none. Every run of the chunk but
    its last clean one has ``hold`` set: the chunk is written whole or not at all.
    :class:`RowWriter` ends no batch inside a chunk, sums the chunk's contention into the
    batch when its last run arrives, and drops the runs of a chunk left open when it
    closes (the parent interrupted while it took the chunk: at most ``CHUNK - 1`` runs
    made and taken but in no file), so a contention row never names a run that is not
    in ``runs.csv`` beside it."""

    cells: dict[str, list[list[str]]]
    contention: list[dict[str, Any]]
    hold: bool = False
    text: dict[str, str] = field(default_factory=dict)  # whole CSV lines per file (format_run, a chunk)
    # contention summed, not yet rows (a chunk's: chunk_rows); the writer merges it as
    # it adds the rows in ``contention`` (ContentionSums.merge)
    sums: ContentionSums | None = None


def chunk_rows(runs: Sequence[FormattedRows], sums: ContentionSums) -> list[FormattedRows]:
    """The rows of a chunk of consecutive clean runs as :class:`RowWriter` takes them whole
    (see :class:`FormattedRows`): the first carries every run's lines, rendered as CSV text
    (one string per file: the parent only appends it), and the chunk's contention
    (``sums``, which summed their kernel statistics); every run but the last holds."""
    if not runs:
        return []
    text = {}
    for file in sorted({file for r in runs for file in (*r.cells, *r.text)}):
        text[file] = "".join(csv_text(r.cells.get(file, ())) + r.text.get(file, "") for r in runs)
    last = len(runs) - 1
    return [FormattedRows({}, [], hold=last > 0, text=text, sums=sums.copy())] + [
        FormattedRows({}, [], hold=n < last) for n in range(1, len(runs))
    ]


def _check_contention(cont: Sequence[Mapping[str, Any]]) -> None:
    """Contention rows are formatted once per batch (RowWriter.flush): checked when added."""
    for row in cont:
        if not CONTENTION.name_set.issuperset(row) or not _NEEDED.issubset(row):
            extra = sorted(set(row) - CONTENTION.name_set)
            missing = sorted(_NEEDED - set(row))
            raise KeyError(f"{CONTENTION.file}: no such column(s): {', '.join(extra)}" if extra else
                           f"{CONTENTION.file}: row without {', '.join(missing)}")


def format_rows(rows: Mapping[str, list[dict[str, Any]]]) -> FormattedRows:
    """Check one run's rows (keyed by file name, as :func:`rows_for` returns them)
    against their schemas and format them, as :meth:`RowWriter.add` does.

    Raises:
        KeyError: a row has a column its schema does not, or a contention row lacks one
            that names it.
    """
    cont = list(rows.get(CONTENTION.file, ()))
    _check_contention(cont)
    cells = {
        file: [format_row(SCHEMAS[file], row) for row in lst]
        for file, lst in rows.items()
        if file != CONTENTION.file
    }
    return FormattedRows(cells, cont)


def csv_text(rows: Iterable[Sequence[str]]) -> str:
    """``rows`` (lists of cells, strings) as ``csv.writer(..., lineterminator="\\n")``
    writes them, byte for byte: a line is its cells joined by commas when no cell holds a
    comma, a double quote, CR or LF, which is what the writer does then (it quotes
    nothing); a line with such a cell, or of one empty cell, goes through the writer."""
    out = []
    for cells in rows:
        try:
            line = ",".join(cells)
        except TypeError:  # a cell that is not a str: the writer's str()
            out.append(_writer_line(cells))
            continue
        if (line.count(",") != len(cells) - 1 or '"' in line or "\n" in line or "\r" in line
                or not line):
            line = _writer_line(cells)
        out.append(line)
    if not out:
        return ""
    out.append("")
    return "\n".join(out)


def _writer_line(cells: Sequence[str]) -> str:
    """One line as the csv module writes it (without its line end)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    return buf.getvalue()[:-1]


def _field(cell: str) -> str | None:
    """A cell as the csv writer renders it, for a cell without CR or LF (``None`` for one
    with): quoted, its quotes doubled, when it holds a comma or a quote."""
    if "\n" in cell or "\r" in cell:
        return None
    if '"' in cell:
        return '"' + cell.replace('"', '""') + '"'
    if "," in cell:
        return '"' + cell + '"'
    return cell


# json.dumps(params, sort_keys=True, default=str) as rows_for writes strategy_params
_PARAMS_ENCODER = json.JSONEncoder(sort_keys=True, default=str)
_json_str = json.encoder.encode_basestring_ascii  # what json.dumps writes a str with


def params_json(params: Mapping[Any, Any]) -> str:
    """``json.dumps(params, sort_keys=True, default=str)``, the same text, without the
    encoder's general machinery for the values a scheduler's record holds: str keys;
    str, int, finite float, bool, None or a list of ints values. Anything else goes
    through an encoder made once with those options (what ``json.dumps`` does)."""
    parts = []
    for k in params:
        if type(k) is not str:
            return _PARAMS_ENCODER.encode(params)
    for k in sorted(params):
        v = params[k]
        t = type(v)
        if t is str:
            s = _json_str(v)
        elif t is int:
            s = int.__repr__(v)
        elif t is float and v - v == 0.0:  # finite (NaN and infinities: the encoder's words)
            s = float.__repr__(v)
        elif v is None:
            s = "null"
        elif t is bool:
            s = "true" if v else "false"
        elif t is list and all(type(x) is int for x in v):
            s = "[" + ", ".join(map(int.__repr__, v)) + "]"
        else:
            return _PARAMS_ENCODER.encode(params)
        parts.append(f"{_json_str(k)}: {s}")
    return "{" + ", ".join(parts) + "}"


# The columns format_run writes, in the order it writes them: the schemas' columns when
# this module was written. _fast_layout checks them against the schemas once, when the
# module is imported; a schema that differs turns the direct path off (format_run then
# formats through rows_for and format_rows).
_FAST_RUNS = (
    "schema", "run_id", "campaign", "workload", "variant", "bugs", "engine", "seed", "strategy",
    "strategy_params", "steps", "preemptions", "duration_s", "wall_s", "outcome", "failure_kind",
    "failure_step", "fingerprint", "artifact", "actors", "ops", "sigbus", "started",
    "pagerace_version",
)
_FAST_OUTCOMES = ("schema", "run_id", "workload", "variant", "bugs", "engine", "seed", "attempt")


@dataclass(frozen=True)
class _Layout:
    """What :func:`format_run` needs of the schemas, checked once (:func:`_fast_layout`)."""

    runs_version: str
    outcomes_version: str
    reasons: int  # outcome reason columns, ``collected`` first
    column: dict[str, int]  # kernel reason -> its column among them (the rest: other)
    other: int
    follow_ups: tuple[int, ...]  # columns that do not add up to collected


def _fast_layout(runs: CsvSchema, outcomes: CsvSchema) -> _Layout | None:
    """The layout :func:`format_run` writes, if ``runs`` and ``outcomes`` have exactly
    the columns it writes (in that order); ``None`` otherwise."""
    reasons = outcomes.name_tuple[len(_FAST_OUTCOMES):]
    if (runs.name_tuple != _FAST_RUNS or outcomes.name_tuple[: len(_FAST_OUTCOMES)] != _FAST_OUTCOMES
            or list(reasons) != OUTCOME_REASONS or not reasons or reasons[0] != "collected"
            or "other" not in reasons or not set(REASON_ALIASES.values()) <= set(reasons[1:])):
        return None
    column = {name: i for i, name in enumerate(reasons) if name != "collected"}
    column.update({alias: column[name] for alias, name in REASON_ALIASES.items()})
    return _Layout(
        str(runs.version), str(outcomes.version), len(reasons), column, column["other"],
        tuple(i for i, name in enumerate(reasons) if name in FOLLOW_UPS),
    )


_FAST = _fast_layout(RUNS, OUTCOMES)


def format_run(
    record: RunRecord, run_id: str, artifact_rel: str = "", campaign: str = "",
    sums: ContentionSums | None = None,
) -> FormattedRows:
    """``format_rows(rows_for(record, run_id, artifact_rel, campaign, sums))``: the same
    lines, byte for byte, made directly from the record for a run that did not fail
    (a hunt's runs): each file's lines in column order as CSV text, with no dict per row
    and no per-cell type dispatch.

    What ``format_rows`` checks of these rows cannot fail for them: ``rows_for`` fills
    the columns it names and no other, and those are the schema's (checked once, at
    import: :func:`_fast_layout`; a schema that differs makes this function the general
    path). What could make the text differ is checked per run: a value of a type other
    than the one written directly (an ``int`` column that is not exactly ``int``...)
    or a cell the CSV writer would quote. The first sends the run through the general
    path, the second through the CSV writer.
    """
    lay = _FAST
    r = record.result
    if lay is None or r.failure is not None:
        return format_rows(rows_for(record, run_id, artifact_rel, campaign, sums=sums))
    w = record.workload.name
    variant, engine, strategy, seed = record.variant, record.engine, record.strategy, record.seed
    steps, preemptions, outcome = r.steps, r.preemptions, r.outcome.value
    actors = record.actors
    ops = sum(a.progress for a in actors)
    sigbus = sum(a.sigbus for a in actors)
    if not (type(seed) is int and type(steps) is int and type(preemptions) is int
            and type(ops) is int and type(sigbus) is int
            and type(w) is str and type(variant) is str and type(engine) is str
            and type(strategy) is str and type(outcome) is str and type(r.fingerprint) is str
            and type(run_id) is str and type(artifact_rel) is str and type(campaign) is str):
        return format_rows(rows_for(record, run_id, artifact_rel, campaign, sums=sums))
    bugs = "+".join(record.bugs)
    opts = record.options
    params = params_json({
        **{k: opts[k] for k in ("pct_depth", "quantum") if k in opts}, **r.scheduler,
    })
    key = f"{run_id},{w},{variant},{bugs},{engine},{seed}"
    head = f"{lay.runs_version},{run_id},{campaign},{w},{variant},{bugs},{engine},{seed},{strategy}"
    tail = (f"{steps},{preemptions},{float(r.elapsed)!r},{float(record.wall)!r},{outcome},,-1,"
            f"{r.fingerprint},{artifact_rel},{len(actors)},{ops},{sigbus},{record.started:.3f},"
            f"{__version__}")
    qparams = _field(params)
    # the string cells but params hold no comma, quote, CR or LF: the writer quotes nothing
    # but params (a comma more than the columns, a quote, CR or LF: some cell has one)
    if (qparams is None or head.count(",") != 8 or tail.count(",") != 13
            or '"' in head or '"' in tail or "\n" in head or "\r" in head or "\n" in tail
            or "\r" in tail):
        runs = csv_text([format_row(RUNS, rows_for(record, run_id, artifact_rel, campaign)[RUNS.file][0])])
    else:
        runs = f"{head},{qparams},{tail}\n"
    by_attempt: dict[str, list[int]] = {}
    column, other, n = lay.column, lay.other, lay.reasons
    for (attempt, reason), count in sorted(record.kernel.outcomes.items()):
        acc = by_attempt.get(attempt)
        if acc is None:
            acc = by_attempt[attempt] = [0] * n
        if reason in NOT_COUNTED:
            continue
        acc[column.get(reason, other)] += int(count)
    lines = []
    prefix = f"{lay.outcomes_version},{key}"
    for attempt, acc in by_attempt.items():
        if type(attempt) is not str:
            return format_rows(rows_for(record, run_id, artifact_rel, campaign, sums=sums))
        acc[0] = sum(acc) - sum(acc[i] for i in lay.follow_ups)
        line = f"{prefix},{attempt}," + ",".join(map(str, acc))
        if line.count(",") != 7 + n or '"' in line or "\n" in line or "\r" in line:
            line = _writer_line([lay.outcomes_version, run_id, w, variant, bugs, engine, str(seed),
                                 attempt, *map(str, acc)])
        lines.append(line + "\n")
    contention = _run_contention(record, run_id, bugs, sums)
    _check_contention(contention)
    return FormattedRows({}, contention, text={RUNS.file: runs, OUTCOMES.file: "".join(lines)})


# The order a batch is written in: runs.csv LAST, so a run that is in runs.csv has every
# other row on disk too (the rule campaigns resume by; harness/campaign.py).
WRITE_ORDER = (FAILURES, CONTENTION, OUTCOMES, RUNS)
# A batch is written when it holds this many runs, or when its oldest run was added this
# many seconds before the run being added (see RowWriter).
BATCH_RUNS = 500
BATCH_SECONDS = 1.0


class RowWriter:
    """Appends the CSV rows of many runs to a directory, in batches.

    Each :meth:`add` checks the run's rows against their schemas and formats them at once
    (a bad row raises there, before anything of that run is buffered), into one buffer per
    file; its contention rows are summed into the batch's rows per configuration and
    site instead (:class:`ContentionSums`: one ``contention.csv`` row per configuration
    and site per batch, its ``run_id`` the configuration's last run in the batch).
    Nothing touches the file system until the batch is written. A batch is written by
    :meth:`flush`: for each file with rows, ``failures.csv``, ``contention.csv``,
    ``outcomes.csv`` and ``runs.csv`` LAST, one ``write`` of all its rows (the header
    first when the file is new or empty) and one ``fsync``. The first flush of a writer
    upgrades a ``contention.csv`` of schema version 1 in place first
    (:func:`pagerace.reports.schema.upgrade_contention`).

    :meth:`add` flushes by itself when the batch holds ``batch_runs`` runs, or when the
    oldest run in it was added ``batch_seconds`` or more before (checked at each add and
    at each :meth:`tick`: no thread, no timer; the campaign ticks while it waits for its
    workers). :meth:`close` flushes what is left; used as a context manager the
    writer closes on any exit, exceptions and Ctrl-C included.

    What a crash costs:

    - a Python exception or Ctrl-C in the code inside ``with RowWriter(...)`` loses no row:
      the exit flushes every run added, but those of a hunt chunk still open
      (:attr:`FormattedRows.hold`: fewer than ``harness.hunt.CHUNK``, dropped whole);
    - a SIGKILL, a crash of the interpreter or of the machine loses exactly the runs
      added since the last flush that completed: fewer than ``batch_runs`` runs, all
      added within ``batch_seconds`` of the oldest of them (a hunt over worker
      processes ends a batch between two chunks of runs, :attr:`FormattedRows.hold`:
      up to ``harness.hunt.CHUNK - 1`` runs more, added within the same time plus the
      parent's taking of one chunk's results, microseconds). Their rows are in no file, or
      (killed in the middle of a flush) in some of the files written before ``runs.csv``
      but not in ``runs.csv``: a run is on disk when its ``runs.csv`` row is, and the
      others are orphans, which ``pagerace campaign`` removes when it resumes
      (:func:`pagerace.harness.campaign.repair`). One batch is one ``write`` of whole
      lines per file, so only a kill inside that ``write`` (or a short write) can leave
      a partial last line, which ``repair`` cuts too. Cut inside the ``runs.csv`` write,
      a batch can leave a first part of its runs in ``runs.csv`` while a contention row
      summing some of them names a run of the lost part: ``repair`` drops that row as an
      orphan and, with it, those of its configuration's runs in ``runs.csv`` that no
      remaining contention row covers (they run again), so no run stays without its
      contention.
    - Every run whose rows a flush wrote is on disk (``fsync``) when :meth:`flush`
      returns. Callers report a run to the user (a summary line, a progress count) only
      after the flush that wrote it: ``pagerace hunt`` prints after the writer closed;
      ``on_flush(runs)`` is called after each flush with the number of runs it wrote.

    Args:
        out_dir: the output directory (created on the first flush with rows).
        batch_runs: write the batch when it holds this many runs (1: every run at once).
        batch_seconds: write the batch at the first add this many seconds or more after
            its oldest run was added.
        on_flush: called with the number of runs written, after each flush that wrote any.
        clock: the time source of ``batch_seconds`` (a fake in tests).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        batch_runs: int = BATCH_RUNS,
        batch_seconds: float = BATCH_SECONDS,
        on_flush: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch_runs < 1:
            raise ValueError(f"batch_runs must be at least 1, not {batch_runs}")
        self.out_dir = Path(out_dir)
        self.batch_runs = batch_runs
        self.batch_seconds = batch_seconds
        self.on_flush = on_flush
        self.clock = clock
        self.pending = 0  # runs added since the last flush
        self.written = 0  # runs written by every flush so far
        self.flushes = 0  # flushes that wrote anything
        self._oldest = 0.0
        self._bufs: dict[str, io.StringIO] = {s.file: io.StringIO() for s in WRITE_ORDER}
        self._contention = ContentionSums()  # the batch's contention rows, summed
        # An open hunt chunk (FormattedRows.hold): where its first run's lines start in each
        # buffer and the runs pending before it, and its contention, summed apart and
        # merged into the batch only when the chunk's last run arrives.
        self._mark: tuple[list[int], int] | None = None
        self._chunk = ContentionSums()
        self._upgraded = False

    def add(self, rows: Mapping[str, list[dict[str, Any]]] | FormattedRows) -> None:
        """Buffer one run's rows (keyed by file name, as :func:`rows_for` returns them, or
        already checked and formatted by :func:`format_rows`, maybe in another process);
        write the batch if it is due. Its contention rows are added to the batch's sums
        per configuration and site (:class:`ContentionSums`).

        Raises:
            KeyError: a row has a column its schema does not, or a contention row lacks
                one that names it (nothing of the run buffered).
        """
        f = rows if isinstance(rows, FormattedRows) else format_rows(rows)
        if f.hold and self._mark is None:
            self._mark = ([b.tell() for b in self._bufs.values()], self.pending)
        if not self.pending:
            self._oldest = self.clock()
        for file, lines in f.cells.items():
            self._bufs[file].write(csv_text(lines))
        for file, text in f.text.items():
            self._bufs[file].write(text)
        into = self._contention if self._mark is None else self._chunk
        for row in f.contention:
            into.add(row)
        if f.sums is not None:
            into.merge(f.sums)
        self.pending += 1
        if f.hold:
            return
        if self._mark is not None:  # the chunk's last run: the chunk is whole
            self._contention.merge(self._chunk)
            self._chunk.clear()
            self._mark = None
        if self.pending >= self.batch_runs or self.clock() - self._oldest >= self.batch_seconds:
            self.flush()

    def flush(self) -> int:
        """Write and ``fsync`` the batch (``runs.csv`` last); return the runs it held.

        The batch leaves the writer before the first byte is written: if a write fails
        (disk full), the exception propagates and those rows are dropped, never written
        twice by a later flush."""
        if self._mark is not None:
            raise HarnessInternalError("RowWriter.flush inside an open hunt chunk (FormattedRows.hold)")
        n = self.pending
        if not n:
            return 0
        rows = [format_row(CONTENTION, r) for r in self._contention.rows()]
        self._bufs[CONTENTION.file].write(csv_text(rows))
        self._contention.clear()
        texts = [(s, self._bufs[s.file].getvalue()) for s in WRITE_ORDER]
        for buf in self._bufs.values():
            buf.seek(0)
            buf.truncate()
        self.pending = 0
        if not self._upgraded:
            # a directory written by an older pagerace: its per-run contention.csv is
            # rewritten in the current schema before rows are appended to it
            upgrade_contention(self.out_dir)
            self._upgraded = True
        for s, text in texts:
            if text:
                _append_synced(self.out_dir, s, text)
        self.written += n
        self.flushes += 1
        if self.on_flush is not None:
            self.on_flush(n)
        return n

    def tick(self) -> int:
        """Write the batch if it is due (its oldest run was added ``batch_seconds`` or
        more ago): for a caller between two adds that may be far apart (a campaign of
        long units). Returns the runs written."""
        if self.pending and self._mark is None and self.clock() - self._oldest >= self.batch_seconds:
            return self.flush()
        return 0

    def close(self) -> None:
        """Write what is left, but the runs of a hunt chunk still open (the parent was
        interrupted while it took the chunk's runs): those are dropped, as if not made."""
        if self._mark is not None:
            positions, self.pending = self._mark
            for buf, pos in zip(self._bufs.values(), positions):
                buf.seek(pos)
                buf.truncate()
            self._chunk.clear()
            self._mark = None
        self.flush()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _append_synced(out_dir: Path, schema: CsvSchema, text: str) -> None:
    """Append ``text`` (whole CSV lines) to ``out_dir/schema.file`` with one ``write`` and
    one ``fsync``, the header first when the file is new or empty."""
    path = out_dir / schema.file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size == 0:
            hb = io.StringIO()
            csv.writer(hb, lineterminator="\n").writerow(schema.names)
            text = hb.getvalue() + text
        data = memoryview(text.encode())
        while data:  # one write; more only after a short write (a signal, a full disk)
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def append_all(out_dir: str | os.PathLike[str], rows: dict[str, list[dict[str, Any]]]) -> None:
    """Append one run's rows now: every row is checked against its schema first (an
    unknown column raises before any file is written), then each file gets one ``write``
    and one ``fsync``, ``runs.csv`` last."""
    with RowWriter(out_dir) as w:
        w.add(rows)


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

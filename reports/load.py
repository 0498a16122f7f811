"""A directory of CSV files → pandas DataFrames, checked against :mod:`.schema`.

Every file must have exactly its schema's header and every row its schema's version;
anything else is a :class:`BadCsv` that names the file and what is wrong, so a report
never silently averages columns that mean something else. One older version is read:
a ``contention.csv`` of schema version 1 (one row per run and site, written by pagerace
before the per-configuration rows) becomes rows of ``runs`` 1
(:func:`contention_from_v1`), so last night's directory still serves as a baseline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.machine.errors import BadInput
from .schema import CONTENTION, CONTENTION_V1, FAILURES, OUTCOMES, RUNS, CsvSchema

_DTYPES = {"int": "int64", "float": "float64", "str": "string", "bool": "string"}


class BadCsv(BadInput):
    """A CSV file that is not what its schema says (header, version, values)."""


@dataclass
class Dataset:
    """The four tables of one output directory (empty frames with the schema's columns
    for files that do not exist)."""

    path: Path
    runs: pd.DataFrame
    failures: pd.DataFrame
    contention: pd.DataFrame
    outcomes: pd.DataFrame

    @property
    def empty(self) -> bool:
        return self.runs.empty


def empty_frame(schema: CsvSchema) -> pd.DataFrame:
    return pd.DataFrame({c.name: pd.Series(dtype=_DTYPES[c.dtype]) for c in schema.columns})


def read_csv(path: str | os.PathLike[str], schema: CsvSchema) -> pd.DataFrame:
    """One CSV file, its header and schema version checked, typed by the schema.

    Raises:
        BadCsv: unreadable file, a header other than the schema's, rows of another
            schema version, or a value that does not fit its column's type.
    """
    p = Path(path)
    try:
        with p.open(newline="") as fh:
            header = fh.readline().rstrip("\r\n").split(",")
    except OSError as e:
        raise BadCsv(f"{p}: cannot read it ({e.strerror})") from None
    except UnicodeDecodeError:
        raise BadCsv(f"{p}: not a text file; expected the {schema.file} CSV") from None
    if header != schema.names:
        missing = [c for c in schema.names if c not in header]
        extra = [c for c in header if c not in schema.names]
        what = (
            f"missing column(s) {', '.join(missing)}"
            if missing
            else f"unknown column(s) {', '.join(extra)}"
            if extra
            else "columns in another order"
        )
        raise BadCsv(
            f"{p}: header does not match {schema.file} schema version {schema.version} ({what}); "
            f"is this a pagerace {schema.file}? (see docs/csv-schemas.md)"
        )
    str_cols = {c.name: "string" for c in schema.columns if c.dtype in ("str", "bool")}
    try:
        df = pd.read_csv(p, dtype=str_cols, keep_default_na=False, na_values={})
    except (ValueError, pd.errors.ParserError) as e:
        raise BadCsv(f"{p}: not a valid {schema.file} ({' '.join(str(e).split())})") from None
    if len(df):
        versions = sorted(set(pd.to_numeric(df["schema"], errors="coerce").fillna(-1).astype(int)))
        if versions != [schema.version]:
            raise BadCsv(
                f"{p}: rows of schema version(s) {', '.join(map(str, versions))}; this pagerace reads "
                f"version {schema.version} only (rerun the campaign or use the pagerace that wrote it)"
            )
    for c in schema.columns:
        if c.dtype in ("int", "float"):
            col = pd.to_numeric(df[c.name], errors="coerce")
            bad = col.isna() & (df[c.name].astype(str) != "")
            if bad.any():
                i = int(bad.idxmax())
                raise BadCsv(f"{p}: row {i + 2}, column {c.name!r}: {df[c.name].iloc[i]!r} is not a number")
            df[c.name] = col.fillna(0).astype(_DTYPES[c.dtype])
    return df


def _is_v1_contention(path: Path, schema: CsvSchema) -> bool:
    if schema is not CONTENTION:
        return False
    try:
        with path.open(newline="") as fh:
            return fh.readline().rstrip("\r\n").split(",") == CONTENTION_V1.names
    except (OSError, UnicodeDecodeError):
        return False  # read_csv says what is wrong


def contention_from_v1(old: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Version-1 contention rows (one per run and site) as current rows of ``runs`` 1,
    each with its run's ``strategy`` from ``runs`` (empty for a run not there)."""
    strategy = dict(zip(runs["run_id"], runs["strategy"]))
    out = old.assign(
        schema=CONTENTION.version,
        runs=1,
        strategy=old["run_id"].map(strategy).fillna("").astype("string"),
    )
    return out[CONTENTION.names].astype({"runs": "int64", "schema": "int64"})


def load_dir(path: str | os.PathLike[str]) -> Dataset:
    """Load ``runs.csv`` (required) and the other three files (optional) of ``path``.

    Raises:
        BadCsv: no such directory, no ``runs.csv``, or a file that fails :func:`read_csv`.
    """
    p = Path(path)
    if not p.is_dir():
        raise BadCsv(f"{p}: no such directory; expected a pagerace output directory (with runs.csv)")
    if not (p / RUNS.file).exists():
        raise BadCsv(
            f"{p}: no {RUNS.file} here; expected the --out directory of 'pagerace run' or 'pagerace campaign'"
        )
    frames = {}
    for s in (RUNS, FAILURES, CONTENTION, OUTCOMES):
        f = p / s.file
        if not f.exists():
            frames[s.file] = empty_frame(s)
        elif _is_v1_contention(f, s):
            # a night written by an older pagerace (one row per run and site)
            frames[s.file] = contention_from_v1(read_csv(f, CONTENTION_V1), frames[RUNS.file])
        else:
            frames[s.file] = read_csv(f, s)
    # Rows whose run is not in runs.csv (a crash between two appends; a runs.csv cut back
    # to its header) belong to no run: campaign.repair() drops them on resume, and the
    # report does not count them either (issue 10 item 10).
    have = set(frames[RUNS.file]["run_id"])
    for s in (FAILURES, CONTENTION, OUTCOMES):
        df = frames[s.file]
        frames[s.file] = df[df["run_id"].isin(have)].reset_index(drop=True)
    return Dataset(
        p,
        runs=frames[RUNS.file],
        failures=frames[FAILURES.file],
        contention=frames[CONTENTION.file],
        outcomes=frames[OUTCOMES.file],
    )

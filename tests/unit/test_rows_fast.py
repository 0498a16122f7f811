"""A run's rows made directly (``output.format_run``, the hunt's path) against the
general path (``format_rows(rows_for(...))``, every other writer): the same bytes in every
file, over many runs, and on the values the direct path does not write itself."""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pagerace.harness import hunt as hunt_mod
from pagerace.harness import output
from pagerace.harness.hunt import Budget, Turn, hunt, mix_turn
from pagerace.harness.output import (
    ContentionSums,
    FormattedRows,
    csv_text,
    format_rows,
    format_run,
    params_json,
    rows_for,
)
from pagerace.harness.runner import RunRecord, run_deterministic
from pagerace.reports.schema import CONTENTION, OUTCOMES, RUNS, Column, CsvSchema
from pagerace.workloads import load_workload


def _writer_text(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _general(rec: RunRecord, rid: str, art: str = "", campaign: str = "",
             sums: ContentionSums | None = None) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The general path's lines per file (the csv module's) and contention rows."""
    f = format_rows(rows_for(rec, rid, art, campaign, sums=sums))
    return {file: _writer_text(cells) for file, cells in f.cells.items() if cells}, f.contention


def _direct(rec: RunRecord, rid: str, art: str = "", campaign: str = "",
            sums: ContentionSums | None = None) -> tuple[dict[str, str], list[dict[str, Any]]]:
    f = format_run(rec, rid, art, campaign, sums=sums)
    text = {file: _writer_text(cells) for file, cells in f.cells.items() if cells}
    text.update({file: t for file, t in f.text.items() if t})
    return text, f.contention


def _same(rec: RunRecord, rid: str = "r-1", art: str = "", campaign: str = "") -> dict[str, str]:
    """The direct path writes what the general one does, with and without a chunk's sums;
    returns the general path's lines."""
    want, want_cont = _general(rec, rid, art, campaign)
    got, got_cont = _direct(rec, rid, art, campaign)
    assert got == want
    assert got_cont == want_cont
    s1, s2 = ContentionSums(), ContentionSums()
    want, _ = _general(rec, rid, art, campaign, sums=s1)
    got, _ = _direct(rec, rid, art, campaign, sums=s2)
    assert got == want
    assert s2.rows() == s1.rows()
    return want


# (workload, variant): toys of every kind of attempt (migration to and from a device,
# faults, eviction, compaction, fork), on each protocol generation
CASES = [
    ("opposite-order", "v5.0"), ("opposite-order", "v6"), ("default", "hmm-2017"),
    ("default", "v7"), ("fault-storm", "v6"), ("compaction", "v6"), ("evict-vs-fault", "v6"),
    ("fork-vs-migrate", "v6"),
]
STRATEGIES = [
    Turn("random"), Turn("pct", depth=3), Turn("pct", depth=1), Turn("rr", quantum=1),
    Turn("rr", quantum=4), Turn("sticky", quantum=3), Turn("pos"), Turn("urw"), Turn("surw"),
]


@pytest.mark.parametrize("name,variant", CASES)
def test_direct_rows_are_the_general_rows_over_many_runs(name: str, variant: str) -> None:
    w = load_workload(name)
    clean = 0
    for i, turn in enumerate(STRATEGIES):
        counts: list[int] = []
        for seed in range(2):
            rec = run_deterministic(w, variant=variant, seed=100 * i + seed, strategy=turn.strategy,
                                    pct_depth=turn.depth, quantum=turn.quantum, counts=counts)
            observed = rec.result.scheduler.get("observed")
            counts = list(observed) if isinstance(observed, list) else []
            _same(rec, f"{name}-{seed}", "", "")
            _same(rec, f"{name}-{seed}", "artifacts/x.json", "camp-7")
            clean += rec.result.failure is None
    assert clean  # the direct path itself ran (a failed run goes the general way)


def test_direct_rows_of_replays_and_parallel_runs() -> None:
    """A replay's record (its params hold booleans) and the parallel engine's (time in us)."""
    w = load_workload("opposite-order")
    rec = run_deterministic(w, variant="v5.0", seed=5)
    again = run_deterministic(w, variant="v5.0", seed=5, schedule=list(rec.result.schedule))
    assert again.result.scheduler["strict"] is True
    _same(again)
    from pagerace.harness.parallel import run_parallel

    par = run_parallel(load_workload("default"), variant="v6", seed=1, workers=2, ops=2)
    assert par.engine == "parallel" and par.result.failure is None
    lines = _same(par)
    assert ",parallel," in lines[RUNS.file]


@pytest.fixture(scope="module")
def clean() -> RunRecord:
    rec = run_deterministic(load_workload("opposite-order"), variant="v5.0", seed=4)
    assert rec.result.failure is None and rec.kernel.outcomes
    return rec


def _odd(rec: RunRecord, what: str) -> RunRecord:
    """``rec`` with one value the direct path does not write itself."""
    r = rec.result
    w = rec.workload
    if what == "name-comma-quote":
        return replace(rec, workload=replace(w, name='opp,"site"'))
    if what == "variant-newline":
        return replace(rec, variant="v5.0\nx")
    if what == "bugs-cr":
        return replace(rec, bugs=("a\rb",))
    if what == "steps-bool":
        return replace(rec, result=replace(r, steps=True))
    if what == "steps-numpy":
        return replace(rec, result=replace(r, steps=np.int64(r.steps)))
    if what == "seed-numpy":
        return replace(rec, seed=np.int64(rec.seed))
    if what == "seed-bool":
        return replace(rec, seed=False)
    if what == "elapsed-numpy":
        return replace(rec, result=replace(r, elapsed=np.float64(0.25)), wall=np.float32(1.5))
    if what == "fingerprint-comma":
        return replace(rec, result=replace(r, fingerprint="ab,cd"))
    if what == "strategy-quote":
        return replace(rec, strategy='r"r')
    if what.startswith("params-"):
        table: dict[str, dict[Any, Any]] = {
            "params-nan": {"guarantee": float("nan")},
            "params-inf": {"guarantee": float("-inf")},
            "params-numpy": {"k": np.int64(7), "g": np.float64(0.5)},
            "params-text": {"note": 'é "q"\n,'},
            "params-tuple": {"t": (1, 2)},
            "params-nested": {"d": {"y": 1, "x": [1, 2]}},
            "params-int-key": {1: 2},
            "params-bool-list": {"observed": [1, True, 3]},
            "params-none-bool": {"a": None, "b": True, "c": False, "e": [], "f": 1.5e300},
            "params-empty": {},
        }
        extra = table[what]
        alone = what in ("params-empty", "params-int-key")  # no str key beside (unsortable)
        sched = extra if alone else {**r.scheduler, **extra}
        return replace(rec, result=replace(r, scheduler=sched), options={} if alone else rec.options)
    k = rec.kernel

    class _K:  # the kernel's outcomes and statistics, changed
        def __init__(self) -> None:
            self.stats = k.stats
            self.outcomes: dict[tuple[Any, str], Any] = dict(k.outcomes)

    kern = _K()

    if what == "attempt-comma":
        kern.outcomes[("to,dev", "migrated")] = 2
    elif what == "attempt-int":
        kern.outcomes = {(7, "migrated"): 1}
    elif what == "reasons":
        kern.outcomes.update({("fault", "hole_collected"): 3, ("fault", "migrated_hole"): 1,
                            ("fault", "never_heard_of"): 4, ("fault", "collected"): 5,
                            ("evict", "hole_collected"): 1, ("fault", "restored"): 2})
    elif what == "count-numpy":
        kern.outcomes = {key: np.int32(n) for key, n in k.outcomes.items()}
    else:  # pragma: no cover
        raise AssertionError(what)
    return replace(rec, kernel=kern)


ODD = [
    "name-comma-quote", "variant-newline", "bugs-cr", "steps-bool", "steps-numpy", "seed-numpy",
    "seed-bool", "elapsed-numpy", "fingerprint-comma", "strategy-quote", "params-nan", "params-inf",
    "params-numpy", "params-text", "params-tuple", "params-nested", "params-int-key",
    "params-bool-list", "params-none-bool", "params-empty", "attempt-comma", "attempt-int",
    "reasons", "count-numpy",
]


@pytest.mark.parametrize("what", ODD)
def test_direct_rows_on_values_it_does_not_write_itself(clean: RunRecord, what: str) -> None:
    """Each of these values is written differently from what joining the direct path's
    cells would give (a quoted cell, ``yes`` for a bool, the encoder's words for NaN...):
    the direct path must notice it and write what the general path writes."""
    _same(_odd(clean, what))


@pytest.mark.parametrize("rid,campaign,art", [("r,1", "", ""), ("r\n1", "", ""), ("r", 'c"1', ""),
                                              ("r", "", "a,b"), ("r", "", "a\rb")])
def test_direct_rows_of_ids_the_writer_quotes(clean: RunRecord, rid: str, campaign: str, art: str) -> None:
    """(The csv writer quotes a comma, a quote and LF, not CR with lineterminator LF.)"""
    _same(clean, rid, art, campaign)


def test_unsortable_params_fail_alike(clean: RunRecord) -> None:
    rec = replace(clean, result=replace(clean.result, scheduler={1: 2, "a": 1}))
    with pytest.raises(TypeError):
        rows_for(rec, "r", "")
    with pytest.raises(TypeError):
        format_run(rec, "r", "", sums=ContentionSums())


def test_the_odd_values_are_ones_a_plain_join_gets_wrong(clean: RunRecord) -> None:
    """The cases above discriminate: a few of them, written as the direct path writes a
    plain run (its cells joined), differ from the general path's bytes."""
    def plain(rec: RunRecord) -> str:
        r = rec.result
        return ",".join(str(c) for c in (rec.workload.name, rec.variant, rec.seed, r.steps))
    for what, general in [("steps-bool", ",yes,"), ("name-comma-quote", '"opp,""site"""'),
                          ("seed-bool", ",no,"), ("variant-newline", '"v5.0\nx"')]:
        rec = _odd(clean, what)
        text = _general(rec, "r")[0][RUNS.file]
        assert general in text and general not in plain(rec), what
    nan = _general(_odd(clean, "params-nan"), "r")[0][RUNS.file]
    assert "NaN" in nan and "nan" not in nan


@pytest.mark.parametrize("fault", ["runs-extra", "runs-order", "outcomes-order", "outcomes-extra"])
def test_the_direct_path_checks_the_schemas(clean: RunRecord, fault: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A schema other than the one the direct path writes turns it off (checked once, at
    import: output._FAST), but a reason column more, which it takes from the schema as
    outcome_columns does; with the check dropped (the layout kept for the old schema),
    the lines differ from the general path's, so the check is what keeps them equal."""
    runs, outcomes = RUNS, OUTCOMES
    if fault == "runs-extra":
        runs = CsvSchema(RUNS.file, RUNS.doc, (*RUNS.columns, Column("new", "int", "", "a new column")))
    elif fault == "runs-order":
        cols = list(RUNS.columns)
        cols[10], cols[11] = cols[11], cols[10]
        runs = CsvSchema(RUNS.file, RUNS.doc, tuple(cols))
    elif fault == "outcomes-order":
        cols = list(OUTCOMES.columns)
        cols[5], cols[6] = cols[6], cols[5]
        outcomes = CsvSchema(OUTCOMES.file, OUTCOMES.doc, tuple(cols))
    else:
        outcomes = CsvSchema(OUTCOMES.file, OUTCOMES.doc, (*OUTCOMES.columns[:-1],
                                                           Column("zapped", "int", "pages", ""),
                                                           OUTCOMES.columns[-1]))
        monkeypatch.setattr(output, "OUTCOME_REASONS", [c.name for c in outcomes.columns[8:]])
    assert output._FAST is not None
    assert (output._fast_layout(runs, outcomes) is None) == (fault != "outcomes-extra")
    monkeypatch.setattr(output, "SCHEMAS", {**output.SCHEMAS, RUNS.file: runs, OUTCOMES.file: outcomes})
    monkeypatch.setattr(output, "RUNS", runs)
    monkeypatch.setattr(output, "OUTCOMES", outcomes)
    want, _ = _general(clean, "r")
    stale, _ = _direct(clean, "r")  # the fault: the layout of the schema it was made for
    assert stale != want
    monkeypatch.setattr(output, "_FAST", output._fast_layout(runs, outcomes))
    got, _ = _direct(clean, "r")
    assert got == want


def test_csv_text_is_what_the_csv_writer_writes() -> None:
    rng = random.Random(13)
    alphabet = ["a", "b", " ", ",", '"', "\n", "\r", "é", "", "x y", "0.5"]
    rows: list[list[Any]] = [[""], [], ["", ""], [" "], ['"'], [1, "a"], [None, 2.5, "b,c"]]
    for _ in range(3000):
        rows.append(["".join(rng.choice(alphabet) for _ in range(rng.randrange(4)))
                     for _ in range(rng.randrange(1, 6))])
    assert csv_text(rows) == _writer_text(rows)
    for row in rows:
        assert csv_text([row]) == _writer_text([row]), row
    assert csv_text([]) == ""


def test_params_json_is_json_dumps() -> None:
    cases: list[dict[Any, Any]] = [
        {}, {"strategy": "rr", "quantum": 4, "pct_depth": 3},
        {"strategy": "pct", "k": 200, "depth": 3, "actors": 3, "guarantee": 0.0016666666666666668},
        {"observed": [3, 0, 12], "counts": []}, {"strict": True, "diverged": False, "x": None},
        {"z": float("inf"), "y": float("nan")}, {"s": "é\u2028\x00\"\\"}, {"b": 1, "a": 2, "B": 3},
        {"n": np.int64(3)}, {"l": [1, 2.5]}, {"t": (1,)}, {2: "x", 1: "y"}, {"d": {"b": 1, "a": 0}},
        {"big": 1 << 70, "neg": -5, "f": -0.0, "e": 1e-7}, {"o": object}, {"l": [True]},
    ]
    for d in cases:
        assert params_json(d) == json.dumps(d, sort_keys=True, default=str), d
    with pytest.raises(TypeError):  # the keys json.dumps cannot sort, refused alike
        json.dumps({1: 0, "a": 0}, sort_keys=True, default=str)
    with pytest.raises(TypeError):
        params_json({1: 0, "a": 0})


def _rows_of(recs: list[RunRecord]) -> list[dict[str, Any]]:
    rows = []
    for i, rec in enumerate(recs):
        rows += rows_for(rec, f"r{i}", "")[CONTENTION.file]
    return rows


def test_merging_sums_is_adding_their_rows() -> None:
    """ContentionSums.merge (a chunk's sums into the writer's batch) gives what adding
    the chunk's rows did, including a configuration whose runs reached no site (its last
    run stays the one of the rows before); copy() shares nothing."""
    w = load_workload("opposite-order")
    recs = [run_deterministic(w, variant="v5.0", seed=s, strategy=mix_turn(s).strategy,
                              quantum=mix_turn(s).quantum) for s in range(8)]
    chunks = [ContentionSums() for _ in range(3)]
    for i, rec in enumerate(recs):
        config = (w.name, "v5.0", "", "deterministic", rec.strategy, "steps")
        chunks[i * 3 // len(recs)].add_stats(config, f"r{i}", rec.kernel.stats)
    chunks[2].add_stats((w.name, "v5.0", "", "deterministic", "rr", "steps"), "nowhere", {})
    by_rows, by_merge = ContentionSums(), ContentionSums()
    for c in chunks:
        for row in c.copy().rows():
            by_rows.add(row)
        by_merge.merge(c.copy())
    assert by_merge.rows() == by_rows.rows()
    named = {r["run_id"] for r in by_rows.rows()}
    assert "r7" in named and "nowhere" not in named
    snapshot = chunks[0].rows()
    copy = chunks[0].copy()
    copy.merge(chunks[1])
    assert chunks[0].rows() == snapshot and copy.rows() != snapshot


def _files(d: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(d.glob("*.csv"))}


@pytest.mark.parametrize("strategy", ["mix", "random", "pct", "urw", "surw"])
def test_a_hunt_in_one_process_writes_the_general_paths_files(
    strategy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hunt(jobs=1): the rows of each clean run (on_clean, made by format_run) against
    the same record's rows_for (on_run) through another writer: the same files."""
    monkeypatch.setattr(hunt_mod, "run_id", lambda rec: f"{rec.seed}-{rec.strategy}")
    with output.RowWriter(tmp_path / "direct", batch_runs=7) as direct, \
            output.RowWriter(tmp_path / "general", batch_runs=7) as general:
        res = hunt(load_workload("opposite-order"), variant="v5.0", budget=Budget(runs=24),
                   strategy=strategy, shrink=False,
                   on_run=lambda rec: general.add(rows_for(rec, f"{rec.seed}-{rec.strategy}", "")),
                   on_clean=lambda d: direct.add(d.rows) if d.rows is not None else None)
    assert res.found is None and res.runs == 24
    files = _files(tmp_path / "general")
    assert set(files) == {"runs.csv", "outcomes.csv", "contention.csv"}
    assert _files(tmp_path / "direct") == files


def test_a_hunt_workers_chunks_write_the_general_paths_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hunt worker's chunks (_run_chunk: format_run, chunk_rows, the writer merging
    their sums) against the general rows of the very runs they made (captured here)."""
    made: list[RunRecord] = []
    real = hunt_mod._run

    def capture(*a: Any, **k: Any) -> RunRecord:
        rec = real(*a, **k)
        made.append(rec)
        return rec

    monkeypatch.setattr(hunt_mod, "_run", capture)
    monkeypatch.setattr(hunt_mod, "run_id", lambda rec: f"{rec.seed}-{rec.strategy}")
    w = load_workload("opposite-order")
    monkeypatch.setattr(hunt_mod, "_SETTINGS", hunt_mod._Settings(w, "v5.0", (), 300, True))
    taken: list[FormattedRows] = []
    start = 0
    for n in (16, 5, 1, 16, 9):  # chunks of several sizes, as the pooled loop hands out
        turns = tuple(mix_turn(i) if i % 7 else Turn("pct") for i in range(start, start + n))
        done = hunt_mod._run_chunk((start, 1000 + start, turns))
        assert [d.index for d in done] == list(range(start, start + n))
        assert not any(d.failed for d in done)
        taken += [d.rows for d in done if d.rows is not None]
        start += n
    with output.RowWriter(tmp_path / "direct", batch_runs=1000) as direct:
        for f in taken:
            direct.add(f)
    with output.RowWriter(tmp_path / "general", batch_runs=1000) as general:
        for rec in made:
            general.add(rows_for(rec, f"{rec.seed}-{rec.strategy}", ""))
    assert len(made) == start
    assert _files(tmp_path / "direct") == _files(tmp_path / "general")


def test_a_chunk_left_open_drops_its_sums(clean: RunRecord, tmp_path: Path) -> None:
    """The writer closed inside a chunk (Ctrl-C while the parent takes it): the chunk's
    lines and its summed contention are dropped whole, as its rows were before."""
    sums = ContentionSums()
    chunk = output.chunk_rows([format_run(clean, f"c{i}", "", sums=sums) for i in range(3)], sums)
    assert chunk[0].sums is not None and not chunk[0].contention
    with pytest.raises(KeyboardInterrupt), output.RowWriter(tmp_path, batch_runs=100) as w:
        w.add(rows_for(clean, "before", ""))
        w.add(chunk[0])
        w.add(chunk[1])
        raise KeyboardInterrupt
    for name in ("runs.csv", "contention.csv", "outcomes.csv"):
        with (tmp_path / name).open() as fh:
            assert {r["run_id"] for r in csv.DictReader(fh)} == {"before"}, name
    with (tmp_path / "contention.csv").open() as fh:
        assert {r["runs"] for r in csv.DictReader(fh)} == {"1"}

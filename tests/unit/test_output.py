"""A run's CSV rows and files: the outcome mapping, contention rows, write_run."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from pagerace.core.machine.kernel import STAT_FIELDS, _new_stat
from pagerace.harness import output
from pagerace.harness.output import (
    append_all,
    contention_row,
    outcome_columns,
    rows_for,
    run_id,
    write_run,
)
from pagerace.harness.runner import RunRecord, run_deterministic
from pagerace.reports.schema import OUTCOME_REASONS, SCHEMAS, format_row
from pagerace.workloads import load_workload


@pytest.fixture(scope="module")
def clean() -> RunRecord:
    return run_deterministic(load_workload("default"), seed=3)


@pytest.fixture(scope="module")
def failed() -> RunRecord:
    return run_deterministic(load_workload("fault-storm"), seed=1, bugs=["no-fault-folio-exception"])


def test_outcome_mapping() -> None:
    cols = outcome_columns(
        {
            ("fault", "migrated"): 3,
            ("fault", "migrated_hole"): 1,
            ("fault", "hole_collected"): 2,
            ("fault", "pinned"): 2,
            ("fault", "restored"): 2,
            ("fault", "no_destination"): 1,
            ("fault", "some_new_reason"): 4,
            ("evict", "lock_contended"): 5,
        }
    )
    assert list(cols) == ["evict", "fault"]
    f = cols["fault"]
    assert set(f) == set(OUTCOME_REASONS)
    assert f["migrated"] == 4  # migrated + migrated_hole
    assert f["pinned"] == 2 and f["restored"] == 2
    assert f["other"] == 5  # no_destination + the unknown reason
    assert f["collected"] == 4 + 2 + 5  # restored and hole_collected are not ends
    assert cols["evict"]["collected"] == cols["evict"]["lock_contended"] == 5


def test_outcome_rows_of_a_real_run(clean: RunRecord) -> None:
    rows = rows_for(clean, "r", "")["outcomes.csv"]
    assert rows, "the default workload migrates"
    for row in rows:
        ends = sum(row[c] for c in OUTCOME_REASONS if c not in ("collected", "restored"))
        assert row["collected"] == ends
    assert sum(r["migrated"] for r in rows) == sum(
        n for (_, why), n in clean.kernel.outcomes.items() if why in ("migrated", "migrated_hole")
    )


def test_contention_row_fields() -> None:
    st = _new_stat()
    row = contention_row("f:lock", st)
    assert row["wait_min"] == 0 and row["hold_min"] == 0  # no wait: 0, not the sentinel
    assert row["runs"] == 1
    st[0:6] = [4, 1, 2, 1, 2, 10]  # acquired, contended, try, try_fail, waits, wait_total
    st[6], st[7] = 3, 7
    row = contention_row("f:lock", st)
    assert row["waits"] == 2 and row["wait_total"] == 10 and row["wait_min"] == 3 and row["wait_max"] == 7


def test_rows_fit_their_schemas(clean: RunRecord, failed: RunRecord) -> None:
    for rec, rel in ((clean, ""), (failed, "artifacts/x.json")):
        rows = rows_for(rec, "rid", rel, campaign="nightly")
        assert set(rows) == set(SCHEMAS)
        for file, lst in rows.items():
            for row in lst:
                format_row(SCHEMAS[file], row)  # raises on an unknown column
        (run,) = rows["runs.csv"]
        assert run["campaign"] == "nightly" and run["artifact"] == rel
        assert run["actors"] == len(rec.actors) and run["ops"] > 0
        assert json.loads(run["strategy_params"])["strategy"] == "random"
        assert len(rows["failures.csv"]) == (1 if rec.result.failure else 0)
        sites = [r["site"] for r in rows["contention.csv"]]
        assert sites == sorted(set(sites)) == sorted(rec.kernel.stats)


def test_run_id_is_readable_and_unique(clean: RunRecord) -> None:
    a, b = run_id(clean), run_id(clean)
    assert a != b
    assert a.startswith("default-v6-s3-random-deterministic-")


def test_write_run_clean(clean: RunRecord, tmp_path: Path) -> None:
    w = write_run(tmp_path, clean)
    assert w.artifact_path is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contention.csv", "outcomes.csv", "runs.csv"]
    with (tmp_path / "runs.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["run_id"] == w.run_id and row["outcome"] == "clean"


def test_write_run_failed(failed: RunRecord, tmp_path: Path) -> None:
    w = write_run(tmp_path, failed, campaign="c1")
    assert w.artifact_path == tmp_path / "artifacts" / f"{w.run_id}.json"
    assert w.artifact_path.exists()
    with (tmp_path / "failures.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["artifact"] == f"artifacts/{w.run_id}.json"
    assert row["reproduced"] == "" and row["shrunk_steps"] == "-1"


def test_append_all_validates_every_file_before_writing(clean: RunRecord, tmp_path: Path) -> None:
    rows = rows_for(clean, "rid", "")
    rows["outcomes.csv"] = [{**rows["outcomes.csv"][0], "no_such_column": 1}]
    with pytest.raises(KeyError, match="no_such_column"):
        append_all(tmp_path, rows)
    assert list(tmp_path.iterdir()) == []


def test_artifact_before_rows(failed: RunRecord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the artifact cannot be written, no row points at a missing file."""

    def no_artifact(*a: object, **k: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output, "write_artifact", no_artifact)
    with pytest.raises(OSError):
        write_run(tmp_path, failed)
    assert list(tmp_path.glob("*.csv")) == []


# --------------------------------------------------------------------------------------
# RowWriter: batches, one fsync per file per batch, runs.csv last, what a crash costs.


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _runs_in(path: Path) -> list[str]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [r["run_id"] for r in csv.DictReader(f)]


def test_row_writer_writes_nothing_until_the_batch_is_full(clean: RunRecord, tmp_path: Path) -> None:
    w = output.RowWriter(tmp_path, batch_runs=3, clock=FakeClock())
    w.add(rows_for(clean, "r0", ""))
    w.add(rows_for(clean, "r1", ""))
    assert list(tmp_path.iterdir()) == [] and w.pending == 2
    w.add(rows_for(clean, "r2", ""))
    assert w.pending == 0 and w.written == 3 and w.flushes == 1
    assert _runs_in(tmp_path / "runs.csv") == ["r0", "r1", "r2"]
    # one contention row per call site for the batch, named by its last run
    assert set(_runs_in(tmp_path / "contention.csv")) == {"r2"}
    w.add(rows_for(clean, "r3", ""))
    w.close()
    assert _runs_in(tmp_path / "runs.csv") == ["r0", "r1", "r2", "r3"]  # one header, four rows
    assert w.flushes == 2


def test_row_writer_flushes_a_batch_that_got_old(clean: RunRecord, tmp_path: Path) -> None:
    clock = FakeClock()
    w = output.RowWriter(tmp_path, batch_runs=1000, batch_seconds=1.0, clock=clock)
    w.add(rows_for(clean, "r0", ""))
    clock.t = 0.9
    w.add(rows_for(clean, "r1", ""))
    assert w.pending == 2 and not (tmp_path / "runs.csv").exists()
    clock.t = 1.0  # the oldest run in the batch was added 1 s ago
    w.add(rows_for(clean, "r2", ""))
    assert w.pending == 0 and _runs_in(tmp_path / "runs.csv") == ["r0", "r1", "r2"]
    clock.t = 5.0  # the clock starts again at the next batch's first run
    w.add(rows_for(clean, "r3", ""))
    assert w.pending == 1


def test_row_writer_one_fsync_per_file_per_batch_runs_last(
    clean: RunRecord, failed: RunRecord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = output.os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(Path(f"/proc/self/fd/{fd}").resolve().name)
        real_fsync(fd)

    monkeypatch.setattr(output.os, "fsync", recording_fsync)
    with output.RowWriter(tmp_path, batch_runs=50) as w:
        for i in range(40):
            w.add(rows_for(clean, f"c{i}", ""))
        w.add(rows_for(failed, "f0", "artifacts/f0.json"))
    # 41 runs, 1 batch: each file written and synced once, runs.csv last
    assert synced == ["failures.csv", "contention.csv", "outcomes.csv", "runs.csv"]


def test_row_writer_bad_row_buffers_nothing_of_its_run(clean: RunRecord, tmp_path: Path) -> None:
    with output.RowWriter(tmp_path) as w:
        w.add(rows_for(clean, "good", ""))
        bad = rows_for(clean, "bad", "")
        bad["outcomes.csv"] = [{**bad["outcomes.csv"][0], "no_such_column": 1}]
        with pytest.raises(KeyError, match="no_such_column"):
            w.add(bad)
        assert w.pending == 1
    for name in ("runs.csv", "contention.csv", "outcomes.csv"):
        with (tmp_path / name).open(newline="") as f:
            assert {r["run_id"] for r in csv.DictReader(f)} == {"good"}, name


def test_row_writer_flushes_when_the_block_raises(clean: RunRecord, tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), output.RowWriter(tmp_path) as w:
        w.add(rows_for(clean, "r0", ""))
        w.add(rows_for(clean, "r1", ""))
        raise KeyboardInterrupt
    assert _runs_in(tmp_path / "runs.csv") == ["r0", "r1"]


def test_row_writer_never_writes_a_failed_batch_twice(
    clean: RunRecord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush that fails half way (disk full) leaves orphans in the files written before
    (never in runs.csv), and a later flush does not write that batch again."""
    real = output._append_synced
    calls = {"n": 0}

    def full_once(out_dir: Path, schema: object, text: str) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the first batch's outcomes.csv, after contention.csv
            raise OSError(28, "No space left on device")
        real(out_dir, schema, text)  # type: ignore[arg-type]

    monkeypatch.setattr(output, "_append_synced", full_once)
    w = output.RowWriter(tmp_path, batch_runs=2)
    w.add(rows_for(clean, "lost0", ""))
    with pytest.raises(OSError):
        w.add(rows_for(clean, "lost1", ""))
    w.add(rows_for(clean, "kept", ""))
    w.close()
    assert _runs_in(tmp_path / "runs.csv") == ["kept"]
    assert set(_runs_in(tmp_path / "outcomes.csv")) == {"kept"}
    per_run = len(rows_for(clean, "x", "")["contention.csv"])
    # the lost batch's contention rows (summed, named by lost1) are orphans, once
    assert sorted(_runs_in(tmp_path / "contention.csv")) == sorted(["lost1"] * per_run + ["kept"] * per_run)


def test_batched_rows_are_the_rows_written_one_by_one(
    clean: RunRecord, failed: RunRecord, tmp_path: Path
) -> None:
    """Every file but contention.csv byte for byte; contention.csv's batch rows are the
    sums of the rows written one run at a time."""
    one, many = tmp_path / "one", tmp_path / "many"
    runs = [(clean, "a", ""), (failed, "b", "artifacts/b.json"), (clean, "c", "")]
    for rec, rid, rel in runs:
        append_all(one, rows_for(rec, rid, rel))
    with output.RowWriter(many) as w:
        for rec, rid, rel in runs:
            w.add(rows_for(rec, rid, rel))
    for name in SCHEMAS:
        if name != "contention.csv":
            assert (one / name).read_bytes() == (many / name).read_bytes(), name
    singles = _read(one / "contention.csv")
    sums = _read(many / "contention.csv")
    assert len(singles) > len(sums) == len({_key(r) for r in singles})
    for s in sums:
        part = [r for r in singles if _key(r) == _key(s)]
        assert int(s["runs"]) == len(part) == sum(int(r["runs"]) for r in part)
        for col in ("acquired", "contended", "trylock_attempts", "trylock_failures", "waits",
                    "wait_total", "holds", "hold_total"):
            assert int(s[col]) == sum(int(r[col]) for r in part), col
        assert int(s["wait_max"]) == max(int(r["wait_max"]) for r in part)
        waited = [int(r["wait_min"]) for r in part if int(r["waits"])]
        assert int(s["wait_min"]) == (min(waited) if waited else 0)
        held = [int(r["hold_min"]) for r in part if int(r["holds"])]
        assert int(s["hold_min"]) == (min(held) if held else 0)
        # every row is named by the last run of its configuration in the batch
        assert s["run_id"] == ("b" if s["workload"] == "fault-storm" else "c")


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _key(r: dict[str, str]) -> tuple[str, ...]:
    return tuple(r[k] for k in output.CONTENTION_KEY)


KILLED_WRITER = """
import os, signal, sys
from pagerace.harness.output import RowWriter, rows_for
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload

rec = run_deterministic(load_workload("default"), seed=3)
w = RowWriter(sys.argv[1], batch_runs=4, batch_seconds=1e9)
for i in range(10):
    w.add(rows_for(rec, f"r{i}", ""))
    print(f"added r{i}, on disk {w.written}", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_loses_exactly_the_batch_in_flight(tmp_path: Path) -> None:
    """Killed after 10 runs with batches of 4: the 8 runs of the two written batches are
    on disk with all their rows and nothing else; the 2 in flight are lost."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.splitlines()[-1] == "added r9, on disk 8"
    on_disk = [f"r{i}" for i in range(8)]
    assert _runs_in(out / "runs.csv") == on_disk
    for name in ("contention.csv", "outcomes.csv"):
        text = (out / name).read_text()
        assert text.endswith("\n")
    with (out / "outcomes.csv").open(newline="") as f:
        assert sorted({r["run_id"] for r in csv.DictReader(f)}) == on_disk
    # contention: each written batch's sums, named by its last run, 4 runs each
    cont = _read(out / "contention.csv")
    assert sorted({r["run_id"] for r in cont}) == ["r3", "r7"]
    assert {int(r["runs"]) for r in cont} == {4}


def test_cli_hunt_writes_every_run_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through the batched writer: one runs.csv row per run, seeds in order, none twice,
    the failing run last; every other file names only runs of runs.csv."""
    from pagerace.harness import cli

    clean_out, found_out = tmp_path / "clean", tmp_path / "found"
    assert cli.main(["hunt", "opposite-order", "--variant", "v5.0", "--budget", "30-runs",
                     "--out", str(clean_out)]) == 0
    assert cli.main(["hunt", "opposite-order", "--variant", "hmm-2017", "--budget", "200-runs",
                     "--no-shrink", "--out", str(found_out)]) == 1
    text = capsys.readouterr().out
    n_found = int(text.split("found after ")[1].split(" runs")[0])
    for out, n in ((clean_out, 30), (found_out, n_found)):
        with (out / "runs.csv").open(newline="") as f:
            runs = list(csv.DictReader(f))
        assert [int(r["seed"]) for r in runs] == list(range(n))
        assert len({r["run_id"] for r in runs}) == n
        ids = {r["run_id"] for r in runs}
        for name in ("contention.csv", "outcomes.csv"):
            assert set(_runs_in(out / name)) <= ids, name
    assert [r["outcome"] for r in runs][-1] == "failed"
    assert _runs_in(found_out / "failures.csv") == [runs[-1]["run_id"]]


def test_row_writer_bad_contention_row_buffers_nothing_of_its_run(clean: RunRecord, tmp_path: Path) -> None:
    with output.RowWriter(tmp_path) as w:
        w.add(rows_for(clean, "good", ""))
        for broken in ({"no_such_column": 1}, None):
            bad = rows_for(clean, "bad", "")
            first = dict(bad["contention.csv"][0])
            if broken is None:
                del first["waits"]
            else:
                first.update(broken)
            bad["contention.csv"] = [first]
            with pytest.raises(KeyError, match="no_such_column" if broken else "without waits"):
                w.add(bad)
        assert w.pending == 1
    assert {r["run_id"] for r in _read(tmp_path / "contention.csv")} == {"good"}
    assert {int(r["runs"]) for r in _read(tmp_path / "contention.csv")} == {1}


def test_row_writer_tick_writes_a_batch_that_is_due(clean: RunRecord, tmp_path: Path) -> None:
    clock = FakeClock()
    w = output.RowWriter(tmp_path, batch_runs=1000, batch_seconds=1.0, clock=clock)
    assert w.tick() == 0
    w.add(rows_for(clean, "r0", ""))
    clock.t = 0.5
    assert w.tick() == 0 and w.pending == 1
    clock.t = 1.0
    assert w.tick() == 1 and _runs_in(tmp_path / "runs.csv") == ["r0"]
    assert w.tick() == 0


def _stat(rng: random.Random) -> list[int]:
    """Kernel statistics of one site in one run: maybe no wait and no hold (minimum
    _NO_MIN, as Kernel.stats keeps it)."""
    st = _new_stat()
    names = STAT_FIELDS
    for i, name in enumerate(names):
        if name.endswith(("_min", "_max", "_total")):
            continue
        st[i] = rng.randrange(0, 4)
    for count in ("waits", "holds"):
        stem = count[:-1]
        n = st[names.index(count)]
        times = [rng.randrange(0, 50) for _ in range(n)]
        if times:
            st[names.index(f"{stem}_total")] = sum(times)
            st[names.index(f"{stem}_min")] = min(times)
            st[names.index(f"{stem}_max")] = max(times)
    return st


def test_contention_sums_combine_each_field_by_its_name() -> None:
    """ContentionSums.add_stats (kernel.merge_stat, which a hunt worker runs for each site
    of each run) against a reference written from STAT_FIELDS' names: counts and totals
    add up, maxima are the largest, minima the smallest over the runs that waited (held),
    0 when none did; rows named by the configuration's last run; summed rows added to
    another ContentionSums (RowWriter's batch) give the same rows."""
    rng = random.Random(7)
    configs = [("w", "v6", "", "deterministic", strategy, "steps") for strategy in ("random", "pct")]
    runs = []
    for i in range(40):
        cfg = configs[i % 2]
        stats = {site: _stat(rng) for site in rng.sample(["a:l", "b:l", "c:l"], rng.randrange(0, 4))}
        runs.append((cfg, f"r{i}", stats))
    sums = output.ContentionSums()
    halves = [output.ContentionSums(), output.ContentionSums()]
    for n, (cfg, rid, stats) in enumerate(runs):
        sums.add_stats(cfg, rid, stats)
        halves[n >= 25].add_stats(cfg, rid, stats)
    expect = []
    for cfg in configs:
        mine = [(rid, stats) for c, rid, stats in runs if c == cfg]
        for site in sorted({s for _, stats in mine for s in stats}):
            sts = [stats[site] for _, stats in mine if site in stats]
            col = {name: [st[i] for st in sts] for i, name in enumerate(STAT_FIELDS)}
            row = {"run_id": mine[-1][0], "workload": cfg[0], "variant": cfg[1], "bugs": cfg[2],
                   "engine": cfg[3], "strategy": cfg[4], "time_unit": cfg[5], "site": site, "runs": len(sts)}
            for name, vals in col.items():
                if name.endswith("_max"):
                    row[name] = max(vals)
                elif name.endswith("_min"):
                    real = [v for v, c in zip(vals, col[name[:-4] + "s"]) if c]
                    row[name] = min(real) if real else 0
                else:
                    row[name] = sum(vals)
            expect.append(row)
    expect.sort(key=lambda r: tuple(r[k] for k in output.CONTENTION_KEY))
    assert sums.rows() == expect
    assert len(sums) == len(expect)
    merged = output.ContentionSums()
    for half in halves:
        for row in half.rows():
            merged.add(row)
    assert merged.rows() == expect
    sums.clear()
    assert sums.rows() == [] and len(sums) == 0


def test_row_writer_writes_no_batch_inside_a_held_chunk(clean: RunRecord, tmp_path: Path) -> None:
    """A run whose FormattedRows holds (more runs of its hunt chunk follow) ends no batch:
    not when the batch is full, not by age, not by tick; the chunk's last run does."""
    clock = FakeClock()
    w = output.RowWriter(tmp_path, batch_runs=2, batch_seconds=1.0, clock=clock)
    one = output.format_rows(rows_for(clean, "c0", ""))
    held = [output.FormattedRows(one.cells, one.contention if i == 0 else [], hold=i < 2) for i in range(3)]
    for f in held[:2]:
        w.add(f)
    clock.t = 5.0
    assert w.tick() == 0 and w.pending == 2 and not (tmp_path / "runs.csv").exists()
    w.add(held[2])
    assert w.written == 3 and w.pending == 0
    assert len(_runs_in(tmp_path / "runs.csv")) == 3
    # a chunk left open when the writer closes (the parent was interrupted) is dropped
    # whole: no line of it in any file, its contention not summed
    with pytest.raises(KeyboardInterrupt), output.RowWriter(tmp_path / "b", batch_runs=100) as w2:
        w2.add(rows_for(clean, "before", ""))
        w2.add(held[0])
        w2.add(held[1])
        raise KeyboardInterrupt
    assert _runs_in(tmp_path / "b" / "runs.csv") == ["before"]
    for name in ("contention.csv", "outcomes.csv"):
        assert {r["run_id"] for r in _read(tmp_path / "b" / name)} == {"before"}
    assert {int(r["runs"]) for r in _read(tmp_path / "b" / "contention.csv")} == {1}


def test_a_chunk_taken_whole_writes_what_its_runs_write_one_by_one(tmp_path: Path) -> None:
    """chunk_rows (a hunt worker's chunk: lines as one text, contention summed from the
    kernel statistics) through RowWriter: the same files as the runs added one by one."""
    w = load_workload("opposite-order")
    recs = [run_deterministic(w, variant="v5.0", seed=s) for s in range(3)]
    with output.RowWriter(tmp_path / "one") as one:
        for i, rec in enumerate(recs):
            one.add(rows_for(rec, f"r{i}", ""))
    sums = output.ContentionSums()
    formatted = [output.format_rows(rows_for(rec, f"r{i}", "", sums=sums)) for i, rec in enumerate(recs)]
    assert all(not f.contention for f in formatted)
    chunk = output.chunk_rows(formatted, sums)
    assert [f.hold for f in chunk] == [True, True, False]
    assert [bool(f.text) for f in chunk] == [True, False, False]
    with output.RowWriter(tmp_path / "whole") as whole:
        for f in chunk:
            whole.add(f)
    for name in ("runs.csv", "outcomes.csv", "contention.csv"):
        assert (tmp_path / "whole" / name).read_text() == (tmp_path / "one" / name).read_text(), name
    assert output.chunk_rows([], sums) == []

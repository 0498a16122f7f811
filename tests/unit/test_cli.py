"""The command line: exit codes, one-line errors, nothing written on bad input, the
find → artifact → replay loop, determinism through runs.csv, and help with examples.

Commands run in-process through ``main([...])``; one test runs the real console entry
point in a subprocess.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pagerace.core.bugs import CATALOG
from pagerace.core.machine.errors import (
    Failure,
    FailureFound,
    FailureKind,
    HarnessInternalError,
)
from pagerace.harness import cli
from pagerace.harness.commands import COMMANDS, load_commands
from pagerace.harness.commands import run as run_cmd
from pagerace.harness.commands._options import parse_duration
from pagerace.reports.schema import SCHEMAS

BUG = "no-fault-folio-exception"


def pagerace(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def csv_files(out: Path) -> list[Path]:
    return sorted(out.rglob("*.csv")) if out.exists() else []


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error" in lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])


# ----------------------------------------------------------------------------------------
# Bad input: exit 2, one line, nothing written


@pytest.fixture
def bad_toml(tmp_path: Path) -> Path:
    p = tmp_path / "broken.toml"
    p.write_text('name = "broken"\n[geometry\nsys_frames = 8\n')
    return p


@pytest.fixture
def bad_key_toml(tmp_path: Path) -> Path:
    src = Path(__file__).parents[2] / "workloads" / "fault-storm.toml"
    p = tmp_path / "badkey.toml"
    p.write_text(src.read_text().replace("[limits]", "[limits]\nmax_stepz = 10"))
    return p


BAD_RUNS = [
    (["run", "no-such-workload"], ["unknown workload 'no-such-workload'", "fault-storm"]),
    (["run", "--seed", "x"], ["--seed", "'x'"]),
    (["run", "--seed", "-3"], ["--seed", "-3"]),
    (["run", "--strategy", "zz"], ["'zz'", "pct"]),
    (["run", "--steps", "0"], ["--steps"]),
    (["run", "--bug", "no-such-bug"], ["'no-such-bug'", BUG]),
    (["run", "--variant", "v9"], ["'v9'", "v6"]),
    (["run", "--bug", "hmm-2017-blocking-prepare"], ["hmm-2017-blocking-prepare", "v6"]),
    (["run", "--duration", "5s"], ["--duration", "parallel"]),
    (["run", "--engine", "parallel", "--duration", "3x"], ["'3x'"]),
    (["run", "--engine", "parallel", "--steps", "10"], ["--steps", "deterministic"]),
    (["run", "--perturb", "2"], ["--perturb"]),
    (["run", "--frobnicate"], ["--frobnicate"]),
    (["run", "a", "b"], ["unrecognized arguments: b"]),
    (["frobnicate"], ["'frobnicate'", "run"]),
    (["list", "--format", "xml"], ["'xml'"]),
]


@pytest.mark.parametrize(("argv", "needles"), BAD_RUNS, ids=[" ".join(a) for a, _ in BAD_RUNS])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], needles: list[str]
) -> None:
    out = tmp_path / "out"
    rc, _, err = pagerace(capsys, *argv, *(["--out", out] if argv[0] == "run" else []))
    assert rc == 2
    assert_one_line_error(err, *needles)
    assert csv_files(out) == []
    assert not (out / "artifacts").exists()


def test_invalid_toml_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, bad_toml: Path) -> None:
    out = tmp_path / "out"
    rc, _, err = pagerace(capsys, "run", bad_toml, "--out", out)
    assert rc == 2
    assert_one_line_error(err, "broken.toml", "invalid TOML")
    assert csv_files(out) == []


def test_invalid_workload_key(capsys: pytest.CaptureFixture[str], tmp_path: Path, bad_key_toml: Path) -> None:
    out = tmp_path / "out"
    rc, _, err = pagerace(capsys, "run", bad_key_toml, "--out", out)
    assert rc == 2
    assert_one_line_error(err, "max_stepz")
    assert csv_files(out) == []


def test_unavailable_parallel_engine_is_bad_input_or_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a parallel engine in the build, ``--engine parallel`` is refused."""
    monkeypatch.setattr(run_cmd, "_parallel_entry", lambda name: None)
    out = tmp_path / "out"
    rc, _, err = pagerace(capsys, "run", "--engine", "parallel", "--duration", "1s", "--out", out)
    assert rc == 2
    assert_one_line_error(err, "parallel engine is not available")
    assert csv_files(out) == []


# ----------------------------------------------------------------------------------------
# Exit-code mapping in the one handler


def _raising(exc: BaseException):  # type: ignore[no-untyped-def]
    def run(args: object) -> int:
        raise exc

    return run


@pytest.mark.parametrize(
    ("exc", "code", "needle"),
    [
        (FailureFound(Failure(FailureKind.DEADLOCK, "two waiters", step=5)), 1, "deadlock at step 5"),
        (HarnessInternalError("engine lost an actor"), 3, "internal error: engine lost an actor"),
        (ZeroDivisionError("division by zero"), 3, "internal error: ZeroDivisionError"),
    ],
)
def test_exceptions_map_to_exit_codes(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    exc: BaseException,
    code: int,
    needle: str,
) -> None:
    monkeypatch.setattr(run_cmd, "run", _raising(exc))
    rc, _, err = pagerace(capsys, "run")
    assert rc == code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    if code == 3:
        assert "bug in pagerace" in lines[0] and "--traceback" in lines[0]


def test_traceback_flag_shows_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_cmd, "run", _raising(KeyError("k")))
    rc, _, err = pagerace(capsys, "--traceback", "run")
    assert rc == 3
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("pagerace run: internal error: KeyError")


def test_no_command_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = pagerace(capsys)
    assert rc == 2
    assert "no command given" in err


# ----------------------------------------------------------------------------------------
# Help


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_help_shows_examples(capsys: pytest.CaptureFixture[str], name: str) -> None:
    rc, out, _ = pagerace(capsys, name, "--help")
    assert rc == 0
    assert "examples:" in out
    assert f"pagerace {name}" in out.split("examples:", 1)[1]


def test_top_help_lists_every_command_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = pagerace(capsys, "--help")
    assert rc == 0
    for m in load_commands():
        assert m.NAME in out
    assert "exit codes:" in out and "did not reproduce" in out


# ----------------------------------------------------------------------------------------
# list


def test_list_text(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = pagerace(capsys, "list")
    assert rc == 0
    for needle in ("fault-storm", "mirrors: hmm-tests.c", "v6", BUG, "pct"):
        assert needle in out


def test_list_bugs_in_full(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = pagerace(capsys, "list", "--bugs")
    assert rc == 0
    assert "goes wrong:" in out and "hunted on:" in out
    for name in CATALOG:
        assert name in out


def test_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = pagerace(capsys, "list", "--format", "json")
    assert rc == 0
    data = json.loads(out)
    assert {b["name"] for b in data["bugs"]} == set(CATALOG)
    storm = next(w for w in data["workloads"] if w["name"] == "fault-storm")
    assert storm["mirrors"] and storm["gap"]
    assert "v6" in {v["name"] for v in data["variants"]}
    assert {s["name"] for s in data["strategies"]} >= {"random", "pct", "rr"}


# ----------------------------------------------------------------------------------------
# run → artifact → replay


def test_default_run_summary_and_rows(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, text, err = pagerace(capsys, "run", "--out", out)
    assert rc == 0, err
    assert "default" in text and "outcome: clean" in text and "preemption points/s" in text
    runs = read_csv(out / "runs.csv")
    assert len(runs) == 1 and runs[0]["workload"] == "default" and runs[0]["seed"] == "0"
    assert runs[0]["outcome"] == "clean" and runs[0]["artifact"] == ""
    assert int(runs[0]["ops"]) > 0
    assert not (out / "failures.csv").exists()


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One failing run of fault-storm with the toggle (shared by the replay tests)."""
    out = tmp_path_factory.mktemp("found")
    assert cli.main(["run", "fault-storm", "--bug", BUG, "--seed", "1", "--out", str(out), "--quiet"]) == 1
    return out


def _artifact(out: Path) -> Path:
    (art,) = sorted((out / "artifacts").glob("*.json"))
    return art


def test_toggle_found_with_artifact_and_rows(found: Path) -> None:
    art = _artifact(found)
    runs = read_csv(found / "runs.csv")
    fails = read_csv(found / "failures.csv")
    assert len(runs) == 1 and len(fails) == 1
    assert runs[0]["outcome"] == "failed"
    assert runs[0]["failure_kind"] in CATALOG[BUG].oracle
    assert runs[0]["artifact"] == f"artifacts/{art.name}" == fails[0]["artifact"]
    assert fails[0]["kind"] == runs[0]["failure_kind"] and fails[0]["run_id"] == runs[0]["run_id"]
    doc = json.loads(art.read_text())
    assert doc["schema"] == 1 and doc["bugs"] == [BUG] and doc["seed"] == 1
    assert doc["failure"]["kind"] == runs[0]["failure_kind"]
    assert sum(c for _, c in doc["schedule"]) == doc["schedule_steps"] == int(runs[0]["steps"])
    assert 0 < len(doc["steps"]) <= 200


def test_replay_reproduces_with_the_same_kind(capsys: pytest.CaptureFixture[str], found: Path) -> None:
    kind = read_csv(found / "runs.csv")[0]["failure_kind"]
    rc, out, _ = pagerace(capsys, "replay", _artifact(found), "--steps")
    assert rc == 1
    assert f"reproduced: {kind} at step" in out
    assert "do_swap_page" in out  # the step list


def test_replay_rows_say_reproduced(capsys: pytest.CaptureFixture[str], found: Path, tmp_path: Path) -> None:
    out = tmp_path / "replayed"
    rc, _, _ = pagerace(capsys, "replay", _artifact(found), "--out", out)
    assert rc == 1
    (row,) = read_csv(out / "failures.csv")
    assert row["reproduced"] == "yes"
    assert read_csv(out / "runs.csv")[0]["strategy"] == "replay"


def test_same_seed_without_the_toggle_is_clean(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, _, _ = pagerace(capsys, "run", "fault-storm", "--seed", "1", "--out", out, "--quiet")
    assert rc == 0
    assert read_csv(out / "runs.csv")[0]["outcome"] == "clean"
    assert not (out / "artifacts").exists()


def test_replay_that_does_not_reproduce_exits_4(
    capsys: pytest.CaptureFixture[str], found: Path, tmp_path: Path
) -> None:
    doc = json.loads(_artifact(found).read_text())
    doc["bugs"] = []  # the fixed kernel: the recorded failure cannot happen
    p = tmp_path / "fixed.json"
    p.write_text(json.dumps(doc))
    out = tmp_path / "out"
    rc, _, err = pagerace(capsys, "replay", p, "--out", out)
    assert rc == 4
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "did not reproduce: " in lines[0]
    (row,) = read_csv(out / "failures.csv")
    assert row["reproduced"] == "no"


def _corruptions(doc: dict) -> list[tuple[str, object, str]]:  # type: ignore[type-arg]
    def without(key: str) -> dict:  # type: ignore[type-arg]
        d = dict(doc)
        del d[key]
        return d

    return [
        ("invalid-json", '{"schema": 1, ', "invalid JSON"),
        ("not-an-object", [1, 2], "expected a JSON object"),
        ("no-schema", without("schema"), "no 'schema' key"),
        ("other-schema", {**doc, "schema": 99}, "schema version 99"),
        ("missing-key", without("schedule"), "missing key(s): schedule"),
        ("bad-kind", {**doc, "failure": {**doc["failure"], "kind": "gremlins"}}, "'gremlins'"),
        ("bad-schedule", {**doc, "schedule": [[99, 1]]}, "'schedule'"),
        ("bad-bug", {**doc, "bugs": ["no-such-bug"]}, "'no-such-bug'"),
        ("bad-op", {**doc, "ops": [[["teleport", 1]]] * len(doc["ops"])}, "'teleport'"),
        ("bad-workload", {**doc, "workload": {"raw": {"name": "x", "bogus": 1}}}, "bogus"),
    ]


def test_corrupt_artifacts_exit_2_and_write_nothing(
    capsys: pytest.CaptureFixture[str], found: Path, tmp_path: Path
) -> None:
    doc = json.loads(_artifact(found).read_text())
    for name, content, needle in _corruptions(doc):
        p = tmp_path / f"{name}.json"
        p.write_text(content if isinstance(content, str) else json.dumps(content))
        out = tmp_path / f"out-{name}"
        rc, _, err = pagerace(capsys, "replay", p, "--out", out)
        assert rc == 2, name
        assert_one_line_error(err, needle)
        assert csv_files(out) == [], name
    rc, _, err = pagerace(capsys, "replay", tmp_path / "missing.json")
    assert rc == 2
    assert_one_line_error(err, "cannot read artifact")


def test_other_schema_names_both_versions(
    capsys: pytest.CaptureFixture[str], found: Path, tmp_path: Path
) -> None:
    doc = json.loads(_artifact(found).read_text())
    p = tmp_path / "v2.json"
    p.write_text(json.dumps({**doc, "schema": 2}))
    rc, _, err = pagerace(capsys, "replay", p)
    assert rc == 2
    assert_one_line_error(err, "schema version 2", "schema version 1")


# ----------------------------------------------------------------------------------------
# Determinism and CSV shape


def test_same_seed_twice_gives_one_fingerprint(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    for _ in range(2):
        assert pagerace(capsys, "run", "--seed", "7", "--out", out, "--quiet")[0] == 0
    assert pagerace(capsys, "run", "--seed", "8", "--out", out, "--quiet")[0] == 0
    runs = read_csv(out / "runs.csv")
    assert len(runs) == 3
    assert runs[0]["fingerprint"] == runs[1]["fingerprint"] != runs[2]["fingerprint"]
    assert runs[0]["run_id"] != runs[1]["run_id"]


def test_csv_files_match_their_schemas(found: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert pagerace(capsys, "run", "--out", found, "--quiet")[0] == 0  # a clean run too
    seen = set()
    for path in csv_files(found):
        schema = SCHEMAS[path.name]
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == schema.names, path.name
        assert rows[1:], path.name
        assert all(len(r) == len(schema.names) for r in rows[1:]), path.name
        seen.add(path.name)
    assert seen == set(SCHEMAS)
    # contention: one row per call site and run
    cont = read_csv(found / "contention.csv")
    per_run: dict[str, list[str]] = {}
    for r in cont:
        per_run.setdefault(r["run_id"], []).append(r["site"])
    assert all(len(s) == len(set(s)) for s in per_run.values())
    assert any(r["site"] == "do_swap_page:folio_trylock" and int(r["trylock_failures"]) > 0 for r in cont)


def test_started_keeps_full_precision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert pagerace(capsys, "run", "--out", out, "--quiet")[0] == 0
    assert float(read_csv(out / "runs.csv")[0]["started"]) > 1e9
    assert "e+" not in read_csv(out / "runs.csv")[0]["started"]


# ----------------------------------------------------------------------------------------
# Small pieces


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30.0), ("2m", 120.0), ("1.5", 1.5), ("250ms", 0.25), ("1h", 3600.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "3x", "-1s", "0", "s", "1.2.3"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_clean_dry_run_lists_interrupted_writes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "artifacts").mkdir(parents=True)
    stale = out / "artifacts" / ".x.json.abc.tmp"
    stale.write_text("{")
    rc, text, _ = pagerace(capsys, "clean", "--out", out, "--dry-run")
    assert rc == 0
    assert f"would remove temporary file {stale}" in text
    assert stale.exists()


def test_clean_shm_fallback_removes_only_dead_runs(tmp_path: Path) -> None:
    from pagerace.harness.commands.clean import clean_shm_fallback

    dead = tmp_path / "pagerace_4194999_ab12"  # above the kernel's pid_max: never alive
    alive = tmp_path / f"pagerace_{__import__('os').getpid()}_cd34"
    other = tmp_path / "psm_0001"
    for p in (dead, alive, other):
        p.write_bytes(b"")
    would = clean_shm_fallback(True, tmp_path)
    assert would == [f"would remove shared memory {dead} (its run, pid 4194999, is gone)"]
    assert dead.exists()
    done = clean_shm_fallback(False, tmp_path)
    assert len(done) == 1 and not dead.exists() and alive.exists() and other.exists()


# ----------------------------------------------------------------------------------------
# The real entry point, once


def test_console_entry_point_in_a_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pagerace",
            "run",
            "fault-storm",
            "--bug",
            BUG,
            "--seed",
            "1",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 1, p.stderr
    assert "failure: livelock" in p.stdout or "failure: deadlock" in p.stdout
    assert "replay it: pagerace replay" in p.stdout
    p = subprocess.run(
        [sys.executable, "-m", "pagerace", "run", "--seed", "nope"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2
    assert p.stderr.strip() == (
        "pagerace run: error: argument --seed: invalid integer 'nope' (see 'pagerace run --help')"
    )


def test_out_that_is_a_file_is_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "out"
    f.write_text("not a directory")
    rc, _, err = pagerace(capsys, "run", "--out", f)
    assert rc == 2
    assert_one_line_error(err, "is a file")
    assert f.read_text() == "not a directory"

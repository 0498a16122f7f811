"""The command line in CI (issue 12, "CI logs"): one test per inconsistency the issue
lists, each failing on the code before the fix.

- a campaign not on a terminal printed nothing until the end; hunt showed nothing while
  it worked -> a status line every --status-every;
- no JSON or JUnit -> --format json on run / hunt / replay / campaign, campaign --junit;
- --quiet not quiet on campaign, absent on hunt, replay, shrink -> on every command;
- three duration parsers disagreed (hunt --budget 45 was 45 runs, campaign --budget 500ms
  refused, 1h30m only in campaign) -> one parser;
- --traceback only before the command -> before or after;
- exit codes listed in each command's --help.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pagerace.harness import cli
from pagerace.harness.commands import COMMANDS, load_commands
from pagerace.harness.commands._options import StatusLine, parse_duration


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ----------------------------------------------------------------------------------------
# help: --quiet, --traceback, --plugin and the exit codes on every command


@pytest.mark.parametrize("name", COMMANDS)
def test_every_help_lists_the_common_options_and_the_exit_codes(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([name, "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--quiet", "--traceback", "--plugin"):
        assert opt in out, (name, opt)
    codes = out.split("exit codes:", 1)[1]
    for code in ("0 ", "2 ", "3 "):
        assert f"\n  {code}" in codes, (name, code)


def test_a_command_may_list_its_own_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    (mod,) = load_commands(["compare"])
    assert cli.main(["compare", "--help"]) == 0
    out = capsys.readouterr().out
    for code, what in mod.EXIT_CODES:
        assert f"  {code:<3} {what.split()[0]}" in out


# ----------------------------------------------------------------------------------------
# --traceback before or after the command


@pytest.mark.parametrize("where", ["before", "after"])
def test_traceback_before_or_after_the_command(
    where: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pagerace.harness.commands.list as list_cmd

    def boom(args: object) -> int:
        raise RuntimeError("a bug in pagerace")

    monkeypatch.setattr(list_cmd, "run", boom)
    argv = ["--traceback", "list"] if where == "before" else ["list", "--traceback"]
    rc, _out, err = run_cli(capsys, *argv)
    assert rc == 3
    assert "Traceback (most recent call last)" in err and "RuntimeError: a bug in pagerace" in err
    rc, _out, err = run_cli(capsys, "list")
    assert rc == 3 and "Traceback" not in err and "rerun with --traceback" in err


# ----------------------------------------------------------------------------------------
# --quiet on every command, before or after it


@pytest.fixture
def artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    rc, _o, _e = run_cli(capsys, "run", "migrate-vs-pin", "--bug", "check-ignores-pins", "--seed", "5",
                         "--out", tmp_path / "a")
    assert rc == 1
    (art,) = (tmp_path / "a" / "artifacts").glob("*.json")
    return art


QUIET_CASES = [
    ("list",),
    ("hunt", "migrate-vs-pin", "--budget", "3-runs"),
    ("compare", "v6", "v6", "--workloads", "default", "--seeds", "0-1"),
    ("campaign", "--workloads", "default", "--seeds", "0-1", "--jobs", "1"),
    ("run", "default"),
]


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("argv", QUIET_CASES, ids=[c[0] for c in QUIET_CASES])
def test_quiet_prints_nothing(
    argv: tuple[str, ...], where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_opt = [] if argv[0] in ("list", "compare") else ["--out", str(tmp_path / "o")]
    full = ["--quiet", *argv, *out_opt] if where == "before" else [*argv, *out_opt, "--quiet"]
    rc, out, err = run_cli(capsys, *full)
    assert rc == 0, err
    assert out == "" and err == ""


@pytest.mark.parametrize("argv", QUIET_CASES, ids=[c[0] for c in QUIET_CASES])
def test_dash_q_after_every_command(
    argv: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_opt = [] if argv[0] in ("list", "compare") else ["--out", str(tmp_path / "o")]
    rc, out, err = run_cli(capsys, *argv, *out_opt, "-q")
    assert (rc, out, err) == (0, "", "")


def test_quiet_replay_and_shrink(artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(capsys, "replay", artifact, "--quiet")
    assert (rc, out, err) == (1, "", "")
    rc, out, _err = run_cli(capsys, "-q", "shrink", artifact, "-o", tmp_path / "small.json", "--time", "0.2")
    assert rc == 1 and out == ""
    assert (tmp_path / "small.json").exists()


def test_quiet_keeps_errors(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(capsys, "hunt", "no-such-workload", "--quiet")
    assert rc == 2 and out == "" and "no-such-workload" in err


# ----------------------------------------------------------------------------------------
# one duration parser


@pytest.mark.parametrize(
    ("text", "secs"),
    [("45", 45.0), ("1.5", 1.5), ("500ms", 0.5), ("30s", 30.0), ("2m", 120.0), ("1h30m", 5400.0)],
)
def test_every_duration_option_reads_the_same(text: str, secs: float) -> None:
    from pagerace.harness.campaign import parse_duration as campaign_duration
    from pagerace.harness.commands._options import duration

    run_duration = duration("--duration")  # the type of run --duration
    from pagerace.harness.hunt import Budget, parse_budget

    assert parse_duration(text) == secs
    assert run_duration(text) == secs
    assert campaign_duration(text) == secs
    assert parse_budget(text) == Budget(seconds=secs)


def test_hunt_budget_45_is_45_seconds_and_runs_say_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, out, _err = run_cli(capsys, "hunt", "default", "--budget", "5-runs", "--out", tmp_path)
    assert rc == 0 and "nothing found in 5 runs" in out and "budget 5 runs" in out
    rc, out, _err = run_cli(capsys, "hunt", "default", "--budget", "300ms", "--out", tmp_path)
    assert rc == 0 and "budget 0.3 s" in out


def test_campaign_budget_500ms_is_accepted(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _out, err = run_cli(capsys, "campaign", "--workloads", "default", "--seeds", "0-1", "--jobs", "1",
                            "--budget", "500ms", "--out", tmp_path, "--quiet")
    assert rc == 0, err


def test_a_bad_duration_names_the_option_and_the_forms(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(capsys, "hunt", "default", "--budget", "soon")
    assert rc == 2 and out == ""
    assert "--budget 'soon'" in err and "200-runs" in err and "1h30m" in err


# ----------------------------------------------------------------------------------------
# status lines when not on a terminal


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_status_line_in_a_log_every_period_and_never_when_quiet() -> None:
    clock, log = FakeClock(), io.StringIO()
    s = StatusLine(30.0, stream=log, clock=clock)
    calls: list[int] = []

    def text() -> str:
        calls.append(1)
        return f"at {clock.t:g}"

    for t in (1, 10, 29.9, 30, 31, 59, 61, 200):
        clock.t = t
        s(text)
    assert log.getvalue().splitlines() == ["at 30", "at 61", "at 200"]
    assert len(calls) == 3  # the text is made only when shown
    q = StatusLine(30.0, quiet=True, stream=(qlog := io.StringIO()), clock=clock)
    clock.t = 1000
    q(text)
    assert qlog.getvalue() == ""


def test_hunt_and_campaign_print_status_lines_to_a_log(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # pytest's captured stderr is not a terminal, as in CI; a 1 ms period shows a line per run or so
    rc, out, err = run_cli(capsys, "hunt", "default", "--budget", "6-runs", "--status-every", "1ms",
                           "--out", tmp_path / "h")
    assert rc == 0
    lines = [x for x in err.splitlines() if x.startswith("hunt default · v6: ")]
    assert lines and "nothing found yet" in lines[-1] and "budget 6 runs" in lines[-1]
    assert "hunt default" not in out
    rc, out, err = run_cli(capsys, "campaign", "--workloads", "default", "--seeds", "0-5", "--jobs", "1",
                           "--status-every", "1ms", "--out", tmp_path / "c")
    assert rc == 0
    assert any(x.startswith("campaign: ") and "/6 units, 0 failed" in x for x in err.splitlines()), err


# ----------------------------------------------------------------------------------------
# JSON and JUnit


def test_run_hunt_replay_json(artifact: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, _e = run_cli(capsys, "run", "migrate-vs-pin", "--bug", "check-ignores-pins", "--seed", "5",
                          "--out", tmp_path / "r", "--format", "json")
    doc = json.loads(out)
    assert rc == 1 and doc["outcome"] == "failed" and doc["failure"]["kind"] == "lost_write"
    assert doc["replay"] == f"pagerace replay {doc['artifact']}" and Path(doc["artifact"]).exists()
    rc, out, _e = run_cli(capsys, "hunt", "migrate-vs-pin", "--bug", "check-ignores-pins", "--seed", "10",
                          "--strategy", "random", "--no-shrink", "--out", tmp_path / "h", "--format", "json")
    doc = json.loads(out)
    assert rc == 1 and doc["found"] and doc["seed"] == 14 and doc["runs"] == 5
    rc, out, _e = run_cli(capsys, "replay", artifact, "--format", "json")
    doc = json.loads(out)
    assert rc == 1 and doc["reproduced"] is True and doc["recorded"]["kind"] == "lost_write"


def test_campaign_json_and_junit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    rc, out, _e = run_cli(capsys, "campaign", "--workloads", "migrate-vs-pin", "--bugs", "none",
                          "--bugs", "check-ignores-pins", "--seeds", "13-15", "--jobs", "1", "--no-replay",
                          "--out", tmp_path / "c", "--format", "json", "--junit", junit)
    assert rc == 1
    doc = json.loads(out)
    assert doc["ran"] == 6 and doc["failed"] == 1
    (bad,) = [c for c in doc["configurations"] if c["failed"]]
    (f,) = bad["failures"]
    assert bad["bugs"] == "check-ignores-pins" and f["seed"] == 14 and f["kind"] == "lost_write"
    assert f["replay"] == f"pagerace replay {tmp_path / 'c' / f['artifact']}"
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    failed = [tc for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert [tc.get("name") for tc in failed] == ["v6 +check-ignores-pins"]
    fail = failed[0].find("failure")
    text = fail.text if fail is not None else ""
    assert "seed 14 lost_write" in (text or "") and "pagerace replay" in (text or "")

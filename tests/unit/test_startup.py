"""Start-up: a command imports what it runs and nothing else (``pagerace list`` needs no
engine, pandas or process pool), and the top-level help still lists every command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pagerace.harness import cli
from pagerace.harness.commands import COMMANDS

HEAVY = ("pandas", "matplotlib", "tqdm", "dask", "multiprocess", "multiprocessing", "concurrent")


def _modules_after(argv: list[str]) -> set[str]:
    code = (
        "import sys, json, io, contextlib\n"
        "from pagerace.harness.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"    main({argv!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_list_imports_no_engine_and_nothing_heavy() -> None:
    mods = _modules_after(["list"])
    assert "pagerace.harness.commands.list" in mods
    assert not {m for m in mods if m.split(".")[0] in HEAVY}
    for m in ("pagerace.harness.engine", "pagerace.harness.runner", "pagerace.harness.campaign",
              "pagerace.harness.commands.campaign", "pagerace.reports.schema"):
        assert m not in mods, m


def test_help_imports_every_command_but_nothing_heavy() -> None:
    mods = _modules_after(["--help"])
    assert {f"pagerace.harness.commands.{c}" for c in COMMANDS} <= mods
    assert not {m for m in mods if m.split(".")[0] in HEAVY}


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["list"], "list"),
        (["--traceback", "hunt", "opposite-order"], "hunt"),
        (["run", "--seed", "3"], "run"),
        (["--help"], None),
        ([], None),
        (["nosuchcommand"], None),
        (["-h", "list"], "list"),
    ],
)
def test_command_named(argv: list[str], named: str | None) -> None:
    assert cli.command_named(argv) == named


def test_unknown_command_is_one_line_naming_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["nosuchcommand"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nosuchcommand" in err[0] and "campaign" in err[0]


def test_top_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for c in COMMANDS:
        assert f"\n    {c} " in out or f"\n    {c}\n" in out, c


def test_command_help_still_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list", "--help"]) == 0
    assert "examples:" in capsys.readouterr().out

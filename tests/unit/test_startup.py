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


# What `pagerace hunt` must not import before its first run (session 6, issue 13 item 1):
# the campaign (its plan and output-directory code) and psutil (a dead worker's report
# imports it), statistics (fractions, decimal), tempfile (shutil, bz2, lzma), traceback
# (only --traceback prints one), the parallel engine, and with --jobs 1 no process pool.
HUNT_NEVER = (
    "pagerace.harness.campaign", "pagerace.harness.commands.campaign", "pagerace.harness.parallel",
    "psutil", "statistics", "fractions", "decimal", "pandas", "matplotlib", "tqdm", "dask",
)
HUNT_JOBS1_NEVER = (*HUNT_NEVER, "multiprocessing", "concurrent", "tempfile", "shutil", "traceback",
                    "uuid", "pagerace.harness.shrink", "pagerace.harness.explore")


def _bad(mods: set[str], never: tuple[str, ...]) -> list[str]:
    return sorted(m for m in mods if any(m == n or m.startswith(n + ".") for n in never))


def test_hunt_in_one_process_imports_no_pool_campaign_nor_psutil(tmp_path) -> None:
    mods = _modules_after(["hunt", "opposite-order", "--variant", "v5.0", "--budget", "2-runs",
                           "--no-shrink", "--jobs", "1", "--out", str(tmp_path)])
    assert "pagerace.harness.hunt" in mods and "pagerace.harness.engine" in mods
    assert _bad(mods, HUNT_JOBS1_NEVER) == []


# A hunt over worker processes: the parent before its pool forks, and each worker after
# the fork (a worker should import nothing its parent had not: before session 6 each one
# imported the whole parallel engine, psutil included, to name itself). The C extension
# is the one exception: the first model a worker builds loads it (core/machine/words.py).
_POOLED = r"""
import json, os, sys
out = sys.argv[1]
at_fork = set()
def before():
    if not at_fork:
        at_fork.update(sys.modules)
        with open(os.path.join(out, "parent.json"), "w") as f:
            json.dump(sorted(sys.modules), f)
os.register_at_fork(before=before)
from pagerace.harness import hunt as H
real = H._run_chunk
def _run_chunk(*a, **k):
    r = real(*a, **k)
    with open(os.path.join(out, f"worker-{os.getpid()}.json"), "w") as f:
        json.dump(sorted(set(sys.modules) - at_fork), f)
    return r
_run_chunk.__module__, _run_chunk.__qualname__ = real.__module__, real.__qualname__
H._run_chunk = _run_chunk
from pagerace.harness.cli import main
sys.exit(main(["hunt", "opposite-order", "--variant", "v5.0", "--budget", "40-runs", "--no-shrink",
               "--jobs", "2", "--quiet", "--out", out]))
"""


def test_pooled_hunt_workers_import_nothing_after_the_fork(tmp_path) -> None:
    subprocess.run([sys.executable, "-c", _POOLED, str(tmp_path)], check=True, timeout=120,
                   capture_output=True)
    parent = set(json.loads((tmp_path / "parent.json").read_text()))
    assert "numpy" in parent and "pagerace.harness.pool" in parent  # numpy before the fork
    # the pool is harness/pool.py's ForkPool (os.fork, pipes, select): a pooled hunt's
    # parent imports no more than a hunt in one process (no multiprocessing, no
    # concurrent.futures, ~25 ms of CPU before the first fork in session 6)
    assert _bad(parent, HUNT_JOBS1_NEVER) == []
    workers = sorted(tmp_path.glob("worker-*.json"))
    assert workers, "no worker ran a chunk"
    for w in workers:
        assert set(json.loads(w.read_text())) <= {"pagerace.core.machine._atomicwords"}, w.name

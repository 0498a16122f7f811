"""The ``pagerace`` program's exit (harness/program.py): skips the interpreter's teardown
when nothing is left for it, keeps output and exit codes, and keeps the full exit when
asked or when something still needs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pagerace.harness import program

# A program run with a teardown hook that says when the interpreter's shutdown ran.
PROGRAM = """
import atexit, sys, threading
atexit.register(lambda: print("teardown ran", file=sys.stderr))
if sys.argv[1] == "thread":
    threading.Thread(target=lambda: None, daemon=True)  # not started: no effect
    threading.Thread(target=threading.Event().wait, args=(30,), daemon=True).start()
sys.argv = ["pagerace", *sys.argv[2:]]
from pagerace.harness.program import run
run()
"""


def _program(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k != "PAGERACE_FULL_EXIT"}
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True,
                          env=e, cwd=tmp_path, timeout=120)


def test_a_command_ends_without_the_teardown_and_keeps_its_output_and_code(tmp_path: Path) -> None:
    out = tmp_path / "o"
    p = _program(tmp_path, "plain", "hunt", "opposite-order", "--variant", "v5.0", "--budget", "3-runs",
                 "--jobs", "1", "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "teardown ran" not in p.stderr
    assert "nothing found in 3 runs" in p.stdout  # the buffered stdout was flushed
    assert len((out / "runs.csv").read_text().splitlines()) == 4  # header + 3 runs, written before
    bad = _program(tmp_path, "plain", "hunt", "no-such-workload")
    assert bad.returncode == 2 and "no-such-workload" in bad.stderr and "teardown ran" not in bad.stderr


@pytest.mark.parametrize(("case", "env"), [("plain", {"PAGERACE_FULL_EXIT": "1"}), ("thread", {})],
                         ids=["asked", "a-thread-left"])
def test_the_full_exit_when_asked_or_needed(tmp_path: Path, case: str, env: dict[str, str]) -> None:
    p = _program(tmp_path, case, "list", env=env)
    assert p.returncode == 0, p.stderr
    assert "teardown ran" in p.stderr
    assert "workloads" in p.stdout


def test_quick_exit_allowed_here_depends_on_what_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGERACE_FULL_EXIT", "1")
    assert not program.quick_exit_allowed()
    monkeypatch.delenv("PAGERACE_FULL_EXIT")
    monkeypatch.setitem(sys.modules, "coverage", sys)  # any module: its presence counts
    assert not program.quick_exit_allowed()


# A plugin (loaded by the program after numpy, before the command) that reports the
# process's threads (OpenBLAS's among them) and what the environment says then.
_BLAS_PROBE = """
import json, os
with open(os.environ["PROBE_OUT"], "w") as f:
    json.dump({"threads": len(os.listdir("/proc/self/task")),
               "var": os.environ.get("OPENBLAS_NUM_THREADS")}, f)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or (os.cpu_count() or 1) < 2,
                    reason="counts threads in /proc; OpenBLAS starts none on one CPU")
@pytest.mark.parametrize(("env", "threads", "var"), [({}, 1, None), ({"OPENBLAS_NUM_THREADS": "2"}, 2, "2")],
                         ids=["unset-one-thread", "user-set-kept"])
def test_the_program_starts_openblas_with_one_thread_unless_the_user_chose(
    tmp_path: Path, env: dict[str, str], threads: int, var: str | None
) -> None:
    probe, out = tmp_path / "probe.py", tmp_path / "probe.json"
    probe.write_text(_BLAS_PROBE)
    e = {k: v for k, v in os.environ.items() if k not in program.BLAS_THREAD_VARIABLES}
    p = _program(tmp_path, "plain", "--plugin", str(probe), "list", env={**e, **env, "PROBE_OUT": str(out)})
    assert p.returncode == 0, p.stderr
    got = json.loads(out.read_text())
    # one thread: OpenBLAS started none of its own (it starts 2 when the user asks for 2);
    # the variable is gone again for what the program starts, or the user's own
    assert got == {"threads": threads, "var": var}


def test_one_blas_thread_leaves_a_user_setting_and_an_imported_numpy_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with program.one_blas_thread():
        assert "OPENBLAS_NUM_THREADS" not in os.environ
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert "numpy" in sys.modules  # imported by the tests: setting the variable would do nothing
    with program.one_blas_thread():
        assert "OPENBLAS_NUM_THREADS" not in os.environ

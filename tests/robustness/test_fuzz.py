"""Hostile input, generated (issue 10: "every one ends in exit 0/1/2/4 with one line,
never 3, never more than a bounded amount of memory and time"): failure artifacts mutated
field by field, workload files mutated key by key, and command lines built from every
command's options with hostile values. Each runs the real command line in this process;
the figures (inputs tried, exit codes seen, slowest input, peak memory) go to
$PAGERACE_FIGURES for docs/reliability.md.

The time bound of a replay or a run is its own step budget (at most
``artifacts.MAX_STEPS``); so that each input takes seconds, budgets the fuzzer draws that
are valid but above a million steps are clamped to a million."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import resource
import time
import tomllib
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pagerace.harness.cli import main
from procs import record_figures

pytestmark = pytest.mark.robustness

EXAMPLES = int(os.environ.get("PAGERACE_FUZZ_EXAMPLES", "150"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None,
    derandomize=not os.environ.get("PAGERACE_FUZZ_RANDOM"),  # set it to explore new inputs
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
SLOW_S = 60.0  # the slowest any one input may take
PEAK_RSS_MB = 1500  # the most this process may ever have used

HOSTILE = st.one_of(
    st.integers(-3, 20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 7, 8, 9, 31, 32, 2**31, 2**63, 10**15, 10**100]),
    st.text(max_size=12),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(-2, 10**9), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(-2, 100), max_size=2),
)


class Tally:
    """What the fuzzer saw, for the figures."""

    def __init__(self) -> None:
        self.codes: Counter[int] = Counter()
        self.slowest = 0.0

    def figures(self) -> dict[str, Any]:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        return {"inputs": sum(self.codes.values()), "exit_codes": dict(sorted(self.codes.items())),
                "slowest_s": round(self.slowest, 2), "peak_rss_mb": peak}


def cli(argv: list[str], tally: Tally) -> tuple[int, str, str]:
    """``pagerace ARGV`` in this process: exit code, stdout, stderr; checked."""
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    took = time.monotonic() - t0
    tally.codes[code] += 1
    tally.slowest = max(tally.slowest, took)
    e = err.getvalue()
    assert code in (0, 1, 2, 4, 130), (argv, code, e)
    if code in (2, 4):
        assert e.count("\n") == 1, (argv, e)
    assert "internal error" not in e and "Traceback" not in e, (argv, e)
    assert took < SLOW_S, (argv, took)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    assert peak < PEAK_RSS_MB, (argv, peak)
    return code, out.getvalue(), e


# -- mutation of a JSON-like document --------------------------------------------------------------


def _nodes(doc: Any, path: tuple[Any, ...] = (), depth: int = 0) -> list[tuple[Any, ...]]:
    """Paths to nodes of ``doc`` (long lists: their first three and last elements)."""
    out = [path]
    if depth > 6:
        return out
    if isinstance(doc, dict):
        for k in sorted(doc, key=str):
            out += _nodes(doc[k], (*path, k), depth + 1)
    elif isinstance(doc, list):
        idx = list(range(min(3, len(doc)))) + ([len(doc) - 1] if len(doc) > 3 else [])
        for i in idx:
            out += _nodes(doc[i], (*path, i), depth + 1)
    return out


@st.composite
def mutated(draw: st.DrawFn, doc: Any) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _nodes(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "nudge"]))
        if action == "delete":
            del parent[key]
        elif action == "nudge" and isinstance(parent[key], int) and not isinstance(parent[key], bool):
            parent[key] += draw(st.sampled_from([-1, 1, 8, -100]))
        else:
            parent[key] = draw(HOSTILE)
    return doc


def _clamp_budgets(doc: Any) -> None:
    lim = doc.get("limits") if isinstance(doc, dict) else None
    if isinstance(lim, dict):
        for k, v in lim.items():
            if isinstance(v, int) and not isinstance(v, bool) and 10**6 < v <= 10**8:
                lim[k] = 10**6


# -- artifacts --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("art")
    assert main(["run", "opposite-order", "--variant", "hmm-2017", "--seed", "2", "--quiet",
                 "--out", str(out)]) == 1
    [path] = (out / "artifacts").iterdir()
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def test_mutated_artifacts(artifact: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("fuzz-art")
    tally = Tally()

    @SETTINGS
    @given(doc=mutated(artifact))
    def one(doc: Any) -> None:
        _clamp_budgets(doc)
        path = d / "a.json"
        path.write_text(json.dumps(doc, default=str, allow_nan=True))
        try:
            cli(["replay", str(path)], tally)
        except AssertionError:
            # the last one kept is Hypothesis's shrunk falsifying example
            (d / "failing.json").write_text(path.read_text())
            raise

    one()
    record_figures("fuzz_artifacts", tally.figures())


# -- workloads --------------------------------------------------------------------------------------


def _toml(d: dict[str, Any]) -> str:
    """A small TOML writer (tomllib only reads): every value inline, tables as inline
    tables, so nesting needs no headers."""

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float) and v != v:
            return "nan"
        if isinstance(v, float) and abs(v) == float("inf"):
            return "inf" if v > 0 else "-inf"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(str(k))} = {val(x)}" for k, x in v.items()) + "}"
        if v is None:
            return '""'  # TOML has no null: the nearest hostile value
        return json.dumps(str(v))

    return "".join(f"{json.dumps(str(k))} = {val(v)}\n" for k, v in d.items())


@pytest.fixture(scope="module")
def workload_raw() -> dict[str, Any]:
    from pagerace.workloads import load_workload

    raw = dict(load_workload("opposite-order").raw)
    assert tomllib.loads(_toml(raw)) == raw  # the writer round-trips the real one
    return raw


def test_mutated_workloads(workload_raw: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("fuzz-wl")
    tally = Tally()

    @SETTINGS
    @given(raw=mutated(workload_raw))
    def one(raw: Any) -> None:
        path = d / "w.toml"
        path.write_text(_toml(raw))
        try:
            cli(["run", str(path), "--variant", "hmm-2017", "--steps", "20000", "--quiet",
                 "--out", str(d / "out")], tally)
        except AssertionError:
            (d / "failing.toml").write_text(path.read_text())
            raise

    one()
    record_figures("fuzz_workloads", tally.figures())


# -- command lines ------------------------------------------------------------------------------------

VALUES = st.one_of(
    st.sampled_from(["-5s", "-3-4", "0", "-1", "1e400", "nan", "inf", "1h30m", "30d", "9" * 30,
                     "/proc/x/y", "/dev/null", "", " ", "..", "1-1000000000000", "all", "none",
                     "default", "fault-storm", "v6", "v9", "random", "pct", "2", "1", "3s",
                     "no-fault-folio-exception", "tcp://127.0.0.1:1", "\x00", "é"]),
    st.text(max_size=8),
    st.integers(-(2**70), 2**70).map(str),
)
COMMANDS: dict[str, list[str]] = {
    "run": ["--seed", "--variant", "--bug", "--strategy", "--pct-depth", "--quantum", "--steps",
            "--workers", "--duration", "--ops", "--perturb", "--out"],
    "campaign": ["--workloads", "--variants", "--seeds", "--bugs", "--strategies", "--budget", "--jobs",
                 "--duration", "--max-steps", "--livelock-steps", "--out", "--name", "--plan"],
    "replay": ["--out"],
    "shrink": ["--time", "-o"],
    "hunt": ["--variant", "--bug", "--budget", "--strategy", "--pct-depth", "--preemptions", "--seed",
             "--shrink-time", "--out"],
    "report": ["--baseline", "--top", "--alpha", "--out"],
    "clean": ["--out"],
    "list": ["--format"],
}
POSITIONAL = {"run": True, "replay": True, "shrink": True, "hunt": True, "report": True}
# Bounds the fuzzer appends last (argparse keeps the last value): each command stays short.
BOUNDED = {
    "run": ["--steps", "20000", "--engine", "deterministic"],
    "campaign": ["--budget", "2s", "--jobs", "1", "--max-steps", "20000", "--engine", "deterministic"],
    "hunt": ["--budget", "3-runs", "--shrink-time", "1s"],
    "shrink": ["--time", "1s"],
    "replay": [],
    "report": ["--no-figures"],
    "clean": ["--dry-run"],
    "list": [],
}


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    cmd = draw(st.sampled_from(sorted(COMMANDS)))
    argv = [cmd]
    if POSITIONAL.get(cmd) and draw(st.booleans()):
        argv.append(draw(VALUES))
    for _ in range(draw(st.integers(0, 4))):
        argv += [draw(st.sampled_from(COMMANDS[cmd])), draw(VALUES)]
    if draw(st.integers(0, 9)) == 0:
        argv.append(draw(st.sampled_from(["--", "-x", "--bogus", "--help-me"])))
    return argv + BOUNDED[cmd]


def test_hostile_command_lines(tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("fuzz-cli")
    tally = Tally()
    here = os.getcwd()

    @SETTINGS
    @given(argv=command_lines())
    def one(argv: list[str]) -> None:
        if argv[0] == "clean" and "--dry-run" not in argv:  # pragma: no cover - BOUNDED has it
            return
        cli(argv, tally)

    os.chdir(d)  # relative --out values land here
    try:
        one()
    finally:
        os.chdir(here)
    record_figures("fuzz_command_lines", tally.figures())

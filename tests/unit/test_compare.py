"""``pagerace compare``: the exact test, the pairing, the verdict and its exit code."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pagerace.harness import cli
from pagerace.harness.compare import compare, mcnemar_exact
from pagerace.workloads import load_workload


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_mcnemar_exact_against_the_binomial_by_hand() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(5, 0) == mcnemar_exact(0, 5)
    # 1 vs 9: 2 * (C(10,0) + C(10,1)) / 2^10
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(2, 12) == pytest.approx(2 * sum(math.comb(14, i) for i in range(3)) / 2**14)


def test_pairs_are_the_same_seed_and_only_one_side_failures_are_listed() -> None:
    w = load_workload("migrate-vs-pin")
    c = compare([w], "v6", "v6", list(range(10, 16)), bugs_b=["check-ignores-pins"], strategy="random")
    (wc,) = c.workloads
    assert wc.a.runs == wc.b.runs == 6
    assert wc.a.failed == 0 and wc.b.failed >= 1  # seed 14 loses a write with the toggle
    assert 14 in [s for s, _k in wc.only_b] and wc.only_a == []
    assert wc.kinds_only_b == ["lost_write"]
    assert wc.verdict == c.verdict == "worse"
    # the toggle lets pinned pages migrate: fewer pages skipped as pinned
    pinned = {(att, col): (x, y) for att, col, x, y in wc.outcome_diff(top=50)}
    x, y = pinned[("to_device", "pinned")]
    assert y < x


def test_swapping_the_sides_swaps_the_verdict() -> None:
    w = load_workload("migrate-vs-pin")
    c = compare([w], "v6", "v6", list(range(10, 16)), bugs_a=["check-ignores-pins"], strategy="random")
    assert c.verdict == "better" and c.workloads[0].kinds_only_a == ["lost_write"]


def test_same_variant_both_sides_is_the_same_and_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(capsys, "compare", "v6", "v6", "--workloads", "default", "--seeds", "0-4")
    assert rc == 0, err
    assert out.splitlines()[0].startswith("verdict: v6 is no different from v6")


def test_worse_is_exit_1_and_json_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(capsys, "compare", "v6", "v6", "--bug-b", "check-ignores-pins",
                           "--workloads", "migrate-vs-pin", "--seeds", "10-15", "--strategy", "random",
                           "--format", "json")
    assert rc == 1, err
    doc = json.loads(out)
    assert doc["verdict"] == "worse" and doc["exit_code"] == 1 and doc["seeds"] == "10-15"
    (w,) = doc["workloads"]
    assert {"seed": 14, "kind": "lost_write"} in w["only_b"]
    assert w["kinds_only_b"] == ["lost_write"] and 0 < w["p_value"] <= 1


def test_the_text_names_a_command_that_reruns_a_one_sided_failure(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, out, _err = run_cli(capsys, "compare", "v6", "v6", "--bug-b", "check-ignores-pins",
                            "--workloads", "migrate-vs-pin", "--seeds", "14", "--strategy", "random")
    assert rc == 1
    line = next(x for x in out.splitlines() if "rerun:" in x)
    cmd = line.split("rerun: pagerace ", 1)[1].split()
    assert cmd[:2] == ["run", "migrate-vs-pin"] and "--seed" in cmd
    rc2, _o, _e = run_cli(capsys, *cmd, "--out", tmp_path)
    assert rc2 == 1  # the rerun fails the same way


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["compare", "v6", "nope"], "'nope'"),
        (["compare", "v6", "v6", "--workloads", "nope"], "'nope'"),
        (["compare", "v6", "v6", "--seeds", "5-1"], "backwards"),
        (["compare", "v6", "v6", "--alpha", "2"], "--alpha"),
        (["compare", "hmm-2017", "v6", "--workloads", "evict-vs-fault"], "runs on both"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err

"""The pytest plugin (``pytest11`` entry point ``pagerace``), tested with ``pytester``:
a scenario written as a test passes when the hunt is clean, and a failing one writes
the artifact and prints the shrunk steps and the replay command, which reproduces."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pagerace.harness import cli, plugins

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "my_patch.py"

SCENARIOS = '''
import pytest


@pytest.mark.pagerace(workload="migrate-vs-pin", variant="v6", seeds=range(10, 16), strategy="random")
def test_v6_keeps_pinned_pages(pagerace):
    res = pagerace.hunt()
    assert res.runs == 6


@pytest.mark.pagerace(workload="migrate-vs-pin", variant="v6", seeds=range(10, 16), strategy="random")
def test_with_the_toggle(pagerace):
    pagerace.hunt(bugs=["check-ignores-pins"])


def test_my_patch(pagerace):
    pagerace.hunt("migrate-vs-pin", variant="v6-check-page-patch", plugins=[{plugin!r}],
                  seeds="0-5", strategy="rr")


def test_no_workload(pagerace):
    pagerace.hunt(seeds=3)
'''


def test_the_entry_point_is_registered() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="pytest11") if e.name == "pagerace"]
    assert ep.value == "pagerace.harness.pytest_plugin"


def test_scenarios_as_tests(
    pytester: pytest.Pytester, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(test_scen=SCENARIOS.format(plugin=str(EXAMPLE)))
    out = tmp_path / "arts"
    with plugins.isolated():  # the inner session runs in this process: forget its plugin after
        result = pytester.runpytest("-p", "no:cacheprovider", f"--pagerace-out={out}",
                                    "--pagerace-shrink-time=1")
    result.assert_outcomes(passed=1, failed=3)
    text = result.stdout.str()
    # the failure's message: what failed, the shrunk steps, the artifact, the replay command
    assert "pagerace: migrate-vs-pin · v6 · random: failure after 5 run(s), seed 14" in text
    assert "failure: lost_write" in text and "steps (shrunk):" in text
    assert "no workload (pass one, or set it in @pytest.mark.pagerace)" in text
    arts = sorted((out / "artifacts").glob("*.json"))
    assert len(arts) == 2
    # unique: with CI set, pytest repeats each failure's message in its short summary
    replays = list(dict.fromkeys(re.findall(r"replay it: pagerace (.*)$", text, re.M)))
    assert len(replays) == 2
    mine = next(r for r in replays if "v6-check-page-patch" in r)
    assert mine.startswith(f"--plugin {EXAMPLE.resolve()} replay {out}/artifacts/")
    # the printed command reproduces the failure
    plain = next(r for r in replays if "--plugin" not in r)
    assert cli.main(plain.split()) == 1
    assert "reproduced: lost_write" in capsys.readouterr().out

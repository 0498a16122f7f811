"""The README's nightly recipe is tools/nightly.sh, and this is its test (issue 10 item 8).
Before, the recipe moved the baseline after a campaign that exited 2 (a typo in
nightly.toml) to a directory that did not exist, compared a second run of the same night
with itself ("no regression"), and made a campaign that exited 3 or 130 the baseline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.robustness

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "nightly.sh"
PLAN = """name = "nightly"
workloads = ["fault-storm"]
variants = ["v6"]
seeds = "1-4"
max_steps = 20000
livelock_steps = 400
jobs = 1
"""


def nightly(root: Path, plan: Path, night: str, pagerace: str | None = None) -> tuple[int, str]:
    env = {**os.environ, "PAGERACE_ROOT": str(root), "PLAN": str(plan), "NIGHT": night,
           "PAGERACE": pagerace or f"{sys.executable} -m pagerace"}
    p = subprocess.run(["/bin/sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    return p.returncode, p.stderr


def baseline(root: Path) -> str:
    return os.readlink(root / "baseline")


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    p = tmp_path / "nightly.toml"
    p.write_text(PLAN)
    return p


def test_the_readme_shows_the_script_the_tests_run() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, flags=re.S)
    assert SCRIPT.read_text() in blocks, "README's nightly recipe differs from tools/nightly.sh"


def test_nights_move_the_baseline_only_when_all_went_well(tmp_path: Path, plan: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    code, err = nightly(root, plan, "n1")  # the first night: nothing to compare with
    assert code == 0, err
    assert "no baseline yet" in err and baseline(root) == str(root / "n1")
    code, err = nightly(root, plan, "n2")  # compared with n1: the same plan, no regression
    assert code == 0, err
    assert baseline(root) == str(root / "n2") and (root / "n2" / "report.txt").stat().st_size > 0
    # a second run of the same night would compare it with itself: refused, said, nothing run
    code, err = nightly(root, plan, "n2")
    assert code == 2 and "not comparing a night with itself" in err
    assert baseline(root) == str(root / "n2")
    # a typo in the plan: the campaign exits 2, the baseline stays, no directory is made
    bad = tmp_path / "typo.toml"
    bad.write_text(PLAN.replace("seeds =", "sedes ="))
    code, err = nightly(root, bad, "n3")
    assert code == 2 and "unknown key 'sedes'" in err and "the baseline stays" in err
    assert baseline(root) == str(root / "n2") and not (root / "n3").exists()


@pytest.mark.parametrize(
    ("campaign", "report", "code", "said"),
    [
        (3, 0, 3, "campaign exited 3"),
        (130, 0, 130, "campaign exited 130"),
        (1, 1, 1, "regression against"),
        (0, 2, 2, "report exited 2"),
        (0, 0, 0, "the baseline is now"),
    ],
)
def test_the_baseline_stays_unless_campaign_and_report_ended_well(
    tmp_path: Path, plan: Path, campaign: int, report: int, code: int, said: str
) -> None:
    root = tmp_path / "root"
    (root / "n1").mkdir(parents=True)
    os.symlink(root / "n1", root / "baseline")
    fake = tmp_path / "fake-pagerace"
    fake.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = campaign ]; then mkdir -p "$5"; exit {campaign}; fi\n'
        f"echo report; exit {report}\n"
    )
    got, err = nightly(root, plan, "n2", pagerace=f"/bin/sh {fake}")
    assert got == code and said in err, err
    assert baseline(root) == str(root / ("n2" if code == 0 else "n1"))


def test_a_dangling_baseline_is_said_not_silently_compared_with_nothing(tmp_path: Path, plan: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(root / "gone", root / "baseline")
    code, err = nightly(root, plan, "n1")
    assert code == 2 and "which does not exist" in err
    assert not (root / "n1").exists()

"""`.ci/run` leaves nothing in the caller's $TMPDIR (issue 10 item 10: it left
`dask-scratch-space/` there, and pytest's `pytest-of-<user>/`). It builds a fresh virtual
environment and installs the project (a minute or two): slow."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.robustness, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_ci_run_leaves_nothing_in_tmpdir(tmp_path: Path) -> None:
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    env.pop("DASK_TEMPORARY_DIRECTORY", None)
    p = subprocess.run(
        [str(ROOT / ".ci" / "run"), "tests/unit/test_campaign.py", "-k", "dask_backend", "-q"],
        env=env, capture_output=True, text=True, timeout=1200,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "1 passed" in p.stdout
    assert sorted(x.name for x in tmp.iterdir()) == []

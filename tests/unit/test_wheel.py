"""The wheel installs and runs: build it from a copy of the source tree, install it into a
fresh virtual environment, and run ``pagerace list`` from there.

The build runs without isolation (``setuptools`` and ``wheel`` come with the test
extra), so it needs no network. The venv sees this interpreter's site-packages for
numpy and friends (``--system-site-packages``) and gets the wheel with ``--no-deps``;
the test checks that ``pagerace`` is imported from the venv, not from the checkout.
About ten seconds on two cores, so it stays in the default run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _copy_source(dst: Path) -> None:
    """What the build needs: the project files and every directory package-dir names."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dirs = sorted({d.split("/")[0] for d in meta["tool"]["setuptools"]["package-dir"].values()})
    for f in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        if (ROOT / f).exists():
            shutil.copy2(ROOT / f, dst / f)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc", "*.egg-info")
    for d in dirs:
        shutil.copytree(ROOT / d, dst / d, ignore=ignore)


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, (
        f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    )
    return p


def test_wheel_installs_into_a_fresh_venv_and_lists_workloads(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _copy_source(src)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)], cwd=src)
    (wheel,) = dist.glob("pagerace-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], cwd=tmp_path)
    bindir = venv / "bin"
    _run([str(bindir / "python"), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], cwd=tmp_path)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = _run(
        [str(bindir / "python"), "-c", "import pagerace.harness.cli as c; print(c.__file__)"],
        cwd=tmp_path,
        env=env,
    ).stdout.strip()
    assert Path(where).resolve().is_relative_to(venv.resolve()), where
    listed = _run([str(bindir / "pagerace"), "list"], cwd=tmp_path, env=env).stdout
    assert "fault-storm" in listed
    assert "no-fault-folio-exception" in listed

"""docs/your-patch.md, end to end, with the command line alone: a plugin variant that
changes one line of migrate_vma_check_page is hunted, compared with v6 and its artifact
replayed, without and with the plugin, through the real ``pagerace`` console script in
subprocesses, as a new user would run the commands of the guide."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "my_patch.py"
GUIDE = ROOT / "docs" / "your-patch.md"
PATCHED = "v6-check-page-patch"


def pagerace(cwd: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("pagerace", path=os.path.dirname(sys.executable)) or shutil.which("pagerace")
    assert exe is not None, "the pagerace console script is not installed"
    return subprocess.run([exe, *argv], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def patch_dir(tmp_path: Path) -> Path:
    shutil.copy(EXAMPLE, tmp_path / "my_patch.py")
    return tmp_path


def test_the_guide_shows_the_commands_this_test_runs() -> None:
    text = GUIDE.read_text()
    for cmd in (
        f"$ pagerace --plugin my_patch.py hunt migrate-vs-pin --variant {PATCHED} --shrink-time 3 --out out",
        f"$ pagerace --plugin my_patch.py compare v6 {PATCHED} --workloads migrate-vs-pin,migrate,default "
        "--seeds 0-99",
        "$ pagerace replay out/artifacts/",
        "$ pagerace --plugin my_patch.py replay out/artifacts/",
    ):
        assert cmd in text, cmd
    assert EXAMPLE.read_text().split("from pagerace.extend", 1)[1].rstrip() in text  # the plugin, verbatim


def test_hunt_compare_replay_with_the_cli_alone(patch_dir: Path) -> None:
    # hunt: found, shrunk, an artifact, and a replay command that names the plugin
    h = pagerace(patch_dir, "--plugin", "my_patch.py", "hunt", "migrate-vs-pin", "--variant", PATCHED,
                 "--shrink-time", "1", "--out", "out")
    assert h.returncode == 1, h.stderr
    assert f"migrate-vs-pin · {PATCHED} · mix: found after 6 runs (seed 5" in h.stdout
    assert "failure: lost_write" in h.stdout and "steps (shrunk):" in h.stdout
    (art,) = (patch_dir / "out" / "artifacts").glob("*.json")
    replay_line = next(x for x in h.stdout.splitlines() if x.startswith("replay it: "))
    assert replay_line == (f"replay it: pagerace --plugin {patch_dir / 'my_patch.py'} replay "
                           f"out/artifacts/{art.name}")

    # compare with v6 on the same seeds: worse (exit 1), the patch alone loses writes
    # (the guide's command adds two workloads where both sides are clean; this one keeps
    # the workload that tells them apart, to stay fast)
    c = pagerace(patch_dir, "--plugin", "my_patch.py", "compare", "v6", PATCHED,
                 "--workloads", "migrate-vs-pin", "--seeds", "0-99")
    assert c.returncode == 1, c.stderr
    assert c.stdout.startswith(f"verdict: {PATCHED} is WORSE than v6")
    assert "migrate-vs-pin                   0/100    11/100       0      11    0.000977  worse" in c.stdout
    assert "failure kinds only B has: lost_write" in c.stdout
    # ... and as JSON, after the command (the plugin option also works there)
    cj = pagerace(patch_dir, "compare", "v6", PATCHED, "--workloads", "migrate-vs-pin", "--seeds", "0-25",
                  "--format", "json", "--plugin", "my_patch.py")
    assert cj.returncode == 1, cj.stderr
    doc = json.loads(cj.stdout)
    assert [p["seed"] for p in doc["workloads"][0]["only_b"]] == [5, 7, 21]

    # replay without the plugin: exit 2, one line naming the plugin and the variant
    r = pagerace(patch_dir, "replay", f"out/artifacts/{art.name}")
    assert r.returncode == 2 and r.stdout == ""
    (line,) = r.stderr.strip().splitlines()
    assert "needs plugin 'my_patch'" in line and f"variant '{PATCHED}'" in line and "corrupt" not in line
    # with it: reproduced (exit 1); from the environment as well
    r = pagerace(patch_dir, "--plugin", "my_patch.py", "replay", f"out/artifacts/{art.name}")
    assert r.returncode == 1 and r.stdout.startswith("reproduced: lost_write"), r.stderr
    r = pagerace(patch_dir, "replay", f"out/artifacts/{art.name}", "--quiet",
                 env={"PAGERACE_PLUGINS": str(patch_dir / "my_patch.py")})
    assert r.returncode == 1 and r.stdout == "", r.stderr


def test_a_campaign_of_the_plugin_variant_runs_in_worker_processes(patch_dir: Path) -> None:
    """Two pool workers run the plugin's variant (the tasks carry the plugin)."""
    r = pagerace(patch_dir, "--plugin", "my_patch.py", "campaign", "--workloads", "migrate-vs-pin",
                 "--variants", f"v6,{PATCHED}", "--seeds", "0-6", "--strategies", "rr", "--jobs", "2",
                 "--out", "camp", "--no-replay", "--quiet")
    assert r.returncode == 1, r.stderr
    rows = (patch_dir / "camp" / "failures.csv").read_text()
    assert f"{PATCHED},,deterministic,1," in rows and f"{PATCHED},,deterministic,5," in rows
    assert ",v6,," not in rows

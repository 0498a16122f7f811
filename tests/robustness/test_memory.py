"""A campaign over seeds 1..10^12 with a 5 s budget runs in bounded memory and time
(issue 10 item 1: with 10^11 seeds it grew to the machine's 24 GB and was OOM-killed)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from procs import record_figures, rows

pytestmark = pytest.mark.robustness

PEAK_MB = 400  # the process tree: the parent and its pool workers


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_campaign_over_10_to_the_12_seeds_with_a_5s_budget(jobs: int, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "pagerace", "campaign", "--seeds", "1-1000000000000", "--budget", "5s",
            "--jobs", str(jobs), "--out", str(tmp_path)]  # not --quiet: its stderr says "budget reached"
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # the peak of the process tree's summed RSS, sampled (ru_maxrss would count the pages of
    # this big test process the child had between fork and exec)
    peak = 0
    proc = psutil.Process(p.pid)
    while p.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(x.memory_info().rss for x in tree))
        except psutil.Error:
            pass
        time.sleep(0.05)
    took = time.monotonic() - t0
    assert p.stderr is not None
    with p.stderr:
        err = p.stderr.read()
    peak_mb = peak / 2**20
    ran = len(rows(tmp_path / "runs.csv"))
    record_figures("campaign_10e12_seeds",
                   {"jobs": jobs, "peak_rss_mb": round(peak_mb), "seconds": round(took, 1), "units_run": ran})
    assert p.returncode == 0, err
    assert "budget reached" in err and ran > 0
    assert peak_mb < PEAK_MB
    assert took < 5 + 5 + 15  # budget, its grace for units still out, start and summary

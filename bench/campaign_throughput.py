"""Campaign throughput: units (runs) per second of a campaign with ``--jobs 1`` and ``2``.

A campaign of ``default`` (v6, no bugs, random strategy, replay of failures on, as
``pagerace campaign`` runs by default) over more seeds than fit, with a wall-clock
budget, into a fresh directory; the figure is ``CampaignResult.rate`` (units committed /
elapsed, including the pool start-up and the parent's CSV appends), median of the
repeats.
"""

from __future__ import annotations

import importlib
import tempfile

from ._machine import Figure, Log, median, quiet, unavailable


def run(quick: bool = False, log: Log = quiet) -> list[Figure]:
    try:
        camp = importlib.import_module("pagerace.harness.campaign")
        plan_cls = camp.Plan
        run_campaign = camp.run_campaign
    except (ImportError, AttributeError) as exc:
        why = f"no campaign API (harness/campaign.py: {exc})"
        return [
            unavailable(f"campaign.jobs{j}.units_per_s", f"campaign --jobs {j}", "units/s", why)
            for j in (1, 2)
        ] + [unavailable("campaign.jobs2_vs_1", "campaign --jobs 2 / --jobs 1", "ratio", why)]
    budget = 1.0 if quick else 10.0
    repeats = 1 if quick else 3
    rates: dict[int, list[float]] = {1: [], 2: []}
    ran: dict[int, list[int]] = {1: [], 2: []}
    for _ in range(repeats):
        for jobs in (1, 2):
            log(f"campaign throughput: --jobs {jobs}")
            with tempfile.TemporaryDirectory(prefix="pagerace-bench-") as d:
                plan = plan_cls(
                    name="bench",
                    workloads=("default",),
                    seeds=tuple(range(int(budget * 2000))),
                    jobs=jobs,
                    budget_s=budget,
                )
                res = run_campaign(plan, d)
                rates[jobs].append(res.rate)
                ran[jobs].append(res.ran)
    r1, r2 = median(rates[1]), median(rates[2])
    how = f"run_campaign(default, {budget:g} s budget), CampaignResult.rate, median of {repeats}"
    return [
        Figure("campaign.jobs1.units_per_s", "campaign --jobs 1", r1, "units/s", how=how,
               extra={"units": ran[1]}),
        Figure("campaign.jobs2.units_per_s", "campaign --jobs 2", r2, "units/s", how=how,
               extra={"units": ran[2]}),
        Figure("campaign.jobs2_vs_1", "campaign --jobs 2 / --jobs 1", r2 / r1 if r1 else None,
               "ratio", how="the two figures above, same run"),
    ]

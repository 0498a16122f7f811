"""PCT's step estimate ``k`` learned from runs: a hunt learns it from its own runs so far
(``harness/hunt.py``), a campaign from three probe runs per configuration
(``campaign.campaign_pct_k``). A module of its own so that neither imports the other."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def learned_k(steps: Sequence[int]) -> int | None:
    """PCT's step estimate from the lengths (shared steps) of the runs made so far:
    their median (the median, not the maximum: a PCT run that starved an actor runs a
    whole fair window more); ``None`` before the first run."""
    if not steps:
        return None
    return max(1, int(statistics.median_low(steps)))


__all__ = ["learned_k"]

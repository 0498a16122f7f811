"""PCT's step estimate ``k`` learned from runs: a hunt learns it from its own runs so far
(``harness/hunt.py``), a campaign from three probe runs per configuration
(``campaign.campaign_pct_k``). A module of its own so that neither imports the other.
The median is taken by sorting, not with ``statistics`` (which imports ``fractions`` and
``decimal``: about 8 ms of every ``pagerace hunt``'s start-up)."""

from __future__ import annotations

from collections.abc import Sequence


def learned_k(steps: Sequence[int]) -> int | None:
    """PCT's step estimate from the lengths (shared steps) of the runs made so far:
    their low median (the median, not the maximum: a PCT run that starved an actor runs a
    whole fair window more; the lower middle one of an even count, as
    ``statistics.median_low``); ``None`` before the first run."""
    if not steps:
        return None
    return max(1, int(sorted(steps)[(len(steps) - 1) // 2]))


__all__ = ["learned_k"]

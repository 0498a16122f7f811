"""Scheduling strategies, one module each, selected in :func:`make_scheduler`."""

from __future__ import annotations

from collections.abc import Sequence

from ...core.machine.errors import InvalidOption
from .exhaustive import Exhaustive
from .pct import PCT
from .pos import POS
from .protocol import Scheduler
from .random_walk import RandomWalk
from .replay import Replay, ScheduleDiverged
from .round_robin import RoundRobin
from .sticky import StickyWalk
from .surw import SURW

STRATEGIES = {
    "random": "seeded random walk: a uniformly random runnable actor at every step",
    "pct": "PCT with a priority-change depth (--pct-depth, default 3)",
    "rr": "round robin with a quantum (--quantum, default 1)",
    "sticky": "sticky random walk: the running actor keeps the CPU with probability "
    "1 - 1/quantum (--quantum: 1 is the random walk; hunt and mix use 3), else a uniformly "
    "random runnable actor runs",
    "replay": "replay a recorded schedule (used by `pagerace replay`)",
    "pos": "partial order sampling (POS, CAV 2018): random priorities, redrawn for the "
    "actors whose next step races with the one that ran",
    "urw": "uniform random walk: an actor runs with probability proportional to its "
    "remaining steps (counts from an earlier run)",
    "surw": "selectively uniform random walk (SURW, ASPLOS 2025): URW over the steps that "
    "touch words shared with other actors",
    "exhaustive": "bounded exhaustive search over schedules (CHESS preemption bound; "
    "used by `pagerace hunt`; a single run replays --prefix and never preempts)",
}


def make_scheduler(
    strategy: str,
    *,
    pct_depth: int = 3,
    pct_k: int = 2000,
    quantum: int = 1,
    schedule: Sequence[int] = (),
    strict: bool = True,
    counts: Sequence[int] = (),
) -> Scheduler:
    """The scheduler for ``strategy``.

    Raises:
        InvalidOption: unknown strategy (the message lists the valid ones).
    """
    if strategy == "random":
        return RandomWalk()
    if strategy == "pct":
        return PCT(depth=pct_depth, k=pct_k)
    if strategy == "rr":
        return RoundRobin(quantum=quantum)
    if strategy == "sticky":
        return StickyWalk(quantum=quantum)
    if strategy == "replay":
        return Replay(schedule, strict=strict)
    if strategy == "exhaustive":
        return Exhaustive(schedule)
    if strategy == "pos":
        return POS()
    if strategy in ("urw", "surw"):
        return SURW(counts, selective=strategy == "surw")
    raise InvalidOption(
        f"unknown strategy {strategy!r}; valid strategies: {', '.join(sorted(STRATEGIES))}"
    )


__all__ = [
    "PCT",
    "POS",
    "STRATEGIES",
    "SURW",
    "Exhaustive",
    "RandomWalk",
    "Replay",
    "RoundRobin",
    "ScheduleDiverged",
    "Scheduler",
    "StickyWalk",
    "make_scheduler",
]

"""The scheduler protocol: who runs at the next preemption point.

One module per strategy, selected in one place (:func:`make_scheduler`), as in
pytest-xdist's ``scheduler/``. A scheduler sees only the sorted list of runnable actor
ids and the step number, and draws from the engine's stream.
"""

from __future__ import annotations

from typing import Protocol

from .._rng import Stream


class Scheduler(Protocol):
    """Picks the next actor to run."""

    name: str

    def start(self, n_actors: int, stream: Stream) -> None:
        """Called once before the first step."""

    def choose(self, runnable: list[int], step: int) -> int:
        """Return one id from ``runnable`` (sorted ascending, never empty)."""
        ...

    def describe(self) -> dict[str, object]:
        """Parameters and guarantees for the run record."""
        ...

"""pagerace.harness.parallel: the parallel engine.

Worker processes act as CPUs over one shared-memory block with real atomics; a watchdog
in the parent finds deadlocks, livelocks, dead and runaway workers; the merged ticket
order of every step replays on the deterministic engine. See ``docs/parallel.md``.
"""

from ._engine import run_parallel as run_parallel
from .reproduce import Reproduction as Reproduction
from .reproduce import replay_parallel_failure as replay_parallel_failure
from .reproduce import reproduce as reproduce
from .shm import clean_leftovers as clean_leftovers
from .watchdog import WatchdogConfig as WatchdogConfig

__all__ = [
    "Reproduction",
    "WatchdogConfig",
    "clean_leftovers",
    "replay_parallel_failure",
    "reproduce",
    "run_parallel",
]


def __dir__() -> list[str]:
    return list(__all__)

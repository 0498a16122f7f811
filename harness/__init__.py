"""pagerace.harness: engines, schedulers, artifacts and the command line."""

from .engine import DeterministicEngine as DeterministicEngine
from .engine import Limits as Limits
from .engine import Outcome as Outcome
from .engine import RunResult as RunResult
from .runner import RunRecord as RunRecord
from .runner import run_deterministic as run_deterministic

__all__ = [
    "DeterministicEngine",
    "Limits",
    "Outcome",
    "RunRecord",
    "RunResult",
    "run_deterministic",
]


def __dir__() -> list[str]:
    return __all__

"""pagerace.harness: engines, schedulers, artifacts and the command line.

The names below resolve on first use (PEP 562 ``__getattr__``): importing a submodule
such as ``pagerace.harness.cli`` runs this file, and the command line should not pay for
the engine unless the command it runs needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import DeterministicEngine as DeterministicEngine
    from .engine import Limits as Limits
    from .engine import Outcome as Outcome
    from .engine import RunResult as RunResult
    from .runner import RunRecord as RunRecord
    from .runner import run_deterministic as run_deterministic

# name -> the submodule that defines it
_LAZY = {
    "DeterministicEngine": "engine",
    "Limits": "engine",
    "Outcome": "engine",
    "RunResult": "engine",
    "RunRecord": "runner",
    "run_deterministic": "runner",
}

__all__ = [
    "DeterministicEngine",
    "Limits",
    "Outcome",
    "RunRecord",
    "RunResult",
    "run_deterministic",
]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

"""pagerace.core: the model of kernel memory state and the kernel paths over it.

Pure model: numpy only; no processes, files or pandas. Implementation modules are
``_``-prefixed; the path modules are named after the kernel source file they
transcribe (``memory``, ``rmap``, ``migrate_device``, ``dmirror``...). This namespace
re-exports the pieces other layers build on.
"""

from .machine.errors import (
    BadInput as BadInput,
)
from .machine.errors import (
    CorruptArtifact as CorruptArtifact,
)
from .machine.errors import (
    DidNotReproduce as DidNotReproduce,
)
from .machine.errors import (
    Failure as Failure,
)
from .machine.errors import (
    FailureFound as FailureFound,
)
from .machine.errors import (
    FailureKind as FailureKind,
)
from .machine.errors import (
    HarnessInternalError as HarnessInternalError,
)
from .machine.errors import (
    InvalidOption as InvalidOption,
)
from .machine.errors import (
    InvalidWorkload as InvalidWorkload,
)
from .machine.errors import (
    InvariantViolation as InvariantViolation,
)
from .machine.errors import (
    PageraceError as PageraceError,
)
from .machine.kernel import Actor as Actor
from .machine.kernel import Block as Block
from .machine.kernel import Kernel as Kernel
from .machine.layout import Geometry as Geometry
from .machine.layout import Layout as Layout
from .machine.state import State as State

__all__ = [
    "Actor",
    "BadInput",
    "Block",
    "CorruptArtifact",
    "DidNotReproduce",
    "Failure",
    "FailureFound",
    "FailureKind",
    "Geometry",
    "HarnessInternalError",
    "InvalidOption",
    "InvalidWorkload",
    "InvariantViolation",
    "Kernel",
    "Layout",
    "PageraceError",
    "State",
]


def __dir__() -> list[str]:
    return __all__

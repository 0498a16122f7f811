"""pagerace.core: the model of kernel memory state and the kernel paths over it.

Pure model: numpy only; no processes, files or pandas. Implementation modules are
``_``-prefixed; the path modules are named after the kernel source file they
transcribe (``memory``, ``rmap``, ``migrate_device``, ``dmirror``...). This namespace
re-exports the pieces other layers build on.
"""

from ._errors import (
    BadInput as BadInput,
)
from ._errors import (
    CorruptArtifact as CorruptArtifact,
)
from ._errors import (
    DidNotReproduce as DidNotReproduce,
)
from ._errors import (
    Failure as Failure,
)
from ._errors import (
    FailureFound as FailureFound,
)
from ._errors import (
    FailureKind as FailureKind,
)
from ._errors import (
    HarnessInternalError as HarnessInternalError,
)
from ._errors import (
    InvalidOption as InvalidOption,
)
from ._errors import (
    InvalidWorkload as InvalidWorkload,
)
from ._errors import (
    InvariantViolation as InvariantViolation,
)
from ._errors import (
    PageraceError as PageraceError,
)
from ._kernel import Actor as Actor
from ._kernel import Block as Block
from ._kernel import Kernel as Kernel
from ._layout import Geometry as Geometry
from ._layout import Layout as Layout
from ._state import State as State

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

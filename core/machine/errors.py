"""The exception family and the failure record.

One base, :class:`PageraceError`. Each subclass mixes in the builtin that matches its
meaning, and each family maps onto a command-line exit code: a failure found in the
kernel model → 1, bad input → 2, our own bug → 3, a replay that did not reproduce → 4.
Everything here pickles, so a worker process can raise it to the parent.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class FailureKind(str, enum.Enum):
    """What an oracle saw. Values print as they appear in CSV rows and artifacts."""

    DEADLOCK = "deadlock"
    LIVELOCK = "livelock"
    EVICTION_STUCK = "eviction_stuck"
    USE_AFTER_FREE = "use_after_free"
    REFCOUNT_UNDERFLOW = "refcount_underflow"
    BAD_UNLOCK = "bad_unlock"
    LOCK_BALANCE = "lock_balance"
    MIGRATION_ENTRY_LEFT = "migration_entry_left"
    MIGRATION_ENTRY_UNLOCKED = "migration_entry_unlocked"
    LOST_WRITE = "lost_write"
    STALE_READ = "stale_read"
    REFCOUNT_MISMATCH = "refcount_mismatch"
    MAPCOUNT_MISMATCH = "mapcount_mismatch"
    LEAK = "leak"
    BAD_MAPPING = "bad_mapping"
    PIN_COHERENCY = "pin_coherency"
    STALE_TLB = "stale_tlb"
    DIRTY_CONSERVATION = "dirty_conservation"
    DEVICE_PAGE_LIFETIME = "device_page_lifetime"
    SIGBUS = "sigbus"
    DRIVER_CONTRACT = "driver_contract"
    EXCLUSIVE_BYPASS = "exclusive_bypass"
    OUTCOME = "outcome"
    BUG_ON = "bug_on"

    def __str__(self) -> str:
        return self.value

    @property
    def family(self) -> str:
        """Failures that shrink and replay as the same thing share a family."""
        return _FAMILY.get(self, self.value)


_FAMILY = {
    FailureKind.DEADLOCK: "hang",
    FailureKind.LIVELOCK: "hang",
    FailureKind.EVICTION_STUCK: "hang",
}


@dataclass(frozen=True)
class Failure:
    """What went wrong, in the terms a kernel developer reads.

    Attributes:
        kind: which oracle fired.
        message: one or two sentences naming what was seen.
        step: the engine step at which it was seen.
        actors: names of the actors involved.
        pages: page frame numbers involved.
        sites: call sites (``function:what``) involved.
        locks: the locks involved, as ``page:<pfn>``, ``ptl:<mm>:<table>``, ``mmap:<mm>``.
        details: anything else, JSON-able.
    """

    kind: FailureKind
    message: str
    step: int = -1
    actors: tuple[str, ...] = ()
    pages: tuple[int, ...] = ()
    sites: tuple[str, ...] = ()
    locks: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind.value
        d["actors"] = list(self.actors)
        d["pages"] = list(self.pages)
        d["sites"] = list(self.sites)
        d["locks"] = list(self.locks)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Failure:
        return cls(
            kind=FailureKind(d["kind"]),
            message=str(d["message"]),
            step=int(d.get("step", -1)),
            actors=tuple(d.get("actors", ())),
            pages=tuple(int(p) for p in d.get("pages", ())),
            sites=tuple(d.get("sites", ())),
            locks=tuple(d.get("locks", ())),
            details=dict(d.get("details", {})),
        )

    def headline(self) -> str:
        who = f" [{', '.join(self.actors)}]" if self.actors else ""
        return f"{self.kind.value} at step {self.step}{who}: {self.message}"


class PageraceError(Exception):
    """Base of every error pagerace raises on purpose."""

    exit_code = 3


# -- exit code 1: a failure found in the model --------------------------------------------
class FailureFound(PageraceError):
    """An oracle fired. Carries the :class:`Failure` record."""

    exit_code = 1

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.headline())
        self.failure = failure

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.failure,))


class InvariantViolation(FailureFound, AssertionError):
    """A local check (the kernel's ``VM_BUG_ON``) or a global invariant failed."""


# -- exit code 2: bad input -----------------------------------------------------------------
class BadInput(PageraceError, ValueError):
    """The user gave us something we cannot use. The message names it and the choices."""

    exit_code = 2


class InvalidWorkload(BadInput):
    """A workload name or file, or a key or value inside it, is not valid."""


class InvalidOption(BadInput):
    """A command-line option, variant, bug or strategy is not valid."""


class CorruptArtifact(BadInput):
    """A failure artifact cannot be read, or was written by another schema version."""


# -- exit code 3: our own bug ---------------------------------------------------------------
class HarnessInternalError(PageraceError, RuntimeError):
    """This is a bug in pagerace, not in the kernel model. Please report it."""

    exit_code = 3


# -- exit code 130: stopped from outside ----------------------------------------------------
class StoppedFromOutside(PageraceError):
    """A worker process was killed from outside (the OOM killer's SIGKILL, an operator's
    kill): not a kernel failure and not a bug in pagerace; what finished is kept."""

    exit_code = 130


# -- exit code 4: a replay that did not reproduce ------------------------------------------
class DidNotReproduce(PageraceError, AssertionError):
    """A recorded failure did not happen again on replay."""

    exit_code = 4


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, PageraceError):
        return exc.exit_code
    return 3

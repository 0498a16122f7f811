"""What every benchmark shares: the machine description, the figure record, medians.

A :class:`Figure` is one number the bench reports: a name, a value (``None`` when the
piece it measures is not in this build, with the reason in ``note``), its unit, how it
was measured, and, where the issue sets one, the target it is compared against.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

NOT_AVAILABLE = "not available in this build"


@dataclass
class Target:
    """A goal from issue 7: ``value <op> threshold``."""

    op: str  # ">=" or "<=" or "<"
    threshold: float
    text: str

    def met(self, value: float | None, lower_bound: bool = False) -> bool | None:
        """Whether ``value`` meets the target; ``None`` when there is no value.

        A ``lower_bound`` value (the true figure is at least this, e.g. a median of hunts
        that ran out of budget) never meets an upper-bound target.
        """
        if value is None:
            return None
        if lower_bound and self.op in ("<", "<="):
            return False
        if self.op == ">=":
            return value >= self.threshold
        if self.op == "<=":
            return value <= self.threshold
        if self.op == "<":
            return value < self.threshold
        raise ValueError(f"unknown target op {self.op!r}; valid: >=, <=, <")


@dataclass
class Figure:
    """One reported figure."""

    name: str  # dotted id, e.g. "engine.default.points_per_s"
    label: str  # what a reader sees in the table
    value: float | None
    unit: str
    how: str = ""  # one line: how it was measured
    note: str = ""  # caveats: budget hits, not available, ...
    target: Target | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    lower_bound: bool = False  # the true figure is at least ``value`` (budget ran out)

    @property
    def available(self) -> bool:
        return self.value is not None

    @property
    def met(self) -> bool | None:
        """Whether the figure meets its target (None: no target or no value)."""
        if self.target is None:
            return None
        return self.target.met(self.value, self.lower_bound)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "value": self.value,
            "unit": self.unit,
            "available": self.available,
            "how": self.how,
            "note": self.note,
            "lower_bound": self.lower_bound,
        }
        if self.target is not None:
            d["target"] = {
                "op": self.target.op,
                "threshold": self.target.threshold,
                "text": self.target.text,
                "met": self.met,
            }
        if self.extra:
            d["extra"] = self.extra
        return d


def unavailable(name: str, label: str, unit: str, why: str, target: Target | None = None) -> Figure:
    """A figure for a piece this build does not have: no number, the reason in ``note``."""
    return Figure(name, label, None, unit, note=f"{NOT_AVAILABLE}: {why}", target=target)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def quartiles(xs: Sequence[float]) -> tuple[float, float]:
    """The first and third quartiles (the spread around :func:`median`); one value: itself."""
    if len(xs) < 2:
        return float(xs[0]), float(xs[0])
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return float(q[0]), float(q[2])


def cpu_model() -> str:
    """``model name`` from /proc/cpuinfo (the first CPU), or the platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Cores, Python, numpy, CPU model, OS: what the figures were measured on."""
    import numpy as np

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    try:
        from pagerace import __version__ as pr_version
    except ImportError:  # pragma: no cover - the bench needs pagerace installed
        pr_version = "unknown"
    return {
        "cores": os.cpu_count() or 1,
        "usable_cores": usable,
        "cpu_model": cpu_model(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "pagerace": pr_version,
        "loadavg_1m_at_start": load_average(),
    }


def load_average() -> float | None:
    """The 1-minute load average: other work on the machine skews every figure."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


class Deadline:
    """A wall-clock budget for one benchmark, so the whole run stays within its time."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.t0 = time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)

    def over(self) -> bool:
        return self.left() <= 0


Log = Callable[[str], None]


def quiet(_msg: str) -> None:
    """A log function that drops progress messages."""


def variant_for(w: Any, preferred: str = "v6") -> str | None:
    """A protocol variant that has every path workload ``w`` needs (``preferred`` first)."""
    from pagerace.core.variants import VARIANTS

    names = [preferred] + sorted(v for v in VARIANTS if v != preferred)
    for v in names:
        if v in VARIANTS and set(w.needs) <= VARIANTS[v].provides:
            return v
    return None

"""Options and value checks more than one command defines the same way (``run``,
``hunt``, ``shrink``, ``campaign``): one definition each, so the commands cannot drift
apart. :func:`parse_duration` is THE duration parser: every option or plan key that takes
a time (``--duration``, ``--budget``, ``--time``...) goes through it.

Not a command: :data:`pagerace.harness.commands.COMMANDS` does not list it.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from typing import Any

from ...core.machine.errors import InvalidOption

#: The longest duration a user may type (a budget of a month is a typo, not a plan).
MAX_DURATION_S = 7 * 24 * 3600.0
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PART = re.compile(rf"({_NUM})(ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_NUM}(?:ms|s|m|h|d))+|{_NUM}")
DURATION_FORMS = "seconds (1.5) or a number with units: 250ms, 30s, 2m, 1h30m"


def parse_duration(
    text: str | float | int | None, option: str = "--duration", *, none_ok: bool = False
) -> float | None:
    """A user-typed duration → seconds: ``1.5`` (seconds), ``250ms``, ``30s``, ``2m``,
    ``1h``, ``1h30m``, ``2m30s``, ``1d``; ints and floats from a TOML file are seconds.

    Args:
        text: what the user typed (or a TOML value).
        option: the option or plan key it came from, named in the error.
        none_ok: ``None``, ``"none"``, ``""`` and ``0`` mean "no limit" (returns ``None``)
            instead of being an error.

    Raises:
        InvalidOption: anything else: not a duration, negative, zero (unless ``none_ok``),
            or longer than :data:`MAX_DURATION_S`; the one-line message names ``option``,
            the value and the accepted forms.
    """
    if text is None:
        if none_ok:
            return None
        raise InvalidOption(f"{option}: a duration is required; use {DURATION_FORMS}")
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise InvalidOption(f"{option} {text!r}: not a duration; use {DURATION_FORMS}")
    if isinstance(text, str):
        t = text.strip().lower()
        if none_ok and t in ("", "none", "0"):
            return None
        if t.startswith("-"):
            raise InvalidOption(f"{option} {text!r}: a duration cannot be negative; use {DURATION_FORMS}")
        if not _DURATION.fullmatch(t):
            raise InvalidOption(f"{option} {text!r}: not a duration; use {DURATION_FORMS}")
        parts = _PART.findall(t)
        value = sum(float(n) * _UNIT_S[u] for n, u in parts) if parts else float(t)
    else:
        value = float(text)
        if math.isnan(value):
            raise InvalidOption(f"{option} {text!r}: not a duration; use {DURATION_FORMS}")
        if value < 0:
            raise InvalidOption(f"{option} {text!r}: a duration cannot be negative; use {DURATION_FORMS}")
        if value == 0 and none_ok:
            return None
    if not value > 0:
        raise InvalidOption(f"{option} {text!r}: must be more than zero; use {DURATION_FORMS}")
    if value > MAX_DURATION_S:
        raise InvalidOption(
            f"{option} {text!r}: longer than the limit of {MAX_DURATION_S / 86400:g} days"
        )
    return value


def duration(option: str) -> Callable[[str], float]:
    """An argparse ``type`` for a duration option (see :func:`parse_duration`)."""

    def conv(text: str) -> float:
        try:
            v = parse_duration(text, option)
        except InvalidOption as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        assert v is not None
        return v

    return conv



def at_least(name: str, lo: int = 1) -> Callable[[str], int]:
    """An argparse ``type``: an integer of at least ``lo`` for option ``name``."""

    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{name} must be at least {lo}, not {v}")
        return v

    return conv


def seconds(text: str) -> float:
    """An argparse ``type``: a positive duration (``10``, ``1.5``, ``30s``, ``2m``) in
    seconds, checked by :func:`parse_duration`."""
    return duration("the time")(text)


def add_variant_and_bugs(p: argparse.ArgumentParser) -> None:
    """``--variant`` (one protocol generation) and ``--bug`` (repeatable catalog toggle)."""
    p.add_argument("--variant", default="v6", help="protocol variant (default: v6)")
    p.add_argument(
        "--bug",
        action="append",
        default=[],
        metavar="NAME",
        help="switch on a bug toggle from the catalog (repeatable; see 'pagerace list --bugs')",
    )


def add_seed(p: argparse.ArgumentParser, help: str, metavar: str | None = None) -> None:
    """``--seed``: a seed of 0 or more, default 0 (``help`` says what it seeds)."""
    p.add_argument("--seed", type=at_least("--seed", 0), default=0, metavar=metavar, help=help)


def add_out(p: argparse.ArgumentParser) -> None:
    """``--out``: the output directory of the CSV files and artifacts."""
    p.add_argument(
        "--out", default="pagerace-out", metavar="DIR", help="output directory (default: ./pagerace-out)"
    )


def add_status_every(p: argparse.ArgumentParser) -> None:
    """``--status-every TIME``: the period of the status line printed when stderr is not
    a terminal (a CI log)."""
    p.add_argument(
        "--status-every", type=duration("--status-every"), default=30.0, metavar="TIME",
        help="when stderr is not a terminal (CI), print a status line this often: 30s, 1m, 500ms "
        "(default: 30s; --quiet: none)",
    )


class StatusLine:
    """What a long command says while it works, on stderr: on a terminal one line
    rewritten in place (at most every 0.2 s); in a log (not a terminal) a full line every
    ``every`` seconds, so a CI job is never silent for long; nothing when ``quiet``.

    ``clock`` and ``stream`` are injectable for tests."""

    def __init__(
        self, every: float, quiet: bool = False, stream: Any = None, clock: Callable[[], float] | None = None
    ) -> None:
        import sys
        import time

        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock or time.monotonic
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = 0.2 if self.tty else every
        self.quiet = quiet
        self.last = self.clock()
        self.shown = False

    def __call__(self, text: Callable[[], str]) -> None:
        """Show ``text()`` if it is time (``text`` is called only then)."""
        if self.quiet:
            return
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        if self.tty:
            self.stream.write("\r" + text()[:79].ljust(79))
            self.shown = True
        else:
            self.stream.write(text() + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the terminal line, if one was drawn."""
        if self.shown:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()
            self.shown = False

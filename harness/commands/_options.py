"""Options and value checks more than one command defines the same way (``run``,
``hunt``, ``shrink``, ``campaign``): one definition each, so the commands cannot drift
apart. :func:`parse_duration` is THE duration parser: every option or plan key that takes
a time (``--duration``, ``--budget``, ``--time``...) goes through it.

Not a command: :data:`pagerace.harness.commands.COMMANDS` does not list it.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
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


def at_least(name: str, lo: int = 1, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer of at least ``lo`` (and at most ``hi``, a bound on
    what the machine can do) for option ``name``."""

    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{name} must be at least {lo}, not {v}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"{name} must be at most {hi:,}, not {v:,}")
        return v

    return conv


#: Seeds are int64 everywhere they are written.
MAX_SEED = 2**63 - 1


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
    p.add_argument(
        "--seed", type=at_least("--seed", 0, MAX_SEED), default=0, metavar=metavar, help=help
    )


def add_out(p: argparse.ArgumentParser) -> None:
    """``--out``: the output directory of the CSV files and artifacts."""
    p.add_argument(
        "--out", default="pagerace-out", metavar="DIR", help="output directory (default: ./pagerace-out)"
    )


def interruptible() -> None:
    """Make Ctrl-C (SIGINT) stop this command even when it arrived ignored: a
    non-interactive shell starts a background job (``pagerace campaign ... &`` in a
    script) with SIGINT ignored, and Python then installs no handler, so the job could
    only be killed, losing the in-flight units and the summary (issue 10 item 10).
    Restores Python's own handler (a ``KeyboardInterrupt``: exit 130)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def check_out_dir(out: str | os.PathLike[str], option: str = "--out", *, artifacts: bool = False) -> Path:
    """An output directory, checked before any work starts (issue 10 item 7: a bad one was
    an internal error after the work, and lost it): it is created if missing, and a probe
    file is created and removed in it (``access()`` says yes to root on /proc). With
    ``artifacts``, its ``artifacts/`` must not be a file either.

    Raises:
        InvalidOption: it is a file, or cannot be created or written.
    """
    p = _path(out, option)
    if p.exists() and not p.is_dir():
        raise InvalidOption(f"{option} {str(out)!r} is a file, not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidOption(f"{option} {str(out)!r}: cannot create the directory ({exc.strerror})") from None
    _probe(p, option, str(out))
    if artifacts:
        a = p / "artifacts"
        if a.exists() and not a.is_dir():
            raise InvalidOption(
                f"{option} {str(out)!r}: {str(a)!r} is a file; failure artifacts are written in that "
                "directory (move the file or choose another --out)"
            )
        if a.is_dir():
            _probe(a, option, str(a))
    return p


def check_out_file(path: str | os.PathLike[str], option: str) -> Path:
    """An output file, checked before any work starts: not a directory, and its
    directory exists (or is created) and takes a new file.

    Raises:
        InvalidOption: it cannot be written there.
    """
    p = _path(path, option)
    if p.is_dir():
        raise InvalidOption(f"{option} {str(path)!r} is a directory; give a file name")
    parent = p.parent
    if parent.exists() and not parent.is_dir():
        raise InvalidOption(f"{option} {str(path)!r}: {str(parent)!r} is not a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidOption(
            f"{option} {str(path)!r}: cannot create its directory {str(parent)!r} ({exc.strerror})"
        ) from None
    _probe(parent, option, str(path))
    return p


def _path(text: str | os.PathLike[str], option: str) -> Path:
    """A path from a plan file or the command line (a TOML string can hold a NUL byte,
    which no path can)."""
    if "\0" in str(text) or not str(text):
        raise InvalidOption(f"{option} {str(text)!r} is not a valid path")
    return Path(text)


def _probe(d: Path, option: str, shown: str) -> None:
    """Create (exclusively) and remove a file in ``d``: a name of this process and
    instant, not ``tempfile`` (which imports shutil, bz2 and lzma: start-up of every
    command that writes)."""
    tmp = os.path.join(d, f".pagerace-probe-{os.getpid()}-{time.monotonic_ns()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise InvalidOption(f"{option} {shown!r}: cannot write there ({exc.strerror})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
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

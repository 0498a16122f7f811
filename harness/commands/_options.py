"""Options and value checks more than one command defines the same way (``run``,
``hunt``, ``shrink``): one definition each, so the commands cannot drift apart.

Not a command: :data:`pagerace.harness.commands.COMMANDS` does not list it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


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
    """An argparse ``type``: a positive number of seconds."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"the time must be more than zero, not {text}")
    return v


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

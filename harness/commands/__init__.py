"""The ``pagerace`` subcommands: one module each, registered in :data:`COMMANDS`.

A command module exposes:

- ``NAME``: the subcommand (``run``);
- ``HELP``: one line for ``pagerace --help`` and the top of ``pagerace NAME --help``;
- ``EXAMPLES``: a list of ``(command line, what it does)`` pairs, shown by
  ``pagerace NAME --help`` (plain strings are accepted too);
- ``add_arguments(parser)``: its options, on an ``argparse`` parser;
- ``run(args) -> int``: the exit code. Errors are raised, not printed: the one handler
  in :func:`pagerace.harness.cli.main` maps each :class:`PageraceError` onto its exit code
  (1 failure found, 2 bad input, 3 internal error, 4 did not reproduce).

Every module is imported for ``pagerace --help``, and a command's own module for every
run of that command (``pagerace list`` imports ``list`` alone): keep the import light and
import heavy dependencies (pandas, matplotlib, the parallel engine) inside ``run``.

To add a command, add its module here and its name to :data:`COMMANDS`, in the order
``pagerace --help`` lists them.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

COMMANDS: list[str] = [
    "list",
    "run",
    "replay",
    "hunt",
    "compare",
    "shrink",
    "campaign",
    "report",
    "bench",
    "coverage",
    "clean",
]

_REQUIRED = ("NAME", "HELP", "EXAMPLES", "add_arguments", "run")


def load_commands(names: Sequence[str] | None = None) -> list[ModuleType]:
    """The command modules, in :data:`COMMANDS` order (only ``names`` when given).

    Raises:
        HarnessInternalError: a registered module is missing or lacks a required name.
    """
    from ...core.machine.errors import HarnessInternalError

    mods = []
    for name in COMMANDS:
        if names is not None and name not in names:
            continue
        mod = importlib.import_module(f"{__name__}.{name}")
        missing = [a for a in _REQUIRED if not hasattr(mod, a)]
        if missing:
            raise HarnessInternalError(f"command module {mod.__name__} lacks {', '.join(missing)}")
        mods.append(mod)
    return mods

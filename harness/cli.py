"""The ``pagerace`` command line.

Subcommands live one per module in ``harness/commands/`` and are registered in
:data:`pagerace.harness.commands.COMMANDS`. This module builds the parser from them and
is the ONE place where errors become exit codes:

====  ==========================================================================
code  meaning
====  ==========================================================================
0     nothing found
1     a failure was found (:class:`FailureFound`), or a replay reproduced it
2     bad input: unknown workload, bad option or value, invalid TOML, corrupt or
      other-version artifact (:class:`BadInput`); also every argparse error
3     internal error: a bug in pagerace (:class:`HarnessInternalError` or anything
      unexpected)
4     a replay did not reproduce its failure (:class:`DidNotReproduce`)
====  ==========================================================================

Every error is one line on stderr. Help style: each command's ``--help`` ends with
examples, one command line each, followed by what it does, then its exit codes.

``--quiet``, ``--traceback`` and ``--plugin FILE.py`` are accepted by every command,
before or after its name (:func:`add_common_options`); plugins (``harness/plugins.py``)
are loaded before the command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from .._version import __version__
from ..core.machine.errors import (
    BadInput,
    DidNotReproduce,
    FailureFound,
    HarnessInternalError,
    InvalidOption,
    PageraceError,
    StoppedFromOutside,
)
from .commands import load_commands

EXIT_CODES = (
    (0, "nothing found"),
    (1, "a failure was found (or a replay reproduced it)"),
    (2, "bad input: unknown workload, bad option, invalid TOML, corrupt artifact"),
    (3, "internal error (a bug in pagerace: please report it)"),
    (4, "a replay did not reproduce the recorded failure (run --engine parallel: nor a deterministic try)"),
)


class UsageError(InvalidOption):
    """A command line argparse could not parse (``prog`` names the (sub)command)."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.prog, str(self)))


class _Parser(argparse.ArgumentParser):
    """argparse, but errors raise (one line, exit 2 through :func:`main`) instead of
    printing the usage block and exiting from inside the parser."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A value that starts with a minus and a digit (`--duration -5s`, `--seeds -3-4`)
        # is the option's (bad) value, named by the option's own check, not an unknown
        # option ("expected one argument"). No pagerace option looks like a number.
        self._negative_number_matcher = re.compile(r"^-\d")

    def error(self, message: str) -> Any:
        raise UsageError(self.prog, f"{message} (see '{self.prog} --help')")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter (descriptions and epilogs as written), its width found as
    argparse finds it (``shutil.get_terminal_size().columns - 2``) but without importing
    ``shutil``, which imports ``bz2`` and ``lzma``: argparse makes a formatter for every
    option it adds, so every command paid that at start-up."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``: ``$COLUMNS`` when a positive number, else
    the terminal of ``sys.__stdout__``, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return columns


def format_examples(examples: Any) -> str:
    """``EXAMPLES`` (pairs or plain lines) as the ``--help`` epilog."""
    if isinstance(examples, str):
        examples = [examples]
    lines = ["examples:"]
    for ex in examples:
        if isinstance(ex, (tuple, list)):
            cmd, what = ex
            lines.append(f"  {cmd}")
            lines.append(f"      {what}")
        else:
            lines.append(f"  {ex}")
    return "\n".join(lines)


#: Options that take a value and that every command accepts before or after its name.
_VALUE_OPTIONS = ("--plugin",)


def command_named(argv: Sequence[str]) -> str | None:
    """The registered command ``argv`` runs (its first word that is not an option nor the
    value of ``--plugin``), or None (``pagerace --help``, no command, an unknown one)."""
    from .commands import COMMANDS

    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in _VALUE_OPTIONS:
            skip = True
            continue
        if not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def add_common_options(p: argparse.ArgumentParser, top: bool) -> None:
    """``--quiet``, ``--traceback`` and ``--plugin``: on the top-level parser (``top``)
    and on every command's, so they work before or after the command name. The top
    level's land in ``_g_*``, the command's in ``quiet`` / ``_s_*``; :func:`main` merges
    them. A command that defines ``--quiet`` itself keeps its own help for it."""
    pre = "_g_" if top else "_s_"
    have = set(p._option_string_actions)
    if not top:
        p.set_defaults(_own_quiet="--quiet" in have)
    if "--quiet" in have and "-q" not in have:
        # the command's own --quiet: -q is the same switch, as on every other command
        p.add_argument("-q", dest="quiet", action="store_true", help=argparse.SUPPRESS)
    if "--quiet" not in have:
        p.add_argument(
            "-q", "--quiet", dest="_g_quiet" if top else "quiet", action="store_true",
            help="print nothing on stdout: the exit code and the files say what happened "
            "(errors still go to stderr)",
        )
    p.add_argument(
        "--traceback", dest=f"{pre}traceback", action="store_true",
        help="on an internal error, print the Python traceback too",
    )
    p.add_argument(
        "--plugin", dest=f"{pre}plugin", action="append", default=[], metavar="FILE.py",
        help="load a plugin (a .py file or a module) that registers variants, actor kinds or "
        "operations (repeatable; also $PAGERACE_PLUGINS and the 'pagerace.plugins' entry points)",
    )


def exit_codes_epilog(codes: Sequence[tuple[int, str]]) -> str:
    """The ``exit codes:`` block every ``--help`` ends with."""
    return "exit codes:\n" + "\n".join(f"  {c:<3} {what}" for c, what in codes)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``pagerace`` parser with every command, or with the command ``only`` alone.

    Start-up: building a command's subparser imports its module, and with it what the
    command runs (the engine, numpy...). ``main`` builds the parser of the one command it
    runs, so ``pagerace list`` never imports what ``pagerace campaign`` needs; the top
    level ``--help`` and the error for an unknown command build them all."""
    mods = load_commands([only] if only is not None else None)
    top_examples = [m.EXAMPLES[0] for m in mods if m.EXAMPLES]
    epilog = (
        format_examples(top_examples)
        + "\n\n"
        + exit_codes_epilog(EXIT_CODES)
        + "\n\nRun 'pagerace COMMAND --help' for a command's options and examples."
    )
    parser = _Parser(
        prog="pagerace",
        description=(
            "Stress and reproduction harness for the Linux kernel's page-migration locking "
            "protocols (migrate_vma_*, HMM, device-private memory)."
        ),
        epilog=epilog,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"pagerace {__version__}")
    add_common_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for m in mods:
        p = sub.add_parser(
            m.NAME,
            help=m.HELP,
            description=m.HELP,
            epilog=format_examples(m.EXAMPLES)
            + "\n\n"
            + exit_codes_epilog(getattr(m, "EXIT_CODES", EXIT_CODES)),
            formatter_class=_Formatter,
        )
        m.add_arguments(p)
        add_common_options(p, top=False)
        p.set_defaults(_run=m.run)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _report(prefix: str, msg: str) -> None:
    print(f"{prefix}{msg}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pagerace`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    show_tb = "--traceback" in argv or bool(os.environ.get("PAGERACE_TRACEBACK"))
    cmd = "pagerace"
    try:
        parser = build_parser(command_named(argv))
        nul = next((a for a in argv if "\0" in a), None)
        if nul is not None:  # execve cannot pass one; main() called in-process can
            raise UsageError("pagerace", f"argument {nul!r} holds a NUL byte; no value or path can")
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return int(exc.code or 0) if not isinstance(exc.code, str) else 2
        if args.command is None:
            parser.print_help(sys.stderr)
            _report("pagerace: error: ", "no command given; choose one of the commands above")
            return 2
        cmd = f"pagerace {args.command}"
        args.quiet = bool(getattr(args, "quiet", False) or args._g_quiet)
        args.traceback = bool(args._g_traceback or getattr(args, "_s_traceback", False))
        args.plugins = [*args._g_plugin, *getattr(args, "_s_plugin", [])]
        from . import plugins

        plugins.load_all(args.plugins)
        if args.quiet and not args._own_quiet:
            # the command has no --quiet of its own: nothing it prints reaches stdout
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                return int(args._run(args))
        return int(args._run(args))
    except FailureFound as exc:
        _report(f"{cmd}: failure found: ", _one_line(exc))
        return exc.exit_code
    except UsageError as exc:
        _report(f"{exc.prog}: error: ", _one_line(exc))
        return exc.exit_code
    except DidNotReproduce as exc:
        _report(f"{cmd}: ", _one_line(exc))
        return exc.exit_code
    except BadInput as exc:
        _report(f"{cmd}: error: ", _one_line(exc))
        return exc.exit_code
    except HarnessInternalError as exc:
        if show_tb:
            _print_traceback()
        _report(f"{cmd}: internal error: ", _hint(_one_line(exc), show_tb))
        return exc.exit_code
    except StoppedFromOutside as exc:
        _report(f"{cmd}: ", _one_line(exc))
        return exc.exit_code
    except PageraceError as exc:
        _report(f"{cmd}: error: ", _one_line(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _report(f"{cmd}: ", "interrupted")
        return 130
    except BrokenPipeError:
        # `pagerace list | head`: the reader left; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        if show_tb:
            _print_traceback()
        _report(f"{cmd}: internal error: ", _hint(f"{type(exc).__name__}: {_one_line(exc)}", show_tb))
        return 3


def _print_traceback() -> None:
    """``--traceback``: the exception being handled, on stderr (``traceback`` is imported
    only then: it imports ``textwrap``, ~5-10 ms of every start-up)."""
    import traceback

    traceback.print_exc()


def _hint(msg: str, shown: bool) -> str:
    how = "" if shown else "; rerun with --traceback for details"
    return f"{msg} (this is a bug in pagerace, please report it{how})"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

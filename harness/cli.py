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
examples, one command line each, followed by what it does.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from .._version import __version__
from ..core._errors import (
    BadInput,
    DidNotReproduce,
    FailureFound,
    HarnessInternalError,
    InvalidOption,
    PageraceError,
)
from .commands import load_commands

EXIT_CODES = (
    (0, "nothing found"),
    (1, "a failure was found (or a replay reproduced it)"),
    (2, "bad input: unknown workload, bad option, invalid TOML, corrupt artifact"),
    (3, "internal error (a bug in pagerace: please report it)"),
    (4, "a replay did not reproduce the recorded failure"),
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


def build_parser() -> argparse.ArgumentParser:
    mods = load_commands()
    top_examples = [m.EXAMPLES[0] for m in mods if m.EXAMPLES]
    epilog = (
        format_examples(top_examples)
        + "\n\nexit codes:\n"
        + "\n".join(f"  {c}  {what}" for c, what in EXIT_CODES)
        + "\n\nRun 'pagerace COMMAND --help' for a command's options and examples."
    )
    parser = _Parser(
        prog="pagerace",
        description=(
            "Stress and reproduction harness for the Linux kernel's page-migration locking "
            "protocols (migrate_vma_*, HMM, device-private memory)."
        ),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pagerace {__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an internal error, print the Python traceback too",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for m in mods:
        p = sub.add_parser(
            m.NAME,
            help=m.HELP,
            description=m.HELP,
            epilog=format_examples(m.EXAMPLES),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        m.add_arguments(p)
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
        parser = build_parser()
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
            traceback.print_exc()
        _report(f"{cmd}: internal error: ", _hint(_one_line(exc), show_tb))
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
            traceback.print_exc()
        _report(f"{cmd}: internal error: ", _hint(f"{type(exc).__name__}: {_one_line(exc)}", show_tb))
        return 3


def _hint(msg: str, shown: bool) -> str:
    how = "" if shown else "; rerun with --traceback for details"
    return f"{msg} (this is a bug in pagerace, please report it{how})"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

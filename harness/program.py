"""The ``pagerace`` program: :func:`run` is what ``python -m pagerace`` and the installed
``pagerace`` script call.

It runs :func:`pagerace.harness.cli.main` and ends the process with its exit code. When
nothing is left for the interpreter's own shutdown to do (only the main thread, no child
process, no coverage measurement), the process ends with ``os._exit`` after flushing
standard output and error, instead of the interpreter tearing down every module: that
teardown (numpy, the model, the pool's modules) costs tens of milliseconds, paid by
every command a nightly job runs. Everything a command writes is written (and
``fsync``-ed where it matters) before ``main`` returns, so skipping the teardown loses
nothing. ``PAGERACE_FULL_EXIT=1`` keeps the normal exit (for tools that hook into it).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import NoReturn


def quick_exit_allowed() -> bool:
    """Whether the interpreter's shutdown has nothing to do that matters."""
    if os.environ.get("PAGERACE_FULL_EXIT") or "coverage" in sys.modules:
        return False
    if threading.active_count() > 1:
        return False
    mp = sys.modules.get("multiprocessing")
    return mp is None or not mp.active_children()


def run() -> NoReturn:
    from .cli import main

    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # a closed pipe or stream: let Python end as it does
        sys.exit(code)
    if quick_exit_allowed():
        os._exit(code)
    sys.exit(code)

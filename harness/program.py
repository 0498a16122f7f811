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

It also starts numpy's bundled OpenBLAS with one thread (:func:`one_blas_thread`) unless
the user chose a thread count: pagerace never calls BLAS, and the threads OpenBLAS starts
when numpy is imported cost a command about 0.1 s of CPU (a third of numpy's import) on
a 2-core machine, taken from the core a hunt's first worker needs. Only the program
does this; a Python program that imports pagerace keeps its own settings.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

# What numpy's bundled OpenBLAS reads for its thread count (OpenBLAS's
# driver/others/init.c and memory.c, first set wins): a user who set any of them chose.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS",
                         "OPENBLAS_DEFAULT_NUM_THREADS")


def quick_exit_allowed() -> bool:
    """Whether the interpreter's shutdown has nothing to do that matters."""
    if os.environ.get("PAGERACE_FULL_EXIT") or "coverage" in sys.modules:
        return False
    if threading.active_count() > 1:
        return False
    mp = sys.modules.get("multiprocessing")
    return mp is None or not mp.active_children()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Import numpy inside this block for an OpenBLAS of one thread: sets
    ``OPENBLAS_NUM_THREADS=1`` for the block when numpy is not imported yet and none of
    :data:`BLAS_THREAD_VARIABLES` is set, and takes it away again after (OpenBLAS reads
    it once, when numpy loads it), so the processes pagerace starts see the environment
    the user gave."""
    if "numpy" in sys.modules or any(v in os.environ for v in BLAS_THREAD_VARIABLES):
        yield
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        os.environ.pop("OPENBLAS_NUM_THREADS", None)


def run() -> NoReturn:
    with one_blas_thread():
        from .cli import main  # imports numpy (the model's words)

    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # a closed pipe or stream: let Python end as it does
        sys.exit(code)
    if quick_exit_allowed():
        os._exit(code)
    sys.exit(code)

"""Branch coverage of the model's paths by the workload library, with the branches that
handle a race outcome singled out.

A *race-outcome branch* is an ``if`` / ``while`` in ``core/`` whose test asks whether
another CPU got there first: a trylock, a compare-and-swap, a speculative reference
(``get_page_unless_zero``, ``folio_try_get``), a refcount freeze, a re-check of an entry
read earlier (``pte_same``, an entry that changed under us), a retry. Both outcomes of
such a test are kernel code (the success path, and the back-off / restore / retry
path), and a workload library that never takes the second one has never tested it.

Which tests count is decided from the source, in two ways:

- a test that calls a function whose name says it can lose a race
  (:data:`RACE_CALLS`), directly or negated, or compares an entry re-read from the
  page table with the one read before (``!=`` / ``==`` against a ``load`` or
  ``pte_read`` in the test, or ``!=`` against a value named ``orig``/``old``/``seq``/
  ``entry``: the ``pte_same`` re-check);
- a comment ``# race-outcome`` on the ``if`` line marks one the name rule misses, and
  ``# not-a-race`` unmarks one it wrongly takes.

:func:`measure` runs a standard campaign (every workload × variant that can run it ×
strategies × seeds, on the deterministic engine, in this process) under coverage.py and
:func:`race_branches` says, for every race-outcome branch, which of its two outcomes
was reached. ``pagerace coverage`` prints it.
"""

from __future__ import annotations

import ast
import io
import os
import re
import tokenize
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.machine.errors import InvalidOption

#: Names (matched anywhere in a called function's name) of kernel operations that can
#: lose a race: the branch on their result is a race outcome.
RACE_CALLS = re.compile(
    r"trylock|try_get|try_grab|_try_|^try_|unless_zero|ref_freeze|freeze|\bcas\b|^cas$|"
    r"pte_same|same_entry|recheck|changed|raced|isolate|swapcache_prepare|"
    r"read_retry|seq_retry|check_page|expected_ref"
)
#: Names of a value read before a lock was taken, compared with a re-read after it.
_HELD = re.compile(r"^(orig|old|seq|entry|orig_pte)\w*$")
#: ... but not a lock pointer: ``new_ptl != old_ptl`` decides lock nesting, not a race.
_LOCKS = re.compile(r"(ptl|lock)$")
_MARK = "race-outcome"
_UNMARK = "not-a-race"


@dataclass(frozen=True)
class RaceBranch:
    """One race-outcome test and what a campaign made of it."""

    path: str  # relative to the repository (core/mm/migrate_device.py)
    line: int
    function: str
    test: str  # the test's source, one line
    body_line: int  # first line of the branch taken when the test is true
    #: whether the test itself yields (``if not (yield from ...)``): then an arc out of
    #: the function from its line is a suspension, not the false branch leaving it
    test_yields: bool = False
    #: outcome when the test is true / false reached by the campaign
    taken_true: bool = False
    taken_false: bool = False

    @property
    def covered(self) -> bool:
        return self.taken_true and self.taken_false

    @property
    def missing(self) -> str:
        if self.covered:
            return ""
        if not self.taken_true and not self.taken_false:
            return "never reached"
        return "true branch never taken" if not self.taken_true else "false branch never taken"


@dataclass
class CoverageResult:
    """What :func:`measure` found."""

    runs: int
    failures: int
    seconds: float
    branches_total: int  # every branch arc of core/ coverage.py knows
    branches_taken: int
    race: list[RaceBranch] = field(default_factory=list)
    per_file: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (taken, total)

    @property
    def race_covered(self) -> int:
        return sum(1 for b in self.race if b.covered)


def _call_names(node: ast.AST) -> list[str]:
    out = []
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Name):
                out.append(f.id)
            elif isinstance(f, ast.Attribute):
                out.append(f.attr)
    return out


def _is_reread_compare(test: ast.AST) -> bool:
    """``entry != k.load(...)``-shaped: a value re-read in the test compared with one held."""
    for n in ast.walk(test):
        if isinstance(n, ast.Compare) and any(isinstance(op, (ast.NotEq, ast.Eq)) for op in n.ops):
            sides = [n.left, *n.comparators]
            reads = [s for s in sides if any(c in ("load", "pte_read", "read_pte") for c in _call_names(s))]
            names = [s for s in sides if isinstance(s, (ast.Name, ast.Attribute))]
            if reads and names:
                return True
            held = [
                s for s in names if isinstance(s, ast.Name) and _HELD.match(s.id) and not _LOCKS.search(s.id)
            ]
            if held and any(isinstance(op, ast.NotEq) for op in n.ops):
                return True  # an entry read under the lock against the one read before it
    return False


def _comments(src: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string
    return out


def find_race_branches(path: str, rel: str) -> list[RaceBranch]:
    """The race-outcome tests of one source file (see the module docstring)."""
    with open(path) as f:
        src = f.read()
    tree = ast.parse(src)
    comments = _comments(src)
    lines = src.splitlines()
    out: list[RaceBranch] = []

    def walk(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = func
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = child.name
            if isinstance(child, (ast.If, ast.While)):
                note = comments.get(child.lineno, "")
                by_name = any(RACE_CALLS.search(c) for c in _call_names(child.test))
                race = (by_name or _is_reread_compare(child.test) or _MARK in note) and _UNMARK not in note
                if race and child.body:
                    out.append(
                        RaceBranch(
                            path=rel,
                            line=child.lineno,
                            function=name,
                            test=lines[child.lineno - 1].strip()[:100],
                            body_line=child.body[0].lineno,
                            test_yields=any(
                                isinstance(n, (ast.Yield, ast.YieldFrom, ast.Await))
                                for n in ast.walk(child.test)
                            ),
                        )
                    )
            walk(child, name)

    walk(tree, "<module>")
    return out


def _taken(arcs: Iterable[tuple[int, int]], b: RaceBranch) -> RaceBranch:
    """Which outcomes the arcs out of the test's line show: the body's first line for
    true; any other line for false, or leaving the function (a negative destination:
    the test was the function's last statement) unless the test yields, when such an
    arc is only a suspension."""
    dests = {d for s, d in arcs if s == b.line and d != b.line}
    true = b.body_line in dests
    false = any(d != b.body_line and (d > 0 or not b.test_yields) for d in dests)
    return RaceBranch(b.path, b.line, b.function, b.test, b.body_line, b.test_yields, true, false)


def core_files(root: str) -> list[tuple[str, str]]:
    """(absolute path, path relative to the checkout) of every module of ``core/``."""
    core = os.path.join(root, "core")
    out = []
    for dirpath, _dirs, names in os.walk(core):
        for n in sorted(names):
            if n.endswith(".py"):
                p = os.path.join(dirpath, n)
                out.append((p, os.path.relpath(p, root)))
    return sorted(out, key=lambda t: t[1])


def standard_units(
    variants: Sequence[str],
    seeds: Sequence[int],
    strategies: Sequence[str],
    workloads: Sequence[str] | None = None,
) -> list[tuple[str, str, str, int]]:
    """(workload, variant, strategy, seed) of the standard campaign (every shipped
    workload unless ``workloads`` names some), in a fixed order."""
    from ..workloads import workload_names

    names = list(workloads) if workloads is not None else workload_names()
    return [(w, v, st, s) for w in names for v in variants for st in strategies for s in seeds]


def measure(
    variants: Sequence[str] = ("v6",),
    seeds: Sequence[int] = tuple(range(10)),
    strategies: Sequence[str] = ("random", "pct"),
    root: str | None = None,
    workloads: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CoverageResult:
    """Run the standard campaign under coverage.py (branch mode) and classify the
    race-outcome branches of ``core/``.

    Raises:
        InvalidOption: coverage.py is not installed, or ``core/`` is not a source checkout.
    """
    import time

    try:
        import coverage
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InvalidOption(
            "pagerace coverage needs coverage.py: pip install 'pagerace[coverage]'"
        ) from exc
    import pagerace.core as core_pkg

    from ..workloads import load_workload
    from .runner import run_deterministic

    root = root or os.path.dirname(os.path.dirname(os.path.abspath(core_pkg.__file__)))
    core_dir = os.path.join(root, "core")
    if not os.path.isdir(os.path.join(core_dir, "mm")):
        raise InvalidOption(f"no core/ sources under {root}: run pagerace coverage from a checkout")
    units = standard_units(variants, seeds, strategies, workloads)
    cov = coverage.Coverage(branch=True, source=[core_dir], data_file=None)
    started = time.perf_counter()
    runs = failures = 0
    loaded: dict[str, Any] = {}
    cov.start()
    try:
        for i, (wname, variant, strategy, seed) in enumerate(units):
            w = loaded.get(wname) or loaded.setdefault(wname, load_workload(wname))
            try:
                rec = run_deterministic(w, variant=variant, seed=seed, strategy=strategy)
            except InvalidOption:
                continue  # this variant cannot run this workload
            runs += 1
            failures += rec.result.failure is not None
            if progress:
                progress(i + 1, len(units))
    finally:
        cov.stop()
    seconds = time.perf_counter() - started
    data = cov.get_data()
    race: list[RaceBranch] = []
    per_file: dict[str, tuple[int, int]] = {}
    total = taken = 0
    for path, rel in core_files(root):
        arcs = data.arcs(path) or []
        for b in find_race_branches(path, rel):
            race.append(_taken(arcs, b))
        try:
            analysis = cov._analyze(path)  # branch totals; no public API gives them
            nums = analysis.numbers
            ft, fb = nums.n_branches, nums.n_branches - nums.n_missing_branches
        except Exception:  # a file coverage.py did not measure (never imported)
            ft = fb = 0
        per_file[rel] = (fb, ft)
        total += ft
        taken += fb
    return CoverageResult(runs, failures, seconds, total, taken, race, per_file)


__all__ = ["RACE_CALLS", "CoverageResult", "RaceBranch", "find_race_branches", "measure", "standard_units"]

"""``pagerace coverage``: which tests count as race outcomes, and how a campaign's arcs
are read into "both outcomes reached"."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pagerace.harness.coverage import RaceBranch, _taken, find_race_branches, measure

SRC = textwrap.dedent(
    """\
    def path(k, a, pfn, orig):
        if not k.trylock_page(a, pfn, "x"):
            return 1
        if k.pte_read(0, 1) != orig:
            return 2
        if pfn > 3:
            return 3
        if pfn == 7:  # race-outcome
            return 4
        if not k.get_page_unless_zero(a, pfn):  # not-a-race
            return 5
        if new_ptl != old_ptl:
            return 6
        while not k.words.cas(1, 0, 1):
            yield
        return 0
    """
)


def test_race_branches_by_name_recheck_and_marks(tmp_path: Path) -> None:
    f = tmp_path / "p.py"
    f.write_text(SRC)
    found = {b.line: b for b in find_race_branches(str(f), "p.py")}
    # trylock, the pte_same-style re-check, the marked one, the cas loop; not the plain
    # test, not the unmarked speculative get, not the lock-nesting compare
    assert sorted(found) == [2, 4, 8, 14]
    assert found[2].function == "path" and found[2].body_line == 3
    assert "trylock_page" in found[2].test


def test_taken_reads_both_outcomes_from_arcs() -> None:
    b = RaceBranch("p.py", 2, "path", "if ...", body_line=3)
    assert _taken([(2, 3)], b).missing == "false branch never taken"
    assert _taken([(2, 4)], b).missing == "true branch never taken"
    assert _taken([(1, 2)], b).missing == "never reached"
    both = _taken([(2, 3), (2, 4), (2, -1)], b)
    assert both.covered and both.missing == ""
    # leaving the function from the test's line is its false outcome (a `while` that ends
    # the function), unless the test yields: then that arc is a suspension
    assert _taken([(2, -1)], b).taken_false
    yielding = RaceBranch("p.py", 2, "path", "if not (yield from x)", body_line=3, test_yields=True)
    assert not _taken([(2, -1), (2, 2)], yielding).taken_false


def test_measure_on_one_workload() -> None:
    pytest.importorskip("coverage")
    r = measure(variants=["v6"], seeds=[0, 1], strategies=["random"], workloads=["holes"])
    assert r.runs == 2 and r.failures == 0
    assert r.branches_total > r.branches_taken > 0
    assert r.race and all(b.path.startswith("core/") for b in r.race)
    # holes migrates a range with holes: collect's trylock is reached
    collect = [b for b in r.race if b.function == "migrate_vma_collect"]
    assert collect and any(b.taken_true or b.taken_false for b in collect)

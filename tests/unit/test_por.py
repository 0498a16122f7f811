"""Partial-order reduction of the bounded search: the words recorder, the dependency
relation, and sleep sets that explore fewer schedules and reach the same states and
failures."""

from __future__ import annotations

import numpy as np
import pytest
from pagerace.core.machine.state import State
from pagerace.core.machine.words import PlainWords, RecordingWords
from pagerace.harness import explore as explore_mod
from pagerace.harness.explore import explore
from pagerace.harness.schedulers import exhaustive as exhaustive_mod
from pagerace.harness.schedulers.dependency import dependent
from pagerace.workloads import parse_workload


def _opposite(pages: int = 2) -> dict:
    return {
        "name": "opp-small",
        "geometry": {
            "sys_frames": 8, "dev_frames": 8, "mms": 2, "pages_per_mm": pages,
            "ptes_per_table": pages,
        },
        "mm": [
            {"id": 0, "populate": [{"start": 0, "end": pages}]},
            {"id": 1, "share": [{"from_mm": 0, "from": 0, "to": 0, "count": pages,
                                 "reverse": True}]},
        ],
        "actor": [
            {"kind": "driver", "count": 1, "mm": m, "range": [0, pages], "ops": 1,
             "pattern": ["to_device", "to_system"]}
            for m in (0, 1)
        ],
    }


def _fault() -> dict:
    return {
        "name": "fault-small",
        "geometry": {"sys_frames": 8, "dev_frames": 4, "pages_per_mm": 2, "ptes_per_table": 2},
        "mm": [{"id": 0, "populate": [{"start": 0, "end": 2}]}],
        "actor": [
            {"kind": "cpu", "count": 1, "range": [0, 2], "ops": 1, "write_ratio": 0.5},
            {"kind": "driver", "count": 1, "range": [0, 2], "ops": 1, "pattern": ["to_device"]},
        ],
    }


TINY = {
    "name": "tiny",
    "geometry": {"sys_frames": 8, "dev_frames": 4, "pages_per_mm": 2, "ptes_per_table": 2},
    "mm": [{"id": 0, "populate": [{"start": 0, "end": 2}]}],
    "actor": [{"kind": "cpu", "count": 2, "range": [0, 2], "ops": 1, "write_ratio": 1.0}],
}


def test_recording_words_sorts_accesses_into_reads_and_writes() -> None:
    arr = np.zeros(8, dtype=np.int64)
    rec = RecordingWords(PlainWords(arr))
    assert rec.load(1) == 0
    rec.store(2, 5)
    assert not rec.cas(3, 1, 2)  # fails: a read
    assert rec.cas(4, 0, 7)  # succeeds: a write
    rec.fetch_add(5, 1)
    rec.fetch_or(6, 1)
    rec.fetch_and(7, 0)
    rec.xchg(0, 9)
    assert rec.take() == (frozenset({1, 3}), frozenset({0, 2, 4, 5, 6, 7}))
    assert rec.take() == (frozenset(), frozenset())
    assert arr.tolist() == [9, 0, 5, 0, 7, 1, 1, 0]  # the same values as without it
    rec.release()


def test_recording_is_off_until_started_and_records_vma_lookups() -> None:
    from pagerace.core.machine.layout import VM_ANON, Geometry

    st = State.build(Geometry(sys_frames=4, dev_frames=2, pages_per_mm=4, ptes_per_table=4))
    assert type(st) is State and not isinstance(st.words, RecordingWords)
    row = st.add_vma(0, 0, 4, VM_ANON)
    rec = st.start_recording()
    assert st.words is rec
    assert st.find_vma(0, 2) == row
    reads, writes = rec.take()
    assert st.layout.VMA + 0 in reads and not writes  # mm 0's rows
    assert st.vma_flags(0, row) & VM_ANON
    assert rec.take()[0]


def test_dependency_is_a_conflict_on_a_written_word() -> None:
    r1 = (frozenset({1}), frozenset())
    r1b = (frozenset({1}), frozenset())
    w1 = (frozenset(), frozenset({1}))
    w2 = (frozenset(), frozenset({2}))
    assert not dependent(r1, r1b)  # two reads commute
    assert dependent(r1, w1) and dependent(w1, r1)
    assert dependent(w1, w1)
    assert not dependent(w1, w2) and not dependent(r1, w2)


def _search(w, variant: str, bound: int, reduction: bool):
    states: set[bytes] = set()
    kinds: set[str] = set()

    def on(rec) -> None:
        states.add(rec.kernel.s.digest())
        f = rec.result.failure
        if f is not None:
            kinds.add(f.kind.value)

    r = explore(
        w, variant=variant, preemption_bound=bound, max_schedules=5000,
        stop_at_failure=False, on_run=on, reduction=reduction,
    )
    assert r.exhausted
    return r, states, kinds


CASES = [
    (TINY, "v6", 2),
    (TINY, "v6", 3),
    (_opposite(), "v6", 1),
    (_opposite(), "v6", 2),
    (_opposite(), "hmm-2017", 2),
    (_fault(), "v6", 2),
]


@pytest.mark.parametrize(("spec", "variant", "bound"), CASES)
def test_sleep_sets_explore_fewer_schedules_and_reach_the_same_states(spec, variant, bound):
    w = parse_workload(spec, spec["name"])
    full, full_states, full_kinds = _search(w, variant, bound, reduction=False)
    red, red_states, red_kinds = _search(w, variant, bound, reduction=True)
    assert red.schedules < full.schedules
    assert red.pruned + red.sleep_blocked > 0 and full.pruned == full.sleep_blocked == 0
    assert red_states == full_states
    assert red_kinds == full_kinds
    assert red.describe()["reduction"] == "sleep-sets"


def test_an_unsound_dependency_relation_is_caught(monkeypatch):
    """The check above can fail: with a relation that calls every pair of steps
    independent, the reduced search loses final states the full search reaches."""
    w = parse_workload(_opposite(), "opp-small")
    _full, full_states, _ = _search(w, "v6", 2, reduction=False)
    monkeypatch.setattr(exhaustive_mod, "dependent", lambda a, b: False)
    _red, red_states, _ = _search(w, "v6", 2, reduction=True)
    assert red_states < full_states


def test_a_bound_blind_reduction_is_caught(monkeypatch):
    """Sleep sets that ignore the preemption bound (every explored child sleeps in its
    later siblings' subtrees) miss a state reachable within bound 1 on this workload
    (Coons et al.'s counterexample shape); the bound-aware rule keeps it."""
    w = parse_workload(_opposite(), "opp-small")
    _full, full_states, _ = _search(w, "v6", 1, reduction=False)
    monkeypatch.setattr(
        explore_mod._Node, "sleep_for",
        lambda self, cost: self.sleep + [(b, fb) for b, fb, _k in self.done],
    )
    _red, red_states, _ = _search(w, "v6", 1, reduction=True)
    assert red_states < full_states


def test_reduction_finds_the_catalog_deadlock_in_fewer_schedules():
    from pagerace.core.machine.errors import FailureKind
    from pagerace.workloads import load_workload

    w = load_workload("opposite-order")
    full = explore(w, variant="hmm-2017", max_schedules=300, reduction=False)
    red = explore(w, variant="hmm-2017", max_schedules=300)
    assert full.failure is not None and red.failure is not None
    assert red.failure.result.failure.kind is FailureKind.DEADLOCK
    assert red.schedules <= full.schedules

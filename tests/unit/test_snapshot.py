"""Runs start from a snapshot of their workload's initial words (State.snapshot,
runner.initial_state), not from a state built again: the words must be the same."""

from __future__ import annotations

import numpy as np
import pytest
from pagerace.core.machine.layout import F_REF, Geometry, Layout
from pagerace.core.machine.state import State
from pagerace.harness import runner
from pagerace.workloads import load_workload, workload_names


@pytest.mark.parametrize("name", workload_names())
def test_initial_state_is_the_built_state(name: str) -> None:
    w = load_workload(name)
    built = runner.build_state(w)
    first = runner.initial_state(w)  # takes the snapshot (or finds it)
    again = runner.initial_state(w)  # a copy of the snapshot
    for s in (first, again):
        assert np.array_equal(s.arr, built.arr)
        assert s.digest() == built.digest()
    assert again.arr.base is not first.arr.base and not np.shares_memory(again.arr, first.arr)


def test_runs_do_not_share_or_change_the_snapshot() -> None:
    w = load_workload("default")
    a = runner.initial_state(w)
    before = a.arr.copy()
    a.frames[0, F_REF] += 7  # a run changes its state...
    a.words.store(a.frame_word(1, F_REF), 99)  # ...through the words backend too
    b = runner.initial_state(w)  # ...the next run does not see it
    assert np.array_equal(b.arr, before)
    assert np.array_equal(b.arr, runner.build_state(w).arr)


def test_snapshot_from_snapshot_restore_round_trip() -> None:
    lay = Layout(Geometry())
    s = State(lay)
    s.frames[3, F_REF] = 5
    snap = s.snapshot()
    assert not snap.flags.writeable
    with pytest.raises(ValueError):
        snap[0] = 1
    t = State.from_snapshot(lay, snap)
    assert t.digest() == s.digest() and int(t.frames[3, F_REF]) == 5
    t.frames[3, F_REF] = 6
    assert int(snap[lay.FRAMES + 3 * 8 + F_REF]) == 5
    views = t.frames
    t.restore(snap)
    assert int(views[3, F_REF]) == 5 and t.words.load(t.frame_word(3, F_REF)) == 5  # in place


def test_snapshot_of_another_layout_is_refused() -> None:
    small, big = Layout(Geometry()), Layout(Geometry(sys_frames=128))
    snap = State(small).snapshot()
    with pytest.raises(ValueError, match="does not fit"):
        State.from_snapshot(big, snap)
    with pytest.raises(ValueError, match="does not fit"):
        State(big).restore(snap)
    with pytest.raises(ValueError, match="does not fit"):
        State.from_snapshot(small, snap.astype(np.int32))


def test_a_workload_that_cannot_be_keyed_is_built() -> None:
    """A hand-built workload with a list inside cannot key the memo: built every time."""
    from dataclasses import replace

    w = load_workload("default")
    odd = replace(w, mms=list(w.mms))  # type: ignore[arg-type]
    s = runner.initial_state(odd)
    assert np.array_equal(s.arr, runner.build_state(w).arr)


def test_views_are_made_on_first_use_over_the_words() -> None:
    """A state's named views (``s.frames``, ``s.views["pte"]``...) are made when first
    used: each is its table's slice of the words in its shape, the attribute and the
    ``views`` entry are one array, and a name no table has is a KeyError."""
    lay = Layout(Geometry())
    s = State.from_snapshot(lay, State(lay).snapshot())
    assert len(s.views) == 0  # nothing made yet
    frames = s.frames
    assert s.views["frames"] is frames and s.frames is frames and len(s.views) == 1
    for name, t in lay.tables.items():
        v = s.views[name]
        assert (v.shape == t.shape and np.shares_memory(v, s.arr)) or t.size == 0
        if t.size:
            assert v.reshape(-1)[:1].ctypes.data == s.arr[t.offset :].ctypes.data
    assert s.pte is s.views["pte"] and s.htlb is s.views["htlb"]
    s.pte[0, 2] = 77
    assert s.words.load(s.pte_word(0, 2)) == 77
    with pytest.raises(KeyError):
        s.views["no_such_table"]
    s.close()
    assert "frames" not in vars(s) and len(s.views) == 0
    with pytest.raises(KeyError):  # a closed state makes no new view of its buffer
        s.views["frames"]


def test_workloads_in_turn_each_get_their_own_initial_state() -> None:
    """The last workload is remembered by identity: workloads taken in turn (and an
    equal copy of one) each start from their own words."""
    from dataclasses import replace

    a, b = load_workload("default"), load_workload("opposite-order")
    for w in (a, b, a, replace(b, name="copy"), b):
        assert np.array_equal(runner.initial_state(w).arr, runner.build_state(w).arr)


def test_variant_workload_is_made_once_for_runs_in_a_row() -> None:
    """v7 needs the PMD tables: the same copy with thp for every run of a workload in a
    row, a new one for another workload; the older generations get the workload itself."""
    from dataclasses import replace

    w = load_workload("default")
    assert not w.geometry.thp
    v7 = runner.variant_workload(w, "v7")
    assert v7.geometry.thp and v7 == replace(w, geometry=replace(w.geometry, thp=True))
    assert runner.variant_workload(w, "v7") is v7
    assert runner.variant_workload(w, "v6") is w
    other = load_workload("opposite-order")
    assert runner.variant_workload(other, "v7").geometry == replace(other.geometry, thp=True)
    assert runner.variant_workload(w, "v7") == v7


def test_limits_are_shared_by_equal_values_only() -> None:
    w = load_workload("default")
    base = runner.limits_for(w)
    assert runner.limits_for(w) is base and base == runner.DEFAULT_LIMITS
    short = runner.limits_for(w, max_steps=50)
    assert short.max_steps == 50 and short.livelock_steps == base.livelock_steps
    assert runner.limits_for(w, max_steps=50) is short
    lw = w.with_limits(check_every=7)
    assert runner.limits_for(lw).check_every == 7 and runner.limits_for(w).check_every == 2000
    assert type(runner.limits_for(w, max_steps=50.0).max_steps) is float  # type: ignore[arg-type]

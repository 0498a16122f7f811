"""The device's failure counters (``[[device]] fail_alloc`` / ``copy_error``) live in the
``dev_counters`` words, so that every worker of the parallel engine counts the device's
allocations, not its own (a worker used to fail every n-th of *its* allocations, and the
deterministic replay of a parallel run then failed different ones)."""

from __future__ import annotations

import dataclasses

from pagerace.core.lib.test_hmm import Dmirror
from pagerace.core.machine.layout import DVC_ALLOCS, DVC_WORDS
from pagerace.harness.runner import build_model
from pagerace.workloads import load_workload


def _model(name: str):  # type: ignore[no-untyped-def]
    return build_model(load_workload(name), "v6", (), 0)


def test_two_workers_views_share_the_device_count() -> None:
    """Two Dmirror objects of one device (what two worker processes hold) over the same
    words: with fail_alloc = 3 the third allocation of the device fails, whichever
    object makes it; without the shared words each would count to 3 on its own."""
    m = _model("reclaim-after-failed-migration")
    k = m.kernel
    assert k.lay.tables["dev_counters"].size == k.geo.devices * DVC_WORDS
    dev = k.devices[0]
    assert dev.fail_alloc == 3
    other = Dmirror(dev.dev, fail_alloc=dev.fail_alloc)  # the second worker's object
    a = m.actors[0]
    got = [obj._alloc(k, a, dev.zone, "t") for obj in (dev, other, dev, other, other, dev)]
    assert [p < 0 for p in got] == [False, False, True, False, False, True]
    assert k.words.load(k.lay.DEV_COUNTERS + dev.dev * DVC_WORDS + DVC_ALLOCS) == 6
    assert dev.allocs == other.allocs == 0  # nothing counted per object


def test_without_failure_knobs_the_table_is_empty_and_the_object_counts() -> None:
    """A workload with neither knob has no dev_counters words (every other workload's
    state, and fingerprint, is unchanged); the test-only copy_error fault then counts
    on the object (deterministic engine only)."""
    w = load_workload("default")
    assert not any(d.fail_alloc or d.copy_error for d in w.devices)
    m = build_model(w, "v6", (), 0)
    k = m.kernel
    assert k.lay.tables["dev_counters"].size == 0
    dev = k.devices[0]
    assert dev._tick(k, DVC_ALLOCS) == 1 and dev._tick(k, DVC_ALLOCS) == 2
    assert dev.allocs == 2


def test_the_schema_sets_the_geometry_flag() -> None:
    w = load_workload("reclaim-after-failed-migration")
    assert w.geometry.dev_counters
    assert not dataclasses.replace(load_workload("default").geometry).dev_counters

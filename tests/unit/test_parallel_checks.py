"""Where the in-step checks run in the parallel engine (docs/parallel.md, "Which checks
run where"): the stop-machine mechanism (``harness/parallel/worker.py`` ``StopMachine``)
over one process's words, the split and finalize checks through the
``stop_machine`` hook, and the device read's re-check of a page freed during the copy.
No real races here: the parallel runs are in tests/stress/test_parallel.py."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pagerace.core.lib.test_hmm import dmirror_migrate_to_device, dpt_load
from pagerace.core.machine import folio as fo
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.layout import F_DATA, F_REF, G_FAILED, G_STOP, PG_anon, PG_isolated, mapping_encode
from pagerace.core.machine.words import PlainWords
from pagerace.core.mm import huge_memory as hm
from pagerace.core.mm.memory import ACCESS_OK, cpu_access
from pagerace.core.oracles import device as dev
from pagerace.core.oracles import folio as folio_oracles
from pagerace.harness.parallel.shm import W_INSTEP, BlockLayout
from pagerace.harness.parallel.worker import STOP_HARD, StopMachine
from strategies import Stepper, kernel_with_actors, model
from test_migrate_v7 import GEO

GLOB = 0


def _machine(workers: int = 2, wid: int = 0) -> tuple[PlainWords, BlockLayout, StopMachine]:
    blk = BlockLayout(model_words=16, workers=workers, hw_words=0, ring_entries=4)
    words = PlainWords(np.zeros(blk.words, dtype=np.int64))
    return words, blk, StopMachine(words, blk, wid, GLOB)


def test_a_check_runs_at_once_when_no_other_worker_is_in_a_step() -> None:
    words, blk, sm = _machine()
    with sm() as ok:
        assert ok and words.load(blk.stop_lock) == 1  # held by worker 0 (id + 1)
    assert words.load(blk.stop_lock) == 0 and sm.stops == 1


def test_a_check_waits_for_a_worker_in_a_step_and_gives_up_only_when_the_run_ends() -> None:
    words, blk, sm = _machine(workers=3)
    words.store(blk.cw(2, W_INSTEP), 1)  # worker 2 is inside a step
    words.store(GLOB + G_STOP, STOP_HARD)  # ... and never leaves it: the run is ending
    with sm() as ok:
        assert not ok  # skipped, not run against a worker in the middle of its step
    assert words.load(blk.stop_lock) == 0 and sm.stops == 0
    words.store(GLOB + G_STOP, 0)
    words.store(GLOB + G_FAILED, 7)  # a failure elsewhere ends the wait too
    with sm() as ok:
        assert not ok
    words.store(GLOB + G_FAILED, 0)
    words.store(blk.cw(2, W_INSTEP), 0)
    with sm() as ok:
        assert ok


def test_a_worker_waiting_for_another_check_counts_as_between_steps() -> None:
    words, blk, sm = _machine()
    words.store(blk.cw(0, W_INSTEP), 1)  # worker 0 is in a step, at its check
    words.store(blk.stop_lock, 2)  # worker 1 runs its own check
    words.store(GLOB + G_STOP, STOP_HARD)
    with sm() as ok:
        assert not ok
        # while it waited, worker 1's check could see it as parked
        assert words.load(blk.cw(0, W_INSTEP)) == 0
    assert words.load(blk.stop_lock) == 2  # not its lock to release


def test_a_step_waits_while_another_worker_checks() -> None:
    words, blk, sm = _machine()
    assert sm.wait_to_step() and words.load(blk.cw(0, W_INSTEP)) == 1
    sm.step_done()
    assert words.load(blk.cw(0, W_INSTEP)) == 0
    words.store(blk.stop_lock, 2)  # worker 1's check has the world stopped
    words.store(GLOB + G_STOP, STOP_HARD)
    assert not sm.wait_to_step()  # no step: the run is ending
    assert words.load(blk.cw(0, W_INSTEP)) == 0  # never seen inside a step meanwhile


class _Hook:
    """A stop-machine hook that records its calls and says whether the check may run."""

    def __init__(self, ok: bool) -> None:
        self.ok = ok
        self.calls = 0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[bool]:
        self.calls += 1
        yield self.ok


def _unmapped_locked(faults: frozenset[str], hook: Any) -> tuple[Any, Any, int]:
    k, acts = kernel_with_actors(GEO, 3, variant="v7")
    k.faults = faults
    if hook is not None:
        k.hooks["stop_machine"] = hook
    a = acts[0]
    head = fo.folio_alloc(k, a, 0, 3, "t:alloc")
    k.set_flag(head, PG_anon | PG_isolated)
    k.s.mapping[head] = mapping_encode(0, 8)
    assert k.trylock_page(a, head, "t:lock")
    return k, a, head


def test_the_split_check_is_confirmed_with_the_world_stopped() -> None:
    hook = _Hook(True)
    k, a, head = _unmapped_locked(frozenset({"split_unfreeze_extra_ref"}), hook)
    with pytest.raises(InvariantViolation) as info:
        hm.folio_split_unmapped(k, a, head, 0)
    assert info.value.failure.kind is FailureKind.REFCOUNT_MISMATCH and hook.calls == 1
    assert "in_step_check_unconfirmed" not in k.events
    # silent without the fault, and no stop needed: the check passed while others ran
    hook = _Hook(True)
    k, a, head = _unmapped_locked(frozenset(), hook)
    assert hm.folio_split_unmapped(k, a, head, 0) == 0 and hook.calls == 0
    # a run stopping hard skips the confirmation (the hook says so): no failure
    hook = _Hook(False)
    k, a, head = _unmapped_locked(frozenset({"split_unfreeze_extra_ref"}), hook)
    assert hm.folio_split_unmapped(k, a, head, 0) == 0 and hook.calls == 1


def test_the_finalize_check_is_confirmed_with_the_world_stopped() -> None:
    from test_migrate_v7 import TO_DEV, _kernel, _migrate, _thp

    hook = _Hook(True)
    k, (a, _, _), vma = _kernel()
    _thp(k, a)
    k.hooks["stop_machine"] = hook
    k.faults = frozenset({"finalize_skips_pmd_restore"})
    with pytest.raises(InvariantViolation) as info:
        _migrate(k, a, vma, 8, 16, TO_DEV, zone=1)
    assert info.value.failure.kind is FailureKind.MIGRATION_ENTRY_LEFT and hook.calls == 1


def test_a_failure_seen_only_mid_step_is_not_reported() -> None:
    """What another worker's half-done step shows the first pass is gone once every
    worker is between steps: no failure, counted as unconfirmed. The deterministic
    engine (no hook) reports the first verdict, as it always did."""
    k, _acts = kernel_with_actors(GEO, 1, variant="v7")
    half_done = [True]

    class _Finishing(_Hook):
        @contextlib.contextmanager
        def __call__(self) -> Iterator[bool]:
            half_done[0] = False  # the other worker's step ends before the world stops
            with super().__call__() as ok:
                yield ok

    def check(k: Any, what: str) -> None:
        if half_done[0]:
            raise k.fail(FailureKind.MIGRATION_ENTRY_LEFT, what)

    hook = _Finishing(True)
    k.hooks["stop_machine"] = hook
    folio_oracles.in_stopped_world(k, check, "seen mid-step")
    assert hook.calls == 1 and k.events["in_step_check_unconfirmed"] == 1
    del k.hooks["stop_machine"]
    half_done[0] = True
    with pytest.raises(InvariantViolation):
        folio_oracles.in_stopped_world(k, check, "deterministic")


# -- the device read's re-check (core/oracles/device.py) --------------------------------
class _NoLock:
    def acquire(self, mm: int, vpn: int) -> None:
        pass

    def release(self, mm: int, vpn: int) -> None:
        pass


def _mirrored(faults: tuple[str, ...] = ()) -> tuple[Any, Any, int, int, int]:
    m = model({
        "name": "mirror",
        "geometry": {"sys_frames": 24, "dev_frames": 8, "pages_per_mm": 8, "ptes_per_table": 4},
        "dmirror": [{"device": 0, "mm": 0}],
        "mm": [{"id": 0, "vmas": [{"start": 0, "end": 8}], "populate": [{"start": 0, "end": 4}]}],
        "actor": [{"kind": "cpu", "count": 2}],
    })
    k, (a0, a1) = m.kernel, m.actors
    assert Stepper(cpu_access(k, a1, 0, 1, True)).finish(k) == ACCESS_OK
    assert Stepper(dmirror_migrate_to_device(k, a0, 0, 0, 4)).finish(k) == 0
    k.faults = frozenset(faults)
    entry, gen = dpt_load(k, 0, 1)
    return k, a0, entry, gen, dev.dpt_entry_pfn(entry)


def _being_freed(k: Any, pfn: int) -> None:
    """Another worker's free_folio between the read's liveness check and its copy: the
    refcount is already 0 and the data cleared, the flags not yet."""
    k.words.store(k.fw(fo.page_folio(k, pfn), F_REF), 0)
    k.words.store(k.fw(pfn, F_DATA), 0)


def test_a_read_of_a_page_freed_during_the_copy_is_the_use_after_free_it_is() -> None:
    k, a, entry, gen, pfn = _mirrored()
    k.hw_lock = _NoLock()  # the parallel engine: the check and the copy are two steps
    _being_freed(k, pfn)
    with pytest.raises(InvariantViolation) as info:
        dev.device_access(k, a, 0, 1, entry, gen, False, "dmirror_do_read")
    f = info.value.failure
    assert f.kind is FailureKind.USE_AFTER_FREE and "being freed" in f.message
    assert f.pages == (pfn,) and f.sites == ("dmirror_do_read",)


def test_the_deterministic_engine_reports_that_state_as_before() -> None:
    k, a, entry, gen, pfn = _mirrored()
    _being_freed(k, pfn)  # unreachable there (a free is one step), so: unchanged
    with pytest.raises(InvariantViolation) as info:
        dev.device_access(k, a, 0, 1, entry, gen, False, "dmirror_do_read")
    assert info.value.failure.kind is FailureKind.STALE_READ


def test_a_stale_read_of_a_live_page_is_still_a_stale_read_in_the_parallel_engine() -> None:
    k, a, entry, gen, _pfn = _mirrored(("dmirror_stale_token",))
    k.hw_lock = _NoLock()
    with pytest.raises(InvariantViolation) as info:
        dev.device_access(k, a, 0, 1, entry, gen, False, "dmirror_do_read")
    assert info.value.failure.kind is FailureKind.STALE_READ
    k, a, entry, gen, _pfn = _mirrored()
    k.hw_lock = _NoLock()
    dev.device_access(k, a, 0, 1, entry, gen, False, "dmirror_do_read")  # silent


def test_freed_meanwhile_names_each_state() -> None:
    k, _a, _entry, gen, pfn = _mirrored()
    assert dev._freed_meanwhile(k, pfn, gen) == ""
    assert "freed and reused" in dev._freed_meanwhile(k, pfn, gen - 1)
    _being_freed(k, pfn)
    assert "being freed" in dev._freed_meanwhile(k, pfn, gen)
    k.words.store(k.fw(pfn, 0), 0)  # the flags: free
    assert dev._freed_meanwhile(k, pfn, gen).startswith("freed (")

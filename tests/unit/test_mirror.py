"""The driver's side of the mirror against hand-written interleavings: mmu interval
notifiers, hmm_range_fault and dmirror's device page table (7.0 lib/test_hmm.c), and
the device-side oracles with the test-only faults that prove them.
"""

from __future__ import annotations

from typing import Any

import pytest
from pagerace.core.lib.test_hmm import (
    dmirror_migrate_to_device,
    dmirror_range_fault,
    dmirror_rw,
    dpt_load,
)
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.kernel import Kernel
from pagerace.core.machine.layout import (
    DM_MUTEX,
    DM_WORDS,
    DPT_BACKING,
    DPT_TAG_WRITE,
    MN_SEQ,
    MN_WORDS,
    PTE_DEVICE_PRIVATE,
    PTE_PRESENT,
    pte_pfn,
    pte_type,
)
from pagerace.core.mm.hmm import EBUSY, HMM_PFN_REQ_FAULT, HmmRange, hmm_range_fault
from pagerace.core.mm.memory import ACCESS_OK, cpu_access
from pagerace.core.mm.mmu_notifier import mmu_interval_read_begin
from pagerace.core.mm.vma import op_madv_dontneed
from pagerace.core.oracles.device import check_device_pt, dpt_entry_pfn
from pagerace.core.oracles.invariants import check_all
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload
from strategies import Stepper, model


def _table(mirrors: int = 1) -> dict[str, Any]:
    return {
        "name": "mirror",
        "geometry": {"sys_frames": 24, "dev_frames": 8, "pages_per_mm": 8, "ptes_per_table": 4},
        "dmirror": [{"device": 0, "mm": 0}] * mirrors,
        "mm": [{"id": 0, "vmas": [{"start": 0, "end": 8}], "populate": [{"start": 0, "end": 4}]}],
        "actor": [{"kind": "cpu", "count": 3}],
    }


def _m(mirrors: int = 1, faults: tuple[str, ...] = ()) -> tuple[Kernel, list[Any]]:
    m = model(_table(mirrors))
    if faults:
        m.kernel.faults = frozenset(faults)
    return m.kernel, m.actors


def _run(k: Kernel, gen: Any) -> Any:
    return Stepper(gen).finish(k)


def _mapped(k: Kernel, vpn: int) -> int:
    pte = k.pte_read(0, vpn)
    assert pte_type(pte) == PTE_PRESENT
    return pte_pfn(pte)


def test_the_mutex_is_a_lock_the_engines_see() -> None:
    k, (a0, a1, _a2) = _m()
    w = k.lay.DMIRROR + 0 * DM_WORDS + DM_MUTEX
    assert k.lock_name(w) == "dmirror_mutex:0"
    assert k.lock_owner(w) == -1
    _run(k, k.mutex_lock(a0, w, "t"))
    assert k.lock_owner(w) == a0.id and w in a0.held
    s = Stepper(k.mutex_lock(a1, w, "t2"))
    req = s.step()
    assert req is not None and req.kind == "mutex" and s.blocked_on(k) is req
    with pytest.raises(InvariantViolation) as exc:
        k.mutex_unlock(a1, w, "t2")
    assert exc.value.failure.kind is FailureKind.BAD_UNLOCK
    k.mutex_unlock(a0, w, "t")
    s.finish(k)
    assert k.lock_owner(w) == a1.id
    assert k.stats["t2"][1] == 1  # contended once


def test_invalidate_during_hmm_range_fault_forces_a_retry() -> None:
    """A zap lands between read_begin and the walk: hmm_range_fault returns -EBUSY at
    its mmu_interval_check_retry; the driver's loop begins again and ends with the
    device page table naming what the CPU maps now."""
    k, (a0, a1, _a2) = _m()
    seq = _run(k, mmu_interval_read_begin(k, a0, 0))
    _run(k, op_madv_dontneed(k, a1, 0, 0, 2))  # MMU_NOTIFY_CLEAR: the mirror sets its seq
    assert k.words.load(k.lay.MN + 0 * MN_WORDS + MN_SEQ) == seq + 3  # odd, then even again
    rng = HmmRange(notifier=0, mm=0, start=0, end=2, default_flags=HMM_PFN_REQ_FAULT,
                   dev_private_owner=0, notifier_seq=seq)
    assert _run(k, hmm_range_fault(k, a0, rng)) == EBUSY

    rng = HmmRange(notifier=0, mm=0, start=0, end=4, default_flags=HMM_PFN_REQ_FAULT,
                   dev_private_owner=0)
    s = Stepper(dmirror_range_fault(k, a0, 0, rng))
    s.step()  # read_begin done: the next step starts the walk
    _run(k, op_madv_dontneed(k, a1, 0, 2, 3))
    assert s.finish(k) == 0
    assert k.events["hmm_range_fault_busy"] == 2
    for vpn in range(4):
        entry, _gen = dpt_load(k, 0, vpn)
        assert dpt_entry_pfn(entry) == _mapped(k, vpn)
    check_all(k, final=True)


def test_a_collision_after_the_walk_is_caught_by_read_retry() -> None:
    """The invalidation lands after hmm_range_fault returned, before the driver takes its
    mutex: only mmu_interval_read_retry can see it. Without that check (test-only
    fault ``dmirror_no_read_retry``) the device page table keeps a freed page."""
    for faults, stale in (((), False), (("dmirror_no_read_retry",), True)):
        _collide_after_walk(faults, stale)


def _collide_after_walk(faults: tuple[str, ...], stale: bool) -> None:
    k, (a0, a1, _a2) = _m(faults=faults)
    rng = HmmRange(notifier=0, mm=0, start=0, end=2, default_flags=HMM_PFN_REQ_FAULT,
                   dev_private_owner=0)
    s = Stepper(dmirror_range_fault(k, a0, 0, rng))
    # The walk is done and the mmap_lock dropped: the result waits for the mutex.
    s.run_until(lambda: all(rng.hmm_pfns) and k.mmap_word(0) not in a0.held)
    _run(k, op_madv_dontneed(k, a1, 0, 0, 2))
    assert s.finish(k) == 0
    if stale:
        with pytest.raises(InvariantViolation) as exc:
            check_device_pt(k, True)
        assert exc.value.failure.kind is FailureKind.USE_AFTER_FREE
    else:
        assert k.events["dmirror_range_fault_retry"] == 1
        check_device_pt(k, True)
        check_all(k, final=True)


def test_a_device_read_after_migration_sees_the_migrated_data() -> None:
    k, (a0, a1, _a2) = _m()
    assert _run(k, cpu_access(k, a1, 0, 1, True)) == ACCESS_OK
    token = k.shadow(0, 1)
    assert _run(k, dmirror_migrate_to_device(k, a0, 0, 0, 4)) == 0
    pte = k.pte_read(0, 1)
    assert pte_type(pte) == PTE_DEVICE_PRIVATE
    entry, _gen = dpt_load(k, 0, 1)
    assert dpt_entry_pfn(entry) == pte_pfn(pte)
    assert entry & DPT_BACKING and entry & DPT_TAG_WRITE
    assert _run(k, dmirror_rw(k, a0, 0, 0, 4, False)) == 0
    assert k.events["device_reads"] >= 8 and "dmirror_faults" not in k.events
    assert k.data(pte_pfn(pte)) == token
    # The CPU faults page 1 back: the fault's xa_erase empties the mirror's entry, and
    # the next device read faults the system page in and sees the same token.
    assert _run(k, cpu_access(k, a1, 0, 1, False)) == ACCESS_OK
    assert dpt_load(k, 0, 1)[0] == 0
    assert _run(k, dmirror_rw(k, a0, 0, 1, 1, False)) == 0
    assert dpt_entry_pfn(dpt_load(k, 0, 1)[0]) == _mapped(k, 1)
    assert k.data(_mapped(k, 1)) == token
    check_all(k, final=True)


def test_a_second_mirror_of_the_device_never_hears_of_a_migration() -> None:
    """Finding (docs/findings/003-...): dmirror_interval_invalidate skips every
    MMU_NOTIFY_MIGRATE whose owner is its device, so mirror 1 keeps naming the system
    page mirror 0 migrated away and freed."""
    k, (a0, a1, _a2) = _m(mirrors=2)
    assert _run(k, dmirror_rw(k, a1, 1, 2, 1, False)) == 0
    old = dpt_entry_pfn(dpt_load(k, 1, 2)[0])
    assert old == _mapped(k, 2)
    assert _run(k, dmirror_migrate_to_device(k, a0, 0, 2, 3)) == 0
    assert not k.test_flag(old, 1 << 8)  # the system page was freed
    with pytest.raises(InvariantViolation) as exc:
        check_device_pt(k, True)
    assert exc.value.failure.kind is FailureKind.USE_AFTER_FREE


@pytest.mark.parametrize(
    ("workload", "fault", "kind"),
    [
        ("mirror-vs-unmap", "dmirror_skip_invalidate", FailureKind.USE_AFTER_FREE),
        ("mirror-vs-fork", "dmirror_skip_invalidate", FailureKind.USE_AFTER_FREE),
        ("anon_read", "dmirror_stale_token", FailureKind.STALE_READ),
        ("mirror-vs-unmap", "dmirror_no_read_retry", FailureKind.USE_AFTER_FREE),
    ],
)
def test_each_device_oracle_fires_with_its_fault_and_is_silent_without(
    workload: str, fault: str, kind: FailureKind
) -> None:
    w = load_workload(workload)
    found = [
        run_deterministic(w, seed=s, faults=(fault,)).result.failure for s in range(12)
    ]
    assert any(f is not None and f.kind is kind for f in found)
    for s in range(12):
        assert run_deterministic(w, seed=s).result.failure is None


def test_device_private_pages_stored_as_memory_are_reported() -> None:
    """Finding (docs/findings/004-...): a read fault racing the mirror's own migration to
    the device stores the device-private page itself; the test-only repair
    ``dmirror_do_fault_backing`` silences the check on the same seeds."""
    w = load_workload("mirror_migrate")
    kinds = {run_deterministic(w, seed=s).result.failure.kind for s in range(4)}  # type: ignore[union-attr]
    assert FailureKind.BAD_MAPPING in kinds
    for s in range(4):
        f = run_deterministic(w, seed=s, faults=("dmirror_do_fault_backing",)).result.failure
        assert f is None or f.kind is not FailureKind.BAD_MAPPING


COMPACT_VS_READ = {
    "name": "compact-vs-read",
    "geometry": {"sys_frames": 32, "dev_frames": 4, "pages_per_mm": 8, "ptes_per_table": 4},
    "dmirror": [{"device": 0, "mm": 0}],
    "mm": [{"id": 0, "populate": [{"start": 0, "end": 8}]}],
    "actor": [
        {"kind": "device_read", "range": [0, 8], "npages": 4, "ops": 8, "think": 1},
        {"kind": "compactor", "pattern": ["compact"], "ops": 3, "think": 1},
    ],
}


def test_a_cycle_through_the_driver_mutex_is_a_deadlock_with_the_whole_cycle() -> None:
    """kcompactd holds a folio lock and calls the notifier (try_to_migrate_one), which
    takes dmirror->mutex; a driver that takes folio locks under that mutex (test-only
    fault ``dmirror_lock_page_under_mutex``) closes the cycle. Without the fault the
    same seeds run clean."""
    from pagerace.workloads import parse_workload

    w = parse_workload(COMPACT_VS_READ, "t")
    found = None
    for seed in range(40):
        f = run_deterministic(w, seed=seed, faults=("dmirror_lock_page_under_mutex",)).result.failure
        if f is not None:
            found = f
            break
    assert found is not None and found.kind is FailureKind.DEADLOCK, found
    assert any(lk.startswith("dmirror_mutex:") for lk in found.locks), found.locks
    assert any(lk.startswith("page:") for lk in found.locks), found.locks
    assert found.details.get("cycle") is True
    for s in range(seed + 1):
        assert run_deterministic(w, seed=s).result.failure is None

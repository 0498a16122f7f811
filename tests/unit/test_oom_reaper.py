"""The OOM reaper (7.0 mm/oom_kill.c) and check_stable_address_space against
hand-written interleavings: the reaper zapping between a migration's collect and its
hole insert, refaults of a reaped mm, the mmap_lock trylock and its retries, the
non-blocking notifier, and the oracle's notion of a reaped mm (with the test-only faults
that prove each side of it).
"""

from __future__ import annotations

from typing import Any

import pytest
from pagerace.core.actors import program
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.kernel import Kernel
from pagerace.core.machine.layout import (
    DM_MUTEX,
    DM_WORDS,
    MMF_OOM_SKIP,
    MMF_UNSTABLE,
    PTE_DEVICE_PRIVATE,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_PRESENT,
    pte_type,
)
from pagerace.core.mm.memory import ACCESS_OK, ACCESS_SIGBUS, cpu_access, mm_unstable
from pagerace.core.mm.migrate_device import (
    MIGRATE_PFN_MIGRATE,
    MIGRATE_VMA_SELECT_SYSTEM,
    MigrateVma,
    migrate_vma_finalize,
    migrate_vma_pages,
    migrate_vma_setup,
)
from pagerace.core.mm.oom_kill import (
    MAX_OOM_REAP_RETRIES,
    mm_flags_test,
    oom_reap_task,
    oom_reap_task_mm,
)
from pagerace.core.oracles.invariants import check_all, check_contents
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload
from strategies import Stepper, model


def _table(mms: int = 1, mirror: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {
        "name": "oom",
        "geometry": {"sys_frames": 32, "dev_frames": 16, "pages_per_mm": 8,
                     "ptes_per_table": 4, "mms": mms},
        "mm": [{"id": i, "populate": [{"start": 0, "end": 4}]} for i in range(mms)],
        "actor": [{"kind": "cpu", "count": 3}, {"kind": "oom_reaper"}],
    }
    if mirror:
        t["dmirror"] = [{"device": 0, "mm": 0}]
    return t


def _m(faults: tuple[str, ...] = (), **kw: Any) -> tuple[Kernel, list[Any]]:
    m = model(_table(**kw))
    if faults:
        m.kernel.faults = frozenset(faults)
    return m.kernel, m.actors


def _run(k: Kernel, gen: Any) -> Any:
    return Stepper(gen).finish(k)


def _write(k: Kernel, a: Any, mm: int, vpn: int) -> None:
    assert _run(k, cpu_access(k, a, mm, vpn, True)) == ACCESS_OK


def _to_device_setup(k: Kernel, a: Any, start: int, end: int) -> MigrateVma:
    """A driver's migration to device 0 up to its pages step: mmap_read_lock held,
    migrate_vma_setup done (collect + unmap), the device pages allocated and copied."""
    _run(k, k.mmap_read_lock(a, 0, "test:mmap_read_lock"))
    m = MigrateVma(0, k.s.find_vma(0, start), start, end, MIGRATE_VMA_SELECT_SYSTEM, 0)
    assert _run(k, migrate_vma_setup(k, a, m)) == 0
    _run(k, k.devices[0].alloc_and_copy_to_device(k, a, m))
    return m


def _finish_migration(k: Kernel, a: Any, m: MigrateVma) -> None:
    _run(k, migrate_vma_pages(k, a, m))
    _run(k, migrate_vma_finalize(k, a, m))
    k.mmap_read_unlock(a, 0, "test:mmap_read_unlock")


def test_the_reaper_between_collect_and_insert_makes_the_insert_back_off() -> None:
    """Pages 0-3 are collected (migration entries), 4-7 are holes. The reaper runs
    between collect and the pages step: it zaps the migration entries and sets
    MMF_UNSTABLE; migrate_vma_insert_page then sees the unstable mm under the PTL and
    leaves every hole empty (goto unlock_abort); finalize finds nothing to restore and
    frees every device page. Nothing leaks, nothing is a lost write."""
    k, (a0, _a1, _a2, reaper) = _m()
    for v in range(4):
        _write(k, a0, 0, v)
    m = _to_device_setup(k, a0, 0, 8)
    assert [pte_type(k.pte_read(0, v)) for v in range(4)] == [PTE_MIGRATION] * 4
    assert all(m.src[i] & MIGRATE_PFN_MIGRATE for i in range(4, 8))  # holes collected
    assert _run(k, oom_reap_task(k, reaper, 0)) == 0
    assert mm_unstable(k, 0) and mm_flags_test(k, 0, MMF_OOM_SKIP)
    assert all(pte_type(k.pte_read(0, v)) == PTE_NONE for v in range(8))
    _finish_migration(k, a0, m)
    assert k.outcomes[("to_device", "unstable_mm")] == 4
    assert not any(s & MIGRATE_PFN_MIGRATE for s in m.src[4:])
    assert all(pte_type(k.pte_read(0, v)) == PTE_NONE for v in range(8))
    check_all(k, final=True)  # no leak, no lost write: the reaped data is gone by design


def test_without_the_insert_check_a_migration_refills_reaped_data_with_zeroes() -> None:
    """After the reap, a second migration collects the reaped pages as holes. 7.0's
    check keeps them empty; without it (``no_stable_check``, as in the generations
    before 5.6) the insert maps zeroed device pages where the program's data was: the
    content check reports the lost writes."""
    for faults in ((), ("no_stable_check",)):
        k, (a0, _a1, _a2, reaper) = _m(faults=faults)
        for v in range(4):
            _write(k, a0, 0, v)
        assert _run(k, oom_reap_task(k, reaper, 0)) == 0
        m = _to_device_setup(k, a0, 0, 8)
        _finish_migration(k, a0, m)
        if not faults:
            assert all(pte_type(k.pte_read(0, v)) == PTE_NONE for v in range(8))
            check_all(k, final=True)
        else:
            assert pte_type(k.pte_read(0, 0)) == PTE_DEVICE_PRIVATE
            with pytest.raises(InvariantViolation) as exc:
                check_contents(k)
            assert exc.value.failure.kind is FailureKind.LOST_WRITE


def test_a_refault_of_a_reaped_mm_is_sigbus_never_zeroes() -> None:
    """do_anonymous_page tests MMF_UNSTABLE under the PTL: SIGBUS. Without the check
    (``no_stable_check``: 4.14's fault path) the refault maps a zeroed page and the
    load is a stale read (the data corruption 4.15's 3f70dc38cec2 fixed)."""
    k, (a0, a1, _a2, reaper) = _m()
    _write(k, a0, 0, 1)
    assert _run(k, oom_reap_task(k, reaper, 0)) == 0
    assert _run(k, cpu_access(k, a1, 0, 1, False)) == ACCESS_SIGBUS
    assert _run(k, cpu_access(k, a1, 0, 5, True)) == ACCESS_SIGBUS
    assert k.events["unstable_sigbus"] == 2
    check_all(k, final=True)

    k, (a0, a1, _a2, reaper) = _m(faults=("no_stable_check",))
    _write(k, a0, 0, 1)
    assert _run(k, oom_reap_task(k, reaper, 0)) == 0
    with pytest.raises(InvariantViolation) as exc:
        _run(k, cpu_access(k, a1, 0, 1, False))
    assert exc.value.failure.kind is FailureKind.STALE_READ


def test_sigbus_is_expected_only_on_the_reaped_mm() -> None:
    """The program's SIGBUS oracle excuses a fault on an unstable mm and nothing else:
    mm 0 has a VMA without an anonymous mapping behind it (do_anonymous_page: SIGBUS)."""
    t = _table(mms=2)
    t["mm"][0]["vmas"] = [{"start": 0, "end": 4}, {"start": 4, "end": 8, "flags": ["read"]}]
    m = model(t)
    k, (a0, a1, _a2, reaper) = m.kernel, m.actors
    assert _run(k, oom_reap_task(k, reaper, 1)) == 0
    assert mm_unstable(k, 1) and not mm_unstable(k, 0)
    _run(k, program(k, a0, [("read", 1, 2)]))  # SIGBUS on the reaped mm: expected
    assert a0.sigbus == 1
    with pytest.raises(InvariantViolation) as exc:
        _run(k, program(k, a1, [("read", 0, 5)]))
    assert exc.value.failure.kind is FailureKind.SIGBUS


def test_a_lost_write_in_an_mm_not_marked_unstable_still_fires() -> None:
    """The content check excuses the pages an MMF_UNSTABLE mm no longer maps, and only
    those: the reaper zapping without the flag (``oom_reap_not_unstable``) is a lost
    write; with two mms, a write lost in the other mm is reported while the reaped mm's
    zapped pages are not."""
    k, (a0, _a1, _a2, reaper) = _m(faults=("oom_reap_not_unstable",))
    _write(k, a0, 0, 2)
    assert _run(k, oom_reap_task(k, reaper, 0)) == 0
    assert not mm_unstable(k, 0)
    with pytest.raises(InvariantViolation) as exc:
        check_contents(k)
    assert exc.value.failure.kind is FailureKind.LOST_WRITE
    assert exc.value.failure.details["mm"] == 0

    k, (a0, _a1, _a2, reaper) = _m(mms=2)
    _write(k, a0, 0, 2)
    _write(k, a0, 1, 3)
    assert _run(k, oom_reap_task(k, reaper, 1)) == 0
    check_contents(k)  # mm 1's reaped page: gone by design
    pfn = k.pte_read(0, 2) >> 16
    k.set_data(pfn, 0)  # a real lost write in mm 0
    with pytest.raises(InvariantViolation) as exc:
        check_contents(k)
    assert exc.value.failure.details == {"mm": 0, "vpn": 2}


def test_a_writer_on_mmap_lock_makes_the_reaper_retry_then_give_up() -> None:
    """oom_reap_task_mm only trylocks mmap_lock: with a writer holding it every attempt
    fails; oom_reap_task sleeps and retries MAX_OOM_REAP_RETRIES times, then sets
    MMF_OOM_SKIP without having reaped anything."""
    k, (a0, _a1, _a2, reaper) = _m()
    _write(k, a0, 0, 0)
    assert _run(k, oom_reap_task_mm(k, reaper, 0)) is True
    k, (a0, _a1, _a2, reaper) = _m()
    _write(k, a0, 0, 0)
    _run(k, k.mmap_write_lock(a0, 0, "test:mmap_write_lock"))
    assert _run(k, oom_reap_task(k, reaper, 0)) == 1
    assert k.events["oom_reap_trylock_failed"] == MAX_OOM_REAP_RETRIES
    assert k.events["oom_reap_gave_up"] == 1
    assert mm_flags_test(k, 0, MMF_OOM_SKIP) and not mm_flags_test(k, 0, MMF_UNSTABLE)
    assert pte_type(k.pte_read(0, 0)) == PTE_PRESENT
    assert not reaper.held
    k.mmap_write_unlock(a0, 0, "test:mmap_write_unlock")
    check_all(k, final=True)


def test_the_reapers_invalidation_does_not_block_on_the_mirrors_mutex() -> None:
    """The reaper's MMU_NOTIFY_UNMAP is non-blocking: dmirror_interval_invalidate only
    trylocks dmirror->mutex and fails while it is held; the VMA is left alone, the
    attempt fails (mn_itree_inv_end already ran: the seq is even again) and the retry
    after the mutex is free reaps."""
    k, (a0, a1, _a2, reaper) = _m(mirror=True)
    _write(k, a0, 0, 0)
    mutex = k.lay.DMIRROR + 0 * DM_WORDS + DM_MUTEX
    _run(k, k.mutex_lock(a1, mutex, "test:mutex"))
    assert _run(k, oom_reap_task_mm(k, reaper, 0)) is False
    assert k.events["oom_reap_notifier_would_block"] == 1
    assert pte_type(k.pte_read(0, 0)) == PTE_PRESENT and mm_unstable(k, 0)
    assert k.s.views["mn"][0, 1] % 2 == 0  # invalidate_seq even: no range left active
    assert not reaper.held
    k.mutex_unlock(a1, mutex, "test:mutex")
    assert _run(k, oom_reap_task_mm(k, reaper, 0)) is True
    assert pte_type(k.pte_read(0, 0)) == PTE_NONE
    check_all(k, final=True)


def test_the_oom_workloads_run_clean_on_v6_and_their_reaper_works() -> None:
    for name in ("oom-vs-migrate", "oom-vs-device-fault", "oom-vs-mirror"):
        w = load_workload(name)
        assert w.geometry.mm_flags
        reaped = 0
        for seed in range(4):
            r = run_deterministic(w, seed=seed)
            assert str(r.result.outcome) == "clean", (name, seed, r.result.failure)
            reaped += r.kernel.events.get("oom_reaped", 0)
        assert reaped, name


def test_finding_015_replays_on_v50_and_v6_stays_clean(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/findings/015: seed 002's migrate_vma_insert_page has no stable check; the
    shrunk artifact reproduces (exit 1); the workload's seed is clean on v6."""
    from pathlib import Path

    from pagerace.harness.cli import main

    art = Path(__file__).parents[2] / "docs/findings/015-v50-insert-refills-reaped-mm.shrunk.json"
    assert main(["replay", str(art), "--quiet"]) == 1
    capsys.readouterr()
    w = load_workload("oom-vs-migrate")
    assert run_deterministic(w, variant="v5.0", seed=8).result.failure is not None
    assert run_deterministic(w, variant="v6", seed=8).result.failure is None


def test_finding_016_replays_and_needs_a_zap(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/findings/016: the mirror's migration stores a page into its device page table
    after a zap's invalidation cleared it; the zap then frees the page. The shrunk
    artifact reproduces; the workload names the finding and the kinds it explains."""
    from pathlib import Path

    from pagerace.harness.cli import main

    findings = Path(__file__).parents[2] / "docs/findings"
    art = findings / "016-mirror-migration-maps-during-invalidation.shrunk.json"
    assert main(["replay", str(art), "--quiet"]) == 1
    capsys.readouterr()
    w = load_workload("oom-vs-mirror-migrate")
    assert w.finding.endswith("016-mirror-migration-maps-during-invalidation.md")
    assert w.finding_kinds == ("use_after_free",)


def test_only_the_pages_the_reaper_zapped_are_excused() -> None:
    """MMF_UNSTABLE alone excuses nothing: the reaper's attempt fails on the mirror's
    mutex (the mm is unstable, its pages still mapped); a page then lost by any other
    path is a lost write, while the pages the reaper zaps afterwards are not."""
    k, (a0, a1, _a2, reaper) = _m(mirror=True)
    _write(k, a0, 0, 0)
    mutex = k.lay.DMIRROR + 0 * DM_WORDS + DM_MUTEX
    _run(k, k.mutex_lock(a1, mutex, "test:mutex"))
    assert _run(k, oom_reap_task_mm(k, reaper, 0)) is False
    k.mutex_unlock(a1, mutex, "test:mutex")
    assert mm_unstable(k, 0)
    pfn = k.pte_read(0, 0) >> 16
    k.ptep_get_and_clear(0, 0)  # a buggy path drops the mapping and the data
    k.mapcount_add(pfn, -1)
    k.put_page(a1, pfn, "test:drop")
    with pytest.raises(InvariantViolation) as exc:
        check_contents(k)
    assert exc.value.failure.kind is FailureKind.LOST_WRITE
    assert exc.value.failure.details == {"mm": 0, "vpn": 0}
    k.set_shadow(0, 0, 0)  # forget that page: the reaper's own zap is excused
    assert _run(k, oom_reap_task_mm(k, reaper, 0)) is True
    check_all(k, final=True)

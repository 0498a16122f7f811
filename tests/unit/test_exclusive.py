"""Device-exclusive entries (7.0 make_device_exclusive, remove_device_exclusive_entry,
copy_nonpresent_pte, zap, reclaim, collect) and dmirror's HMM_DMIRROR_EXCLUSIVE /
CHECK_EXCLUSIVE, against hand-written interleavings; the device-exclusive oracles with
the test-only faults that prove them.
"""

from __future__ import annotations

from typing import Any

import pytest
from pagerace.core.faults import FAULTS
from pagerace.core.lib.test_hmm import (
    EPERM,
    dmirror_check_atomic,
    dmirror_exclusive,
    dmirror_rw,
    dpt_load,
)
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.kernel import Kernel
from pagerace.core.machine.layout import (
    DPT_TAG_ATOMIC,
    M_USERS,
    MM_WORDS,
    PTE_DEVICE_EXCLUSIVE,
    PTE_DEVICE_PRIVATE,
    PTE_NONE,
    PTE_PRESENT,
    PTE_WRITE,
    PG_allocated,
    PG_anon_exclusive,
    pte_pfn,
    pte_type,
)
from pagerace.core.mm.device_exclusive import make_device_exclusive
from pagerace.core.mm.fork import ENOMEM, op_fork
from pagerace.core.mm.memory import ACCESS_OK, cpu_access
from pagerace.core.mm.vma import op_madv_dontneed, op_munmap
from pagerace.core.oracles.device import check_exclusive, dpt_entry_pfn, is_atomic
from pagerace.core.oracles.invariants import check_all
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload
from strategies import Stepper, model


def _table() -> dict[str, Any]:
    return {
        "name": "exclusive",
        "geometry": {
            "sys_frames": 32, "dev_frames": 8, "mms": 2, "pages_per_mm": 8, "ptes_per_table": 4,
        },
        "dmirror": [{"device": 0, "mm": 0}],
        "mm": [{"id": 0, "vmas": [{"start": 0, "end": 8}], "populate": [{"start": 0, "end": 4}]}],
        "actor": [{"kind": "cpu", "count": 4}],
    }


def _m(faults: tuple[str, ...] = ()) -> tuple[Kernel, list[Any]]:
    m = model(_table())
    if faults:
        m.kernel.faults = frozenset(faults)
    return m.kernel, m.actors


def _run(k: Kernel, gen: Any) -> Any:
    return Stepper(gen).finish(k)


def _exclusive(k: Kernel, vpn: int) -> int:
    pte = k.pte_read(0, vpn)
    assert pte_type(pte) == PTE_DEVICE_EXCLUSIVE, pte
    return pte_pfn(pte)


def test_make_device_exclusive_leaves_the_folio_as_7_0_does() -> None:
    """The entry names the page; mapcount and the mapping's reference stay, the page stays
    anon-exclusive; the device holds it ATOMIC; a CPU write restores a writable entry,
    revokes the atomic mapping and lands in the same page."""
    k, (a0, a1, *_r) = _m()
    assert _run(k, cpu_access(k, a1, 0, 1, True)) == ACCESS_OK
    before = pte_pfn(k.pte_read(0, 1))
    token = k.shadow(0, 1)
    assert _run(k, dmirror_exclusive(k, a0, 0, 1, 1)) == 0
    pfn = _exclusive(k, 1)
    assert pfn == before
    assert k.mapcount(pfn) == 1 and k.ref_count(pfn) == 1
    assert k.test_flag(pfn, PG_anon_exclusive) and not k.page_locked(pfn)
    entry, _gen = dpt_load(k, 0, 1)
    assert is_atomic(entry) and entry & DPT_TAG_ATOMIC and dpt_entry_pfn(entry) == pfn
    assert k.events["device_reads"] == 1  # the verification read saw the CPU's token
    assert dmirror_check_atomic(k, a0, 0, 0, 4) == EPERM
    check_all(k, final=True)

    assert _run(k, cpu_access(k, a1, 0, 1, True)) == ACCESS_OK
    pte = k.pte_read(0, 1)
    assert pte_type(pte) == PTE_PRESENT and pte_pfn(pte) == pfn and pte & PTE_WRITE
    assert dpt_load(k, 0, 1)[0] == 0 and dmirror_check_atomic(k, a0, 0, 0, 4) == 0
    assert k.shadow(0, 1) != token and k.data(pfn) == k.shadow(0, 1)
    check_all(k, final=True)


def test_a_device_write_revokes_the_atomic_mapping_through_hmm_range_fault() -> None:
    """dmirror_do_write refuses an ATOMIC entry (-ENOENT), dmirror_fault faults for write;
    hmm_vma_handle_pte faults the device-exclusive entry back (remove_device_exclusive_entry
    with mmap_lock held), and the write lands in the restored page."""
    k, (a0, *_r) = _m()
    assert _run(k, dmirror_exclusive(k, a0, 0, 0, 2)) == 0
    pfn = _exclusive(k, 0)
    assert _run(k, dmirror_rw(k, a0, 0, 0, 2, True)) == 0
    assert pte_type(k.pte_read(0, 0)) == PTE_PRESENT and pte_pfn(k.pte_read(0, 0)) == pfn
    assert k.events["exclusive_restored"] == 2 and k.events["dmirror_faults"] == 1
    assert k.data(pfn) == k.shadow(0, 0)
    check_all(k, final=True)


def test_exclusive_of_a_device_private_page_faults_it_back_through_gup() -> None:
    """GUP (FOLL_WRITE) meets the device-private entry, faults (migrate_to_ram), and the
    page made exclusive is the new system page."""
    k, (a0, a1, *_r) = _m()
    dev = k.devices[0]
    assert _run(k, dev.migrate_to_device(k, a1, 0, 2, 3)) == 0
    assert pte_type(k.pte_read(0, 2)) == PTE_DEVICE_PRIVATE
    assert _run(k, dmirror_exclusive(k, a0, 0, 2, 1)) == 0
    pfn = _exclusive(k, 2)
    assert not k.is_zone_device(pfn)
    check_all(k, final=True)


def test_a_device_coherent_page_can_be_made_exclusive() -> None:
    """GUP returns a present device-coherent page like any other (no FOLL_LONGTERM):
    7.0 makes it device-exclusive, and the checks accept it."""
    table = _table()
    table["geometry"] = dict(table["geometry"], coherent=[0])
    table["device"] = [{"id": 0, "coherent": True}]
    m = model(table)
    k, (a0, a1, *_r) = m.kernel, m.actors
    assert _run(k, k.devices[0].migrate_to_device(k, a1, 0, 1, 2)) == 0
    pfn = pte_pfn(k.pte_read(0, 1))
    assert k.is_device_coherent(pfn)
    assert _run(k, dmirror_exclusive(k, a0, 0, 1, 1)) == 0
    assert _exclusive(k, 1) == pfn
    check_exclusive(k)
    check_all(k, final=True)
    assert _run(k, cpu_access(k, a1, 0, 1, True)) == ACCESS_OK
    check_all(k, final=True)


def _fork_world() -> tuple[Kernel, list[Any], int]:
    k, actors = _m()
    assert _run(k, dmirror_exclusive(k, actors[0], 0, 0, 1)) == 0
    return k, actors, _exclusive(k, 0)


def test_fork_fails_when_the_exclusive_folio_is_locked() -> None:
    """copy_nonpresent_pte's try_restore_exclusive_pte cannot trylock the folio (reclaim
    holds it): copy_pte_range -EBUSY, the fork fails with -ENOMEM, the half-copied child
    is torn down, and the parent keeps its device-exclusive entry and the device its
    atomic mapping."""
    k, (_a0, a1, _a2, a3), pfn = _fork_world()
    assert k.trylock_page(a3, pfn, "test:reclaim_holds")
    assert _run(k, op_fork(k, a1, 0, 1)) == ENOMEM
    k.unlock_page(a3, pfn, "test:reclaim_holds")
    assert k.events["fork_exclusive_ebusy"] == 1 and k.events["fork_failed"] == 1
    assert not k.words.load(k.lay.MM + 1 * MM_WORDS + M_USERS)
    assert all(pte_type(k.pte_read(1, v)) == PTE_NONE for v in range(8))
    assert _exclusive(k, 0) == pfn
    assert is_atomic(dpt_load(k, 0, 0)[0]) is False  # fork's PROTECTION_PAGE invalidation
    check_all(k, final=True)


def test_device_exclusive_restore_racing_a_fork() -> None:
    """Issue 11's interleaving. A CPU write faults on the device-exclusive entry, finds
    the folio locked (reclaim holds it), drops mmap_lock and sleeps
    (folio_lock_or_retry); a fork gets mmap_write_lock, restores the entry itself under
    folio_trylock once the folio is free, and shares the page copy-on-write; the fault
    retries, breaks COW, and the child keeps the old data."""
    k, (_a0, a1, a2, a3), pfn = _fork_world()
    old_token = k.shadow(0, 0)
    assert k.trylock_page(a3, pfn, "test:reclaim_holds")
    cpu = Stepper(cpu_access(k, a2, 0, 0, True))
    cpu.run_until(lambda: cpu.blocked_on(k) is not None)
    assert k.mmap_word(0) not in a2.held  # release_fault_lock
    k.unlock_page(a3, pfn, "test:reclaim_holds")  # wakes the sleeping fault
    assert _run(k, op_fork(k, a1, 0, 1)) == 0
    assert "fork_exclusive_ebusy" not in k.events
    assert pte_type(k.pte_read(0, 0)) == PTE_PRESENT and not k.pte_read(0, 0) & PTE_WRITE
    assert pte_pfn(k.pte_read(1, 0)) == pfn and k.mapcount(pfn) == 2
    assert dpt_load(k, 0, 0)[0] == 0
    assert cpu.finish(k) == ACCESS_OK
    assert k.events["exclusive_fault_retry"] == 1 and k.events["wp_copy"] == 1
    assert pte_pfn(k.pte_read(0, 0)) != pfn and k.data(pfn) == old_token
    assert k.shadow(1, 0) == old_token and k.shadow(0, 0) != old_token
    check_all(k, final=True)


def test_make_device_exclusive_racing_a_cpu_fault() -> None:
    """The CPU faults while make_device_exclusive's caller still holds the folio (it
    has not programmed its device yet): the fault drops mmap_lock and waits; once the
    driver has mapped the page ATOMIC and unlocked it, the retried fault revokes the
    atomic mapping (MMU_NOTIFY_CLEAR) before the CPU uses the page."""
    k, (a0, a1, *_r) = _m()
    drv = Stepper(dmirror_exclusive(k, a0, 0, 3, 1))
    drv.run_until(lambda: pte_type(k.pte_read(0, 3)) == PTE_DEVICE_EXCLUSIVE)
    pfn = pte_pfn(k.pte_read(0, 3))
    assert k.page_lock_owner(pfn) == a0.id and dpt_load(k, 0, 3)[0] == 0
    cpu = Stepper(cpu_access(k, a1, 0, 3, True))
    cpu.run_until(lambda: cpu.blocked_on(k) is not None)
    drv.run_until(lambda: not k.page_locked(pfn))
    assert is_atomic(dpt_load(k, 0, 3)[0])
    assert cpu.finish(k) == ACCESS_OK
    assert k.events["exclusive_fault_retry"] == 1
    assert dpt_load(k, 0, 3)[0] == 0 and pte_type(k.pte_read(0, 3)) == PTE_PRESENT
    # The verification read finds the atomic entry gone: -ENOENT, as 7.0 returns it.
    assert drv.finish(k) == -2
    check_all(k, final=True)


def test_make_device_exclusive_racing_migration_collect() -> None:
    """A device migration collects the page (a migration entry, folio locked) after
    make_device_exclusive's GUP: the folio lock waits; the migration sees the GUP
    reference, restores the page, and make_device_exclusive's second walk finds it
    mapped writable again. A collect that meets a device-exclusive entry leaves it."""
    k, (a0, a1, *_r) = _m()
    ex = Stepper(make_device_exclusive(k, a0, 0, 1))
    ex.run_until(lambda: k.ref_count(pte_pfn(k.pte_read(0, 1))) == 2)  # GUP's reference
    pfn = pte_pfn(k.pte_read(0, 1))
    dev = k.devices[0]
    mig = Stepper(dev.migrate_to_device(k, a1, 0, 0, 4))
    mig.run_until(lambda: k.page_lock_owner(pfn) == a1.id)
    ex.run_until(lambda: ex.blocked_on(k) is not None)
    assert mig.finish(k) == 0
    assert ex.finish(k) == pfn
    assert _exclusive(k, 1) == pfn and k.page_lock_owner(pfn) == a0.id
    k.unlock_page(a0, pfn, "test:folio_unlock")
    k.put_page(a0, pfn, "test:folio_put")
    assert pte_type(k.pte_read(0, 0)) == PTE_DEVICE_PRIVATE  # its neighbour moved
    # Collect leaves a device-exclusive entry alone (src 0): not migrated.
    assert _run(k, dev.migrate_to_device(k, a1, 0, 0, 4)) == 0
    assert _exclusive(k, 1) == pfn
    check_all(k, final=True)


def test_reclaim_turns_a_device_exclusive_entry_into_a_swap_entry() -> None:
    """try_to_unmap_one handles the PFN swap entry: a swap entry (exclusive), after an
    MMU_NOTIFY_CLEAR that revokes the atomic mapping; the page comes back on a read."""
    from pagerace.core.mm.vmscan import shrink_folio

    k, (a0, a1, *_r) = _m()
    assert _run(k, dmirror_exclusive(k, a0, 0, 2, 1)) == 0
    pfn = _exclusive(k, 2)
    token = k.shadow(0, 2)
    k.get_page(a1, pfn, "test:isolate")  # isolate_lru_folios' reference
    _run(k, shrink_folio(k, a1, pfn))
    assert pte_type(k.pte_read(0, 2)) == 4  # PTE_SWAP
    assert dpt_load(k, 0, 2)[0] == 0
    assert _run(k, cpu_access(k, a1, 0, 2, False)) == ACCESS_OK
    assert k.data(pte_pfn(k.pte_read(0, 2))) == token
    check_all(k, final=True)


def test_compaction_migrates_a_device_exclusive_page() -> None:
    """try_to_migrate_one (7.0) handles the PFN swap entry: MMU_NOTIFY_CLEAR revokes the
    atomic mapping, the entry becomes a readable-exclusive migration entry, and
    remove_migration_ptes maps the new page present, read-only but anon-exclusive (a
    write reuses it): the device's exclusivity ends with the migration."""
    from pagerace.core.mm.migrate import op_compact

    k, (a0, a1, *_r) = _m()
    assert _run(k, dmirror_exclusive(k, a0, 0, 1, 1)) == 0
    pfn = _exclusive(k, 1)
    token = k.shadow(0, 1)
    assert _run(k, op_compact(k, a1, 2, 8)) == 0
    pte = k.pte_read(0, 1)
    new = pte_pfn(pte)
    assert pte_type(pte) == PTE_PRESENT and new != pfn and not pte & PTE_WRITE
    assert k.test_flag(new, PG_anon_exclusive) and k.data(new) == token
    assert dpt_load(k, 0, 1)[0] == 0
    assert _run(k, cpu_access(k, a1, 0, 1, True)) == ACCESS_OK
    assert k.events["wp_reuse"] == 1
    check_all(k, final=True)


def test_exclusive_mprotect_as_the_selftest() -> None:
    """hmm-tests.c exclusive_mprotect: after HMM_DMIRROR_EXCLUSIVE, mprotect(PROT_READ)
    (MMU_NOTIFY_PROTECTION_VMA drops the atomic mappings; change_pte_range leaves the
    device-exclusive entry), then HMM_DMIRROR_WRITE fails with -EPERM (hmm_vma_fault on
    a VMA without VM_WRITE). A CPU read restores the entry read-only (the VMA's flags
    now), a CPU write is SIGSEGV; mprotect(PROT_READ | PROT_WRITE) makes the
    anon-exclusive page writable again at once (MM_CP_TRY_CHANGE_WRITABLE)."""
    from pagerace.core.mm.memory import ACCESS_SIGSEGV
    from pagerace.core.mm.mprotect import op_mprotect

    k, (a0, a1, *_r) = _m()
    assert _run(k, dmirror_exclusive(k, a0, 0, 0, 4)) == 0
    assert _run(k, op_mprotect(k, a1, 0, 0, 8, 0)) == 0
    assert all(dpt_load(k, 0, v)[0] == 0 for v in range(4))
    pfn = _exclusive(k, 1)
    assert _run(k, dmirror_rw(k, a0, 0, 0, 4, True)) == EPERM
    assert _run(k, cpu_access(k, a1, 0, 1, False)) == ACCESS_OK
    pte = k.pte_read(0, 1)
    assert pte_type(pte) == PTE_PRESENT and pte_pfn(pte) == pfn and not pte & PTE_WRITE
    assert _run(k, cpu_access(k, a1, 0, 1, True)) == ACCESS_SIGSEGV
    check_all(k, final=True)
    assert _run(k, op_mprotect(k, a1, 0, 0, 4, 1)) == -22  # not a whole VMA: -EINVAL
    assert _run(k, op_mprotect(k, a1, 0, 0, 8, 1)) == 0
    assert k.pte_read(0, 1) & PTE_WRITE
    assert _run(k, cpu_access(k, a1, 0, 1, True)) == ACCESS_OK
    check_all(k, final=True)


# -- the oracles and their faults ---------------------------------------------------


def test_a_restore_without_the_notifier_lets_the_cpu_bypass_the_device() -> None:
    for faults, bypass in (((), False), (("exclusive_restore_skips_notifier",), True)):
        k, (a0, a1, *_r) = _m(faults)
        assert _run(k, dmirror_exclusive(k, a0, 0, 1, 1)) == 0
        if bypass:
            with pytest.raises(InvariantViolation) as exc:
                _run(k, cpu_access(k, a1, 0, 1, True))
            assert exc.value.failure.kind is FailureKind.EXCLUSIVE_BYPASS
        else:
            assert _run(k, cpu_access(k, a1, 0, 1, True)) == ACCESS_OK
            check_all(k, final=True)


def test_a_cpu_write_is_never_lost_to_the_clean_exclusive_entry() -> None:
    """make_device_exclusive moves the dirty bit of the entry it nukes to the folio; a
    swap-cache page written by the CPU then made exclusive must be written out by reclaim,
    not dropped (the test-only fault ``exclusive_drops_dirty`` forgets the bit: the
    dirty-conservation oracle fires)."""
    from pagerace.core.mm.vmscan import shrink_folio

    assert FAULTS["exclusive_drops_dirty"].oracle is FailureKind.DIRTY_CONSERVATION
    for faults, lost in (((), False), (("exclusive_drops_dirty",), True)):
        k, (a0, a1, *_r) = _m(faults)
        assert _run(k, cpu_access(k, a1, 0, 1, True)) == ACCESS_OK
        pfn = pte_pfn(k.pte_read(0, 1))
        k.get_page(a1, pfn, "test:isolate")
        _run(k, shrink_folio(k, a1, pfn))  # to swap; the swap-in keeps the swap cache
        assert _run(k, cpu_access(k, a1, 0, 1, False)) == ACCESS_OK
        assert _run(k, cpu_access(k, a1, 0, 1, True)) == ACCESS_OK  # a dirty pte
        assert _run(k, dmirror_exclusive(k, a0, 0, 1, 1)) == 0
        pfn = _exclusive(k, 1)
        k.get_page(a1, pfn, "test:isolate")
        if lost:
            with pytest.raises(InvariantViolation) as exc:
                _run(k, shrink_folio(k, a1, pfn))
            assert exc.value.failure.kind is FailureKind.DIRTY_CONSERVATION
        else:
            _run(k, shrink_folio(k, a1, pfn))
            assert pte_type(k.pte_read(0, 1)) == 4  # PTE_SWAP
            check_all(k, final=True)


def test_fork_copying_the_entry_is_a_bad_mapping() -> None:
    for faults, bad in (((), False), (("fork_copies_exclusive",), True)):
        k, (a0, a1, *_r) = _m(faults)
        assert _run(k, dmirror_exclusive(k, a0, 0, 0, 1)) == 0
        assert _run(k, op_fork(k, a1, 0, 1)) == 0
        if bad:
            with pytest.raises(InvariantViolation) as exc:
                check_exclusive(k)
            assert exc.value.failure.kind is FailureKind.BAD_MAPPING
            assert "anon-exclusive" in exc.value.failure.message
        else:
            check_exclusive(k)
            check_all(k, final=True)


def test_an_exclusive_entry_never_survives_a_zap() -> None:
    assert FAULTS["zap_exclusive_keeps_entry"].oracle is FailureKind.BAD_MAPPING
    for faults, bad in (((), False), (("zap_exclusive_keeps_entry",), True)):
        k, (a0, a1, *_r) = _m(faults)
        assert _run(k, dmirror_exclusive(k, a0, 0, 3, 1)) == 0
        pfn = _exclusive(k, 3)
        assert _run(k, op_munmap(k, a1, 0, 3, 8)) == 0
        if bad:
            with pytest.raises(InvariantViolation) as exc:
                check_exclusive(k)
            assert exc.value.failure.kind is FailureKind.BAD_MAPPING
            assert "outside every VMA" in exc.value.failure.message
            with pytest.raises(InvariantViolation):
                check_all(k, final=True)
        else:
            assert pte_type(k.pte_read(0, 3)) == PTE_NONE
            assert not k.test_flag(pfn, PG_allocated)
            check_all(k, final=True)


def test_finding_008_madvise_between_make_device_exclusive_and_the_atomic_map() -> None:
    """docs/findings/008: madvise(MADV_DONTNEED) holds only mmap_read_lock, as
    dmirror_exclusive does; its zap lands after make_device_exclusive returned and before
    dmirror_atomic_map, whose store no read_begin / read_retry guards: the device holds
    atomically a page the CPU no longer maps, which is freed at folio_put."""
    k, (a0, a1, *_r) = _m()
    drv = Stepper(dmirror_exclusive(k, a0, 0, 2, 1))
    drv.run_until(lambda: pte_type(k.pte_read(0, 2)) == PTE_DEVICE_EXCLUSIVE)
    pfn = pte_pfn(k.pte_read(0, 2))
    assert _run(k, op_madv_dontneed(k, a1, 0, 2, 3)) == 0
    assert pte_type(k.pte_read(0, 2)) == PTE_NONE
    drv.run_until(lambda: is_atomic(dpt_load(k, 0, 2)[0]))
    with pytest.raises(InvariantViolation) as exc:
        check_exclusive(k)
    assert exc.value.failure.kind is FailureKind.EXCLUSIVE_BYPASS
    with pytest.raises(InvariantViolation) as exc:  # the verification read
        drv.finish(k)
    assert exc.value.failure.kind is FailureKind.USE_AFTER_FREE
    assert not k.test_flag(pfn, PG_allocated)


@pytest.mark.parametrize(
    ("workload", "fault", "kind"),
    [
        ("exclusive", "exclusive_restore_skips_notifier", FailureKind.EXCLUSIVE_BYPASS),
        ("exclusive_cow", "fork_copies_exclusive", FailureKind.BAD_MAPPING),
    ],
)
def test_each_exclusive_oracle_fires_in_its_workload_and_is_silent_without(
    workload: str, fault: str, kind: FailureKind
) -> None:
    assert FAULTS[fault].oracle is kind
    w = load_workload(workload)
    found = [run_deterministic(w, seed=s, faults=(fault,)).result.failure for s in range(8)]
    assert any(f is not None and f.kind is kind for f in found), found
    for s in range(8):
        assert run_deterministic(w, seed=s).result.failure is None


def test_older_generations_refuse_the_exclusive_kind() -> None:
    from pagerace.core.machine.errors import PageraceError

    w = load_workload("exclusive")
    for variant in ("v5.0", "hmm-2017"):
        with pytest.raises(PageraceError) as exc:
            run_deterministic(w, variant=variant, seed=0)
        assert "device_exclusive" in str(exc.value)


def test_a_pin_taken_before_stays_coherent_with_the_exclusive_entry() -> None:
    """7.0 does not refuse a pinned page ("concurrent access through other page
    references (e.g., earlier GUP invocation) is not handled and not supported"): the
    device-exclusive entry still names the pinned page, so the pin is coherent."""
    from pagerace.core.mm.gup import MODE_PIN, pin_user_page, unpin_user_page
    from pagerace.core.oracles.world import check_pin

    k, (a0, a1, *_r) = _m()
    rec = _run(k, pin_user_page(k, a1, 0, 1, MODE_PIN, True))
    assert rec is not None
    assert _run(k, dmirror_exclusive(k, a0, 0, 1, 1)) == 0
    assert _exclusive(k, 1) == rec.pfn
    assert check_pin(k, a1, rec, "dma") is True
    unpin_user_page(k, a1, rec, dirty=False)
    check_all(k, final=True)

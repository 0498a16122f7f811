"""The v6 migration paths against hand-written interleavings.

Each test builds a small memory picture, drives the paths generator by generator (one
preemption point per step, as the engine would), and checks the interleaving the kernel
promises: who blocks on what, what each entry, refcount, mapcount and content token is
afterwards, and that the global invariants (``check_all``) pass at the end.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from pagerace.core.machine.kernel import S_WAITS, Block, Kernel
from pagerace.core.machine.layout import (
    F_PIN,
    F_REF,
    GUP_PIN_COUNTING_BIAS,
    PTE_DEVICE_PRIVATE,
    PTE_MIGRATION,
    PTE_PRESENT,
    PTE_WRITE,
    PG_allocated,
    PG_anon_exclusive,
    PG_locked,
    pte_pfn,
    pte_type,
)
from pagerace.core.mm.memory import ACCESS_OK, cpu_access
from pagerace.core.mm.migrate_device import (
    EINVAL,
    MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
    MigrateVma,
    migrate_vma_finalize,
    migrate_vma_setup,
)
from pagerace.core.oracles.invariants import check_all
from pagerace.harness.engine import innermost
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload
from strategies import Stepper, model

# mm 0: pages 0-3 on device 0, pages 4-7 in system RAM, one anonymous writable VMA.
BASE = {
    "name": "paths",
    "geometry": {"sys_frames": 16, "dev_frames": 8, "pages_per_mm": 8, "ptes_per_table": 8},
    "mm": [
        {"id": 0, "populate": [{"start": 4, "end": 8}], "device": [{"dev": 0, "start": 0, "end": 4}]}
    ],
    "actor": [{"kind": "cpu", "count": 3}],
}


def _entry(k: Kernel, vpn: int, mm: int = 0) -> tuple[int, int]:
    pte = k.pte_read(mm, vpn)
    return pte_type(pte), pte_pfn(pte)


def _zone(k: Kernel, pfn: int) -> int:
    return k.lay.zone_of(pfn)


def _step_through_spinlocks(k: Kernel, s: Stepper, other: Stepper) -> None:
    """Step ``s`` once; while it waits on a page-table or mmap lock, run ``other``."""
    s.step()
    while (req := s.blocked_on(k)) is not None and req.kind != "page":
        other.step()
        if s.blocked_on(k) is None:
            s.step()


def _check_page_clean(k: Kernel, vpn: int, mm: int = 0) -> None:
    """The page at ``vpn`` is mapped once, referenced once, unlocked, holds its token."""
    kind, pfn = _entry(k, vpn, mm)
    assert kind in (PTE_PRESENT, PTE_DEVICE_PRIVATE)
    assert k.mapcount(pfn) == 1 and k.ref_count(pfn) == 1
    assert not k.page_locked(pfn)
    assert k.data(pfn) == k.shadow(mm, vpn) != 0


def test_fault_waits_for_collect_then_completes_after_migration() -> None:
    """A CPU store faults on a device-private page while the driver's collect holds that
    page's lock: the fault blocks on the page lock and completes after the migration,
    on the new system page."""
    m = model(BASE)
    k, (drv, cpu, _) = m.kernel, m.actors
    dev_pfn = _entry(k, 0)[1]
    d = Stepper(k.devices[0].migrate_to_system(k, drv, 0, 0, 4))
    c = Stepper(cpu_access(k, cpu, 0, 0, True))
    c.step()  # the store traps on the device-private entry
    d.run_until(lambda: k.page_locked(dev_pfn))
    assert k.page_lock_owner(dev_pfn) == drv.id
    assert pte_type(k.pte_read(0, 0)) == PTE_MIGRATION  # collect installed it under the PTL
    _step_through_spinlocks(k, c, d)  # the lockless read of the entry (handle_mm_fault)
    _step_through_spinlocks(k, c, d)  # migration_entry_wait: the PTL, then the page lock
    req = c.blocked_on(k)
    assert type(req) is Block and (req.kind, req.target) == ("page", dev_pfn)
    assert req.site == "migration_entry_wait:folio_wait_locked"
    d.finish(k)
    assert d.value == 0
    assert c.finish(k) == ACCESS_OK
    kind, new = _entry(k, 0)
    assert kind == PTE_PRESENT and _zone(k, new) == 0
    assert k.data(new) == k.shadow(0, 0) and k.data(new) >> 40 == cpu.id + 1  # the store landed
    assert not k.test_flag(dev_pfn, PG_allocated)  # the device page was freed
    for vpn in range(8):
        _check_page_clean(k, vpn)
    check_all(k)


def test_two_faulters_one_migrates_the_other_waits_then_finds_it_present() -> None:
    m = model(BASE)
    k, (c1a, c2a, _) = m.kernel, m.actors
    dev_pfn = _entry(k, 1)[1]
    c1 = Stepper(cpu_access(k, c1a, 0, 1, False))
    c2 = Stepper(cpu_access(k, c2a, 0, 1, True))
    c1.run_until(lambda: k.page_locked(dev_pfn))  # do_swap_page's folio_trylock won
    assert pte_type(k.pte_read(0, 1)) == PTE_DEVICE_PRIVATE
    c2.step()  # trap
    c2.step()  # the fault reads the entry without the lock: still device-private
    c2.step()  # the PTL, the trylock fails, sleep
    req = c2.blocked_on(k)
    assert type(req) is Block and (req.kind, req.target) == ("page", dev_pfn)
    assert req.site == "do_swap_page:wait_on_locked"
    assert c1.finish(k) == ACCESS_OK
    assert k.outcomes[("fault", "migrated")] == 1
    assert c2.finish(k) == ACCESS_OK
    assert k.outcomes[("fault", "migrated")] == 1  # the second fault found it present
    kind, new = _entry(k, 1)
    assert kind == PTE_PRESENT and _zone(k, new) == 0
    assert k.data(new) == k.shadow(0, 1) and k.data(new) >> 40 == c2a.id + 1
    assert k.stats["do_swap_page:wait_on_locked"][S_WAITS] == 1  # one counted wait
    for vpn in range(8):
        _check_page_clean(k, vpn)
    check_all(k)


def test_migration_entry_wait_blocks_until_finalize_unlocks() -> None:
    m = model(BASE)
    k, (drv, cpu, _) = m.kernel, m.actors
    old_pfn = _entry(k, 4)[1]
    token = k.shadow(0, 4)
    d = Stepper(k.devices[0].migrate_to_device(k, drv, 0, 4, 8))
    d.run_until(lambda: pte_type(k.pte_read(0, 4)) == PTE_MIGRATION)
    c = Stepper(cpu_access(k, cpu, 0, 4, False))
    _step_through_spinlocks(k, c, d)
    while c.blocked_on(k) is None:
        _step_through_spinlocks(k, c, d)
    req = c.blocked_on(k)
    assert (req.kind, req.target, req.site) == (
        "page", old_pfn, "migration_entry_wait:folio_wait_locked"
    )
    driver_steps = 0
    while c.blocked_on(k) is not None:
        # Until finalize, the entry stays a migration entry: waiting is right.
        if pte_type(k.pte_read(0, 4)) != PTE_MIGRATION:
            assert innermost(d.gen)[0] in ("remove_migration_ptes", "migrate_device_finalize_common")
        d.step()
        driver_steps += 1
    # Unlocked by finalize, after it rewrote the entry to the device page.
    assert innermost(d.gen)[0] == "migrate_device_finalize_common"
    assert driver_steps > 3
    kind, dev_pfn = _entry(k, 4)
    assert kind == PTE_DEVICE_PRIVATE and _zone(k, dev_pfn) == 1
    d.finish(k)
    assert c.finish(k) == ACCESS_OK  # the read faults the page back and sees its token
    kind, back = _entry(k, 4)
    assert kind == PTE_PRESENT and k.data(back) == token == k.shadow(0, 4)
    for vpn in range(5, 8):
        assert _entry(k, vpn)[0] == PTE_DEVICE_PRIVATE
    for vpn in range(8):
        _check_page_clean(k, vpn)
    check_all(k)


def test_collect_trylock_failure_skips_the_page() -> None:
    m = model(BASE)
    k, (drv, holder, _) = m.kernel, m.actors
    held = _entry(k, 5)[1]
    assert k.trylock_page(holder, held, "test:hold")
    d = Stepper(k.devices[0].migrate_to_device(k, drv, 0, 4, 8))
    assert d.finish(k) == 0  # never blocks: collect only trylocks
    assert k.outcomes[("to_device", "lock_contended")] == 1
    assert _entry(k, 5) == (PTE_PRESENT, held)  # skipped, untouched
    assert k.mapcount(held) == 1 and k.ref_count(held) == 1
    for vpn in (4, 6, 7):
        kind, pfn = _entry(k, vpn)
        assert kind == PTE_DEVICE_PRIVATE and _zone(k, pfn) == 1
    k.unlock_page(holder, held, "test:hold")
    for vpn in range(8):
        _check_page_clean(k, vpn)
    check_all(k)


# -- migrate_vma_setup's argument checks ---------------------------------------------------

SETUP = {
    "name": "setup-checks",
    "geometry": {"sys_frames": 16, "dev_frames": 8, "pages_per_mm": 8, "ptes_per_table": 8},
    "mm": [
        {
            "id": 0,
            "vmas": [
                {"start": 0, "end": 2, "flags": ["read", "special"]},
                {"start": 2, "end": 6, "flags": ["read", "write", "anon"]},
                {"start": 6, "end": 8, "flags": ["read", "hugetlb"]},
            ],
            "device": [{"dev": 0, "start": 2, "end": 4}],
            "populate": [{"start": 4, "end": 6}],
        }
    ],
    "actor": [{"kind": "cpu", "count": 1}],
}


@pytest.mark.parametrize(
    "case",
    [
        "no_vma",
        "special_vma",
        "hugetlb_vma",
        "empty_range",
        "start_before_vma",
        "start_past_vma",
        "end_past_vma",
        "fault_page_not_device_private",
        "fault_page_not_locked",
    ],
)
def test_migrate_vma_setup_einval(case: str) -> None:
    mdl = model(SETUP)
    k, (a,) = mdl.kernel, mdl.actors
    s = k.s
    anon = s.find_vma(0, 2)
    dev_pfn = _entry(k, 2)[1]
    sys_pfn = _entry(k, 4)[1]
    sel = MIGRATE_VMA_SELECT_DEVICE_PRIVATE
    args = {
        "no_vma": dict(vma=-1, start=2, end=4),
        "special_vma": dict(vma=s.find_vma(0, 0), start=0, end=2),
        "hugetlb_vma": dict(vma=s.find_vma(0, 6), start=6, end=8),
        "empty_range": dict(vma=anon, start=3, end=3),
        "start_before_vma": dict(vma=anon, start=1, end=4),
        "start_past_vma": dict(vma=anon, start=6, end=7),
        "end_past_vma": dict(vma=anon, start=4, end=7),
        "fault_page_not_device_private": dict(vma=anon, start=2, end=4, fault_page=sys_pfn),
        "fault_page_not_locked": dict(vma=anon, start=2, end=4, fault_page=dev_pfn),
    }[case]
    mv = MigrateVma(mm=0, flags=sel, pgmap_owner=0, **args)
    before = s.arr.copy()
    st = Stepper(migrate_vma_setup(k, a, mv))
    assert st.step() is None and st.done, "a refused setup must not reach a preemption point"
    assert st.value == EINVAL
    assert np.array_equal(s.arr, before), "a refused setup must not touch the state"
    check_all(k)


def test_migrate_vma_setup_accepts_a_locked_fault_page_and_restores_without_dst() -> None:
    """The positive control of the checks above: valid arguments collect and unmap; a
    finalize without destinations restores every entry."""
    mdl = model(SETUP)
    k, (a,) = mdl.kernel, mdl.actors
    anon = k.s.find_vma(0, 2)
    dev_pfn = _entry(k, 2)[1]
    assert k.trylock_page(a, dev_pfn, "test:fault_lock")
    assert k.get_page_unless_zero(a, dev_pfn)  # the fault path's reference
    mv = MigrateVma(
        0, anon, 2, 4, MIGRATE_VMA_SELECT_DEVICE_PRIVATE, 0, fault_page=dev_pfn,
        fault_folio=dev_pfn, kind="fault",
    )
    st = Stepper(migrate_vma_setup(k, a, mv))
    assert st.finish(k) == 0
    assert mv.cpages == 2
    assert [pte_type(k.pte_read(0, v)) for v in (2, 3)] == [PTE_MIGRATION] * 2
    assert k.page_lock_owner(dev_pfn) == a.id  # the fault folio stays ours
    fin = Stepper(migrate_vma_finalize(k, a, mv))
    fin.finish(k)
    assert _entry(k, 2) == (PTE_DEVICE_PRIVATE, dev_pfn)
    assert k.page_lock_owner(dev_pfn) == a.id  # finalize leaves the fault folio locked
    k.unlock_page(a, dev_pfn, "test:fault_lock")
    k.put_page(a, dev_pfn, "test:fault_put")
    for vpn in (2, 3, 4, 5):
        _check_page_clean(k, vpn)
    check_all(k)


def test_migrating_a_hole_inserts_a_device_private_entry() -> None:
    table = copy.deepcopy(BASE)
    table["mm"] = [{"id": 0}]  # one anonymous VMA, nothing populated
    m = model(table)
    k, (drv, cpu, _) = m.kernel, m.actors
    d = Stepper(k.devices[0].migrate_to_device(k, drv, 0, 0, 2))
    assert d.finish(k) == 0
    assert k.outcomes[("to_device", "migrated_hole")] == 2
    for vpn in (0, 1):
        pte = k.pte_read(0, vpn)
        pfn = pte_pfn(pte)
        assert pte_type(pte) == PTE_DEVICE_PRIVATE and pte & PTE_WRITE
        assert _zone(k, pfn) == 1 and k.is_device_private(pfn)
        assert k.mapcount(pfn) == 1 and k.ref_count(pfn) == 1 and not k.page_locked(pfn)
    check_all(k)
    # A CPU store there faults it back and lands on a system page.
    assert Stepper(cpu_access(k, cpu, 0, 0, True)).finish(k) == ACCESS_OK
    kind, pfn = _entry(k, 0)
    assert kind == PTE_PRESENT and _zone(k, pfn) == 0 and k.data(pfn) == k.shadow(0, 0)
    check_all(k)


def _pin(k: Kernel, pfn: int) -> None:
    """What GUP's FOLL_PIN does to a small folio."""
    k.words.fetch_add(k.fw(pfn, F_REF), GUP_PIN_COUNTING_BIAS)
    k.words.fetch_add(k.fw(pfn, F_PIN), 1)


def test_pinned_exclusive_page_is_skipped_not_migrated() -> None:
    m = model(BASE)
    k, (drv, _, _) = m.kernel, m.actors
    pinned = _entry(k, 4)[1]
    token = k.data(pinned)
    _pin(k, pinned)
    d = Stepper(k.devices[0].migrate_to_device(k, drv, 0, 4, 6))
    assert d.finish(k) == 0
    assert k.outcomes[("to_device", "pinned")] == 1
    assert _entry(k, 4) == (PTE_PRESENT, pinned)
    assert k.ref_count(pinned) == 1 + GUP_PIN_COUNTING_BIAS and k.mapcount(pinned) == 1
    assert k.test_flag(pinned, PG_anon_exclusive) and not k.test_flag(pinned, PG_locked)
    assert k.data(pinned) == token == k.shadow(0, 4)
    assert _entry(k, 5)[0] == PTE_DEVICE_PRIVATE
    check_all(k)


def test_pinned_shared_page_is_restored_in_every_mm() -> None:
    """A page fork shared (not anon-exclusive) gets migration entries in both mms, fails
    ``migrate_vma_check_page`` for the pin, and is restored everywhere."""
    table = {
        "name": "pinned-shared",
        "geometry": {"sys_frames": 16, "dev_frames": 8, "mms": 2, "pages_per_mm": 8},
        "mm": [
            {"id": 0, "populate": [{"start": 0, "end": 2}]},
            {"id": 1, "share": [{"from_mm": 0, "from": 0, "to": 3, "count": 1}]},
        ],
        "actor": [{"kind": "cpu", "count": 1}],
    }
    m = model(table)
    k, (drv,) = m.kernel, m.actors
    pfn = _entry(k, 0)[1]
    assert _entry(k, 3, mm=1) == (PTE_PRESENT, pfn)
    _pin(k, pfn)
    before = (k.pte_read(0, 0), k.pte_read(1, 3))
    d = Stepper(k.devices[0].migrate_to_device(k, drv, 0, 0, 2))
    assert d.finish(k) == 0
    assert k.outcomes[("to_device", "pinned")] == 1
    assert k.outcomes[("to_device", "restored")] >= 1
    assert (k.pte_read(0, 0), k.pte_read(1, 3)) == before  # same page, same bits
    assert k.mapcount(pfn) == 2 and k.ref_count(pfn) == 2 + GUP_PIN_COUNTING_BIAS
    assert not k.page_locked(pfn)
    assert _entry(k, 1)[0] == PTE_DEVICE_PRIVATE  # the unshared neighbour moved
    check_all(k)


def test_migrate_to_device_and_back_keeps_every_token() -> None:
    m = model(BASE)
    k, (drv, _, _) = m.kernel, m.actors
    tokens = [k.shadow(0, v) for v in range(8)]
    assert Stepper(k.devices[0].migrate_to_device(k, drv, 0, 4, 8)).finish(k) == 0
    assert [pte_type(k.pte_read(0, v)) for v in range(8)] == [PTE_DEVICE_PRIVATE] * 8
    check_all(k)
    assert Stepper(k.devices[0].migrate_to_system(k, drv, 0, 0, 8)).finish(k) == 0
    assert [pte_type(k.pte_read(0, v)) for v in range(8)] == [PTE_PRESENT] * 8
    assert [k.data(_entry(k, v)[1]) for v in range(8)] == tokens
    assert int(k.s.zones[1, 0]) == 8  # every device page went back to the device's pool
    check_all(k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_fault_folio_exception_livelocks_fault_storm(seed: int) -> None:
    w = load_workload("fault-storm")
    bad = run_deterministic(w, seed=seed, bugs=["no-fault-folio-exception"])
    assert bad.result.failure is not None and bad.result.failure.kind.value == "livelock"
    assert "migrate_vma_collect_pmd:folio_trylock" in bad.result.failure.message
    good = run_deterministic(w, seed=seed)
    assert good.outcome.value == "clean" and good.result.failure is None
    assert good.kernel.outcomes.get(("fault", "migrated"), 0) >= 1

"""The device-private fault entry per variant (``Variant.fault_entry``) and the catalog
entry ``waiter-takes-ref`` against hand-written interleavings.

Before 5.17 a CPU that found a migration entry took a page reference before sleeping
(``migration_entry_wait``); before 6.1 the device-private fault called the driver with
neither a reference nor the lock. Together (hmm-2017, v5.0) every CPU that finds a
page on its way back to the CPU adds a reference that fails the migration, and the
retries meet the next waiters: livelock. Today's fault entry (v6, 6.15+) trylocks the
device page under the PTL and sleeps without a reference when that fails, so turning the
old waiter back on there (a combination no kernel had) fails at most the migrations that
a late reader catches between collect and finalize; the storm does not sustain itself.
"""

from __future__ import annotations

from typing import Any

import pytest
from pagerace.core.machine.kernel import Kernel
from pagerace.core.machine.layout import PTE_DEVICE_PRIVATE, PTE_MIGRATION, PTE_PRESENT, pte_pfn, pte_type
from pagerace.core.mm.memory import (
    ACCESS_OK,
    FAULT_ENTRY_LOCKED,
    FAULT_ENTRY_NO_REF,
    FAULT_ENTRY_REF,
    cpu_access,
)
from pagerace.core.oracles.invariants import check_all
from pagerace.core.variants import VARIANTS
from pagerace.harness.engine import innermost
from pagerace.harness.runner import build_model
from pagerace.workloads import parse_workload
from strategies import Stepper

# mm 0: pages 0-3 on device 0, 4-7 in system RAM; three CPUs. Each page copy takes
# eight preemption points (the DMA), as in workloads/waiter-storm.toml.
BASE: dict[str, Any] = {
    "name": "waiters",
    "geometry": {"sys_frames": 16, "dev_frames": 8, "pages_per_mm": 8, "ptes_per_table": 8},
    "device": [{"id": 0, "copy_work": 8}],
    "mm": [
        {"id": 0, "populate": [{"start": 4, "end": 8}], "device": [{"dev": 0, "start": 0, "end": 4}]}
    ],
    "actor": [{"kind": "cpu", "count": 3}],
}


def _model(variant: str, bugs: tuple[str, ...] = ()) -> tuple[Kernel, list[Any]]:
    m = build_model(parse_workload(dict(BASE), "test"), variant, bugs, 0)
    m.kernel.actors = m.actors
    return m.kernel, m.actors


def _failed(k: Kernel) -> int:
    """Fault migrations that failed on an unexpected reference."""
    return k.outcomes.get(("fault", "pinned"), 0) + k.outcomes.get(("fault", "refcount_changed"), 0)


def _until_asleep_on_page(k: Kernel, c: Stepper, holder: Stepper) -> None:
    """Step ``c`` until it sleeps on a page lock; while it spins on a page-table lock,
    run ``holder`` (which must not reach the point where it unlocks the page)."""
    for _ in range(1_000):
        req = c.blocked_on(k)
        if req is not None and req.kind == "page":
            return
        (holder if req is not None else c).step()
    raise AssertionError("never went to sleep on a page lock")


def _round_robin(k: Kernel, paths: list[Stepper], limit: int) -> int:
    """A strict round robin over the paths not finished and not blocked (the fair
    schedule the livelock oracle trusts); returns the steps taken, or ``limit``."""
    steps = 0
    while steps < limit and not all(p.done for p in paths):
        ran = False
        for p in paths:
            if not p.done and p.blocked_on(k) is None:
                p.step()
                steps += 1
                ran = True
        assert ran, "every path blocked: a deadlock, not what this test is about"
    return steps


# -- the hook -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant,bugs,entry",
    [
        ("v6", (), FAULT_ENTRY_LOCKED),
        ("v6", ("fault-ref-no-trylock",), FAULT_ENTRY_REF),
        ("v6", ("fault-without-ref",), FAULT_ENTRY_NO_REF),
        ("v5.0", (), FAULT_ENTRY_NO_REF),
        ("v5.0", ("waiter-takes-ref",), FAULT_ENTRY_NO_REF),
        ("hmm-2017", (), FAULT_ENTRY_NO_REF),
        ("hmm-2017", ("waiter-takes-ref",), FAULT_ENTRY_NO_REF),
    ],
)
def test_fault_entry_per_variant(variant: str, bugs: tuple[str, ...], entry: str) -> None:
    k, _ = _model(variant, bugs)
    assert k.variant.fault_entry(k) == entry
    # migrate_vma_setup insists on a locked fault page only under the 6.15+ entry.
    assert k.variant_checks_fault_page_locked() == (entry == FAULT_ENTRY_LOCKED)
    # Only dmirror-era drivers (5.3+ zone_device_data) read per-page data in the fault.
    assert VARIANTS[variant].fault_reads_page_data == (variant == "v6")


@pytest.mark.parametrize("variant", ["v5.0", "hmm-2017"])
def test_old_fault_entry_calls_the_driver_without_ref_or_lock(variant: str) -> None:
    """4.14-6.0 do_swap_page(): device_private_entry_fault() with the PTL dropped and
    neither a reference nor the lock; migrate_vma() then locks the page itself."""
    k, (cpu, _, _) = _model(variant)
    dev = pte_pfn(k.pte_read(0, 0))
    ref0 = k.ref_count(dev)
    c = Stepper(cpu_access(k, cpu, 0, 0, False))
    # Stop at do_swap_page's preemption point between the PTL and the driver call.
    c.run_until(lambda: innermost(c.gen)[0] == "do_swap_page_device" and not k.s.ptl.any())
    assert k.ref_count(dev) == ref0 and not k.page_locked(dev)
    c.run_until(lambda: k.page_locked(dev))
    assert k.page_lock_owner(dev) == cpu.id  # locked by migrate_vma's collect / prepare
    assert innermost(c.gen)[0] in ("collect_v50", "prepare_2017", "lock_page")
    assert c.finish(k) == ACCESS_OK
    assert k.outcomes[("fault", "migrated")] == 1
    assert pte_type(k.pte_read(0, 0)) == PTE_PRESENT
    check_all(k)


def test_v6_fault_entry_holds_ref_and_lock_before_the_driver() -> None:
    k, (cpu, _, _) = _model("v6")
    dev = pte_pfn(k.pte_read(0, 0))
    ref0 = k.ref_count(dev)
    c = Stepper(cpu_access(k, cpu, 0, 0, False))
    c.run_until(lambda: k.page_locked(dev))
    assert innermost(c.gen)[0] == "do_swap_page_device"
    assert k.page_lock_owner(dev) == cpu.id and k.ref_count(dev) == ref0 + 1
    assert c.finish(k) == ACCESS_OK
    check_all(k)


# -- why v6 does not livelock --------------------------------------------------------


def test_v6_storm_waiters_hold_no_reference_only_late_readers_do() -> None:
    """v6 + waiter-takes-ref. CPUs that fault while the first one holds the page lock
    but before its collect sleep in do_swap_page WITHOUT a reference: the migration
    succeeds. Only a CPU that reads the entry after collect turned it into a migration
    entry goes to migration_entry_wait and takes one (and fails that migration)."""
    k, (c0a, c1a, c2a) = _model("v6", ("waiter-takes-ref",))
    dev = pte_pfn(k.pte_read(0, 0))
    ref0 = k.ref_count(dev)
    c0 = Stepper(cpu_access(k, c0a, 0, 0, False))
    c0.run_until(lambda: k.page_locked(dev))  # do_swap_page: folio_trylock won
    waiters = [Stepper(cpu_access(k, a, 0, 0, False)) for a in (c1a, c2a)]
    for c in waiters:
        _until_asleep_on_page(k, c, c0)
        assert c.blocked_on(k).site == "do_swap_page:wait_on_locked"
    assert pte_type(k.pte_read(0, 0)) == PTE_DEVICE_PRIVATE  # collect has not run yet
    assert k.ref_count(dev) == ref0 + 1  # the lock holder's reference only
    assert c0.finish(k) == ACCESS_OK
    assert k.outcomes[("fault", "migrated")] == 1 and _failed(k) == 0
    for c in waiters:
        assert c.finish(k) == ACCESS_OK
    check_all(k)

    # A late reader: the lock holder has installed the migration entry already.
    k, (c0a, c1a, _) = _model("v6", ("waiter-takes-ref",))
    dev = pte_pfn(k.pte_read(0, 0))
    ref0 = k.ref_count(dev)
    c0 = Stepper(cpu_access(k, c0a, 0, 0, False))
    c0.run_until(lambda: pte_type(k.pte_read(0, 0)) == PTE_MIGRATION)
    c1 = Stepper(cpu_access(k, c1a, 0, 0, False))
    _until_asleep_on_page(k, c1, c0)
    assert c1.blocked_on(k).site == "migration_entry_wait:folio_wait_locked"
    assert k.ref_count(dev) > ref0 + 1  # the waiter's reference
    assert _round_robin(k, [c0, c1], 5_000) < 5_000
    assert _failed(k) == 1 and k.outcomes[("fault", "migrated")] == 1  # one failure, then done
    check_all(k)


def test_storm_under_round_robin_dissolves_on_v6_and_livelocks_on_the_old_entry() -> None:
    """Three CPUs read one device-private page in lockstep (a strict round robin).

    v6 + waiter-takes-ref: the storm ends at once. The first CPU wins do_swap_page's
    trylock, the others find the entry still device-private and sleep on the page lock
    without a reference; nobody is left to read the migration entry, so the migration
    succeeds. v5.0 and hmm-2017 + waiter-takes-ref: every CPU runs migrate_vma() itself,
    the losers of collect's trylock come back to the migration entry and take their
    references, and every migration fails (v5.0 in migrate_page_move_mapping, hmm-2017
    also in the page check); nobody finishes. Without the toggle both are clean under
    the same schedule."""
    runs = {}
    for variant in ("v6", "v5.0", "hmm-2017"):
        for bugs in ((), ("waiter-takes-ref",)):
            k, cpus = _model(variant, bugs)
            paths = [Stepper(cpu_access(k, a, 0, 0, False)) for a in cpus]
            steps = _round_robin(k, paths, 6_000)
            runs[(variant, bugs)] = (steps, [p.done for p in paths], k)
    for variant in ("v6", "v5.0", "hmm-2017"):
        for bugs in ((), ("waiter-takes-ref",)):
            steps, done, k = runs[(variant, bugs)]
            if variant != "v6" and bugs:
                assert steps >= 6_000 and not any(done), variant  # a round may end past it
                assert _failed(k) > 50 and ("fault", "migrated") not in k.outcomes
                assert k.outcomes.get(("fault", "refcount_changed"), 0) > 0
                continue
            assert all(done) and k.outcomes[("fault", "migrated")] == 1, (variant, bugs)
            # hmm-2017's lockstep collects hold references too (seed 004's check has no
            # exemption): a failure or two before one CPU gets through.
            assert _failed(k) <= (2 if variant == "hmm-2017" else 0), (variant, bugs)
            assert pte_type(k.pte_read(0, 0)) == PTE_PRESENT
            check_all(k)


def test_v50_waiter_reference_fails_move_mapping_despite_the_exemption() -> None:
    """v5.0's migrate_vma_check_page() passes a device-private page whatever its
    refcount (seed 002 line 2368), but the waiter's reference is still there at
    migrate_page_move_mapping() (line 458): -EAGAIN, the entry is restored."""
    k, (c0a, c1a, _) = _model("v5.0", ("waiter-takes-ref",))
    dev = pte_pfn(k.pte_read(0, 0))
    c0 = Stepper(cpu_access(k, c0a, 0, 0, False))
    c0.run_until(lambda: pte_type(k.pte_read(0, 0)) == PTE_MIGRATION)
    c1 = Stepper(cpu_access(k, c1a, 0, 0, False))
    _until_asleep_on_page(k, c1, c0)
    assert c1.blocked_on(k).site == "migration_entry_wait:folio_wait_locked"
    c0.run_until(lambda: not k.page_locked(dev))  # finalize restored and unlocked it
    assert k.outcomes.get(("fault", "refcount_changed"), 0) == 1
    assert ("fault", "pinned") not in k.outcomes  # the check passed it
    assert pte_type(k.pte_read(0, 0)) == PTE_DEVICE_PRIVATE
    assert pte_pfn(k.pte_read(0, 0)) == dev

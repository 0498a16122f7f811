"""Every oracle of ``core/oracles/world.py`` can fire: a deliberately broken path (a test-only
fault of ``core/faults.py``) makes it report its kind, and the unbroken path passes.

Workload-level proofs run the named workload with and without the fault on the same
seeds; the interleaving-level ones drive the broken path by hand.
"""

from __future__ import annotations

from typing import Any

import pytest
from pagerace.core.faults import FAULTS, validate_faults
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.layout import F_FLAGS, F_REF, PTE_PRESENT, PG_dirty, PG_swapcache, pte_type
from pagerace.core.mm.fork import op_fork
from pagerace.core.mm.gup import MODE_GET, MODE_PIN, PinRecord, gup_fast, pin_table, pin_user_page
from pagerace.core.mm.memory import ACCESS_OK, cpu_access
from pagerace.core.mm.vmscan import op_reclaim
from pagerace.core.oracles.world import check_device_pages, check_dirty, check_no_pins_left
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload
from strategies import Stepper, model

SYS = {
    "name": "oracles",
    "geometry": {
        "sys_frames": 24, "dev_frames": 8, "mms": 2, "pages_per_mm": 8,
        "ptes_per_table": 4, "swap_slots": 8,
    },
    "mm": [{"id": 0, "populate": [{"start": 0, "end": 4}],
            "device": [{"dev": 0, "start": 4, "end": 6}]}],
    "actor": [{"kind": "cpu", "count": 4}],
}

# (workload, fault, the kind the oracle must report, seeds to try)
CASES = [
    ("migrate", "no_tlb_flush", FailureKind.STALE_TLB, 20),
    ("fork-vs-pin", "fork_ignores_pins", FailureKind.PIN_COHERENCY, 40),
    ("anon_teardown", "zap_no_put", FailureKind.LEAK, 20),
    ("unmap-vs-migrate", "zap_device_keeps_entry", FailureKind.DEVICE_PAGE_LIFETIME, 30),
    ("swap-vs-fault", "reclaim_drops_dirty", FailureKind.DIRTY_CONSERVATION, 10),
    ("swap-vs-fault", "swapin_spurious_sigbus", FailureKind.SIGBUS, 10),
    ("swap-vs-fault", "zap_swap_no_free", FailureKind.LEAK, 20),
]


def _run(k: Any, gen: Any) -> Any:
    return Stepper(gen).finish(k)


@pytest.mark.parametrize(("workload", "fault", "kind", "seeds"), CASES, ids=lambda x: str(x))
def test_broken_path_fires_its_oracle_and_the_unbroken_path_is_clean(
    workload: str, fault: str, kind: FailureKind, seeds: int
) -> None:
    assert FAULTS[fault].oracle is kind
    w = load_workload(workload)
    found = None
    for seed in range(seeds):
        r = run_deterministic(w, seed=seed, faults=[fault])
        if r.result.failure is not None and r.result.failure.kind is kind:
            found = seed
            fl = r.result.failure
            assert fl.sites, "the failure names its call sites"
            assert fl.pages or fl.actors or fl.details, "the failure names what it is about"
            break
    assert found is not None, f"{fault} on {workload}: {kind.value} not seen in {seeds} seeds"
    clean = run_deterministic(w, seed=found)
    assert str(clean.result.outcome) == "clean", clean.result.failure


def _m(*faults: str) -> tuple[Any, list[Any]]:
    m = model(SYS)
    m.kernel.faults = frozenset(faults)
    return m.kernel, m.actors


@pytest.mark.parametrize("broken", [False, True])
def test_gup_fast_without_recheck_pins_a_shared_page_pin_coherency(broken: bool) -> None:
    """B1 reads a read-only entry of a page fork shared. Unbroken, B5 backs off; with
    ``gup_fast_no_recheck`` the pin stands, the parent's next write copies the page
    (COW) and the DMA through the pin no longer reaches the mapped page."""
    k, (a, f, cpu, _) = _m(*(["gup_fast_no_recheck"] if broken else []))
    assert _run(k, op_fork(k, f, 0, 1)) == 0
    pfn = _run(k, gup_fast(k, a, 0, 0, False, True))
    if not broken:
        assert pfn == -1
        return
    rec = PinRecord(a.id, 0, 0, pfn, True, "pin_fast:0:0")
    pin_table(k).setdefault(a.id, []).append(rec)
    assert _run(k, cpu_access(k, cpu, 0, 0, True)) == ACCESS_OK
    from pagerace.core.oracles.world import check_pin

    with pytest.raises(InvariantViolation) as exc:
        check_pin(k, a, rec, "dma")
    assert exc.value.failure.kind is FailureKind.PIN_COHERENCY


@pytest.mark.parametrize("broken", [False, True])
def test_no_tlb_flush_write_through_stale_entry_is_stale_tlb(broken: bool) -> None:
    """A CPU caches a writable translation; a migration to the device changes the entry
    and (unbroken) flushes every TLB before it unlocks the page table."""
    k, (cpu, drv, *_) = _m(*(["no_tlb_flush"] if broken else []))
    assert _run(k, cpu_access(k, cpu, 0, 1, True)) == ACCESS_OK
    assert _run(k, k.devices[0].migrate_to_device(k, drv, 0, 0, 4)) == 0
    assert pte_type(k.pte_read(0, 1)) != PTE_PRESENT
    if not broken:
        assert _run(k, cpu_access(k, cpu, 0, 1, True)) == ACCESS_OK
        return
    with pytest.raises(InvariantViolation) as exc:
        _run(k, cpu_access(k, cpu, 0, 1, True))
    fl = exc.value.failure
    assert fl.kind is FailureKind.STALE_TLB and fl.actors == (cpu.name,)
    assert fl.details == {"mm": 0, "vpn": 1} and fl.locks


@pytest.mark.parametrize("broken", [False, True])
def test_reclaim_dropping_a_dirty_page_is_dirty_conservation(broken: bool) -> None:
    k, (cpu, r, *_) = _m(*(["reclaim_drops_dirty"] if broken else []))
    assert _run(k, cpu_access(k, cpu, 0, 2, True)) == ACCESS_OK
    if not broken:
        assert _run(k, op_reclaim(k, r, 0, 4)) == 4
        return
    with pytest.raises(InvariantViolation) as exc:
        _run(k, op_reclaim(k, r, 0, 4))
    assert exc.value.failure.kind is FailureKind.DIRTY_CONSERVATION


def test_global_dirty_check_catches_a_clean_swapcache_page_with_new_data() -> None:
    k, (cpu, r, *_) = _m()
    # Swap a page out while a FOLL_GET reference keeps it in the swap cache.
    rec = _run(k, pin_user_page(k, cpu, 0, 0, MODE_GET, True))
    assert _run(k, op_reclaim(k, r, rec.pfn, 1)) == 1
    assert k.test_flag(rec.pfn, PG_swapcache)
    check_dirty(k, False)
    k.set_data(rec.pfn, k.new_token(cpu))  # a write nobody marked dirty
    k.clear_flag(rec.pfn, PG_dirty)
    with pytest.raises(InvariantViolation) as exc:
        check_dirty(k, False)
    assert exc.value.failure.kind is FailureKind.DIRTY_CONSERVATION


def test_global_device_page_check_catches_a_free_device_page_with_a_count() -> None:
    k, _actors = _m()
    lo, hi = k.lay.zone_range(1)
    free = [p for p in range(lo, hi) if not k.flags(p) & (1 << 8)]
    check_device_pages(k, False)
    k.s.frames[free[0], F_REF] = 1
    with pytest.raises(InvariantViolation) as exc:
        check_device_pages(k, False)
    assert exc.value.failure.kind is FailureKind.DEVICE_PAGE_LIFETIME
    k.s.frames[free[0], F_REF] = 0
    k.s.frames[free[0], F_FLAGS] |= PG_dirty
    with pytest.raises(InvariantViolation):
        check_device_pages(k, False)


def test_pin_held_past_its_operation_is_a_leak() -> None:
    k, (a, *_) = _m()
    check_no_pins_left(k, False)
    _run(k, pin_user_page(k, a, 0, 0, MODE_PIN, True))
    with pytest.raises(InvariantViolation) as exc:
        check_no_pins_left(k, False)
    assert exc.value.failure.kind is FailureKind.LEAK


def test_unknown_fault_name_is_refused_with_the_choices() -> None:
    from pagerace.core.machine.errors import InvalidOption

    validate_faults(["no_tlb_flush", "zap_no_put"])
    with pytest.raises(InvalidOption, match=r"unknown fault 'nope'; valid faults: .*no_tlb_flush"):
        validate_faults(["nope"])


def test_injected_copy_error_gives_counted_sigbus_not_a_failure() -> None:
    """SIGBUS is a failure only where no error was injected (``swapin_spurious_sigbus``
    above); with copy errors injected it is counted and the run stays clean."""
    w = load_workload("migrate_copy_err")
    sigbus = 0
    for seed in range(5):
        r = run_deterministic(w, seed=seed)
        assert str(r.result.outcome) == "clean", r.result.failure
        sigbus += sum(a.sigbus for a in r.actors)
        assert r.kernel.events.get("sigbus", 0) == sum(a.sigbus for a in r.actors)
    assert sigbus > 0

"""The oracles of large folios (core/oracles/folio.py; issue 15 stage 4) fire on their
test-only fault and stay silent without it: the split-consistency check, no migration
entry left after finalize, and the fixed-length src/dst arrays (a kernel failure in a
real run, never an internal error)."""

from __future__ import annotations

import pytest
from pagerace.core.faults import FAULTS
from pagerace.core.machine import folio as fo
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.layout import PG_anon, PG_isolated, mapping_encode
from pagerace.core.mm import huge_memory as hm
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload
from strategies import kernel_with_actors, run_unblocked
from test_migrate_v7 import GEO, TO_DEV, TO_RAM, _kernel, _migrate, _thp


def _unmapped_locked(faults: frozenset[str]):
    k, acts = kernel_with_actors(GEO, 3, variant="v7")
    k.faults = faults
    a = acts[0]
    head = fo.folio_alloc(k, a, 0, 3, "t:alloc")
    k.set_flag(head, PG_anon | PG_isolated)
    k.s.mapping[head] = mapping_encode(0, 8)
    assert k.trylock_page(a, head, "t:lock")
    return k, a, head


@pytest.mark.parametrize(
    ("fault", "kind"),
    [("split_unfreeze_extra_ref", FailureKind.REFCOUNT_MISMATCH),
     ("split_drops_lock", FailureKind.BAD_UNLOCK)],
)
def test_split_oracle(fault: str, kind: FailureKind) -> None:
    assert FAULTS[fault].oracle is kind
    k, a, head = _unmapped_locked(frozenset({fault}))
    with pytest.raises(InvariantViolation) as info:
        hm.folio_split_unmapped(k, a, head, 0)
    f = info.value.failure
    assert f.kind is kind and f.sites == ("__folio_freeze_and_split_unmapped",) and f.pages
    k, a, head = _unmapped_locked(frozenset())
    assert hm.folio_split_unmapped(k, a, head, 0) == 0  # silent without the fault


def test_split_oracle_on_a_mapped_split() -> None:
    """The same check runs inside __folio_split (split_folio of a PMD-mapped THP)."""
    k, (a, _, _), _vma = _kernel()
    head = _thp(k, a)
    k.faults = frozenset({"split_unfreeze_extra_ref"})
    k.get_page(a, head, "t:ref")
    assert k.trylock_page(a, head, "t:lock")
    with pytest.raises(InvariantViolation) as info:
        run_unblocked(hm.split_folio(k, a, head))
    assert info.value.failure.kind is FailureKind.REFCOUNT_MISMATCH


def test_no_migration_entry_left_after_finalize() -> None:
    fault = "finalize_skips_pmd_restore"
    assert FAULTS[fault].oracle is FailureKind.MIGRATION_ENTRY_LEFT
    k, (a, _, _), vma = _kernel()
    _thp(k, a)
    k.faults = frozenset({fault})
    with pytest.raises(InvariantViolation) as info:
        _migrate(k, a, vma, 8, 16, TO_DEV, zone=1)
    f = info.value.failure
    assert f.kind is FailureKind.MIGRATION_ENTRY_LEFT and "PMD" in f.message
    assert f.sites == ("migrate_device_finalize",)
    k, (a, _, _), vma = _kernel()  # silent without the fault, both ways
    _thp(k, a)
    _migrate(k, a, vma, 8, 16, TO_DEV, zone=1)
    _migrate(k, a, vma, 8, 16, TO_RAM, zone=0)


@pytest.mark.parametrize("workload", ["default", "holes"])
def test_array_overrun_is_a_kernel_failure_in_a_run(workload: str) -> None:
    """With the fault, a v7 run reports the write past src/dst as a kernel failure
    (exit 1 material), not an internal error; without it the same seed is clean."""
    fault = "collect_pushes_extra_entry"
    assert FAULTS[fault].oracle is FailureKind.BUG_ON
    w = load_workload(workload)
    found = None
    for seed in range(10):
        r = run_deterministic(w, variant="v7", seed=seed, faults=[fault])
        if r.result.failure is not None:
            assert r.result.failure.kind is FailureKind.BUG_ON, r.result.failure
            assert "KASAN" in r.result.failure.message
            found = seed
            break
    assert found is not None
    clean = run_deterministic(w, variant="v7", seed=found)
    assert str(clean.result.outcome) == "clean", clean.result.failure


def test_pmd_lock_held_at_the_end_of_an_operation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A path that returns with the PMD lock held is reported by the lock-balance
    oracle at the operation's end, the lock named as a PMD lock."""
    from pagerace.core import actors
    from pagerace.core.machine import pmd as pm

    def leaky(k, a):
        yield from pm.pmd_lock(k, a, 0, 1, "leaky:pmd_lock")

    def tidy(k, a):
        ptl = yield from pm.pmd_lock(k, a, 0, 1, "tidy:pmd_lock")
        k.spin_unlock(a, ptl, "tidy:pmd_unlock")

    monkeypatch.setitem(actors.OPS, "_t_leaky", leaky)
    monkeypatch.setitem(actors.OPS, "_t_tidy", tidy)
    k, (a, _, _), _vma = _kernel()
    run_unblocked(actors.program(k, a, [("_t_tidy",)]))
    with pytest.raises(InvariantViolation) as info:
        run_unblocked(actors.program(k, a, [("_t_leaky",)]))
    f = info.value.failure
    assert f.kind is FailureKind.LOCK_BALANCE and "pmd:0:0" in f.message + " ".join(f.locks)


# -- the global invariants with large folios (thp geometries) ------------------------------
def _global(k) -> None:
    from pagerace.core.oracles.invariants import check_all

    check_all(k)


def test_global_invariants_hold_through_a_thp_round_trip() -> None:
    k, (a, _, _), vma = _kernel()
    _thp(k, a)
    _global(k)
    _migrate(k, a, vma, 8, 16, TO_DEV, zone=1)
    _global(k)
    _migrate(k, a, vma, 8, 16, TO_RAM, zone=0)
    _global(k)


@pytest.mark.parametrize(
    ("corrupt", "kind"),
    [
        ("extra_ref", FailureKind.LEAK),
        ("tail_ref", FailureKind.LEAK),
        ("entire", FailureKind.MAPCOUNT_MISMATCH),
        ("pmd_migration", FailureKind.MIGRATION_ENTRY_LEFT),
        ("pmd_lock", FailureKind.LOCK_BALANCE),
        ("data", FailureKind.LOST_WRITE),
        ("pmd_to_free", FailureKind.USE_AFTER_FREE),
    ],
)
def test_global_invariants_fire_on_a_broken_thp(corrupt: str, kind: FailureKind) -> None:
    from pagerace.core.machine import pmd as pm
    from pagerace.core.machine.layout import (
        F_REF,
        FO_ENTIRE_MAPCOUNT,
        PTE_MIGRATION,
        PTE_PRESENT,
        pte_encode,
    )

    k, (a, _, _), _vma = _kernel()
    head = _thp(k, a)
    _global(k)
    if corrupt == "extra_ref":
        k.words.fetch_add(k.fw(head, F_REF), 1)
    elif corrupt == "tail_ref":
        k.words.store(k.fw(head + 3, F_REF), 1)
    elif corrupt == "entire":
        k.words.fetch_add(fo.fo_w(k, head + 1, FO_ENTIRE_MAPCOUNT), 1)
    elif corrupt == "pmd_migration":
        pm.set_pmd_at(k, 0, 2, pte_encode(PTE_MIGRATION, head))
    elif corrupt == "pmd_lock":
        k.words.store(pm.pmd_lockptr(k, 0, 1), a.id + 1)
    elif corrupt == "data":
        k.set_data(head + 6, 7)
    elif corrupt == "pmd_to_free":
        other = fo.folio_alloc(k, a, 0, 3, "t:other")
        fo.folio_put(k, a, other, "t:free")
        pm.set_pmd_at(k, 0, 2, pte_encode(PTE_PRESENT, other))
    with pytest.raises(InvariantViolation) as info:
        _global(k)
    assert info.value.failure.kind is kind, info.value.failure.message

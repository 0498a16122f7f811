"""Per-CPU LRU-add batches (mm/swap.c): ``folio_add_lru``, ``lru_add_drain`` and
``lru_add_drain_all``, and the references the global refcount check expects for them."""

from __future__ import annotations

import pytest
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.layout import (
    FOLIO_BATCH_SIZE,
    PTE_PRESENT,
    Geometry,
    PG_anon,
    PG_isolated,
    PG_lru,
    pte_encode,
)
from pagerace.core.mm.migrate_device import folio_isolate_lru
from pagerace.core.oracles.invariants import check_counts
from strategies import Stepper, kernel_with_actors


def _fresh(k, a, n):
    pfns = []
    for _ in range(n):
        pfn = k.alloc_page(a, 0, "t:alloc")
        k.set_flag(pfn, PG_anon)
        k.folio_add_lru(a, pfn, "t:add")
        pfns.append(pfn)
    return pfns


def test_a_fresh_folio_is_off_the_lru_with_an_extra_reference_until_drained() -> None:
    k, (cpu, other) = kernel_with_actors(Geometry(sys_frames=4, devices=0), 2)
    (pfn,) = _fresh(k, cpu, 1)
    assert not k.test_flag(pfn, PG_lru) and k.ref_count(pfn) == 2
    assert k.lru_batch_count(cpu.id) == 1 and int(k.extra_refs()[pfn]) == 1
    assert not folio_isolate_lru(k, other, pfn), "a folio in a batch cannot be isolated"
    k.lru_add_drain(other, "t:drain")  # another CPU's drain leaves this batch alone
    assert k.lru_batch_count(cpu.id) == 1
    k.lru_add_drain(cpu, "t:drain")
    assert k.test_flag(pfn, PG_lru) and k.ref_count(pfn) == 1
    assert k.lru_batch_count(cpu.id) == 0 and int(k.extra_refs()[pfn]) == 0
    assert folio_isolate_lru(k, other, pfn) and k.test_flag(pfn, PG_isolated)


def test_a_full_batch_moves_to_the_lru_at_once() -> None:
    k, (cpu,) = kernel_with_actors(Geometry(sys_frames=FOLIO_BATCH_SIZE + 1, devices=0), 1)
    pfns = _fresh(k, cpu, FOLIO_BATCH_SIZE - 1)
    assert k.lru_batch_count(cpu.id) == FOLIO_BATCH_SIZE - 1
    assert not any(k.test_flag(p, PG_lru) for p in pfns)
    pfns += _fresh(k, cpu, 1)
    assert k.lru_batch_count(cpu.id) == 0
    assert all(k.test_flag(p, PG_lru) and k.ref_count(p) == 1 for p in pfns)


def test_drain_all_with_locked_folios() -> None:
    """``lru_add_drain_all`` as ``migrate_device_unmap`` runs it: the caller holds the lock
    of every collected folio while each CPU's batch is drained, one CPU per step."""
    k, (cpu0, driver, cpu2) = kernel_with_actors(Geometry(sys_frames=4, devices=0), 3)
    a, b = _fresh(k, cpu0, 2)
    (c,) = _fresh(k, cpu2, 1)
    for p in (a, b, c):
        assert k.trylock_page(driver, p, "t:collect")
    s = Stepper(k.lru_add_drain_all(driver, "t:drain_all"))
    s.step()  # cpu0's work ran; the caller waits for the next
    assert k.test_flag(a, PG_lru) and k.test_flag(b, PG_lru) and not k.test_flag(c, PG_lru)
    assert all(k.page_lock_owner(p) == driver.id for p in (a, b, c))
    s.step()
    assert k.test_flag(c, PG_lru) and k.lru_batch_count(cpu2.id) == 0
    s.step()
    assert s.done and k.events["lru_add_drain_all"] == 1
    assert all(k.page_lock_owner(p) == driver.id and k.ref_count(p) == 1 for p in (a, b, c))
    assert all(folio_isolate_lru(k, driver, p) for p in (a, b, c))


def test_refcount_check_expects_the_batch_reference() -> None:
    """The global refcount check counts a batch's reference: silent with it, and it fires
    when a batch forgets a folio (its reference is then nobody's)."""
    k, (cpu,) = kernel_with_actors(Geometry(sys_frames=2, devices=0), 1)
    (pfn,) = _fresh(k, cpu, 1)
    k.set_pte(0, 0, pte_encode(PTE_PRESENT, pfn))
    k.mapcount_add(pfn, 1)  # the allocation's reference maps it
    check_counts(k)
    k.words.store(k.lay.LRU_BATCH + cpu.id * (1 + FOLIO_BATCH_SIZE), 0)  # forget it
    with pytest.raises(InvariantViolation) as info:
        check_counts(k)
    assert info.value.failure.kind is FailureKind.LEAK and info.value.failure.pages == (pfn,)

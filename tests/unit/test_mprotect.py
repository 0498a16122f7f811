"""mprotect() of whole VMAs (7.0 mm/mprotect.c, core/mm/mprotect.py): present entries
lose or regain write, writable migration and device-private entries become readable,
CPUs see the change (no stale writable translation), and a range that is not a union of
VMAs is refused."""

from __future__ import annotations

from typing import Any

from pagerace.core.machine.layout import (
    PTE_DEVICE_PRIVATE,
    PTE_EXCLUSIVE,
    PTE_MIGRATION,
    PTE_WRITE,
    pte_encode,
    pte_pfn,
    pte_type,
)
from pagerace.core.mm.memory import ACCESS_OK, ACCESS_SIGSEGV, cpu_access
from pagerace.core.mm.mprotect import EINVAL, op_mprotect
from pagerace.core.oracles.invariants import check_all
from strategies import Stepper, model

TABLE = {
    "name": "mprotect",
    "geometry": {"sys_frames": 24, "dev_frames": 8, "pages_per_mm": 8, "ptes_per_table": 4},
    "mm": [{"id": 0, "vmas": [{"start": 0, "end": 8}], "populate": [{"start": 0, "end": 4}]}],
    "actor": [{"kind": "cpu", "count": 2}],
}


def _run(k: Any, gen: Any) -> Any:
    return Stepper(gen).finish(k)


def test_read_only_then_writable_again() -> None:
    m = model(TABLE)
    k, (a0, a1) = m.kernel, m.actors
    assert _run(k, cpu_access(k, a0, 0, 1, True)) == ACCESS_OK  # a writable TLB entry
    assert _run(k, op_mprotect(k, a1, 0, 0, 4, 0)) == EINVAL
    assert _run(k, op_mprotect(k, a1, 0, 0, 8, 0)) == 0
    assert not any(k.pte_read(0, v) & PTE_WRITE for v in range(8))
    assert _run(k, cpu_access(k, a0, 0, 1, True)) == ACCESS_SIGSEGV  # the TLB was flushed
    assert _run(k, cpu_access(k, a0, 0, 1, False)) == ACCESS_OK
    check_all(k, final=True)
    assert _run(k, op_mprotect(k, a1, 0, 0, 8, 1)) == 0
    assert k.pte_read(0, 1) & PTE_WRITE  # anon-exclusive: writable at once
    assert _run(k, cpu_access(k, a0, 0, 1, True)) == ACCESS_OK
    check_all(k, final=True)


def test_writable_swap_entries_become_readable() -> None:
    """change_softleaf_pte: a writable device-private entry readable; a writable
    migration entry of an anonymous folio readable-exclusive."""
    m = model(TABLE)
    k, (a0, a1) = m.kernel, m.actors
    assert _run(k, k.devices[0].migrate_to_device(k, a0, 0, 0, 1)) == 0
    assert pte_type(k.pte_read(0, 0)) == PTE_DEVICE_PRIVATE and k.pte_read(0, 0) & PTE_WRITE
    pfn = pte_pfn(k.pte_read(0, 2))
    k.set_pte(0, 2, pte_encode(PTE_MIGRATION, pfn, PTE_WRITE))  # as collect leaves it
    assert _run(k, op_mprotect(k, a1, 0, 0, 8, 0)) == 0
    assert not k.pte_read(0, 0) & PTE_WRITE
    mig = k.pte_read(0, 2)
    assert pte_type(mig) == PTE_MIGRATION and not mig & PTE_WRITE and mig & PTE_EXCLUSIVE


def test_wp_page_copy_out_of_memory_drops_its_reference_and_counts_oom() -> None:
    """wp_page_copy (7.0 mm/memory.c): no page for the copy: the reference do_wp_page
    took is put back, VM_FAULT_OOM, and the run's ``oom`` event counts it as the other
    failed fault allocations do."""
    from pagerace.core.mm.memory import VM_FAULT_OOM, wp_page_copy

    m = model(TABLE)
    k, (a0, a1) = m.kernel, m.actors
    orig = k.pte_read(0, 0)
    pfn = pte_pfn(orig)
    refs = k.ref_count(pfn)
    k.get_page(a0, pfn, "test:do_wp_page:get")  # what do_wp_page holds when it copies
    while k.alloc_page(a1, 0, "test:fill") >= 0:
        pass
    before = k.events.get("oom", 0)
    assert _run(k, wp_page_copy(k, a0, 0, 0, orig, pfn)) == VM_FAULT_OOM
    assert k.events.get("oom", 0) == before + 1
    assert k.ref_count(pfn) == refs and k.pte_read(0, 0) == orig

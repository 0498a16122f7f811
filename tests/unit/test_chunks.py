"""Chunk removal (HMM_DMIRROR_RELEASE / driver unload: dmirror_device_remove_chunks,
memunmap_pages and the pagemap references), the eviction-liveness oracle, and 7.0's
one-shot HMM_DMIRROR_FLAG_FAIL_ALLOC with the VM_FAULT_OOM return of
dmirror_devmem_fault (lib/test_hmm.c, mm/memremap.c 7.0)."""

from __future__ import annotations

from typing import Any

import pytest
from pagerace.core.machine.errors import FailureKind
from pagerace.core.machine.layout import (
    DC_COUNT,
    DC_LOCK,
    DC_REF,
    DC_REMOVE,
    DC_WORDS,
    DM_FLAGS,
    pte_pfn,
)
from pagerace.core.mm.memremap import memunmap_pages
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload
from pagerace.workloads._schema import parse_workload
from strategies import Stepper, model


def _table(actors: list[dict[str, Any]], dmirror: bool = True) -> dict[str, Any]:
    t: dict[str, Any] = {
        "name": "chunks",
        "geometry": {"sys_frames": 24, "dev_frames": 6, "pages_per_mm": 8, "ptes_per_table": 4},
        "mm": [
            {
                "id": 0,
                "populate": [{"start": 0, "end": 4}],
                "device": [{"dev": 0, "start": 4, "end": 6}],
            }
        ],
        "actor": actors,
    }
    if dmirror:
        t["dmirror"] = [{"device": 0, "mm": 0}]
    return t


def _dc(k: Any, field: int, dev: int = 0) -> int:
    return k.words.load(k.lay.DEVMEM + dev * DC_WORDS + field)


def test_the_pagemap_counts_its_initial_reference_and_every_device_page() -> None:
    m = model(_table([{"kind": "release"}, {"kind": "cpu"}]))
    k = m.kernel
    assert k.geo.chunks
    assert _dc(k, DC_REF) == 1 + 2 and _dc(k, DC_COUNT) == 1
    assert k.lock_name(k.lay.DEVMEM + DC_LOCK) == "devmem_lock:0"
    assert k.lock_name(k.lay.DEVMEM + DC_REF) == "pgmap_ref:0"


def test_workloads_without_a_release_have_no_chunk_words() -> None:
    w = parse_workload(_table([{"kind": "cpu"}]), "t.toml")
    assert not w.geometry.chunks


def test_memunmap_pages_sleeps_on_the_reference_until_the_last_page_is_freed() -> None:
    m = model(_table([{"kind": "release"}, {"kind": "cpu"}]))
    k, (a0, a1) = m.kernel, m.actors[:2]
    lo, _hi = k.lay.zone_range(1)
    held = [p for p in range(lo, lo + 6) if k.ref_count(p)]
    assert len(held) == 2
    s = Stepper(memunmap_pages(k, a0, 0))
    assert s.step() is None  # percpu_ref_kill, then a preemption point
    req = s.step()
    assert req is not None and req.kind == "pgmap"  # wait_for_completion: a Block, not a spin
    for vpn in (4, 5):  # the pages go (unmapped by hand): the mapping, then the reference
        p = pte_pfn(k.pte_read(0, vpn))
        assert p in held
        k.set_pte(0, vpn, 0)
        k.mapcount_add(p, -1)
        assert s.blocked_on(k) is req  # still asleep: not every page is freed
        k.put_page(a1, p, "test")
    assert _dc(k, DC_REF) == 0
    s.finish(k)
    assert k.events.get("memunmap_pages") == 1


def test_release_evicts_every_page_and_the_next_allocation_maps_a_new_chunk() -> None:
    w = parse_workload(
        _table(
            [
                {"kind": "release", "think": 0},
                {"kind": "mirror_driver", "range": [0, 4], "chunk": 4, "ops": 1, "think": 30,
                 "pattern": ["to_device"]},
            ]
        ),
        "t.toml",
    )
    seen = 0
    for seed in range(10):
        r = run_deterministic(w, seed=seed, strategy="rr")
        assert r.result.failure is None, r.result.failure
        k = r.kernel
        if k.events.get("remove_chunks") and k.events.get("memremap_pages"):
            seen += 1
            assert _dc(k, DC_COUNT) == 1 and not _dc(k, DC_REMOVE)
    assert seen


def test_the_eviction_liveness_oracle_fires_with_its_fault_and_is_silent_without() -> None:
    w = load_workload("release-vs-fault")
    found = [
        run_deterministic(w, seed=s, faults=("evict_skips_page",)).result.failure
        for s in range(30)
    ]
    stuck = [f for f in found if f is not None and f.kind is FailureKind.EVICTION_STUCK]
    assert stuck, [f.headline() for f in found if f is not None]
    assert "memunmap_pages" in stuck[0].message and stuck[0].pages
    assert FailureKind.EVICTION_STUCK.family == "hang"
    for s in range(30):
        assert run_deterministic(w, seed=s).result.failure is None


def test_fail_alloc_is_one_shot_per_mirror() -> None:
    w = parse_workload(
        _table(
            [{"kind": "mirror_driver", "range": [0, 4], "chunk": 4, "ops": 3, "think": 0,
              "pattern": ["fail_alloc", "to_device", "to_system"]}]
        ),
        "t.toml",
    )
    r = run_deterministic(w, seed=0, strategy="rr")
    k = r.kernel
    assert r.result.failure is None
    assert k.events.get("dmirror_flags") == 1
    assert k.events.get("dmirror_fail_alloc_flag") == 1  # once, then the flag is clear
    assert k.outcomes.get(("to_device", "alloc_failed")) == 1
    assert k.words.load(k.lay.DMIRROR + DM_FLAGS) == 0


@pytest.mark.parametrize("variant", ["v6"])
def test_a_failed_allocation_in_the_fault_leaves_its_migration_entry(variant: str) -> None:
    """Finding 010: 7.0's dmirror_devmem_fault returns VM_FAULT_OOM without
    migrate_vma_pages / migrate_vma_finalize: the migration entry stays, its page
    unlocked."""
    w = load_workload("fail-alloc-vs-fault")
    kinds = set()
    for s in range(20):
        f = run_deterministic(w, seed=s, variant=variant).result.failure
        if f is not None:
            kinds.add(f.kind)
    assert FailureKind.MIGRATION_ENTRY_UNLOCKED in kinds


def test_findings_apply_per_generation() -> None:
    t = _table([{"kind": "cpu"}], dmirror=False)
    t["finding"] = [
        {"doc": "docs/findings/a.md", "kinds": ["leak"], "variants": ["v5.0"]},
        {"doc": "docs/findings/b.md", "kinds": ["deadlock"]},
    ]
    w = parse_workload(t, "t.toml")
    assert w.finding_kinds_for("v5.0") == {"leak", "deadlock"}
    assert w.finding_kinds_for("v6") == {"deadlock"}
    t["finding"] = {"doc": "docs/findings/c.md", "kinds": ["leak"]}  # the old form: all
    w = parse_workload(t, "t.toml")
    assert w.finding_kinds_for("hmm-2017") == {"leak"} and w.finding == "docs/findings/c.md"
    t["finding"] = [{"doc": "x.md", "kinds": ["leak"], "variants": ["v9"]}]
    with pytest.raises(Exception, match=r"finding.variants = 'v9'.*valid"):
        parse_workload(t, "t.toml")


def _mirror_table(vmas: list[dict[str, Any]], populate: list[dict[str, int]]) -> dict[str, Any]:
    return {
        "name": "mixed",
        "geometry": {"sys_frames": 24, "dev_frames": 8, "devices": 2, "pages_per_mm": 8,
                     "ptes_per_table": 4},
        "dmirror": [{"device": 0, "mm": 0}, {"device": 1, "mm": 0}],
        "mm": [{"id": 0, "vmas": vmas, "populate": populate}],
        "actor": [{"kind": "cpu"}],
    }


def test_a_shared_anonymous_range_is_not_migrated_to_the_device() -> None:
    """hmm.migrate_shared: MAP_SHARED | MAP_ANONYMOUS is shmem in 7.0: collect skips the
    holes, __migrate_device_pages refuses the pages, the ioctl returns -ENOENT."""
    from pagerace.core.lib.test_hmm import ENOENT, dmirror_migrate_to_device

    m = model(_mirror_table([{"start": 0, "end": 8, "flags": ["read", "write", "anon", "shared"]}],
                            [{"start": 0, "end": 2}]))
    k, a = m.kernel, m.actors[0]
    before = [k.pte_read(0, v) for v in range(4)]
    assert Stepper(dmirror_migrate_to_device(k, a, 0, 0, 4)).finish(k) == ENOENT
    assert [k.pte_read(0, v) for v in range(4)] == before  # nothing moved, holes stay holes
    assert k.outcomes.get(("to_device", "shared_mapping")) == 2


def test_migrate_to_device_goes_vma_by_vma_and_stops_at_a_hole() -> None:
    """hmm2.migrate_mixed: -EINVAL at a hole after the VMAs before it migrated; a page on
    device 1 is not migrated by device 0 (-ENOENT)."""
    from pagerace.core.lib.test_hmm import EINVAL, ENOENT, dmirror_migrate_to_device
    from pagerace.core.machine.layout import PTE_DEVICE_PRIVATE, pte_type

    vmas = [
        {"start": 0, "end": 1, "flags": ["read", "anon"]},
        {"start": 1, "end": 2, "flags": ["read", "write", "anon"]},
        {"start": 3, "end": 8, "flags": ["read", "write", "anon"]},
    ]
    m = model(_mirror_table(vmas, [{"start": 0, "end": 2}, {"start": 3, "end": 6}]))
    k, a = m.kernel, m.actors[0]
    assert Stepper(dmirror_migrate_to_device(k, a, 1, 0, 4)).finish(k) == EINVAL  # hole at 2
    assert [pte_type(k.pte_read(0, v)) for v in (0, 1)] == [PTE_DEVICE_PRIVATE] * 2
    assert Stepper(dmirror_migrate_to_device(k, a, 1, 3, 6)).finish(k) == 0
    assert k.device_of(pte_pfn(k.pte_read(0, 5))) == 1
    assert Stepper(dmirror_migrate_to_device(k, a, 0, 5, 6)).finish(k) == ENOENT
    assert k.device_of(pte_pfn(k.pte_read(0, 5))) == 1

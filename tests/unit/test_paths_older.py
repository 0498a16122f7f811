"""The older generations' paths (hmm-2017, seed 004; v5.0, seed 002) where they differ from
today's: each test drives one path by hand and checks what the seed's lines say
(docs/generations.md lists them)."""

from __future__ import annotations

import pytest
from pagerace.core.machine.kernel import Kernel
from pagerace.core.machine.layout import (
    F_PIN,
    F_REF,
    GUP_PIN_COUNTING_BIAS,
    PTE_DEVICE_PRIVATE,
    PTE_DIRTY,
    PTE_EXCLUSIVE,
    PTE_MIGRATION,
    PTE_PRESENT,
    PTE_WRITE,
    PTE_YOUNG,
    S_USED,
    SWAP_WORDS,
    PG_anon_exclusive,
    PG_dirty,
    PG_lru,
    PG_swapcache,
    PG_writeback,
    pte_encode,
    pte_pfn,
    pte_type,
)
from pagerace.core.mm.memory import VM_FAULT_OK, do_wp_page
from pagerace.core.mm.migrate_device import (
    MIGRATE_PFN_LOCKED,
    MIGRATE_PFN_MIGRATE,
    MIGRATE_VMA_SELECT_SYSTEM,
    MigrateVma,
)
from pagerace.core.mm.migrate_hmm2017 import try_to_unmap_migration
from pagerace.core.mm.migrate_v50 import collect_v50, prepare_v50
from pagerace.core.mm.swapfile import add_to_swap_cache, get_swap_page, swap_duplicate
from pagerace.core.oracles.invariants import check_all
from pagerace.harness.runner import build_model
from pagerace.workloads import parse_workload
from strategies import Stepper

# mm 0: an anonymous writable VMA [0, 4) (pages 0-1 on device 0, 2-3 in system RAM) and a
# writable VMA [4, 8) that is not anonymous and has no page.
TABLE = {
    "name": "older",
    "geometry": {"sys_frames": 16, "dev_frames": 8, "pages_per_mm": 8, "ptes_per_table": 8},
    "mm": [
        {
            "id": 0,
            "vmas": [
                {"start": 0, "end": 4, "flags": ["read", "write", "anon"]},
                {"start": 4, "end": 8, "flags": ["read", "write"]},
            ],
            "populate": [{"start": 2, "end": 4}],
            "device": [{"dev": 0, "start": 0, "end": 2}],
        }
    ],
    "actor": [{"kind": "cpu", "count": 1}],
}


def _model(variant: str):  # type: ignore[no-untyped-def]
    m = build_model(parse_workload(dict(TABLE), "test"), variant, (), 0)
    m.kernel.actors = m.actors
    return m.kernel, m.actors[0]


def _finish(k: Kernel, gen) -> object:  # type: ignore[no-untyped-def]
    st = Stepper(gen)
    return st.finish(k)


def test_v50_collect_marks_every_hole_migrate_whatever_the_vma() -> None:
    """Seed 002 lines 2105 / 2197: a hole is MIGRATE and counted in cpages, also in a VMA
    that is not anonymous (a later kernel skips those in collect)."""
    k, a = _model("v5.0")
    row = k.s.find_vma(0, 4)
    m = MigrateVma(0, row, 4, 8, MIGRATE_VMA_SELECT_SYSTEM, 0)
    _finish(k, collect_v50(k, a, m))
    assert m.src == [MIGRATE_PFN_MIGRATE] * 4
    assert m.cpages == 4 and m.npages == 4
    check_all(k)


def test_v50_prepare_restores_a_collected_page_at_its_one_address_old_and_clean() -> None:
    """Seed 002 lines 2442-2447 and 2483-2495: a page collect locked and unmapped that then
    fails isolation is restored with remove_migration_pte at its address: mapped again,
    old and clean (pte_mkold(mk_pte())), writable (write entry, VM_WRITE), unlocked, its
    references back to one."""
    k, a = _model("v5.0")
    row = k.s.find_vma(0, 2)
    k.set_pte(0, 2, k.pte_read(0, 2) | PTE_YOUNG | PTE_DIRTY)
    pfn = pte_pfn(k.pte_read(0, 2))
    m = MigrateVma(0, row, 2, 3, MIGRATE_VMA_SELECT_SYSTEM, 0)
    _finish(k, collect_v50(k, a, m))
    assert m.src[0] & MIGRATE_PFN_LOCKED
    assert pte_type(k.pte_read(0, 2)) == PTE_MIGRATION
    k.clear_flag(pfn, PG_lru)  # someone else isolated it: isolate_lru_page() fails
    _finish(k, prepare_v50(k, a, m))
    k.set_flag(pfn, PG_lru)  # ... and puts it back
    pte = k.pte_read(0, 2)
    assert (pte_type(pte), pte_pfn(pte)) == (PTE_PRESENT, pfn)
    assert pte & PTE_WRITE and not pte & (PTE_YOUNG | PTE_DIRTY)
    assert m.src[0] == 0 and m.cpages == 0
    assert not k.page_locked(pfn)
    assert k.ref_count(pfn) == 1 and k.mapcount(pfn) == 1
    assert not k.test_flag(pfn, PG_dirty)  # 5.0's collect loses the PTE's dirty bit
    check_all(k)


def test_old_try_to_unmap_moves_the_dirty_bit_and_ignores_anon_exclusive_pins() -> None:
    """4.14-5.0 try_to_unmap_one: the dirty bit goes to the page, the entry carries write
    and soft-dirty only, and a maybe-pinned anon-exclusive page is unmapped all the same
    (no folio_try_share_anon_rmap_pte -EBUSY before 5.19)."""
    k, a = _model("hmm-2017")
    pfn = pte_pfn(k.pte_read(0, 3))
    k.set_pte(0, 3, k.pte_read(0, 3) | PTE_YOUNG | PTE_DIRTY)
    k.set_flag(pfn, PG_anon_exclusive)
    k.words.fetch_add(k.fw(pfn, F_REF), GUP_PIN_COUNTING_BIAS)
    k.words.fetch_add(k.fw(pfn, F_PIN), 1)
    assert k.trylock_page(a, pfn, "test:lock")
    _finish(k, try_to_unmap_migration(k, a, pfn))
    pte = k.pte_read(0, 3)
    assert pte == pte_encode(PTE_MIGRATION, pfn, PTE_WRITE)
    assert not pte & (PTE_YOUNG | PTE_DIRTY | PTE_EXCLUSIVE)
    assert k.test_flag(pfn, PG_dirty)
    assert k.mapcount(pfn) == 0 and k.ref_count(pfn) == GUP_PIN_COUNTING_BIAS


def test_old_try_to_unmap_makes_a_read_entry_for_a_writable_device_private_page() -> None:
    """HMM 14/15's branch of try_to_unmap_one: make_migration_entry(page, 0) for a
    device-private page, whatever its entry's write bit."""
    k, a = _model("hmm-2017")
    pte0 = k.pte_read(0, 0)
    assert pte_type(pte0) == PTE_DEVICE_PRIVATE and pte0 & PTE_WRITE
    pfn = pte_pfn(pte0)
    k.get_page(a, pfn, "test:collect_ref")  # collect's reference
    refs = k.ref_count(pfn)
    assert k.trylock_page(a, pfn, "test:lock")
    _finish(k, try_to_unmap_migration(k, a, pfn))
    assert k.pte_read(0, 0) == pte_encode(PTE_MIGRATION, pfn, 0)
    assert k.mapcount(pfn) == 0 and k.ref_count(pfn) == refs - 1


# -- do_wp_page of 4.14-5.0 (Variant.wp_reuse_by_mapcount; core/mm/memory.py) ------------

WP_TABLE = {
    "name": "older-wp",
    "geometry": {"sys_frames": 16, "dev_frames": 4, "pages_per_mm": 4, "ptes_per_table": 4,
                 "swap_slots": 4},
    "mm": [{"id": 0, "populate": [{"start": 0, "end": 4}]}],
    "actor": [{"kind": "cpu", "count": 2}],
}


def _wp_model(variant: str):  # type: ignore[no-untyped-def]
    m = build_model(parse_workload(dict(WP_TABLE), "test"), variant, (), 0)
    m.kernel.actors = m.actors
    return m.kernel, m.actors


def _read_only(k: Kernel, vpn: int) -> tuple[int, int]:
    """Write-protect mm 0's page ``vpn`` (clean, old); return (entry, pfn)."""
    pte = k.pte_read(0, vpn) & ~(PTE_WRITE | PTE_DIRTY)
    k.set_pte(0, vpn, pte)
    k.flush_tlb_range(0, vpn, vpn + 1)
    return pte, pte_pfn(pte)


@pytest.mark.parametrize("variant", ["v5.0", "hmm-2017"])
def test_old_wp_reuses_a_page_another_reference_holds(variant: str) -> None:
    """4.14-5.0 do_wp_page: reuse_swap_page() counts mappings and swap entries only, so a
    page with one mapping and a GUP reference is reused (the reference stays coherent),
    and PG_anon_exclusive is neither read nor set. 7.0 (v6) copies it."""
    for var in (variant, "v6"):
        k, (a, b) = _wp_model(var)
        pte, pfn = _read_only(k, 1)
        k.clear_flag(pfn, PG_anon_exclusive)
        k.get_page(b, pfn, "test:gup_ref")  # another reference (a GUP-fast get)
        assert _finish(k, do_wp_page(k, a, 0, 1, pte)) == VM_FAULT_OK
        now = k.pte_read(0, 1)
        if var == "v6":
            assert pte_pfn(now) != pfn and k.events.get("wp_copy") == 1
            assert k.mapcount(pfn) == 0
        else:
            assert now == pte | PTE_WRITE | PTE_DIRTY | PTE_YOUNG
            assert not k.test_flag(pfn, PG_anon_exclusive)
            assert k.ref_count(pfn) == 2 and not k.page_locked(pfn)
            assert k.events.get("wp_reuse") == 1 and "wp_copy" not in k.events
        k.put_page(b, pfn, "test:gup_put")
        check_all(k)


@pytest.mark.parametrize("variant", ["v5.0", "hmm-2017"])
def test_old_wp_copies_a_page_two_entries_map(variant: str) -> None:
    """mapcount 2 (a fork's shared page): reuse_swap_page() says no: unlock and copy."""
    k, (a, b) = _wp_model(variant)
    pte, pfn = _read_only(k, 1)
    k.get_page(b, pfn, "test:second_map")
    k.mapcount_add(pfn, 1)
    assert _finish(k, do_wp_page(k, a, 0, 1, pte)) == VM_FAULT_OK
    now = k.pte_read(0, 1)
    assert pte_pfn(now) != pfn and now & PTE_WRITE
    assert k.mapcount(pfn) == 1 and k.ref_count(pfn) == 1 and not k.page_locked(pfn)


@pytest.mark.parametrize("writeback", [False, True])
def test_old_wp_frees_the_swap_cache_of_a_page_it_reuses(writeback: bool) -> None:
    """A swap-cache page mapped once with no other swap entry: count 1, so
    delete_from_swap_cache() (the cache's reference put, the slot freed) and
    SetPageDirty(); under writeback (no SWP_STABLE_WRITES device) it is reused and stays
    cached."""
    k, (a, _b) = _wp_model("v5.0")
    pte, pfn = _read_only(k, 2)
    slot = get_swap_page(k)
    add_to_swap_cache(k, a, pfn, slot, "test:add_to_swap_cache")
    if writeback:
        k.set_flag(pfn, PG_writeback)
    assert _finish(k, do_wp_page(k, a, 0, 2, pte)) == VM_FAULT_OK
    assert k.pte_read(0, 2) & PTE_WRITE and pte_pfn(k.pte_read(0, 2)) == pfn
    if writeback:
        assert k.test_flag(pfn, PG_swapcache) and k.ref_count(pfn) == 2
    else:
        assert not k.test_flag(pfn, PG_swapcache) and k.test_flag(pfn, PG_dirty)
        assert k.ref_count(pfn) == 1
        assert k.words.load(k.lay.SWAP + slot * SWAP_WORDS + S_USED) == 0


def test_old_wp_copies_a_swap_cache_page_another_swap_entry_names() -> None:
    """mapcount 1 + swap count 1 (a forked child's swap entry): count 2, copy; the swap
    cache keeps the page."""
    k, (a, _b) = _wp_model("hmm-2017")
    pte, pfn = _read_only(k, 2)
    slot = get_swap_page(k)
    add_to_swap_cache(k, a, pfn, slot, "test:add_to_swap_cache")
    swap_duplicate(k, slot)
    assert _finish(k, do_wp_page(k, a, 0, 2, pte)) == VM_FAULT_OK
    assert pte_pfn(k.pte_read(0, 2)) != pfn
    assert k.test_flag(pfn, PG_swapcache) and k.mapcount(pfn) == 0


@pytest.mark.parametrize("changed", [False, True])
def test_old_wp_sleeps_for_the_page_lock_without_the_ptl(changed: bool) -> None:
    """trylock_page fails: get_page, drop the PTL, lock_page (a sleep; the PTL is free
    meanwhile), retake the PTL and back out when the entry changed, else reuse."""
    k, (a, b) = _wp_model("v5.0")
    pte, pfn = _read_only(k, 3)
    assert k.trylock_page(b, pfn, "test:holder")
    st = Stepper(do_wp_page(k, a, 0, 3, pte))
    st.run_until(lambda: st.blocked_on(k) is not None)
    assert k.ref_count(pfn) == 2  # get_page before the sleep
    assert k.words.load(k.ptl_word(0, 3)) == 0  # the PTL is not held while it sleeps
    if changed:
        k.set_pte(0, 3, pte ^ PTE_YOUNG)  # pte_same() fails
    k.unlock_page(b, pfn, "test:holder")
    assert st.finish(k) == VM_FAULT_OK
    assert k.ref_count(pfn) == 1 and not k.page_locked(pfn)
    assert bool(k.pte_read(0, 3) & PTE_WRITE) is not changed
    assert k.events.get("wp_old_backout", 0) == int(changed)


def test_finding_017_replays_on_the_older_generations_and_v6_stays_clean(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/findings/017: fork shares a pinned page and 4.14-5.0's do_wp_page copies it
    away from the pin. The shrunk artifact reproduces (exit 1); the seed fails on both
    older generations, which the workload declares, and is clean on v6."""
    from pathlib import Path

    from pagerace.harness.cli import main
    from pagerace.harness.runner import run_deterministic
    from pagerace.workloads import load_workload

    art = Path(__file__).parents[2] / "docs/findings/017-fork-shares-pinned-page.shrunk.json"
    assert main(["replay", str(art), "--quiet"]) == 1
    capsys.readouterr()
    w = load_workload("fork-vs-pin")
    for variant in ("v5.0", "hmm-2017"):
        f = run_deterministic(w, variant=variant, seed=21).result.failure
        assert f is not None and str(f.kind) in w.finding_kinds_for(variant)
    assert run_deterministic(w, variant="v6", seed=21).result.failure is None
    assert not w.finding_kinds_for("v6")


def test_hmm2017_check_page_passes_a_device_private_page_with_extra_references() -> None:
    """HMM 14/15 (4.14): a device-private page always passes migrate_vma_check_page,
    so concurrent CPU faults holding collect's references do not fail each other (the
    fault-storm livelock, pct seed 60); a system page with an extra reference fails."""
    from pagerace.core.mm.migrate_hmm2017 import check_page_2017

    k, a = _model("hmm-2017")
    dev = pte_pfn(k.pte_read(0, 0))
    sys_pfn = pte_pfn(k.pte_read(0, 2))
    for who in ("a", "b", "c"):  # three faulting CPUs' migrations collected it
        k.get_page(a, dev, "test:collect_" + who)
    assert check_page_2017(k, dev, -1)
    k.get_page(a, sys_pfn, "test:collect_a")
    k.get_page(a, sys_pfn, "test:other")
    assert not check_page_2017(k, sys_pfn, -1)

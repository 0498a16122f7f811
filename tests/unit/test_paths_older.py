"""The older generations' paths (hmm-2017, seed 004; v5.0, seed 002) where they differ from
today's: each test drives one path by hand and checks what the seed's lines say
(docs/generations.md lists them)."""

from __future__ import annotations

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
    PG_anon_exclusive,
    PG_dirty,
    PG_lru,
    pte_encode,
    pte_pfn,
    pte_type,
)
from pagerace.core.mm.migrate_device import (
    MIGRATE_PFN_LOCKED,
    MIGRATE_PFN_MIGRATE,
    MIGRATE_VMA_SELECT_SYSTEM,
    MigrateVma,
)
from pagerace.core.mm.migrate_hmm2017 import try_to_unmap_migration
from pagerace.core.mm.migrate_v50 import collect_v50, prepare_v50
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

"""The three protocol generations side by side: what each one's locking allows."""

from __future__ import annotations

import pytest
from pagerace.core.machine.errors import FailureKind, InvalidOption
from pagerace.core.variants import VARIANTS, get_variant
from pagerace.harness.runner import run_deterministic, validate_variant_bugs
from pagerace.workloads import load_workload

SEEDS = range(12)


def _kinds(workload: str, variant: str, bugs: tuple[str, ...] = (), seeds=SEEDS, **kw):
    w = load_workload(workload)
    out = []
    for s in seeds:
        r = run_deterministic(w, variant=variant, bugs=bugs, seed=s, **kw)
        out.append(r.result.failure.kind if r.result.failure else None)
    return out


def test_registry_has_four_generations_with_their_seeds():
    assert sorted(VARIANTS) == ["hmm-2017", "v5.0", "v6", "v7"]
    assert get_variant("v7").seed.startswith("kernel-7.0/")
    assert get_variant("v7").large_folios and not get_variant("v6").large_folios
    assert get_variant("v6").provides < get_variant("v7").provides
    assert get_variant("hmm-2017").seed.startswith("004_")
    assert get_variant("v5.0").seed.startswith("002_")
    assert "migrate_device_range" in get_variant("v6").provides
    assert "migrate_device_range" not in get_variant("v5.0").provides
    assert "device_coherent" not in get_variant("hmm-2017").provides
    assert "device_public" in get_variant("v5.0").provides


def test_opposite_order_deadlocks_only_with_blocking_prepare():
    kinds = _kinds("opposite-order", "hmm-2017")
    assert FailureKind.DEADLOCK in kinds
    assert set(kinds) <= {None, FailureKind.DEADLOCK}
    for v in ("v5.0", "v6"):
        assert _kinds("opposite-order", v) == [None] * len(SEEDS)


def test_deadlock_names_both_drivers_and_prepare_lock_page():
    w = load_workload("opposite-order")
    found = None
    for s in SEEDS:
        r = run_deterministic(w, variant="hmm-2017", seed=s)
        if r.result.failure is not None:
            found = r.result.failure
            break
    assert found is not None
    assert set(found.actors) == {"driver0", "driver1"}
    assert all(lock.startswith("page:") for lock in found.locks)
    assert len(set(found.locks)) == 2
    assert "migrate_vma_prepare:lock_page" in found.message


@pytest.mark.parametrize("variant", ["v6", "v5.0", "hmm-2017"])
def test_default_and_holes_clean_on_every_variant(variant):
    for wl in ("default", "holes", "compaction"):
        assert _kinds(wl, variant, seeds=range(6)) == [None] * 6, wl


def test_holes_src_zero_is_an_outcome_failure_naming_the_holes():
    w = load_workload("holes")
    r = run_deterministic(w, variant="hmm-2017", bugs=["holes-src-zero"], seed=0)
    f = r.result.failure
    assert f is not None and f.kind is FailureKind.OUTCOME
    assert f.details["unpopulated"] >= 1
    assert "holes" in f.message


def test_hmm2017_sample_driver_populates_holes():
    w = load_workload("holes")
    r = run_deterministic(w, variant="hmm-2017", seed=0)
    assert r.result.failure is None
    assert r.kernel.outcomes.get(("to_device", "migrated_hole"), 0) >= 1


def test_callback_modifies_src_is_a_driver_contract_failure():
    w = load_workload("default")
    r = run_deterministic(w, variant="hmm-2017", bugs=["callback-modifies-src"], seed=0)
    f = r.result.failure
    assert f is not None and f.kind is FailureKind.DRIVER_CONTRACT
    assert "alloc_and_copy" in f.message and f.details["indexes"]


def test_async_blocking_lock_is_a_cycle_of_one():
    w = load_workload("compaction")
    r = run_deterministic(w, variant="v5.0", bugs=["async-blocking-lock"], seed=0)
    f = r.result.failure
    assert f is not None and f.kind is FailureKind.DEADLOCK
    assert f.actors == ("compactor0",)
    assert "held by compactor0" in f.message
    assert _kinds("compaction", "v5.0", seeds=range(6)) == [None] * 6


def test_compaction_migrates_pages_and_contends_with_device_migration():
    w = load_workload("compaction")
    r = run_deterministic(w, variant="v5.0", seed=1)
    assert r.result.failure is None
    assert r.kernel.outcomes.get(("compact", "migrated"), 0) > 0


def test_v50_trylock_backs_off_where_hmm2017_blocks():
    w = load_workload("opposite-order")
    contended = 0
    for s in SEEDS:
        r = run_deterministic(w, variant="v5.0", seed=s)
        contended += sum(
            n for (att, why), n in r.kernel.outcomes.items() if why == "lock_contended"
        )
        assert "migrate_vma_prepare:lock_page" not in r.kernel.stats
    assert contended > 0


def test_bug_of_another_variant_and_missing_paths_are_refused():
    with pytest.raises(InvalidOption, match="hmm-2017"):
        validate_variant_bugs("v6", ["holes-src-zero"])
    with pytest.raises(InvalidOption, match=r"applies to variant v5\.0"):
        validate_variant_bugs("hmm-2017", ["async-blocking-lock"])
    with pytest.raises(InvalidOption, match="migrate_device_range"):
        validate_variant_bugs("v5.0", [], load_workload("migrate_release"))
    with pytest.raises(InvalidOption, match=r"valid variants: hmm-2017, v5\.0, v6"):
        validate_variant_bugs("v4", [])

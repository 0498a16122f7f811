"""drm_pagemap's all-or-nothing driver policy (core/lib/drm_pagemap.py, 7.0
drivers/gpu/drm/drm_pagemap.c) against hand-written interleavings: a range collected
only in part is released whole and retried, the retries are bounded, and a race after
the pages step is reported as -EBUSY with the moved pages kept.
"""

from __future__ import annotations

from typing import Any

import pytest
from pagerace.core.lib.drm_pagemap import drm_pagemap_migrate_to_devmem, drm_pagemap_populate_mm
from pagerace.core.machine.errors import InvalidOption, InvalidWorkload
from pagerace.core.machine.kernel import Kernel
from pagerace.core.machine.layout import PTE_DEVICE_PRIVATE, PTE_PRESENT, pte_type
from pagerace.core.mm.migrate_device import EBUSY
from pagerace.core.oracles.invariants import check_all
from pagerace.harness.runner import run_deterministic
from pagerace.workloads import load_workload
from pagerace.workloads._schema import parse_workload
from strategies import Stepper, model


def _table(retries: int = 3) -> dict[str, Any]:
    return {
        "name": "aon",
        "geometry": {"sys_frames": 24, "dev_frames": 16, "pages_per_mm": 8, "ptes_per_table": 4},
        "device": [{"id": 0, "policy": "all_or_nothing", "migrate_retries": retries}],
        "mm": [{"id": 0, "populate": [{"start": 0, "end": 8}]}],
        "actor": [{"kind": "cpu", "count": 2}],
    }


def _m(retries: int = 3) -> tuple[Kernel, list[Any]]:
    m = model(_table(retries))
    return m.kernel, m.actors


def _types(k: Kernel, lo: int, hi: int) -> list[int]:
    return [pte_type(k.pte_read(0, v)) for v in range(lo, hi)]


def test_a_fully_collected_range_migrates() -> None:
    k, (a0, _a1) = _m()
    dev = k.devices[0]
    assert dev.policy == "all_or_nothing"
    assert Stepper(drm_pagemap_populate_mm(k, a0, dev, 0, 0, 4)).finish(k) == 0
    assert _types(k, 0, 4) == [PTE_DEVICE_PRIVATE] * 4
    assert "aon_retry" not in k.events
    check_all(k, final=True)


def test_a_partly_collected_range_is_released_whole_then_retried() -> None:
    """Page 2 is locked by another task: collect's trylock fails, cpages = 3 of 4. The
    driver releases the three it holds (migrate_vma_pages with no destination, then
    finalize: every entry is restored, every lock dropped, no device page used), and
    its caller tries again; once the lock is free the retry migrates the whole range."""
    k, (a0, a1) = _m()
    dev = k.devices[0]
    pfn2 = k.pte_read(0, 2) >> 16
    assert k.trylock_page(a1, pfn2, "test:hold")
    s = Stepper(drm_pagemap_populate_mm(k, a0, dev, 0, 0, 4))
    s.run_until(lambda: k.events.get("aon_retry", 0) == 1)
    assert k.events["aon_partial_collect"] == 1
    assert _types(k, 0, 4) == [PTE_PRESENT] * 4  # released whole: nothing moved
    assert not a0.held and k.outcomes.get(("to_device", "migrated"), 0) == 0
    k.unlock_page(a1, pfn2, "test:hold")
    check_all(k, final=False)  # a quiet point between the attempts: all released
    assert s.finish(k) == 0
    assert _types(k, 0, 4) == [PTE_DEVICE_PRIVATE] * 4
    check_all(k, final=True)


def test_the_retries_are_bounded() -> None:
    """With the page locked throughout, every attempt is partial: migrate_retries
    attempts, then -EBUSY and the range stays in system memory."""
    k, (a0, a1) = _m(retries=2)
    pfn1 = k.pte_read(0, 1) >> 16
    assert k.trylock_page(a1, pfn1, "test:hold")
    assert Stepper(drm_pagemap_populate_mm(k, a0, k.devices[0], 0, 0, 4)).finish(k) == EBUSY
    assert k.events["aon_partial_collect"] == 2 and k.events["aon_gave_up"] == 1
    assert _types(k, 0, 4) == [PTE_PRESENT] * 4
    k.unlock_page(a1, pfn1, "test:hold")
    check_all(k, final=True)


def test_a_race_after_the_pages_step_is_ebusy_and_keeps_what_moved() -> None:
    """A reference taken on page 3 after unmap (a speculative get) makes
    folio_migrate_mapping refuse it in the pages step: the other three pages move, page
    3 is restored, and drm_pagemap reports "Raced while finalizing migration"."""
    k, (a0, a1) = _m()
    dev = k.devices[0]
    pfn3 = k.pte_read(0, 3) >> 16
    Stepper(k.mmap_read_lock(a0, 0, "test:mmap_read_lock")).finish(k)
    s = Stepper(drm_pagemap_migrate_to_devmem(k, a0, dev, 0, 0, 4))
    s.run_until(lambda: any(k.page_locked(p) for p in range(24, 40)))  # a dst locked
    k.get_page(a1, pfn3, "test:speculative_get")
    assert s.finish(k) == EBUSY
    k.put_page(a1, pfn3, "test:speculative_put")
    k.mmap_read_unlock(a0, 0, "test:mmap_read_unlock")
    assert k.events["aon_raced_finalizing"] == 1
    assert _types(k, 0, 4) == [PTE_DEVICE_PRIVATE] * 3 + [PTE_PRESENT]
    check_all(k, final=True)


def test_the_policy_is_checked_and_needs_v6() -> None:
    t = _table()
    t["device"][0]["policy"] = "some"
    with pytest.raises(InvalidWorkload, match="valid policies: dmirror, all_or_nothing"):
        parse_workload(t, "t")
    w = load_workload("aon-partial-collect")
    assert "drm_pagemap" in w.needs
    with pytest.raises(InvalidOption):
        run_deterministic(w, variant="v5.0")
    for seed in range(3):
        assert str(run_deterministic(w, seed=seed).result.outcome) == "clean"

"""Every global invariant (``core/oracles/invariants.py``) passes on a clean built state and
fires, with the right FailureKind, on a hand-corrupted one."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.kernel import Kernel
from pagerace.core.machine.layout import (
    F_DATA,
    F_FLAGS,
    F_MAP,
    F_PIN,
    F_REF,
    PTE_DEVICE_PRIVATE,
    PTE_MIGRATION,
    PTE_PRESENT,
    PTE_TYPE_MASK,
    Z_FREE,
    PG_allocated,
    PG_locked,
    PG_swapcache,
    pte_encode,
    pte_pfn,
)
from pagerace.core.oracles.invariants import CHECKS, check_all
from pagerace.harness.runner import build_model
from pagerace.workloads import load_workload, workload_names
from strategies import geometries, kernel_with_actors, model

# Pages 0-5 present, 6-7 on device 0, 8-11 unpopulated; a second mm shares page 0.
TABLE = {
    "name": "invariants",
    "geometry": {"sys_frames": 16, "dev_frames": 8, "mms": 2, "pages_per_mm": 12},
    "mm": [
        {"id": 0, "populate": [{"start": 0, "end": 6}], "device": [{"dev": 0, "start": 6, "end": 8}]},
        {"id": 1, "share": [{"from_mm": 0, "from": 0, "to": 0, "count": 1}]},
    ],
    "actor": [{"kind": "cpu", "count": 2}],
}


def _kernel() -> Kernel:
    return model(TABLE).kernel


def _pfn(k: Kernel, vpn: int, mm: int = 0) -> int:
    return pte_pfn(int(k.s.pte[mm, vpn]))


def _free_sys_frame(k: Kernel) -> int:
    for p in range(k.geo.sys_frames):
        if not k.s.frames[p, F_FLAGS] & PG_allocated:
            return p
    raise AssertionError("no free frame")


@pytest.mark.parametrize("name", workload_names())
def test_clean_built_state_passes(name: str) -> None:
    m = build_model(load_workload(name), "v6", (), 0)
    check_all(m.kernel)
    for check in CHECKS:
        check(m.kernel)


def test_clean_table_passes_and_extra_checks_run() -> None:
    k = _kernel()
    calls: list[bool] = []
    k.extra_checks.append(lambda kk, final: calls.append(final))
    check_all(k, final=False)
    check_all(k)
    assert calls == [False, True]


def _lock_left(k: Kernel) -> None:
    k.s.frames[_pfn(k, 2), F_FLAGS] |= PG_locked


def _ptl_left(k: Kernel) -> None:
    k.s.ptl[0, 0] = 1


def _mmap_left(k: Kernel) -> None:
    k.s.mm[1, 0] = 1


def _migration_left(k: Kernel) -> None:
    pfn = _pfn(k, 3)
    k.s.pte[0, 3] = pte_encode(PTE_MIGRATION, pfn, 0)


def _present_to_free(k: Kernel) -> None:
    free = _free_sys_frame(k)
    old = _pfn(k, 4)
    # Move the mapping and its counts wholesale so only the freeness is wrong.
    k.s.pte[0, 4] = pte_encode(PTE_PRESENT, free, 0)
    k.s.frames[old, F_MAP] = 0


def _wrong_zone(k: Kernel) -> None:
    dev = _pfn(k, 6)
    k.s.pte[0, 6] = pte_encode(PTE_PRESENT, dev, 0)


def _device_entry_to_ram(k: Kernel) -> None:
    sysp = _pfn(k, 5)
    k.s.pte[0, 5] = pte_encode(PTE_DEVICE_PRIVATE, sysp, 0)


def _pfn_out_of_range(k: Kernel) -> None:
    k.s.pte[0, 9] = pte_encode(PTE_PRESENT, k.geo.frames + 3, 0)


def _mapcount_high(k: Kernel) -> None:
    k.s.frames[_pfn(k, 1), F_MAP] += 1


def _refcount_low(k: Kernel) -> None:
    k.s.frames[_pfn(k, 1), F_REF] -= 1


def _refcount_high(k: Kernel) -> None:
    k.s.frames[_pfn(k, 1), F_REF] += 1


def _pin_without_bias(k: Kernel) -> None:
    k.s.frames[_pfn(k, 1), F_PIN] += 1


def _free_frame_with_ref(k: Kernel) -> None:
    k.s.frames[_free_sys_frame(k), F_REF] = 1


def _leak(k: Kernel) -> None:
    k.alloc_page(k.actors[0], 0, "test:leak")


def _zone_count(k: Kernel) -> None:
    k.s.zones[0, Z_FREE] += 1


def _lost_write(k: Kernel) -> None:
    k.s.frames[_pfn(k, 2), F_DATA] ^= 1


def _lost_unmapped(k: Kernel) -> None:
    """The entry is gone but the frame stays accounted for (in the swap cache), so the
    only thing wrong is that the page's last write can no longer be read."""
    pfn = _pfn(k, 3)
    k.s.pte[0, 3] = 0
    k.s.frames[pfn, F_MAP] = 0
    k.s.frames[pfn, F_FLAGS] |= PG_swapcache


CORRUPTIONS: list[tuple[str, Callable[[Kernel], None], FailureKind, str]] = [
    ("page_lock_left", _lock_left, FailureKind.LOCK_BALANCE, "page lock held"),
    ("ptl_left", _ptl_left, FailureKind.LOCK_BALANCE, "page-table lock held"),
    ("mmap_lock_left", _mmap_left, FailureKind.LOCK_BALANCE, "mmap_lock of mm 1"),
    ("migration_entry_left", _migration_left, FailureKind.MIGRATION_ENTRY_LEFT, "mm 0 page 3"),
    ("present_to_free_frame", _present_to_free, FailureKind.USE_AFTER_FREE, "which is free"),
    ("present_to_device_private", _wrong_zone, FailureKind.BAD_MAPPING, "wrong zone"),
    ("device_entry_to_ram", _device_entry_to_ram, FailureKind.BAD_MAPPING, "wrong zone"),
    ("pfn_out_of_range", _pfn_out_of_range, FailureKind.BAD_MAPPING, "beyond"),
    ("mapcount_mismatch", _mapcount_high, FailureKind.MAPCOUNT_MISMATCH, "mapcount 2"),
    ("refcount_too_low", _refcount_low, FailureKind.REFCOUNT_MISMATCH, "refcount 0"),
    ("refcount_too_high", _refcount_high, FailureKind.LEAK, "refcount 2, expected 1"),
    ("pin_without_bias", _pin_without_bias, FailureKind.REFCOUNT_MISMATCH, "pins 1"),
    ("free_frame_referenced", _free_frame_with_ref, FailureKind.REFCOUNT_MISMATCH, "free frame"),
    ("leaked_frame", _leak, FailureKind.LEAK, "leaked"),
    ("zone_free_count", _zone_count, FailureKind.LEAK, "zone 0 counts"),
    ("lost_write", _lost_write, FailureKind.LOST_WRITE, "mm 0 page 2"),
    ("lost_unmapped_page", _lost_unmapped, FailureKind.LOST_WRITE, "holds nothing"),
]


@pytest.mark.parametrize(
    ("corrupt", "kind", "text"),
    [c[1:] for c in CORRUPTIONS],
    ids=[c[0] for c in CORRUPTIONS],
)
def test_corruption_is_caught(corrupt, kind: FailureKind, text: str) -> None:
    k = _kernel()
    check_all(k)
    corrupt(k)
    with pytest.raises(InvariantViolation) as info:
        check_all(k)
    f = info.value.failure
    assert f.kind is kind, f.headline()
    assert text in f.message, f.message
    assert f.sites == ("global_invariants",)


def test_each_check_fires_alone() -> None:
    """Every check function in CHECKS catches at least one corruption on its own."""
    fired = set()
    for _name, corrupt, _kind, _text in CORRUPTIONS:
        for check in CHECKS:
            k = _kernel()
            corrupt(k)
            try:
                check(k)
            except InvariantViolation:
                fired.add(check.__name__)
    assert fired == {c.__name__ for c in CHECKS}


def test_violation_names_the_pages() -> None:
    k = _kernel()
    pfn = _pfn(k, 2)
    _lost_write(k)
    with pytest.raises(InvariantViolation) as info:
        check_all(k)
    assert info.value.failure.pages == (pfn,)
    assert info.value.failure.details == {"mm": 0, "vpn": 2}


def test_migration_entries_are_not_types_the_mapcount_check_counts() -> None:
    """A migration entry left over is reported as such, not as a mapcount mismatch."""
    k = _kernel()
    _migration_left(k)
    with pytest.raises(InvariantViolation) as info:
        check_all(k)
    assert info.value.failure.kind is FailureKind.MIGRATION_ENTRY_LEFT
    assert int(k.s.pte[0, 3]) & PTE_TYPE_MASK == PTE_MIGRATION


@settings(max_examples=40, deadline=None)
@given(geo=geometries())
def test_fresh_state_of_any_geometry_is_clean(geo) -> None:
    """Any geometry builds a state whose tables tile the buffer, whose zones partition
    the frames, and which passes every invariant, before and after filling each zone."""
    k, (a, *_) = kernel_with_actors(geo, geo.actors)
    end = 0
    for t in sorted(k.lay.tables.values(), key=lambda t: t.offset):
        assert t.offset == end
        end += t.size
    assert end == k.lay.words == k.s.arr.size
    covered = []
    for zone in range(geo.zones):
        lo, hi = k.lay.zone_range(zone)
        covered.extend(range(lo, hi))
        assert all(k.lay.zone_of(p) == zone for p in range(lo, hi))
    assert covered == list(range(geo.frames))
    check_all(k)
    for zone in range(geo.zones):
        got = [k.alloc_page(a, zone, "test:fill") for _ in range(k.lay.zone_range(zone)[1] + 1)]
        lo, hi = k.lay.zone_range(zone)
        assert sorted(p for p in got if p >= 0) == list(range(lo, hi))
        for p in range(lo, hi):
            k.put_page(a, p, "test:free")
    check_all(k)

"""Large folios and the PMD level (core/machine/folio.py, core/machine/pmd.py; issue 15).

A stateful property test drives the folio primitives (aligned allocation with the
order-0 fallback, references and the last put, the PTE and PMD rmap counts, pins, the
folio lock through the head) from a few actors against a plain-Python shadow of every
folio; hand-written tests pin the layout (empty tables without ``thp``, bytes per
frame), the PMD encoding, the PMD lock apart from the PTE-table locks, and the hardware
walk through a huge PMD with its huge TLB entry.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from pagerace.core.machine import folio as fo
from pagerace.core.machine import pmd as pm
from pagerace.core.machine.errors import FailureKind, InvariantViolation
from pagerace.core.machine.layout import (
    ENTIRELY_MAPPED,
    F_FLAGS,
    F_MAP,
    F_REF,
    FO_HEAD,
    FOLIO_WORDS,
    FRAME_WORDS,
    HTLB_SLOTS,
    PMD_TABLE,
    PTE_DEVICE_PRIVATE,
    PTE_DIRTY,
    PTE_MIGRATION,
    PTE_PRESENT,
    PTE_WRITE,
    PTE_YOUNG,
    Z_FREE,
    Geometry,
    Layout,
    PG_allocated,
    PG_head,
    PG_locked,
    pmd_describe,
    pte_encode,
)
from strategies import Stepper, kernel_with_actors

GEO = Geometry(sys_frames=32, dev_frames=16, devices=1, pages_per_mm=32, ptes_per_table=8,
               actors=3, thp=True)
SETTINGS = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much],
)


# --------------------------------------------------------------------------------------
# Layout


def test_tables_are_empty_without_thp() -> None:
    """The other generations' state is unchanged word for word: no folio, PMD, PMD-lock
    or huge-TLB words unless the geometry has thp."""
    plain = Layout(Geometry())
    for name in ("folio", "pmd", "pmd_ptl", "htlb"):
        assert plain.tables[name].size == 0
    with_thp = Layout(Geometry(thp=True))
    assert with_thp.words - plain.words == (
        Geometry().frames * FOLIO_WORDS
        + Geometry().mms * Geometry().tables_per_mm
        + Geometry().mms * Geometry().pmd_tables_per_mm
        + Geometry().actors * HTLB_SLOTS * 2
    )


def test_bytes_per_frame() -> None:
    """64 bytes per frame without thp, 64 + 72 with (docs/internals.md)."""
    assert FRAME_WORDS * 8 == 64
    assert (FRAME_WORDS + FOLIO_WORDS) * 8 == 136


def test_pmd_lock_is_not_a_pte_lock() -> None:
    k, _ = kernel_with_actors(GEO, 1)
    ptls = {k.ptl_word(0, v) for v in range(GEO.pages_per_mm)}
    pl = pm.pmd_lockptr(k, 0, 0)
    assert pl not in ptls
    # one PMD table (4 PMDs of 8 pages) per mm: one split PMD lock
    assert {pm.pmd_lockptr(k, 0, i) for i in range(GEO.tables_per_mm)} == {pl}
    assert k.lock_name(pl) == "pmd:0:0"
    assert pm.is_pmd_lock_word(k, pl)


def test_pmd_lock_owner_and_balance() -> None:
    k, (a, b) = kernel_with_actors(GEO, 2)
    s = Stepper(pm.pmd_lock(k, a, 0, 1, "t:pmd_lock"))
    s.step()
    assert s.done and s.value == pm.pmd_lockptr(k, 0, 1)
    assert k.lock_owner(s.value) == a.id
    t = Stepper(pm.pmd_lock(k, b, 0, 2, "t:pmd_lock_b"))
    req = t.step()
    assert req is not None and req.lock == s.value  # b spins on the same PMD lock
    k.spin_unlock(a, s.value, "t:pmd_unlock")
    t.step()
    assert t.done and k.lock_owner(s.value) == b.id
    with pytest.raises(InvariantViolation) as info:
        k.spin_unlock(a, s.value, "t:bad")
    assert info.value.failure.kind is FailureKind.BAD_UNLOCK


def test_pmd_describe() -> None:
    assert pmd_describe(0) == "none"
    assert pmd_describe(PMD_TABLE) == "table"
    assert pmd_describe(pte_encode(PTE_PRESENT, 16, PTE_WRITE)) == "huge(pfn=16, write)"
    assert pmd_describe(pte_encode(PTE_MIGRATION, 8)) == "migration(pfn=8)"
    assert pmd_describe(pte_encode(PTE_DEVICE_PRIVATE, 40)) == "device_private(pfn=40)"


# --------------------------------------------------------------------------------------
# The hardware walk through a huge PMD


def _huge_folio(k, a):
    head = fo.folio_alloc(k, a, 0, 3, "t:alloc")
    assert head >= 0 and head % 8 == 0
    for i in range(8):
        k.set_data(head + i, 100 + i)
    return head


def test_hw_walk_through_huge_pmd_and_huge_tlb() -> None:
    k, (a, b) = kernel_with_actors(GEO, 2)
    head = _huge_folio(k, a)
    pm.set_pmd_at(k, 0, 1, pte_encode(PTE_PRESENT, head, 0))  # read-only huge PMD
    assert pm.hw_translate(k, a, 0, 8 + 5, write=False) == head + 5
    pmd = pm.pmdp_get(k, 0, 1)
    assert pmd & PTE_YOUNG and not pmd & PTE_DIRTY
    assert pm.htlb_lookup(k, a, 0, 1) == head << 1  # one huge entry, read-only
    assert k.tlb_lookup(a, 0, 13) == -1  # no 4K entry was filled
    assert pm.hw_translate(k, a, 0, 8 + 5, write=True) == -1  # store to RO: traps
    # A cleared PMD with the huge entry still cached translates from the TLB ...
    pm.pmdp_huge_get_and_clear(k, 0, 1)
    assert pm.hw_translate(k, a, 0, 9, write=False) == head + 1
    # ... until the huge TLB flush; then the walk traps.
    pm.flush_pmd_tlb_range(k, 0, 1)
    assert pm.htlb_lookup(k, a, 0, 1) == -1
    assert pm.hw_translate(k, a, 0, 9, write=False) == -1
    # A writable huge PMD: the store sets dirty.
    pm.set_pmd_at(k, 0, 1, pte_encode(PTE_PRESENT, head, PTE_WRITE))
    assert pm.hw_translate(k, b, 0, 15, write=True) == head + 7
    assert pm.pmdp_get(k, 0, 1) & PTE_DIRTY


def test_hw_walk_through_pmd_table_and_traps() -> None:
    k, (a,) = kernel_with_actors(GEO, 1)
    pfn = k.alloc_page(a, 0, "t:alloc")
    assert pm.hw_translate(k, a, 0, 3, write=False) == -1  # pmd none
    pm.set_pmd_at(k, 0, 0, PMD_TABLE)
    k.set_pte(0, 3, pte_encode(PTE_PRESENT, pfn, PTE_WRITE))
    assert pm.hw_translate(k, a, 0, 3, write=True) == pfn
    assert k.pte_read(0, 3) & PTE_DIRTY and k.tlb_lookup(a, 0, 3) == (pfn << 1) | 1
    for kind in (PTE_MIGRATION, PTE_DEVICE_PRIVATE):
        pm.set_pmd_at(k, 0, 2, pte_encode(kind, 16))
        assert pm.hw_translate(k, a, 0, 17, write=False) == -1


# --------------------------------------------------------------------------------------
# Allocation


def test_alloc_aligned_and_fallback() -> None:
    k, (a,) = kernel_with_actors(GEO, 1)
    heads = [fo.folio_alloc(k, a, 0, 3, "t") for _ in range(4)]
    assert sorted(heads) == [0, 8, 16, 24]  # the whole zone in 4 aligned folios
    assert fo.folio_alloc(k, a, 0, 3, "t") == -1
    assert k.s.zones[0, Z_FREE] == 0
    fo.folio_put(k, a, 8, "t")
    assert k.s.zones[0, Z_FREE] == 8
    # One page of the free run taken: no aligned order-3 run left; order 2 still fits.
    p = k.alloc_page(a, 0, "t")
    assert 8 <= p < 16
    assert fo.folio_alloc(k, a, 0, 3, "t") == -1
    pfn, order = fo.folio_alloc_fallback(k, a, 0, 3, "t")
    assert order == 0 and 8 <= pfn < 16 and pfn != p
    assert k.events.get("folio_alloc_fallback") == 1
    # device zone: frames 32..47, aligned by absolute pfn
    h = fo.folio_alloc(k, a, 1, 3, "t")
    assert h in (32, 40) and k.is_device_private(h)


def test_alloc_sys_fault_fails_large_too() -> None:
    k, (a,) = kernel_with_actors(GEO, 1)
    k.faults = frozenset({"alloc_fail_sys"})
    assert fo.folio_alloc(k, a, 0, 2, "t") == -1


def test_free_checks() -> None:
    k, (a,) = kernel_with_actors(GEO, 1)
    head = fo.folio_alloc(k, a, 0, 3, "t")
    fo.folio_add_rmap_ptes(k, head, head + 2, 1, 0)
    with pytest.raises(InvariantViolation) as info:
        fo.folio_put(k, a, head, "t:put")
    f = info.value.failure
    assert f.kind is FailureKind.BUG_ON and "mapcount" in f.message
    k2, (a2,) = kernel_with_actors(GEO, 1)
    head = fo.folio_alloc(k2, a2, 0, 3, "t")
    assert k2.trylock_page(a2, head, "t:lock")
    with pytest.raises(InvariantViolation) as info:
        fo.folio_put(k2, a2, head, "t:put")
    assert "locked" in info.value.failure.message
    k3, (a3,) = kernel_with_actors(GEO, 1)
    head = fo.folio_alloc(k3, a3, 0, 3, "t")
    with pytest.raises(InvariantViolation) as info:
        fo.folio_put(k3, a3, head + 1, "t:tail")
    assert "tail page" in info.value.failure.message
    fo.folio_put(k3, a3, head, "t:put")
    with pytest.raises(InvariantViolation) as info:
        fo.folio_put(k3, a3, head, "t:again")
    assert info.value.failure.kind is FailureKind.USE_AFTER_FREE


def test_rmap_pmd_then_ptes_counts() -> None:
    """``_nr_pages_mapped`` with ENTIRELY_MAPPED, as __folio_add_rmap keeps it: the stat
    delta of a PTE map under a PMD map is 0, and the last PMD unmap returns the pages
    not PTE-mapped."""
    k, (a,) = kernel_with_actors(GEO, 1)
    h = fo.folio_alloc(k, a, 0, 3, "t")
    assert fo.folio_add_rmap_pmd(k, h, 0) == 8
    assert fo.folio_nr_pages_mapped(k, h) == ENTIRELY_MAPPED
    assert fo.folio_add_rmap_ptes(k, h, h + 4, 2, 0) == 0
    assert fo.folio_nr_pages_mapped(k, h) == ENTIRELY_MAPPED + 2
    assert fo.folio_mapcount(k, h) == 3 and fo.folio_entire_mapcount(k, h) == 1
    assert fo.page_mapcount(k, h + 4) == 2 and fo.page_mapcount(k, h) == 1
    assert fo.folio_remove_rmap_pmd(k, h, 0) == 6
    assert fo.folio_remove_rmap_ptes(k, h, h + 4, 2, 0) == 2
    assert not fo.folio_mapped(k, h)


# --------------------------------------------------------------------------------------
# The stateful test


class FolioMachine(RuleBasedStateMachine):
    """Folios of order 0..3 in RAM and the device zone against a shadow: per folio its
    zone, order, references, per-page PTE mappings, PMD mappings, pins and lock owner."""

    def __init__(self) -> None:
        super().__init__()
        self.k, self.acts = kernel_with_actors(GEO, 3)
        self.sh: dict[int, dict] = {}  # head -> shadow

    # -- rules ------------------------------------------------------------------------
    @rule(aid=st.integers(0, 2), zone=st.integers(0, 1), order=st.integers(0, 3),
          fallback=st.booleans())
    def alloc(self, aid: int, zone: int, order: int, fallback: bool) -> None:
        k = self.k
        free_before = int(k.s.zones[zone, Z_FREE])
        if fallback:
            head, order = fo.folio_alloc_fallback(k, self.acts[aid], zone, order, "m:alloc")
        else:
            head = fo.folio_alloc(k, self.acts[aid], zone, order, "m:alloc")
        lo, hi = k.lay.zone_range(zone)
        nr = 1 << order
        if head < 0:
            # No free aligned run of that size in the zone (the shadow agrees).
            used = set()
            for h, f in self.sh.items():
                used.update(range(h, h + (1 << f["order"])))
            first = -(-lo // nr) * nr
            assert all(
                used & set(range(c, c + nr)) for c in range(first, hi - nr + 1, nr)
            ), f"order {order} in zone {zone} failed with a free aligned run"
            return
        assert lo <= head and head + nr <= hi and head % nr == 0
        for h, f in self.sh.items():
            assert head + nr <= h or h + (1 << f["order"]) <= head, "overlapping folios"
        assert int(k.s.zones[zone, Z_FREE]) == free_before - nr
        self.sh[head] = {"order": order, "ref": 1, "map": [0] * nr, "pmd": 0, "pin": 0,
                         "lock": -1, "zone": zone}

    def _pick(self, data) -> int:
        return data.draw(st.sampled_from(sorted(self.sh)))

    @precondition(lambda self: self.sh)
    @rule(data=st.data(), aid=st.integers(0, 2))
    def get(self, data, aid: int) -> None:
        h = self._pick(data)
        self.k.get_page(self.acts[aid], h, "m:get")
        self.sh[h]["ref"] += 1

    @precondition(lambda self: self.sh)
    @rule(data=st.data(), aid=st.integers(0, 2))
    def put(self, data, aid: int) -> None:
        h = self._pick(data)
        f = self.sh[h]
        last = f["ref"] == 1
        clean = not any(f["map"]) and not f["pmd"] and not f["pin"] and f["lock"] < 0
        if last and not clean:
            with pytest.raises(InvariantViolation) as info:
                fo.folio_put(self.k, self.acts[aid], h, "m:put")
            assert info.value.failure.kind is FailureKind.BUG_ON
            self.k.words.store(self.k.fw(h, F_REF), 1)  # a real run stops here
            return
        fo.folio_put(self.k, self.acts[aid], h, "m:put")
        f["ref"] -= 1
        if last:
            del self.sh[h]

    @precondition(lambda self: self.sh)
    @rule(data=st.data())
    def map_ptes(self, data) -> None:
        h = self._pick(data)
        f = self.sh[h]
        nr = 1 << f["order"]
        i = data.draw(st.integers(0, nr - 1))
        n = data.draw(st.integers(1, nr - i))
        first = sum(1 for j in range(i, i + n) if f["map"][j] == 0)
        mapped_before = self._mapped_pages(f)
        got = fo.folio_add_rmap_ptes(self.k, h, h + i, n, 0)
        for j in range(i, i + n):
            f["map"][j] += 1
        assert got == (len(self._mapped_pages(f)) - len(mapped_before) if nr > 1 else first)

    @precondition(lambda self: any(any(f["map"]) for f in self.sh.values()))
    @rule(data=st.data())
    def unmap_pte(self, data) -> None:
        h = data.draw(st.sampled_from(sorted(x for x, f in self.sh.items() if any(f["map"]))))
        f = self.sh[h]
        j = data.draw(st.sampled_from([j for j, m in enumerate(f["map"]) if m]))
        before = self._mapped_pages(f)
        got = fo.folio_remove_rmap_ptes(self.k, h, h + j, 1, 0)
        f["map"][j] -= 1
        assert got == len(before) - len(self._mapped_pages(f))

    @precondition(lambda self: any(f["order"] == 3 for f in self.sh.values()))
    @rule(data=st.data(), add=st.booleans())
    def pmd_map(self, data, add: bool) -> None:
        h = data.draw(st.sampled_from(sorted(x for x, f in self.sh.items() if f["order"] == 3)))
        f = self.sh[h]
        before = self._mapped_pages(f)
        if add:
            got = fo.folio_add_rmap_pmd(self.k, h, 0)
            f["pmd"] += 1
            assert got == len(self._mapped_pages(f)) - len(before)
        else:
            assume(f["pmd"] > 0)
            got = fo.folio_remove_rmap_pmd(self.k, h, 0)
            f["pmd"] -= 1
            assert got == len(before) - len(self._mapped_pages(f))

    @precondition(lambda self: any(f["order"] for f in self.sh.values()))
    @rule(data=st.data(), n=st.sampled_from([1, -1]))
    def pin(self, data, n: int) -> None:
        h = data.draw(st.sampled_from(sorted(x for x, f in self.sh.items() if f["order"])))
        f = self.sh[h]
        assume(f["pin"] + n >= 0)
        fo.folio_pincount_add(self.k, h, n)
        f["pin"] += n

    @precondition(lambda self: self.sh)
    @rule(data=st.data(), aid=st.integers(0, 2))
    def lock(self, data, aid: int) -> None:
        h = self._pick(data)
        f = self.sh[h]
        a = self.acts[aid]
        if f["lock"] == aid:
            self.k.unlock_page(a, h, "m:unlock")
            f["lock"] = -1
        else:
            got = self.k.trylock_page(a, h, "m:trylock")
            assert got == (f["lock"] < 0)
            if got:
                f["lock"] = aid

    @staticmethod
    def _mapped_pages(f: dict) -> set[int]:
        nr = 1 << f["order"]
        if f["pmd"]:
            return set(range(nr))
        return {j for j in range(nr) if f["map"][j]}

    # -- invariants ---------------------------------------------------------------------
    @invariant()
    def agrees(self) -> None:
        k = self.k
        owned: dict[int, int] = {}
        for h, f in self.sh.items():
            nr = 1 << f["order"]
            assert fo.page_folio(k, h) == h
            assert fo.folio_order(k, h) == f["order"]
            assert fo.folio_test_large(k, h) == (nr > 1)
            assert fo.folio_ref_count(k, h) == f["ref"]
            assert k.page_locked(h) == (f["lock"] >= 0)
            for j in range(nr):
                p = h + j
                owned[p] = h
                assert fo.page_folio(k, p) == h
                assert k.flags(p) & PG_allocated
                assert k.s.frames[p, F_MAP] == f["map"][j]
                if j:
                    assert k.s.frames[p, F_REF] == 0 and not k.flags(p) & (PG_head | PG_locked)
                    assert fo.page_is_tail(k, p)
                    assert fo.page_mapcount(k, p) == f["map"][j] + f["pmd"]
            if nr > 1:
                assert fo.folio_large_mapcount(k, h) == sum(f["map"]) + f["pmd"]
                assert fo.folio_entire_mapcount(k, h) == f["pmd"]
                assert fo.folio_nr_pages_mapped(k, h) == (
                    sum(1 for m in f["map"] if m) + (ENTIRELY_MAPPED if f["pmd"] else 0)
                )
                assert fo.folio_pincount(k, h) == f["pin"]
                assert fo.folio_maybe_dma_pinned(k, h) == (f["pin"] > 0)
            assert fo.folio_mapcount(k, h) == sum(f["map"]) + f["pmd"]
            assert fo.folio_mapped(k, h) == bool(sum(f["map"]) + f["pmd"])
        # Every frame no folio owns is free, with a clean folio row.
        for p in range(GEO.frames):
            if p in owned:
                continue
            assert not k.flags(p) & (PG_allocated | PG_head)
            assert not any(k.s.folio[p]), f"free frame {p} keeps folio fields"
            assert k.s.frames[p, F_MAP] == 0
        for zone in (0, 1):
            lo, hi = k.lay.zone_range(zone)
            assert int(k.s.zones[zone, Z_FREE]) == sum(1 for p in range(lo, hi) if p not in owned)
        assert all(k.s.folio[p, FO_HEAD] == 0 for p in self.sh)  # heads are not tails
        assert all(k.s.frames[p, F_FLAGS] & PG_allocated for p in owned)


TestFolioMachine = FolioMachine.TestCase
TestFolioMachine.settings = SETTINGS

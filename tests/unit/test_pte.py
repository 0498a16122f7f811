"""Page-table entry words: encode/decode round trips, and a stateful test of the entry
operations (``set_pte_at``, ``ptep_get_and_clear``, the hardware's accessed/dirty cas,
migration entries) against a shadow of (type, pfn, bits) per entry."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from pagerace.core.machine.layout import (
    PTE_BIT_NAMES,
    PTE_DIRTY,
    PTE_EXCLUSIVE,
    PTE_FLAG_MASK,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_PFN_SHIFT,
    PTE_PRESENT,
    PTE_SOFT_DIRTY,
    PTE_TYPE_MASK,
    PTE_TYPE_NAMES,
    PTE_UFFD_WP,
    PTE_WRITE,
    PTE_YOUNG,
    Geometry,
    pte_bits,
    pte_describe,
    pte_encode,
    pte_pfn,
    pte_type,
)
from pagerace.core.mm.rmap import make_migration_entry
from strategies import PTE_BITS, kernel_with_actors, pfns, pte_bit_sets, pte_kinds, small_pfns

I64_MAX = 2**63 - 1


@given(kind=pte_kinds, pfn=pfns, bits=pte_bit_sets)
def test_encode_decode_round_trip(kind: int, pfn: int, bits: int) -> None:
    pte = pte_encode(kind, pfn, bits)
    assert 0 <= pte <= I64_MAX  # fits an int64 word, never negative
    assert (pte_type(pte), pte_pfn(pte), pte_bits(pte)) == (kind, pfn, bits)
    # The vectorized decode the invariants use agrees with the scalar one.
    arr = np.array([pte], dtype=np.int64)
    assert int(arr[0] & PTE_TYPE_MASK) == kind
    assert int(arr[0] >> PTE_PFN_SHIFT) == pfn


@given(kind=pte_kinds, pfn=small_pfns, junk=st.integers(0, (1 << 20) - 1))
def test_encode_keeps_bits_out_of_type_and_pfn(kind: int, pfn: int, junk: int) -> None:
    """Stray bits passed as flags never change the type or the pfn."""
    pte = pte_encode(kind, pfn, junk)
    assert pte_type(pte) == kind and pte_pfn(pte) == pfn
    assert pte_bits(pte) == junk & PTE_FLAG_MASK


def test_bit_fields_are_disjoint() -> None:
    seen = PTE_TYPE_MASK
    for bit in PTE_BITS:
        assert bit & seen == 0 and bit & PTE_FLAG_MASK == bit
        seen |= bit
    assert seen < 1 << PTE_PFN_SHIFT


@given(kind=pte_kinds, pfn=small_pfns, bits=pte_bit_sets)
def test_describe_names_type_pfn_and_bits(kind: int, pfn: int, bits: int) -> None:
    text = pte_describe(pte_encode(kind, pfn, bits))
    if kind == PTE_NONE:
        assert text == "none"
        return
    assert text.startswith(f"{PTE_TYPE_NAMES[kind]}(pfn={pfn}")
    inner = text[:-1].split("(", 1)[1]
    names = set(inner.split(", ", 1)[1].split("|")) if ", " in inner else set()
    assert names == {name for bit, name in PTE_BIT_NAMES.items() if bits & bit}


@given(pfn=small_pfns, bits=pte_bit_sets, exclusive=st.booleans())
def test_migration_entry_keeps_the_bits_it_must(pfn: int, bits: int, exclusive: bool) -> None:
    """``make_migration_entry``: writable, else readable-exclusive when the page was
    anon-exclusive; young / dirty / soft-dirty / uffd-wp carried over."""
    old = pte_encode(PTE_PRESENT, 7, bits)
    m = make_migration_entry(pfn, old, exclusive)
    assert pte_type(m) == PTE_MIGRATION and pte_pfn(m) == pfn
    kept = PTE_YOUNG | PTE_DIRTY | PTE_SOFT_DIRTY | PTE_UFFD_WP
    assert pte_bits(m) & kept == bits & kept
    assert bool(m & PTE_WRITE) == bool(bits & PTE_WRITE)
    assert bool(m & PTE_EXCLUSIVE) == (exclusive and not bits & PTE_WRITE)


class PteMachine(RuleBasedStateMachine):
    """Entries of two mms written and read through the kernel's entry operations."""

    GEO = Geometry(sys_frames=1, devices=0, mms=2, pages_per_mm=6, ptes_per_table=3)

    def __init__(self) -> None:
        super().__init__()
        self.k, (self.a,) = kernel_with_actors(self.GEO, 1)
        self.shadow = {(mm, v): (PTE_NONE, 0, 0) for mm in range(2) for v in range(6)}

    slots = st.tuples(st.integers(0, 1), st.integers(0, 5))

    @rule(slot=slots, kind=pte_kinds, pfn=pfns, bits=pte_bit_sets)
    def set_pte(self, slot, kind: int, pfn: int, bits: int) -> None:
        self.k.set_pte(*slot, pte_encode(kind, pfn, bits))
        self.shadow[slot] = (kind, pfn, bits)

    @rule(slot=slots)
    def get_and_clear(self, slot) -> None:
        old = self.k.ptep_get_and_clear(*slot)
        assert (pte_type(old), pte_pfn(old), pte_bits(old)) == self.shadow[slot]
        self.shadow[slot] = (PTE_NONE, 0, 0)

    @rule(slot=slots, write=st.booleans())
    def hardware_access(self, slot, write: bool) -> None:
        """The page walk's accessed/dirty update: a cas on a present entry."""
        kind, pfn, bits = self.shadow[slot]
        pte = self.k.pte_read(*slot)
        if kind != PTE_PRESENT:
            return
        new = pte | PTE_YOUNG | (PTE_DIRTY if write else 0)
        assert self.k.words.cas(self.k.pte_w(*slot), pte, new)
        self.shadow[slot] = (kind, pfn, bits | PTE_YOUNG | (PTE_DIRTY if write else 0))

    @rule(slot=slots, exclusive=st.booleans())
    def to_migration_entry(self, slot, exclusive: bool) -> None:
        kind, pfn, _bits = self.shadow[slot]
        if kind != PTE_PRESENT:
            return
        old = self.k.ptep_get_and_clear(*slot)
        m = make_migration_entry(pfn, old, exclusive)
        self.k.set_pte(*slot, m)
        self.shadow[slot] = (PTE_MIGRATION, pfn, pte_bits(m))

    @invariant()
    def entries_decode_to_shadow(self) -> None:
        pte = self.k.s.pte
        for (mm, v), (kind, pfn, bits) in self.shadow.items():
            w = self.k.pte_read(mm, v)
            assert w == int(pte[mm, v])
            assert (pte_type(w), pte_pfn(w), pte_bits(w)) == (kind, pfn, bits)
        types = pte & PTE_TYPE_MASK
        want = np.array([[self.shadow[(m, v)][0] for v in range(6)] for m in range(2)])
        assert (types == want).all()


PteMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)
TestPte = PteMachine.TestCase

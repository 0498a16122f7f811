"""Shared Hypothesis strategies and small model builders for the unit tests.

Strategies stay small on purpose: the stateful tests explore interleavings of a few
actors over a few pages, where every rule is meaningful, rather than big states where
most rules do nothing.

The THP builders (``thp_geometry``, ``thp_kernel``, ``map_thp``, ``thp``) are the v7
tests' one scaffolding for a kernel with a PMD-mapped large folio: a test file keeps a
thin ``_thp`` that names only what it needs differently (geometry fields, variant,
faults, the VMA, the entry, flags, shadow) and adds its own steps after.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

from hypothesis import strategies as st
from pagerace.core.machine import folio as fo
from pagerace.core.machine import pmd as pm
from pagerace.core.machine.kernel import Actor, Block, Kernel
from pagerace.core.machine.layout import (
    PTE_BIT_NAMES,
    PTE_DEVICE_EXCLUSIVE,
    PTE_DEVICE_PRIVATE,
    PTE_DIRTY,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_PRESENT,
    PTE_SWAP,
    PTE_WRITE,
    PTE_YOUNG,
    VM_ANON,
    VM_READ,
    VM_WRITE,
    Geometry,
    PG_anon,
    mapping_encode,
    pte_encode,
)
from pagerace.core.machine.state import State
from pagerace.core.variants import get_variant
from pagerace.harness.runner import Model, build_model
from pagerace.workloads import parse_workload

# --------------------------------------------------------------------------------------
# Hypothesis strategies

PTE_KINDS = (PTE_NONE, PTE_PRESENT, PTE_MIGRATION, PTE_DEVICE_PRIVATE, PTE_SWAP, PTE_DEVICE_EXCLUSIVE)
PTE_BITS = tuple(sorted(PTE_BIT_NAMES))

pte_kinds = st.sampled_from(PTE_KINDS)
# A pfn (or swap slot) fits in the 47 bits above the flag field of a signed 64-bit word.
pfns = st.integers(min_value=0, max_value=(1 << 47) - 1)
small_pfns = st.integers(min_value=0, max_value=255)
pte_bit_sets = st.sets(st.sampled_from(PTE_BITS)).map(lambda s: sum(s))


@st.composite
def geometries(draw: st.DrawFn, max_devices: int = 2) -> Geometry:
    """Small but varied model sizes."""
    devices = draw(st.integers(0, max_devices))
    ppm = draw(st.integers(1, 24))
    return Geometry(
        sys_frames=draw(st.integers(1, 16)),
        dev_frames=draw(st.integers(1, 8)) if devices else 0,
        devices=devices,
        mms=draw(st.integers(1, 3)),
        pages_per_mm=ppm,
        ptes_per_table=draw(st.integers(1, max(ppm, 1))),
        actors=draw(st.integers(1, 4)),
        max_vmas=draw(st.integers(1, 3)),
        swap_slots=draw(st.integers(0, 4)),
    )


actor_ids = st.integers(min_value=0, max_value=2)  # three actors in the stateful tests

# --------------------------------------------------------------------------------------
# Builders


def kernel_with_actors(
    geo: Geometry, n_actors: int, variant: str = "v6", bugs: tuple[str, ...] = ()
) -> tuple[Kernel, list[Actor]]:
    """A bare kernel over fresh state (no devices, nothing mapped) and ``n`` actors."""
    s = State.build(geo)
    k = Kernel(s, variant=get_variant(variant), bugs=bugs)
    actors = [Actor(i, f"t{i}", "test") for i in range(n_actors)]
    k.actors = actors
    return k, actors


def model(table: Mapping[str, Any], seed: int = 0, bugs: tuple[str, ...] = ()) -> Model:
    """State, kernel, devices and actors of a workload given as a TOML-shaped table."""
    w = parse_workload(dict(table), "test")
    m = build_model(w, "v6", bugs, seed)
    m.kernel.actors = m.actors
    return m


# --------------------------------------------------------------------------------------
# Large folios (v7's THP tests)

THP_BITS = PTE_WRITE | PTE_DIRTY | PTE_YOUNG  # a huge PMD as a write fault leaves it


def thp_geometry(**fields: Any) -> Geometry:
    """The THP tests' model: one device, mms of 32 pages in 8-page PMDs (HPAGE_PMD_NR
    8, order 3), three actors; ``fields`` are what a test file sets otherwise."""
    base: dict[str, Any] = dict(sys_frames=32, dev_frames=16, devices=1, pages_per_mm=32,
                                ptes_per_table=8, actors=3, thp=True)
    return Geometry(**{**base, **fields})


def thp_kernel(
    geo: Geometry,
    *,
    variant: str = "v7",
    faults: tuple[str, ...] = (),
    vma_start: int = 0,
    vma_end: int | None = None,
    vma_flags: int = VM_READ | VM_WRITE | VM_ANON,
) -> tuple[Kernel, list[Actor], int]:
    """A bare kernel with three actors, the test-only ``faults`` on, and one VMA of mm 0
    over ``[vma_start, vma_end)`` (all of it by default; anonymous read-write by
    default). Every PMD is a PTE table, as :meth:`State.build` leaves a ``thp`` model."""
    k, acts = kernel_with_actors(geo, 3, variant=variant)
    if faults:
        k.faults = frozenset(faults)
    end = geo.pages_per_mm if vma_end is None else vma_end
    vma = k.s.add_vma(0, vma_start, end, vma_flags)
    return k, acts, vma


def map_thp(
    k: Kernel,
    actor: Actor,
    *,
    idx: int = 1,
    zone: int = 0,
    kind: int = PTE_PRESENT,
    bits: int = THP_BITS,
    exclusive: bool = True,
    flags: int = 0,
    anon_every_page: bool = False,
    shadow: bool = True,
) -> int:
    """An anonymous large folio of zone ``zone`` mapped whole by PMD ``idx`` of mm 0 (an
    entry of ``kind`` with ``bits``), as do_huge_pmd_anonymous_page (or a migration to
    the device) leaves it: refcount 1, entire mapcount 1, page ``i`` holding ``1000 +
    i`` (and the shadow agreeing when ``shadow``). PG_anon (with ``flags``) goes on the
    head, or on every page when ``anon_every_page``. Returns the head's pfn."""
    n = k.geo.hpage_pmd_nr
    head = fo.folio_alloc(k, actor, zone, n.bit_length() - 1, "t:alloc")
    for p in range(head, head + (n if anon_every_page else 1)):
        k.set_flag(p, PG_anon | flags)
    fo.folio_add_new_anon_rmap(k, head, mapping_encode(0, idx * n), exclusive=exclusive, mm=0)
    for i in range(n):
        k.set_data(head + i, 1000 + i)
        if shadow:
            k.set_shadow(0, idx * n + i, 1000 + i)
    pm.set_pmd_at(k, 0, idx, pte_encode(kind, head, bits))
    return head


def thp(
    geo: Geometry,
    *,
    variant: str = "v7",
    faults: tuple[str, ...] = (),
    vma_end: int | None = None,
    **folio: Any,
) -> tuple[Kernel, list[Actor], int, int]:
    """:func:`thp_kernel` with one THP of :func:`map_thp` (allocated by actor 0, its
    keywords in ``folio``): ``(kernel, actors, vma, head)``."""
    k, acts, vma = thp_kernel(geo, variant=variant, faults=faults, vma_end=vma_end)
    return k, acts, vma, map_thp(k, acts[0], **folio)


Path = Generator[Any, Any, Any]


def run_unblocked(gen: Path) -> Any:
    """Run a path to its end with no other actor: every preemption point is passed, and a
    wait (a Block) fails the test. Returns the path's value."""
    s = Stepper(gen)
    while not s.done:
        assert not isinstance(s.step(), Block), "unexpected wait"
    return s.value


class Stepper:
    """Drive one path generator by hand: one preemption point per :meth:`step`."""

    def __init__(self, gen: Path) -> None:
        self.gen = gen
        self.done = False
        self.value: Any = None
        self.last: Any = None

    def step(self) -> Any:
        """Run to the next preemption point; return what was yielded (None or a Block)."""
        assert not self.done, "stepping a finished path"
        try:
            self.last = self.gen.send(None)
        except StopIteration as stop:
            self.done = True
            self.value = stop.value
            self.last = None
        return self.last

    def blocked_on(self, k: Kernel) -> Block | None:
        """The Block this path last yielded if its lock is still held, else None."""
        req = self.last
        if type(req) is Block and k.words.load(req.word) & req.mask:
            return req
        return None

    def run_until(self, pred: Any, limit: int = 10_000) -> None:
        """Step until ``pred()`` holds (checked before each step)."""
        for _ in range(limit):
            if pred():
                return
            self.step()
        raise AssertionError(f"condition not reached within {limit} steps")

    def finish(self, k: Kernel, limit: int = 10_000) -> Any:
        """Step to the end; the path must never be left blocked on a held lock."""
        for _ in range(limit):
            if self.done:
                return self.value
            req = self.blocked_on(k)
            assert req is None, f"path still blocked on {req!r}"
            self.step()
        raise AssertionError(f"path did not finish within {limit} steps")

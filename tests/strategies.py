"""Shared Hypothesis strategies and small model builders for the unit tests.

Strategies stay small on purpose: the stateful tests explore interleavings of a few
actors over a few pages, where every rule is meaningful, rather than big states where
most rules do nothing.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

from hypothesis import strategies as st
from pagerace.core.machine.kernel import Actor, Block, Kernel
from pagerace.core.machine.layout import (
    PTE_BIT_NAMES,
    PTE_DEVICE_EXCLUSIVE,
    PTE_DEVICE_PRIVATE,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_PRESENT,
    PTE_SWAP,
    Geometry,
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

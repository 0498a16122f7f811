"""Workloads as data: the schema, the TOML loader with precise errors, and the
operation lists each actor kind runs.

A workload says what memory looks like before the run (VMAs, populated pages, pages
already on a device, pages shared between mms as fork + mremap leave them), which actors
run and how many operations each does, and the budgets. Its TOML keys are validated: an
unknown key, a wrong type or an out-of-range value is an :class:`InvalidWorkload` that
names the file, the key and the value, and lists the valid choices.

Each actor's operation list is drawn from its own stream, ``default_rng([seed, actor])``,
so it does not depend on scheduling and the parallel engine draws the same lists. The
stream is built only when the kind draws from it (a kind that draws nothing has the same
list for every seed, kept after the first run), and the CPU kind draws its numbers in one
batch of raw bits (the same numbers).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..core.machine.errors import InvalidWorkload, PageraceError
from ..core.machine.layout import (
    VM_ANON,
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_READ,
    VM_SHARED,
    VM_SPECIAL,
    VM_WRITE,
    Geometry,
)
from ..core.machine.seeding import generator, pcg, pcg_generator

VMA_FLAG_NAMES = {
    "read": VM_READ,
    "write": VM_WRITE,
    "anon": VM_ANON,
    "shared": VM_SHARED,
    "special": VM_SPECIAL,
    "hugetlb": VM_HUGETLB,
    "hugepage": VM_HUGEPAGE,  # madvise(MADV_HUGEPAGE): THP-eligible (v7 only)
}

GEOMETRY_KEYS = {
    "sys_frames", "dev_frames", "devices", "mms", "pages_per_mm", "ptes_per_table",
    "max_vmas", "swap_slots", "coherent", "files", "pages_per_file",
}
LIMIT_KEYS = {"max_steps", "livelock_steps", "check_every"}
TOP_KEYS = {
    "name", "description", "mirrors", "gap", "needs", "geometry", "mm", "actor", "limits",
    "device", "faults", "pct_k", "cpus", "preemption", "page_lock_unfairness", "dmirror", "finding",
}
# The kernel's preemption models (CONFIG_PREEMPT_NONE / _VOLUNTARY / _PREEMPT).
PREEMPTION_MODELS = ("full", "voluntary", "none")
MM_KEYS = {"id", "vmas", "populate", "device", "share", "readonly", "thp", "thp_pte"}
DEVICE_KEYS = {
    "id", "coherent", "fail_alloc", "fault_range", "fault_work", "copy_work", "copy_error",
    "policy", "migrate_retries",
}
# The driver's migration policy (core/lib/drm_pagemap.py): lib/test_hmm.c's, or
# drm_pagemap's all or nothing.
DEVICE_POLICIES = ("dmirror", "all_or_nothing")


@dataclass(frozen=True)
class VmaSpec:
    start: int
    end: int
    flags: int


@dataclass(frozen=True)
class MmSpec:
    id: int
    vmas: tuple[VmaSpec, ...]
    populate: tuple[tuple[int, int], ...] = ()
    readonly: tuple[tuple[int, int], ...] = ()
    device: tuple[tuple[int, int, int], ...] = ()  # (dev, start, end)
    share: tuple[tuple[int, int, int, int, int], ...] = ()  # (src_mm, from, to, count, reverse)
    # PMD-mapped anonymous THPs (v7: needs "thp"): PMD-aligned ranges of system RAM.
    thp: tuple[tuple[int, int], ...] = ()
    # PTE-mapped anonymous THPs (v7): as ``thp``, then split (the PMD a PTE table).
    thp_pte: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class DeviceSpec:
    id: int
    coherent: bool = False
    fail_alloc: int = 0
    fault_range: int = 1
    fault_work: int = 0
    copy_work: int = 0
    copy_error: int = 0
    policy: str = "dmirror"
    migrate_retries: int = 3


@dataclass(frozen=True)
class ActorSpec:
    kind: str
    count: int
    params: Mapping[str, Any]
    cpus: tuple[int, ...] = ()  # each actor's CPU (workload key ``cpu``), when CPUs are modelled


@dataclass(frozen=True)
class FindingSpec:
    """One ``[[finding]]`` table: a document of docs/findings/, the failure kinds it
    explains, and the generations it applies to (empty: every one)."""

    doc: str
    kinds: tuple[str, ...]
    variants: tuple[str, ...] = ()


@dataclass(frozen=True)
class Workload:
    """A fully resolved workload (what an artifact stores)."""

    name: str
    description: str
    geometry: Geometry
    mms: tuple[MmSpec, ...]
    devices: tuple[DeviceSpec, ...]
    actors: tuple[ActorSpec, ...]
    limits: Mapping[str, int]
    mirrors: str = ""
    gap: str = ""
    needs: tuple[str, ...] = ()
    faults: tuple[str, ...] = ()
    pct_k: int = 0
    # A workload that finds a documented kernel finding on the unmodified model: the
    # document (docs/findings/...) and the failure kinds it explains. ``findings`` has
    # one entry per [[finding]] table (each for some generations, or all of them);
    # ``finding`` / ``finding_kinds`` are the first document and the union of the kinds
    # (the old single-table form fills one entry for every generation).
    finding: str = ""
    finding_kinds: tuple[str, ...] = ()
    findings: tuple[FindingSpec, ...] = ()
    source: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict)
    cpus: int = 0  # CPUs modelled (0: none, each actor is its own CPU)
    preemption: str = "full"  # the preemption model: full, voluntary or none
    # sysctl vm.page_lock_unfairness (mm/filemap.c; 5 by default): the rounds an exclusive
    # page-lock waiter may lose to trylockers before folio_unlock hands it the lock.
    page_lock_unfairness: int = 5

    def findings_for(self, variant: str) -> tuple[FindingSpec, ...]:
        """The documented findings this workload may show on generation ``variant``."""
        return tuple(f for f in self.findings if not f.variants or variant in f.variants)

    def finding_kinds_for(self, variant: str) -> frozenset[str]:
        """The failure kinds the workload's findings explain on ``variant``."""
        return frozenset(k for f in self.findings_for(variant) for k in f.kinds)

    def n_actors(self) -> int:
        return sum(a.count for a in self.actors)

    def actor_cpus(self) -> list[int]:
        """The CPU of each workload actor, in id order (actor ``i`` on CPU ``i % cpus``
        unless its table says ``cpu``); ``[]`` without a CPU model."""
        if not self.cpus:
            return []
        out: list[int] = []
        for spec in self.actors:
            for j in range(spec.count):
                out.append(spec.cpus[j] if spec.cpus else len(out) % self.cpus)
        return out

    def with_limits(self, **limits: int) -> Workload:
        merged = dict(self.limits)
        merged.update({k: v for k, v in limits.items() if v is not None})
        return replace(self, limits=merged)


# ----------------------------------------------------------------------------------------
# Actor kinds: each turns its params and a stream into an operation list.

_M32 = 0xFFFFFFFF


class _Raw32:
    """The CPU kind's draws, ``Generator.integers(low, low + span)`` (int64, ``span`` in
    [1, 2**32 - 1]) then ``Generator.random()`` an operation (:meth:`cpu_ops`), computed
    from a bit generator's raw 64-bit outputs, drawn in batches (``raw(n)``: the next
    ``n`` outputs as a list, ``bit_generator.random_raw(n).tolist()``, or the actor
    stream's C stream, :meth:`_ActorStream.raw`): numpy 2's algorithms, so the same
    numbers as the calls themselves (tests/unit/test_actor_streams.py compares them, and
    keeps the two draws one at a time as its reference).

    - ``integers``: Lemire's bounded draw on 32-bit words (numpy's
      ``buffered_bounded_lemire_uint32``), a span of 1 draws nothing;
    - a 32-bit word is the low half of a 64-bit output, the next one its high half (the
      bit generator's own buffer, ``has_uint32`` / ``uinteger``);
    - ``random``: the top 53 bits of the next 64-bit output (``next_double``), which
      leaves the 32-bit buffer alone.

    The bit generator is used only through this object from then on (an actor's
    private stream): what it draws beyond the last number is never read.

    An actor's stream computes the same operations in C where the extension is built
    (``cpu_ops`` of core/machine/_cpcg.c, :meth:`_ActorStream.cpu_ops`); this is the kind's
    algorithm for a numpy generator and without the extension, and the C one's
    reference (tests/unit/test_rng_c.py).
    """

    __slots__ = ("_half", "_i", "_raw", "_refill")

    def __init__(self, raw: Callable[[int], list[int]], n: int) -> None:
        self._refill = raw
        self._raw: list[int] = raw(n)
        self._i = 0
        self._half = -1  # the buffered high half of an output, or -1

    def cpu_ops(self, n: int, span: int, off: int, wr: float, mm: int, hot: list[int]) -> OpList:
        """The CPU kind's ``n`` operations: each ``integers(0, span) + off`` (an index
        into ``hot``, or the page itself), then ``random() < wr`` (a write), their draws
        written out in one loop (one at a time, a run's actor programs made five Python
        calls an operation)."""
        raw, ri, half, refill = self._raw, self._i, self._half, self._refill
        m32 = _M32
        scale = 1.0 / 9007199254740992.0
        out: OpList = []
        for _ in range(n):
            if span == 1:
                i = off
            else:
                threshold = -1  # Lemire's rejection bound, computed on the first low draw
                while True:
                    if half >= 0:  # _next32: the buffered high half, else a new output's low
                        x, half = half, -1
                    else:
                        if ri >= len(raw):
                            raw, ri = refill(16), 0
                        x = raw[ri]
                        ri += 1
                        half = x >> 32
                        x &= m32
                    m = x * span
                    lo = m & m32
                    if lo >= span:  # >= span implies >= threshold (threshold < span)
                        break
                    if threshold < 0:
                        threshold = (m32 - span + 1) % span
                    if lo >= threshold:
                        break
                i = (m >> 32) + off
            if ri >= len(raw):  # _next64
                raw, ri = refill(16), 0
            d = raw[ri]
            ri += 1
            out.append(("write" if (d >> 11) * scale < wr else "read", mm, hot[i] if hot else i))
        self._raw, self._i, self._half = raw, ri, half
        return out


def numpy_raw(bg: Any) -> Callable[[int], list[int]]:
    """``raw(n)`` of numpy bit generator ``bg``: its next ``n`` 64-bit outputs, a list."""

    def raw(n: int) -> list[int]:
        out: list[int] = bg.random_raw(n).tolist()
        return out

    return raw


OpList = list[tuple[Any, ...]]
OpsFn = Callable[[Mapping[str, Any], np.random.Generator], OpList]
ACTOR_KINDS: dict[str, tuple[OpsFn, dict[str, Any], str]] = {}


def actor_kind(name: str, defaults: dict[str, Any], doc: str) -> Callable[..., Any]:
    def deco(fn: Callable[[Mapping[str, Any], np.random.Generator], OpList]) -> Any:
        ACTOR_KINDS[name] = (fn, defaults, doc)
        return fn

    return deco


def _range(p: Mapping[str, Any]) -> tuple[int, int]:
    lo, hi = p["range"]
    return int(lo), int(hi)


@actor_kind(
    "cpu",
    {"mm": 0, "range": [0, 16], "ops": 32, "write_ratio": 0.5, "hot": []},
    "a CPU doing loads and stores over a range (or a list of hot pages)",
)
def _cpu_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    lo, hi = _range(p)
    hot = [int(x) for x in p["hot"]]
    n = int(p["ops"])
    wr = float(p["write_ratio"])
    mm = int(p["mm"])
    span = len(hot) if hot else hi - lo
    if not 0 < span < _M32:  # a draw numpy makes some other way (or refuses): draw each
        ops: OpList = []
        for _ in range(n):
            vpn = hot[int(rng.integers(len(hot)))] if hot else int(rng.integers(lo, hi))
            kind = "write" if rng.random() < wr else "read"
            ops.append((kind, mm, vpn))
        return ops
    # Each operation draws ``rng.integers(0 or lo, span + lo)`` then ``rng.random()``:
    # the same numbers, reproduced from the bit generator's raw 64-bit outputs in one
    # batch instead of two numpy calls an operation (see _Raw32); an actor's stream
    # computes them in C where it can (_ActorStream.cpu_ops).
    first = n + (n + 1) // 2 + 1
    off = 0 if hot else lo
    if type(rng) is _ActorStream:
        return rng.cpu_ops(n, span, off, wr, mm, hot, first)
    return _Raw32(numpy_raw(rng.bit_generator), first).cpu_ops(n, span, off, wr, mm, hot)


@actor_kind(
    "driver",
    {
        "device": 0,
        "mm": 0,
        "range": [0, 16],
        "ops": 4,
        "chunk": 0,
        "pattern": ["to_device", "to_system"],
    },
    "a dmirror driver migrating (chunks of) a range to its device and back",
)
def _driver_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    lo, hi = _range(p)
    chunk = int(p["chunk"]) or (hi - lo)
    pattern = list(p["pattern"])
    ops: OpList = []
    for i in range(int(p["ops"])):
        what = pattern[i % len(pattern)]
        if chunk >= hi - lo:
            start = lo
        else:
            start = lo + int(rng.integers(0, hi - lo - chunk + 1))
        end = min(hi, start + chunk)
        if what == "to_device":
            ops.append(("migrate_to_device", int(p["device"]), int(p["mm"]), start, end))
        elif what == "to_system":
            ops.append(("migrate_to_system", int(p["device"]), int(p["mm"]), start, end))
        elif what == "evict":
            ops.append(("evict", int(p["device"])))
        elif what == "idle":
            ops.append(("idle", 8))
        else:
            raise InvalidWorkload(
                f"driver pattern entry {what!r} is not valid; valid: to_device, to_system, "
                "evict, idle"
            )
    return ops


@actor_kind(
    "evictor",
    {"device": 0, "ops": 1, "think": 16},
    "driver unload: HMM_DMIRROR_RELEASE (migrate_device_range over all device memory)",
)
def _evictor_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    ops: OpList = []
    for _ in range(int(p["ops"])):
        ops.append(("idle", int(rng.integers(0, int(p["think"]) + 1))))
        ops.append(("evict", int(p["device"])))
    return ops


# Paths an actor kind needs from the protocol variant (Variant.provides), beyond
# migrate_vma: an evictor calls migrate_device_range(), which only v6 has.
KIND_NEEDS: dict[str, list[str]] = {"evictor": ["migrate_device_range"]}
# Geometry an actor kind needs (its words): a kind that removes device memory models
# each device's memory as a chunk with pagemap references (Geometry.chunks); the OOM
# reaper needs mm->flags (registered beside its kind).
KIND_GEOMETRY: dict[str, dict[str, Any]] = {"release": {"chunks": True}}


def register_actor_kind(
    name: str,
    defaults: dict[str, Any],
    doc: str,
    fn: Callable[[Mapping[str, Any], np.random.Generator], OpList],
) -> None:
    """Add an actor kind (modules with more paths register theirs)."""
    ACTOR_KINDS[name] = (fn, defaults, doc)


class _ActorStream:
    """An actor's stream, ``default_rng([seed, actor, 0xAC7])``, built on first use.

    Seeding a numpy generator costs more than most kinds' whole draw (numpy's
    ``SeedSequence`` and an ``np.errstate`` around it): a kind whose operations draw
    nothing (a driver migrating its whole range) never builds one, and the CPU kind
    takes its operations (:meth:`cpu_ops`) or raw 64-bit outputs (:meth:`raw`) from the
    C stream (``core.machine.seeding.pcg``: numpy's seeding and PCG64 in C, the same numbers),
    which builds no numpy object. Any attribute of the generator (``integers``,
    ``random``, ``bit_generator``...) builds the numpy generator, made by
    ``core.machine.seeding.generator`` (the generator ``default_rng`` makes, seeded for less)
    and moved to where the C stream is if it drew (``pcg_generator``), so a kind sees
    the same numbers as from the generator itself, whatever it mixes. Without the
    extension, :meth:`raw` and :meth:`cpu_ops` draw from numpy."""

    __slots__ = ("_c", "_entropy", "_gen")

    def __init__(self, entropy: list[int]) -> None:
        self._entropy = entropy
        self._gen: np.random.Generator | None = None
        self._c: Any = None  # the C stream, once raw() or cpu_ops() drew from it

    def raw(self, n: int) -> list[int]:
        """The next ``n`` raw 64-bit outputs, ``bit_generator.random_raw(n).tolist()``."""
        gen = self._gen
        if gen is None:
            c = self._c
            if c is None:
                c = self._c = pcg(self._entropy)
            if c is not None:
                out: list[int] = c.raw(n)
                return out
            gen = self._gen = generator(self._entropy)  # no extension: numpy's
        out = gen.bit_generator.random_raw(n).tolist()
        return out

    def cpu_ops(
        self, n: int, span: int, off: int, wr: float, mm: int, hot: list[int], first: int
    ) -> OpList:
        """``_Raw32(self.raw, first).cpu_ops(n, span, off, wr, mm, hot)``: the CPU kind's
        operations, computed in C (the C stream's ``cpu_ops``, the same algorithm, the
        same numbers, the stream left where ``_Raw32`` leaves it) while the C stream is
        the stream's source."""
        if self._gen is None:
            c = self._c
            if c is None:
                c = self._c = pcg(self._entropy)
            if c is not None:
                ops: OpList = c.cpu_ops(n, span, off, wr, mm, hot, first)
                return ops
        return _Raw32(self.raw, first).cpu_ops(n, span, off, wr, mm, hot)

    def __getattr__(self, name: str) -> Any:
        gen = self._gen
        if gen is None:
            c = self._c
            gen = self._gen = (
                generator(self._entropy) if c is None else pcg_generator(self._entropy, c)
            )
        return getattr(gen, name)

    @property
    def drawn(self) -> bool:
        """Whether the kind used its stream at all."""
        return self._gen is not None or self._c is not None


# The operation list of each actor table whose kind drew nothing from its stream: the
# same for every seed and every actor of the table (kinds are pure functions of their
# params and stream), so later runs copy it instead of calling the kind again. Keyed
# by the ActorSpec's id; the entry holds the spec itself, so the id stays its own for
# as long as the entry lives. Bounded.
_SEEDLESS: dict[int, tuple[ActorSpec, OpList]] = {}
_SEEDLESS_MAX = 256


def actor_programs(w: Workload, seed: int) -> list[tuple[str, str, dict[str, Any], OpList]]:
    """(name, kind, params, ops) for every actor of ``w``, ids in order."""
    out = []
    aid = 0
    per_kind: dict[str, int] = {}  # names stay unique when a kind has several tables
    for spec in w.actors:
        fn, defaults, _doc = ACTOR_KINDS[spec.kind]
        params = dict(defaults)
        params.update(spec.params)
        hit = _SEEDLESS.get(id(spec))
        for _ in range(spec.count):
            i = per_kind.get(spec.kind, 0)
            per_kind[spec.kind] = i + 1
            if hit is not None and hit[0] is spec:
                ops = list(hit[1])
            else:
                rng = _ActorStream([seed, aid, 0xAC7])
                ops = fn(params, cast(np.random.Generator, rng))
                if not rng.drawn:
                    if len(_SEEDLESS) >= _SEEDLESS_MAX:
                        del _SEEDLESS[next(iter(_SEEDLESS))]
                    hit = _SEEDLESS[id(spec)] = (spec, list(ops))
            out.append((f"{spec.kind}{i}", spec.kind, params, ops))
            aid += 1
    return out


# ----------------------------------------------------------------------------------------
# Loading and validation


def _bad(src: str, key: str, value: Any, valid: str) -> InvalidWorkload:
    return InvalidWorkload(f"{src}: {key} = {value!r} is not valid; {valid}")


def _int(src: str, key: str, v: Any, lo: int = 0, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(src, key, v, "expected an integer")
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise _bad(src, key, v, f"expected an integer {rng}")
    return v


def _check_keys(src: str, where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise InvalidWorkload(
                f"{src}: unknown key {where}{key!r}; valid keys: {', '.join(sorted(allowed))}"
            )


def _pair_list(src: str, key: str, v: Any, hi: int) -> tuple[tuple[int, int], ...]:
    if isinstance(v, dict):
        v = [v]
    out = []
    if not isinstance(v, list):
        raise _bad(src, key, v, "expected a table {start, end} or a list of them")
    for item in v:
        if not isinstance(item, dict) or set(item) - {"start", "end"}:
            raise _bad(src, key, item, "expected a table with keys start, end")
        s = _int(src, key + ".start", item.get("start"), 0, hi)
        e = _int(src, key + ".end", item.get("end"), 0, hi)
        if e <= s:
            raise _bad(src, key, item, "end must be greater than start")
        out.append((s, e))
    return tuple(out)


def _table(src: str, key: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _bad(src, key, v, "expected a table")
    return v


def _list(src: str, key: str, v: Any, what: str = "expected a list") -> list[Any]:
    if not isinstance(v, list):
        raise _bad(src, key, v, what)
    return v


def _findings(src: str, v: Any) -> tuple[FindingSpec, ...]:
    """``finding = {doc, kinds}`` (every generation) or ``[[finding]]`` tables
    ``{doc, kinds, variants}`` (``variants``: the generations it applies to; all when
    absent)."""
    from ..core.variants import VARIANTS

    tables = v if isinstance(v, list) else [v]
    out = []
    for t in tables:
        _table(src, "finding", t)
        _check_keys(src, "finding.", t, {"doc", "kinds", "variants"})
        kinds = t.get("kinds", [])
        if not isinstance(kinds, list) or not all(isinstance(x, str) for x in kinds):
            raise _bad(src, "finding.kinds", kinds, "expected a list of failure kinds")
        variants = t.get("variants", [])
        if not isinstance(variants, list) or not all(isinstance(x, str) for x in variants):
            raise _bad(src, "finding.variants", variants, "expected a list of generations")
        for x in variants:
            if x not in VARIANTS:
                raise _bad(src, "finding.variants", x, f"valid: {', '.join(sorted(VARIANTS))}")
        doc = t.get("doc", "")
        if not isinstance(doc, str):
            raise _bad(src, "finding.doc", doc, "expected a path under docs/findings/")
        if doc or kinds:
            out.append(FindingSpec(doc, tuple(kinds), tuple(variants)))
    return tuple(out)


def _policy(src: str, v: Any) -> str:
    if v not in DEVICE_POLICIES:
        raise _bad(src, "device.policy", v, f"valid policies: {', '.join(DEVICE_POLICIES)}")
    return str(v)


def _check_actor_params(src: str, kind: str, params: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Each parameter has its default's type (ints >= 0, ratios in [0, 1])."""
    for key, v in params.items():
        d = defaults[key]
        name = f"actor.{key}"
        if isinstance(d, bool):
            if not isinstance(v, bool):
                raise _bad(src, name, v, "expected true or false")
        elif isinstance(d, int):
            _int(src, name, v, 0)
        elif isinstance(d, float):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise _bad(src, name, v, "expected a number")
            if key.endswith("ratio") and not 0.0 <= v <= 1.0:
                raise _bad(src, name, v, "expected a number in [0, 1]")
        elif isinstance(d, str):
            if not isinstance(v, str):
                raise _bad(src, name, v, "expected a string")
        elif isinstance(d, list):
            _list(src, name, v)


def _check_actor_ranges(src: str, spec: ActorSpec, defaults: Mapping[str, Any], geo: Geometry) -> None:
    """Page, mm and device numbers an actor's parameters name exist in the geometry."""
    p = {**defaults, **spec.params}
    ppm = geo.pages_per_mm
    if "range" in spec.params:
        r = spec.params["range"]
        if (
            len(r) != 2
            or any(isinstance(x, bool) or not isinstance(x, int) for x in r)
            or not 0 <= r[0] < r[1] <= ppm
        ):
            raise _bad(src, "actor.range", r, f"expected [start, end] with 0 <= start < end <= {ppm}")
    if "hot" in spec.params:
        for x in spec.params["hot"]:
            _int(src, "actor.hot", x, 0, ppm - 1)
    for key, n, what in (
        ("mm", geo.mms, "geometry.mms"),
        ("device", geo.devices, "geometry.devices"),
        ("mirror", len(geo.dmirrors), "[[dmirror]] tables"),
    ):
        if (key in spec.params or (key == "mirror" and key in p)) and isinstance(p[key], int) and p[key] >= n:
            raise _bad(src, f"actor.{key}", p[key], f"expected an integer in [0, {n - 1}] ({what} = {n})")


def parse_workload(data: Mapping[str, Any], src: str) -> Workload:
    """Validate a workload table (from TOML) into a :class:`Workload`.

    Raises:
        InvalidWorkload: anything wrong in it. A value of a type the checks below did not
            expect (they name most) is still bad input, never an internal error: the
            robustness fuzzer (tests/robustness/test_fuzz.py) found such holes.
    """
    try:
        return _parse_workload(data, src)
    except PageraceError:
        raise
    except (TypeError, KeyError, AttributeError, IndexError, ValueError, ArithmeticError) as exc:
        raise InvalidWorkload(
            f"{src}: malformed workload: {type(exc).__name__}: {exc} "
            "(see the workloads/*.toml files for the keys)"
        ) from None


def _parse_workload(data: Mapping[str, Any], src: str) -> Workload:
    _check_keys(src, "", data, TOP_KEYS)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(src, "name", name, "expected a non-empty string")
    geo_t = data.get("geometry", {})
    if not isinstance(geo_t, dict):
        raise _bad(src, "geometry", geo_t, "expected a table")
    _check_keys(src, "geometry.", geo_t, GEOMETRY_KEYS)
    gkw: dict[str, Any] = {}
    for key, v in geo_t.items():
        if key == "coherent":
            if not isinstance(v, list):
                raise _bad(src, "geometry.coherent", v, "expected a list of device ids")
            gkw[key] = tuple(_int(src, "geometry.coherent", x) for x in v)
        else:
            gkw[key] = _int(src, f"geometry.{key}", v, 0, 1 << 24)
    devices_t = data.get("device", [])
    if not isinstance(devices_t, list):
        raise _bad(src, "device", devices_t, "expected an array of tables [[device]]")
    devs: list[DeviceSpec] = []
    for d in devices_t:
        _table(src, "device", d)
        _check_keys(src, "device.", d, DEVICE_KEYS)
        devs.append(
            DeviceSpec(
                id=_int(src, "device.id", d.get("id", len(devs)), 0, 254),
                coherent=bool(d.get("coherent", False)),
                fail_alloc=_int(src, "device.fail_alloc", d.get("fail_alloc", 0)),
                fault_range=_int(src, "device.fault_range", d.get("fault_range", 1), 1, 512),
                fault_work=_int(src, "device.fault_work", d.get("fault_work", 0), 0, 10_000),
                copy_work=_int(src, "device.copy_work", d.get("copy_work", 0), 0, 10_000),
                copy_error=_int(src, "device.copy_error", d.get("copy_error", 0)),
                policy=_policy(src, d.get("policy", "dmirror")),
                migrate_retries=_int(src, "device.migrate_retries", d.get("migrate_retries", 3), 1, 64),
            )
        )
    actors_t = data.get("actor", [])
    if not isinstance(actors_t, list) or not actors_t:
        raise _bad(src, "actor", actors_t, "expected at least one [[actor]] table")
    cpus = _int(src, "cpus", data.get("cpus", 0), 0, 64)
    preemption = data.get("preemption", "full")
    if preemption not in PREEMPTION_MODELS:
        raise _bad(src, "preemption", preemption, f"valid models: {', '.join(PREEMPTION_MODELS)}")
    if preemption != "full" and not cpus:
        raise _bad(src, "preemption", preemption, "a preemption model other than full needs cpus >= 1")
    actors: list[ActorSpec] = []
    for at in actors_t:
        if not isinstance(at, dict):
            raise _bad(src, "actor", at, "expected a table")
        kind = at.get("kind")
        if not isinstance(kind, str) or kind not in ACTOR_KINDS:
            raise _bad(src, "actor.kind", kind, f"valid kinds: {', '.join(sorted(ACTOR_KINDS))}")
        _fn, defaults, _doc = ACTOR_KINDS[kind]
        params = {k: v for k, v in at.items() if k not in ("kind", "count", "cpu")}
        for key in params:
            if key not in defaults:
                raise InvalidWorkload(
                    f"{src}: unknown key 'actor.{key}' for kind {kind!r}; valid keys: "
                    f"kind, count, cpu, {', '.join(sorted(defaults))}"
                )
        _check_actor_params(src, kind, params, defaults)
        count = _int(src, "actor.count", at.get("count", 1), 1, 256)
        actor_cpus: tuple[int, ...] = ()
        if "cpu" in at:
            if not cpus:
                raise _bad(src, "actor.cpu", at["cpu"], "binding an actor to a CPU needs cpus >= 1")
            v = at["cpu"]
            vals = v if isinstance(v, list) else [v] * count
            if len(vals) != count:
                raise _bad(src, "actor.cpu", v, f"expected one CPU or a list of {count}")
            actor_cpus = tuple(_int(src, "actor.cpu", x, 0, cpus - 1) for x in vals)
        actors.append(ActorSpec(kind, count, params, actor_cpus))
    dm_t = data.get("dmirror", [])
    if not isinstance(dm_t, list):
        raise _bad(src, "dmirror", dm_t, "expected an array of tables [[dmirror]]")
    dmirrors = []
    for dt in dm_t:
        _table(src, "dmirror", dt)
        _check_keys(src, "dmirror.", dt, {"device", "mm"})
        dmirrors.append(
            (
                _int(src, "dmirror.device", dt.get("device", 0), 0, 254),
                _int(src, "dmirror.mm", dt.get("mm", 0), 0, 1 << 24),
            )
        )
    if dmirrors:
        gkw["dmirrors"] = tuple(dmirrors)
    for at in actors:
        gkw.update(KIND_GEOMETRY.get(at.kind, {}))
    n_actors = sum(a.count for a in actors)
    ndev = max([d.id + 1 for d in devs] + [gkw.get("devices", 1)])
    if any(d.fail_alloc or d.copy_error for d in devs):
        gkw["dev_counters"] = True  # the failure counters in words (core/lib/test_hmm.py)
    gkw.setdefault("devices", ndev)
    gkw["actors"] = n_actors + cpus  # one kworker per CPU
    coherent = tuple(sorted(set(gkw.get("coherent", ())) | {d.id for d in devs if d.coherent}))
    gkw["coherent"] = coherent
    try:
        geo = Geometry(**gkw)
    except ValueError as exc:
        raise InvalidWorkload(f"{src}: {exc}") from None
    if not devs:
        devs = [DeviceSpec(id=i, coherent=i in coherent) for i in range(geo.devices)]
    mms_t = data.get("mm", [])
    if not isinstance(mms_t, list):
        raise _bad(src, "mm", mms_t, "expected an array of tables [[mm]]")
    mms: list[MmSpec] = []
    ppm = geo.pages_per_mm
    for mt in mms_t:
        _table(src, "mm", mt)
        _check_keys(src, "mm.", mt, MM_KEYS)
        mid = _int(src, "mm.id", mt.get("id", len(mms)), 0, geo.mms - 1)
        vmas: list[VmaSpec] = []
        vmas_t = mt.get("vmas", [{"start": 0, "end": ppm, "flags": ["read", "write", "anon"]}])
        for vt in _list(src, "mm.vmas", vmas_t, "expected a list of tables {start, end, flags}"):
            _table(src, "mm.vmas", vt)
            _check_keys(src, "mm.vmas.", vt, {"start", "end", "flags"})
            fl = 0
            for fname in _list(src, "mm.vmas.flags", vt.get("flags", ["read", "write", "anon"])):
                if fname not in VMA_FLAG_NAMES:
                    raise _bad(src, "mm.vmas.flags", fname, f"valid: {', '.join(VMA_FLAG_NAMES)}")
                fl |= VMA_FLAG_NAMES[fname]
            s0 = _int(src, "mm.vmas.start", vt.get("start", 0), 0, ppm)
            e0 = _int(src, "mm.vmas.end", vt.get("end", ppm), 0, ppm)
            if e0 <= s0:
                raise _bad(src, "mm.vmas", vt, "end must be greater than start")
            for other in vmas:
                if s0 < other.end and other.start < e0:
                    raise _bad(
                        src, "mm.vmas", vt, f"overlaps [{other.start}, {other.end}) of mm {mid}"
                    )
            vmas.append(VmaSpec(s0, e0, fl))
        dev_list = []
        for dt in mt.get("device", []) if isinstance(mt.get("device", []), list) else [mt["device"]]:
            _table(src, "mm.device", dt)
            dev_list.append(
                (
                    _int(src, "mm.device.dev", dt.get("dev", 0), 0, geo.devices - 1),
                    _int(src, "mm.device.start", dt.get("start"), 0, ppm),
                    _int(src, "mm.device.end", dt.get("end"), 0, ppm),
                )
            )
        share = []
        for st in _list(src, "mm.share", mt.get("share", [])):
            _table(src, "mm.share", st)
            share.append(
                (
                    _int(src, "mm.share.from_mm", st.get("from_mm", 0), 0, geo.mms - 1),
                    _int(src, "mm.share.from", st.get("from"), 0, ppm),
                    _int(src, "mm.share.to", st.get("to"), 0, ppm),
                    _int(src, "mm.share.count", st.get("count", 1), 1, ppm),
                    1 if st.get("reverse", False) else 0,
                )
            )
            _, frm, to, count, _ = share[-1]
            if max(frm, to) + count > ppm:
                # found by the robustness fuzzer: an IndexError (exit 3) in the builder
                raise _bad(
                    src, "mm.share", dict(st),
                    f"from + count and to + count must be at most {ppm} (geometry.pages_per_mm)",
                )
        mms.append(
            MmSpec(
                id=mid,
                vmas=tuple(vmas),
                populate=_pair_list(src, "mm.populate", mt.get("populate", []), ppm),
                readonly=_pair_list(src, "mm.readonly", mt.get("readonly", []), ppm),
                device=tuple(dev_list),
                share=tuple(share),
                thp=_pair_list(src, "mm.thp", mt.get("thp", []), ppm),
                thp_pte=_pair_list(src, "mm.thp_pte", mt.get("thp_pte", []), ppm),
            )
        )
        for key, lo, hi in [("mm.thp", lo, hi) for lo, hi in mms[-1].thp] + [
            ("mm.thp_pte", lo, hi) for lo, hi in mms[-1].thp_pte
        ]:
            n = geo.ptes_per_table
            if lo % n or hi % n:
                raise _bad(
                    src, key, {"start": lo, "end": hi},
                    f"a THP range must start and end on a PMD boundary (a multiple of "
                    f"geometry.ptes_per_table = {n})",
                )
    if not mms:
        mms = [MmSpec(0, (VmaSpec(0, ppm, VM_READ | VM_WRITE | VM_ANON),))]
    limits_t = _table(src, "limits", data.get("limits", {}))
    _check_keys(src, "limits.", limits_t, LIMIT_KEYS)
    limits = {k: _int(src, f"limits.{k}", v, 0) for k, v in limits_t.items()}
    faults = data.get("faults", [])
    if not isinstance(faults, list) or not all(isinstance(x, str) for x in faults):
        raise _bad(src, "faults", faults, "expected a list of fault names")
    needs_t = data.get("needs", [])
    if not isinstance(needs_t, list) or not all(isinstance(x, str) for x in needs_t):
        raise _bad(src, "needs", needs_t, "expected a list of path names")
    needs = list(needs_t)
    if any(mm.thp or mm.thp_pte for mm in mms) or any(
        v.flags & VM_HUGEPAGE for mm in mms for v in mm.vmas
    ):
        if "thp" not in needs:
            needs.append("thp")  # PMD-mapped THPs: v7 only
        geo = replace(geo, thp=True)  # the folio and PMD tables
    # Paths the actors and devices imply (a variant without them refuses the workload).
    implied = []
    for at in actors:
        implied += KIND_NEEDS.get(at.kind, [])
        if at.kind == "driver" and "evict" in at.params.get("pattern", []):
            implied.append("migrate_device_range")
    if coherent:
        implied.append("device_coherent")
    if any(d.policy == "all_or_nothing" for d in devs):
        implied.append("drm_pagemap")  # the migrate_vma_setup/pages/finalize API
    if dmirrors:
        implied.append("hmm_range_fault")
    needs += [n for n in dict.fromkeys(implied) if n not in needs]
    _check_memory(src, mms, geo)
    for spec in actors:
        fn, defaults, _doc = ACTOR_KINDS[spec.kind]
        _check_actor_ranges(src, spec, defaults, geo)
        # Dry run: a kind's own checks (a bad pattern entry...) fire at load time.
        try:
            fn({**defaults, **spec.params}, np.random.default_rng(0))
        except InvalidWorkload as exc:
            raise InvalidWorkload(f"{src}: {exc}") from None
    findings = _findings(src, data.get("finding", []))
    return Workload(
        name=name,
        description=str(data.get("description", "")),
        geometry=geo,
        mms=tuple(mms),
        devices=tuple(devs),
        actors=tuple(actors),
        limits=limits,
        mirrors=str(data.get("mirrors", "")),
        gap=str(data.get("gap", "")),
        needs=tuple(str(x) for x in needs),
        faults=tuple(str(x) for x in faults),
        pct_k=_int(src, "pct_k", data.get("pct_k", 0)),
        finding=findings[0].doc if findings else "",
        finding_kinds=tuple(dict.fromkeys(k for f in findings for k in f.kinds)),
        findings=findings,
        source=src,
        raw=dict(data),
        cpus=cpus,
        preemption=str(preemption),
        page_lock_unfairness=_int(
            src, "page_lock_unfairness", data.get("page_lock_unfairness", 5), 0, 1 << 20
        ),
    )


def _check_memory(src: str, mms: list[MmSpec], geo: Geometry) -> None:
    """Populated pages lie inside a VMA, and the initial state fits in the frames."""
    sys_pages = 0
    dev_pages = [0] * geo.devices
    for mm in mms:
        ranges = [("mm.populate", lo, hi) for lo, hi in mm.populate]
        ranges += [("mm.readonly", lo, hi) for lo, hi in mm.readonly]
        ranges += [("mm.device", lo, hi) for _dev, lo, hi in mm.device]
        ranges += [("mm.thp", lo, hi) for lo, hi in mm.thp]
        ranges += [("mm.thp_pte", lo, hi) for lo, hi in mm.thp_pte]
        for key, lo, hi in ranges:
            for vpn in range(lo, hi):
                if not any(v.start <= vpn < v.end for v in mm.vmas):
                    raise _bad(
                        src, key, {"start": lo, "end": hi},
                        f"page {vpn} of mm {mm.id} is outside every VMA",
                    )
        sys_pages += sum(hi - lo for lo, hi in mm.populate + mm.readonly + mm.thp + mm.thp_pte)
        for dev, lo, hi in mm.device:
            dev_pages[dev] += hi - lo
    if sys_pages > geo.sys_frames:
        raise _bad(
            src, "geometry.sys_frames", geo.sys_frames,
            f"the mms populate {sys_pages} pages; expected at least {sys_pages}",
        )
    for dev, n in enumerate(dev_pages):
        if n > geo.dev_frames:
            raise _bad(
                src, "geometry.dev_frames", geo.dev_frames,
                f"device {dev} starts with {n} pages; expected at least {n}",
            )


_HERE = Path(__file__).parent


def workload_names() -> list[str]:
    return sorted(p.stem for p in _HERE.glob("*.toml"))


def load_workload(name_or_path: str) -> Workload:
    """A named workload (``default``, ``fault-storm``...) or a TOML file path.

    Raises:
        InvalidWorkload: unknown name (lists the valid ones), unreadable or invalid TOML,
            or a bad key or value inside.
    """
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        path = p
    else:
        path = _HERE / f"{name_or_path}.toml"
        if not path.exists():
            raise InvalidWorkload(
                f"unknown workload {name_or_path!r}; valid workloads: "
                f"{', '.join(workload_names())} (or a path to a .toml file)"
            )
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidWorkload(f"cannot read workload file {str(path)!r}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidWorkload(f"{path}: invalid TOML: {exc}") from None
    return parse_workload(data, str(path.name if path.parent == _HERE else path))


def workload_from_json(d: Mapping[str, Any]) -> Workload:
    """Rebuild a workload from the raw table an artifact stores."""
    return parse_workload(d["raw"], str(d.get("source", d["raw"].get("name", "artifact"))))


def workload_to_json(w: Workload) -> dict[str, Any]:
    raw = dict(w.raw)
    if w.limits:
        raw["limits"] = dict(w.limits)
    return {"name": w.name, "source": w.source, "raw": raw}

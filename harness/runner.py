"""Building one run from (workload, variant, bugs, seed, strategy) and running it.

:func:`build_model` is shared by both engines: the same state, kernel, devices and
actor programs, whichever engine drives them. :func:`run_deterministic` runs it on the
deterministic engine and returns a :class:`RunRecord`, everything the CSV rows and the
failure artifact need.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.actors import program
from ..core.bugs import CATALOG
from ..core.faults import validate_faults
from ..core.lib.test_hmm import Dmirror, setup_devmem, setup_dmirrors
from ..core.machine import setup as _setup
from ..core.machine.errors import InvalidOption
from ..core.machine.kernel import Actor, Kernel
from ..core.machine.layout import VM_HUGEPAGE, Layout
from ..core.machine.state import State
from ..core.oracles.invariants import check_all
from ..core.variants import VARIANTS, get_variant
from ..core.world import install_mm
from ..workloads import Workload, actor_programs
from .engine import DeterministicEngine, Limits, Outcome, RunResult
from .schedulers import STRATEGIES, make_scheduler

DEFAULT_LIMITS = Limits()


def validate_variant_bugs(variant: str, bugs: Sequence[str], w: Workload | None = None) -> None:
    """Refuse an unknown variant, an unknown bug, a bug of another variant, or a workload
    that needs a path the variant lacks.

    Raises:
        InvalidOption: naming the bad value and the valid choices.
    """
    if variant not in VARIANTS:
        raise InvalidOption(
            f"unknown variant {variant!r}; valid variants: {', '.join(sorted(VARIANTS))}"
        )
    for b in bugs:
        if b not in CATALOG:
            raise InvalidOption(
                f"unknown bug {b!r}; valid bugs: {', '.join(sorted(CATALOG))}"
            )
        e = CATALOG[b]
        if variant not in e.variants:
            ok = sorted(n for n, x in CATALOG.items() if variant in x.variants and not x.intrinsic)
            raise InvalidOption(
                f"bug {b!r} applies to variant {'/'.join(e.variants)}, not {variant!r}; bugs "
                f"for {variant}: {', '.join(ok) or '(none)'}"
            )
    if w is not None:
        have = VARIANTS[variant].provides
        missing = [n for n in w.needs if n not in have]
        if missing:
            raise InvalidOption(
                f"workload {w.name!r} needs {', '.join(missing)}, which variant {variant!r} "
                f"does not have; it runs on: "
                + ", ".join(sorted(v for v, c in VARIANTS.items() if set(w.needs) <= c.provides))
            )


@dataclass
class Model:
    state: State
    kernel: Kernel
    actors: list[Actor]
    ops: list[list[tuple[Any, ...]]]


# The last workload variant_workload made, by identity: (w, variant, the result). The
# runs of a hunt take the same object again and again; a Workload is frozen.
_LAST_VARIANT: tuple[Any, str, Workload] | None = None


def variant_workload(w: Workload, variant: str) -> Workload:
    """``w`` as ``variant``'s model is built: a variant with large folios (v7) needs the
    geometry's PMD and folio tables (``Geometry.thp``); the others get ``w`` itself (the
    same copy for every run of ``w`` in a row)."""
    global _LAST_VARIANT
    last = _LAST_VARIANT
    if last is not None and last[0] is w and last[1] == variant:
        return last[2]
    cls = VARIANTS.get(variant)
    out = w
    if cls is not None and cls.large_folios and not w.geometry.thp:
        out = dataclasses.replace(w, geometry=dataclasses.replace(w.geometry, thp=True))
    _LAST_VARIANT = (w, variant, out)
    return out


def build_state(w: Workload, buf: Any = None, words: Any = None) -> State:
    """The initial memory picture of ``w``."""
    s = State(Layout(w.geometry), buf=buf, words=words)
    for mm in w.mms:
        _setup.mm_live(s, mm.id)
        for v in mm.vmas:
            s.add_vma(mm.id, v.start, v.end, v.flags)
        for lo, hi in mm.populate:
            for vpn in range(lo, hi):
                _setup.populate(s, mm.id, vpn, write=True)
        for lo, hi in mm.readonly:
            for vpn in range(lo, hi):
                _setup.populate(s, mm.id, vpn, write=False)
        for dev, lo, hi in mm.device:
            for vpn in range(lo, hi):
                _setup.populate_device(s, dev, mm.id, vpn)
        for lo, hi in mm.thp:
            for vpn in range(lo, hi, s.geo.hpage_pmd_nr):
                _setup.populate_thp(s, mm.id, vpn)
        for lo, hi in mm.thp_pte:
            for vpn in range(lo, hi, s.geo.hpage_pmd_nr):
                _setup.populate_thp_pte(s, mm.id, vpn)
    for mm in w.mms:
        for src_mm, frm, to, count, reverse in mm.share:
            for j in range(count):
                sv = frm + (count - 1 - j if reverse else j)
                _setup.share_cow(s, src_mm, sv, mm.id, to + j)
    if s.geo.thp and any(v.flags & VM_HUGEPAGE for mm in w.mms for v in mm.vmas):
        _setup.none_pmds(s)  # THP-eligible memory: a PMD that maps nothing is none
    setup_dmirrors(s)  # the workload's [[dmirror]] files, opened before the run
    setup_devmem(s)  # each device's memory chunk and its pagemap references
    return s


# The initial words of each (geometry, address spaces) built so far: every later run of a
# workload starts from a copy of them (State.from_snapshot) instead of building the state
# again. A memo of a pure function of its key, so it changes no result; bounded.
_INITIAL: dict[tuple[Any, ...], tuple[Layout, np.ndarray]] = {}
_INITIAL_MAX = 64
# The last workload's entry, by identity (a frozen Workload whose key hashed): the runs
# of a hunt skip hashing the geometry and the address spaces (frozen dataclasses hash
# every field each time).
_LAST_INITIAL: tuple[Any, tuple[Layout, np.ndarray]] | None = None


def initial_state(w: Workload) -> State:
    """A fresh state in ordinary memory holding ``w``'s initial memory picture: the same
    words :func:`build_state` writes, copied from a snapshot taken the first time."""
    global _LAST_INITIAL
    last = _LAST_INITIAL
    if last is not None and last[0] is w:
        return State.from_snapshot(*last[1])
    key = (w.geometry, w.mms)
    try:
        hit = _INITIAL.get(key)
    except TypeError:  # a hand-built workload with lists inside: nothing to key it by
        return build_state(w)
    if hit is None:
        first = build_state(w)
        hit = (first.layout, first.snapshot())
        if len(_INITIAL) >= _INITIAL_MAX:
            del _INITIAL[next(iter(_INITIAL))]
        _INITIAL[key] = hit
    _LAST_INITIAL = (w, hit)
    return State.from_snapshot(*hit)


def build_model(
    w: Workload,
    variant: str,
    bugs: Sequence[str],
    seed: int,
    faults: Sequence[str] = (),
    state: State | None = None,
    actor_ids: Sequence[int] | None = None,
    drop_ops: Callable[[int, list[tuple[Any, ...]]], list[tuple[Any, ...]]] | None = None,
) -> Model:
    """State, kernel, devices and actors of one run (shared by both engines); the state
    is ``state``, or a fresh copy of ``w``'s initial words (:func:`initial_state`)."""
    s = state if state is not None else initial_state(variant_workload(w, variant))
    validate_faults(tuple(faults) + tuple(w.faults))
    k = Kernel(s, variant=get_variant(variant), bugs=bugs, faults=tuple(faults) + tuple(w.faults))
    install_mm(k)  # GUP, fork, zap, mremap, reclaim ops; their oracles and swap-in
    for d in sorted(w.devices, key=lambda d: d.id):
        while len(k.devices) < d.id:
            k.devices.append(Dmirror(len(k.devices)))
        dm = Dmirror(
            d.id,
            coherent=d.coherent,
            fail_alloc=d.fail_alloc,
            fault_range=d.fault_range,
            fault_work=d.fault_work,
            copy_work=d.copy_work,
            policy=d.policy,
            migrate_retries=d.migrate_retries,
        )
        dm.copy_error = d.copy_error
        k.devices.append(dm)
    while len(k.devices) < w.geometry.devices:
        k.devices.append(Dmirror(len(k.devices)))
    progs = actor_programs(w, seed)
    actors: list[Actor] = []
    ops: list[list[tuple[Any, ...]]] = []
    for aid, (name, kind, params, oplist) in enumerate(progs):
        actors.append(Actor(aid, name, kind, params))
        if drop_ops is not None:
            oplist = drop_ops(aid, oplist)
        ops.append(oplist)
    k.page_lock_unfairness = w.page_lock_unfairness
    if w.cpus:  # the CPU model: actors bound to CPUs, one kworker per CPU
        k.cpus = w.cpus
        k.preemption = w.preemption
        for a, cpu in zip(actors, w.actor_cpus()):
            a.cpu = cpu
        for cpu in range(w.cpus):
            kw = Actor(len(actors), f"kworker/{cpu}", "kworker")
            kw.cpu = cpu
            kw.daemon = True
            actors.append(kw)
            ops.append([])
    return Model(s, k, actors, ops)


@dataclass
class RunRecord:
    """Everything known about one finished run."""

    workload: Workload
    variant: str
    bugs: tuple[str, ...]
    seed: int
    strategy: str
    engine: str
    result: RunResult
    kernel: Kernel
    actors: list[Actor]
    ops: list[list[tuple[Any, ...]]]
    started: float
    wall: float
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> Outcome:
        return self.result.outcome


# Limits by their fields' values: a run's Limits is made once per set of values (a
# frozen dataclass's __init__ sets each field through object.__setattr__). Bounded.
_LIMITS: dict[tuple[Any, ...], Limits] = {}
_LIMITS_MAX = 64


def limits_for(w: Workload, **override: int | None) -> Limits:
    base = dict(
        max_steps=DEFAULT_LIMITS.max_steps,
        livelock_steps=DEFAULT_LIMITS.livelock_steps,
        check_every=DEFAULT_LIMITS.check_every,
    )
    base.update(w.limits)
    base.update({k: v for k, v in override.items() if v is not None})
    key = (tuple(base.items()), tuple(map(type, base.values())))  # 2000 and 2000.0 apart
    try:
        return _LIMITS[key]
    except (KeyError, TypeError):  # (TypeError: a value that does not hash)
        pass
    limits = Limits(**base)
    try:
        if len(_LIMITS) >= _LIMITS_MAX:
            del _LIMITS[next(iter(_LIMITS))]
        _LIMITS[key] = limits
    except TypeError:
        pass
    return limits


def run_deterministic(
    w: Workload,
    *,
    variant: str = "v6",
    bugs: Sequence[str] = (),
    seed: int = 0,
    strategy: str = "random",
    pct_depth: int = 3,
    quantum: int = 1,
    pct_k: int | None = None,
    counts: Sequence[int] = (),
    schedule: Sequence[int] | None = None,
    strict: bool = True,
    trace: bool = False,
    faults: Sequence[str] = (),
    max_steps: int | None = None,
    livelock_steps: int | None = None,
    check_every: int | None = None,
    ops_override: list[list[tuple[Any, ...]]] | None = None,
) -> RunRecord:
    """One run on the deterministic engine. ``pct_k``: PCT's step estimate (default
    the workload's ``pct_k``, else 30 steps an operation and at least 200). ``counts``:
    steps per actor of an earlier run, for URW / SURW.

    Raises:
        InvalidOption: bad variant, bug or strategy.
    """
    bugs = tuple(sorted(set(bugs)))
    validate_variant_bugs(variant, bugs, w)
    if strategy not in STRATEGIES:
        make_scheduler(strategy)  # raises InvalidOption with the choices
    limits = limits_for(
        w, max_steps=max_steps, livelock_steps=livelock_steps, check_every=check_every
    )
    started = time.time()
    t0 = time.perf_counter()
    m = build_model(w, variant, bugs, seed, faults)
    if ops_override is not None:
        m.ops = [list(o) for o in ops_override]
    sched = make_scheduler(
        "replay" if schedule is not None else strategy,
        pct_depth=pct_depth,
        pct_k=pct_k or w.pct_k or max(200, sum(len(o) for o in m.ops) * 30),
        quantum=quantum,
        schedule=schedule or (),
        strict=strict,
        counts=counts,
    )
    if getattr(sched, "records_words", False):  # POS, URW, SURW: the dependency relation
        from .schedulers.dependency import install_recorder

        sched.attach(install_recorder(m.kernel))  # type: ignore[attr-defined]
    programs = [program(m.kernel, a, ops) for a, ops in zip(m.actors, m.ops)]
    eng = DeterministicEngine(
        m.kernel,
        m.actors,
        programs,
        sched,
        seed=seed,
        limits=limits,
        invariants=check_all,
        trace=trace,
    )
    result = eng.run()
    return RunRecord(
        workload=w,
        variant=variant,
        bugs=bugs,
        seed=seed,
        strategy=strategy if schedule is None else "replay",
        engine="deterministic",
        result=result,
        kernel=m.kernel,
        actors=m.actors,
        ops=m.ops,
        started=started,
        wall=time.perf_counter() - t0,
        options={
            "pct_depth": pct_depth,
            "quantum": quantum,
            "faults": list(faults),
            "limits": {
                "max_steps": limits.max_steps,
                "livelock_steps": limits.livelock_steps,
                "check_every": limits.check_every,
            },
        },
    )

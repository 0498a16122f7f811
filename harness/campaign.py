"""Campaigns: many (workload, variant, bugs, seed, strategy) runs, resumable, in parallel.

A campaign is a :class:`Plan` expanded into :class:`Unit` s. Units are grouped into small
:class:`Task` s (consecutive seeds of one configuration) and handed to a backend: in this
process (``jobs=1``), a local process pool (fork context), or a Dask cluster
(:mod:`pagerace.harness.dask_backend`). A worker runs each unit on the deterministic engine
and returns only rows and artifact text (:class:`UnitResult`); the PARENT writes the
artifacts and appends the rows, so every file has one writer.

Crash safety and resume, the rules the code below keeps:

- a finished task's artifacts are written as soon as it comes back, and its rows go to
  a :class:`pagerace.harness.output.RowWriter`, which appends them in batches (at most
  500 units, or the units taken within one second), ``runs.csv`` LAST, with one
  ``write`` + ``fsync`` per file per batch; ``contention.csv`` gets one row per
  configuration and call site per batch. Ctrl-C, SIGTERM and errors flush what was taken;
  a SIGKILL or a crash loses the units in flight and those of the batch not yet written.
  Progress (the bar, the status line, ``Progress.done``) counts a unit only once its
  batch is on disk;
- a unit is done when its row is in ``runs.csv``; a rerun on the same directory skips
  the done keys (workload, variant, bugs, seed, strategy, engine);
- rows in the other three files whose run is not in ``runs.csv`` (a crash between two
  appends) are orphans; :func:`repair` removes them before a rerun, so the rerun of that
  unit never duplicates a row (and removes the runs a batch cut inside its ``runs.csv``
  write left without their contention row, so they run again).

XX: units are dispatched seed-block by seed-block across all configurations, so a budget
that runs out leaves every configuration with about the same number of seeds.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import functools
import io
import itertools
import json
import os
import re
import time
import tomllib
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from ..core.bugs import CATALOG
from ..core.machine.errors import BadInput, HarnessInternalError, InvalidOption
from ..core.variants import VARIANTS
from ..reports.schema import (
    CONTENTION,
    FAILURES,
    OUTCOMES,
    RUNS,
    SCHEMAS,
    uncovered_runs,
    upgrade_contention,
)
from ..workloads import Workload, load_workload, workload_from_json, workload_names, workload_to_json
from .artifacts import MAX_STEPS, check_buildable, check_fits, same_failure, write_json_atomic
from .commands._options import parse_duration as _parse_duration
from .output import BATCH_RUNS, RowWriter
from .pool import PoolBackend as PoolBackend
from .pool import worker_death as worker_death
from .runner import run_deterministic, validate_variant_bugs
from .schedulers import STRATEGIES
from .schedulers.replay import ScheduleDiverged

ENGINES = ("deterministic", "parallel")
KEY_COLUMNS = ("workload", "variant", "bugs", "seed", "strategy", "engine")
UnitKey = tuple[str, str, str, int, str, str]
EXIT_INTERRUPTED = 130
MAX_JOBS = 4 * (os.cpu_count() or 1) + 64  # worker processes: more only thrash the machine
ERROR_STOP = 20  # stop once this many units errored and errors outnumber good units

# --------------------------------------------------------------------------------------
# parsing: seeds, durations, bug sets, plan files


#: Seeds are below this (a seed is an int64 in every CSV reader; 10**18 seeds would take
#: longer than anyone waits, and the plan's memory does not depend on it: see :class:`Seeds`).
MAX_SEED = 10**18


@dataclass(frozen=True)
class Seeds:
    """A set of seeds as sorted, disjoint, non-adjacent inclusive ranges, never expanded:
    ``1-1000000000000`` is one pair of ints, and iterating it yields one seed at a time
    (issue 10 item 1: the plan used to hold every seed and took all memory).

    Attributes:
        ranges: ``((lo, hi), ...)``, sorted, ``lo <= hi``, each range separated from the
            next by at least one missing seed.
    """

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, seeds: Iterable[int] | Seeds) -> Seeds:
        """The seeds of a collection of ints (duplicates and order do not matter)."""
        if isinstance(seeds, Seeds):
            return seeds
        return cls.from_ranges((s, s) for s in seeds)

    @classmethod
    def from_ranges(cls, ranges: Iterable[tuple[int, int]]) -> Seeds:
        """Merge possibly overlapping or adjacent ``(lo, hi)`` ranges."""
        merged: list[list[int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        return cls(tuple((lo, hi) for lo, hi in merged))

    def __len__(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __iter__(self) -> Iterator[int]:
        for lo, hi in self.ranges:
            yield from range(lo, hi + 1)

    def __contains__(self, seed: object) -> bool:
        if not isinstance(seed, int):
            return False
        i = bisect.bisect_right(self.ranges, (seed, MAX_SEED + 1)) - 1
        return i >= 0 and self.ranges[i][0] <= seed <= self.ranges[i][1]

    def __str__(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ranges)


def parse_seeds(text: str | int | Iterable[int] | Seeds) -> Seeds:
    """``"1-5000"``, ``"1,2,10-20"`` or a list of ints → sorted, distinct seeds, kept as
    ranges (memory independent of how many seeds).

    Raises:
        InvalidOption: a malformed part, a reversed range, a negative seed, or a seed of
            :data:`MAX_SEED` or more.
    """
    if isinstance(text, Seeds):
        return text
    if isinstance(text, bool):
        raise InvalidOption(f"seeds {text!r}: expected integers, e.g. [1, 2, 3] or '1-100'")
    if isinstance(text, int):
        text = str(text)
    if not isinstance(text, str):
        try:
            items: list[object] = list(text)
        except TypeError:
            items = [text]
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in items):
            raise InvalidOption(f"seeds {text!r}: expected integers, e.g. [1, 2, 3] or '1-100'")
        seeds = Seeds.of(s for s in items if isinstance(s, int))
        if not seeds or seeds.ranges[0][0] < 0:
            raise InvalidOption(f"seeds {text!r}: expected non-negative integers, e.g. '1-100'")
        if seeds.ranges[-1][1] >= MAX_SEED:
            raise InvalidOption(f"seeds {text!r}: seeds must be below 10^18")
        return seeds
    ranges: list[tuple[int, int]] = []
    for part in text.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d{1,19})(?:-(\d{1,19}))?", part)
        if not m:
            raise InvalidOption(
                f"seeds {text!r}: bad part {part!r}; expected N, N-M or a comma list like 1-100,200 "
                "(seeds are 0 or more)"
            )
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise InvalidOption(f"seeds {text!r}: range {part!r} runs backwards; write {hi}-{lo}")
        if hi >= MAX_SEED:
            raise InvalidOption(f"seeds {text!r}: {hi} is too large; seeds must be below 10^18")
        ranges.append((lo, hi))
    return Seeds.from_ranges(ranges)


def parse_duration(text: str | float | int | None, option: str = "budget") -> float | None:
    """A plan's duration (``budget``, ``duration``) → seconds; ``None``, ``"none"``, ``""``
    and ``0`` → no limit. The one duration parser,
    :func:`pagerace.harness.commands._options.parse_duration` (``45`` is seconds;
    ``500ms``, ``30s``, ``2m``, ``1h30m``), with "no limit" allowed.

    Raises:
        InvalidOption: anything else, naming ``option`` and the accepted forms.
    """
    from .commands._options import parse_duration as _parse_duration

    return _parse_duration(text, option, none_ok=True)


def parse_bugsets(values: Iterable[str | Sequence[str]] | None) -> tuple[tuple[str, ...], ...]:
    """Bug-set axis. Each value is one set (``"a,b"`` or ``["a", "b"]``); ``"none"`` or
    ``""`` is the set without bugs. No values: the single empty set.

    Raises:
        InvalidOption: an unknown bug name (listing the catalog).
    """
    sets: list[tuple[str, ...]] = []
    for v in values or ():
        names = [s.strip() for s in v.split(",")] if isinstance(v, str) else [str(s).strip() for s in v]
        names = [n for n in names if n and n != "none"]
        for n in names:
            if n not in CATALOG:
                raise InvalidOption(f"unknown bug {n!r}; valid bugs: none, {', '.join(sorted(CATALOG))}")
        bs = tuple(sorted(set(names)))
        if bs not in sets:
            sets.append(bs)
    return tuple(sets) or ((),)


def _split(v: str | Sequence[str]) -> list[str]:
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return [str(s).strip() for s in v if str(s).strip()]


@dataclass(frozen=True)
class Plan:
    """The whole plan of a campaign (what a campaign TOML file holds).

    Attributes:
        name: campaign id written into every row's ``campaign`` column.
        workloads: workload names or TOML paths.
        variants: protocol variants.
        seeds: seeds, each run once per configuration.
        bugsets: the bug-toggle axis; ``()`` is "no bugs".
        strategies: scheduling strategies.
        engine: ``deterministic`` (default) or ``parallel``.
        budget_s: wall-clock budget; no new unit starts after it (``None``: no budget).
        jobs: worker processes (1: run in this process).
        max_steps / livelock_steps: step budgets passed to every run (``None``: the
            workload's own).
        replay: replay every failure from its schedule and record ``reproduced``.
        shrink: shrink every failure's artifact (when the shrinker exists).
        chunk: units per task (0: chosen from the plan size and jobs).
        duration_s: how long each run lasts on the parallel engine.
    """

    name: str = "campaign"
    workloads: tuple[str, ...] = ("default",)
    variants: tuple[str, ...] = ("v6",)
    seeds: Seeds = Seeds(((0, 0),))
    bugsets: tuple[tuple[str, ...], ...] = ((),)
    strategies: tuple[str, ...] = ("random",)
    engine: str = "deterministic"
    budget_s: float | None = None
    jobs: int = 1
    max_steps: int | None = None
    livelock_steps: int | None = None
    replay: bool = True
    shrink: bool = False
    chunk: int = 0
    duration_s: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.seeds, Seeds):
            object.__setattr__(self, "seeds", parse_seeds(self.seeds))
        if self.engine not in ENGINES:
            raise InvalidOption(f"unknown engine {self.engine!r}; valid engines: {', '.join(ENGINES)}")
        for s in self.strategies:
            if s not in STRATEGIES or s == "replay":
                ok = ", ".join(x for x in sorted(STRATEGIES) if x != "replay")
                raise InvalidOption(f"unknown strategy {s!r}; valid strategies: {ok}")
        for v in self.variants:
            if v not in VARIANTS:
                raise InvalidOption(f"unknown variant {v!r}; valid variants: {', '.join(sorted(VARIANTS))}")
        if self.jobs < 1:
            raise InvalidOption(f"jobs {self.jobs}: must be at least 1")
        if not self.workloads or not self.variants or not self.seeds:
            raise InvalidOption("a campaign needs at least one workload, one variant and one seed")
        for name, lim in (("max_steps", self.max_steps), ("livelock_steps", self.livelock_steps)):
            if lim is not None and not 1 <= lim <= MAX_STEPS:
                raise InvalidOption(f"{name} {lim}: must be between 1 and {MAX_STEPS:,}")
        if not 0 <= self.chunk <= 10_000:
            raise InvalidOption(f"chunk {self.chunk}: must be between 0 (automatic) and 10,000")
        if self.jobs > MAX_JOBS:
            raise InvalidOption(f"jobs {self.jobs}: more than {MAX_JOBS} worker processes")
        if not 0 < self.duration_s <= 7 * 86400:
            raise InvalidOption(f"duration {self.duration_s}: must be more than zero and at most 7 days")


PLAN_KEYS = {
    "name": "campaign id",
    "out": "output directory",
    "workloads": "list of names/paths, or 'all'",
    "variants": "list of variants",
    "seeds": "'1-5000' or a list",
    "bugs": "list of bug sets, each 'a,b' or a list; 'none' for no bugs",
    "strategies": "list of strategies",
    "engine": "deterministic or parallel",
    "budget": "'30m', '1h30m', '90s'",
    "jobs": "worker processes",
    "cluster": "tcp://HOST:PORT of a Dask scheduler",
    "max_steps": "step budget per run",
    "livelock_steps": "livelock budget per run",
    "replay": "true/false",
    "shrink": "true/false",
    "chunk": "units per task",
    "duration": "per-run duration on the parallel engine, e.g. '2s'",
    "plugins": "plugin files (relative to the plan file) or modules to load, as --plugin",
}


def load_plan_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a campaign TOML file into plan keyword values (not yet validated).

    Raises:
        InvalidOption: unreadable file, bad TOML or an unknown key.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as e:
        raise InvalidOption(f"campaign file {str(p)!r}: cannot read it ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidOption(f"campaign file {str(p)!r}: not valid TOML ({e})") from None
    unknown = sorted(set(data) - set(PLAN_KEYS))
    if unknown:
        raise InvalidOption(
            f"campaign file {str(p)!r}: unknown key {unknown[0]!r}; "
            f"valid keys: {', '.join(sorted(PLAN_KEYS))}"
        )
    if "workloads" in data and isinstance(data["workloads"], str) and data["workloads"] != "all":
        data["workloads"] = _split(data["workloads"])
    # workload paths in the file are relative to the file
    if isinstance(data.get("workloads"), list):
        data["workloads"] = [
            str((p.parent / w).resolve()) if w.endswith(".toml") and not os.path.isabs(w) else w
            for w in data["workloads"]
        ]
    if "plugins" in data:
        plugs = data["plugins"]
        if not isinstance(plugs, list) or not all(isinstance(x, str) for x in plugs):
            raise InvalidOption(
                f"campaign file {str(p)!r}: 'plugins' must be a list of file paths or modules"
            )
        data["plugins"] = [
            str((p.parent / x).resolve()) if x.endswith(".py") and not os.path.isabs(x) else x for x in plugs
        ]
    if "out" in data and not os.path.isabs(str(data["out"])):
        data["out"] = str((p.parent / str(data["out"])).resolve())
    return data


def make_plan(values: Mapping[str, Any]) -> Plan:
    """A validated :class:`Plan` from loose values (a TOML file merged with flags).

    Raises:
        InvalidOption / InvalidWorkload: any bad value, named.
    """
    kw: dict[str, Any] = {}
    if values.get("name"):
        kw["name"] = str(values["name"])
    wl = values.get("workloads")
    if wl is not None:
        names = _split(wl)
        if names == ["all"]:
            names = workload_names()
        for n in names:
            load_workload(n)  # raises InvalidWorkload with the valid choices
        kw["workloads"] = tuple(names)
    if values.get("variants") is not None:
        kw["variants"] = tuple(_split(values["variants"]))
    if values.get("seeds") is not None:
        kw["seeds"] = parse_seeds(values["seeds"])
    if values.get("bugs") is not None:
        b = values["bugs"]
        kw["bugsets"] = parse_bugsets([b] if isinstance(b, str) else b)
    if values.get("strategies") is not None:
        kw["strategies"] = tuple(_split(values["strategies"]))
    if values.get("engine") is not None:
        kw["engine"] = str(values["engine"])
    if "budget" in values:
        kw["budget_s"] = parse_duration(values["budget"])
    if values.get("duration") is not None:
        kw["duration_s"] = _parse_duration(values["duration"], "duration")
    for k in ("jobs", "max_steps", "livelock_steps", "chunk"):
        if values.get(k) is not None:
            try:
                kw[k] = int(values[k])
            except (TypeError, ValueError):
                raise InvalidOption(f"{k} {values[k]!r}: expected an integer") from None
    for k in ("replay", "shrink"):
        if values.get(k) is not None:
            if not isinstance(values[k], bool):
                raise InvalidOption(f"{k} {values[k]!r}: expected true or false")
            kw[k] = values[k]
    return Plan(**kw)


# --------------------------------------------------------------------------------------
# units and tasks


@dataclass(frozen=True)
class Unit:
    workload: str  # the workload's name (as written in runs.csv)
    variant: str
    bugs: tuple[str, ...]
    seed: int
    strategy: str
    engine: str

    @property
    def key(self) -> UnitKey:
        return (self.workload, self.variant, "+".join(self.bugs), self.seed, self.strategy, self.engine)


def _loaded_plugins() -> tuple[str, ...]:
    from .plugins import loaded_specs

    return loaded_specs()


@dataclass(frozen=True)
class Task:
    """What one worker call runs: consecutive seeds of one configuration. Carries the
    resolved workload (as JSON) so a worker needs no file and no global state."""

    workload: dict[str, Any]
    variant: str
    bugs: tuple[str, ...]
    strategy: str
    engine: str
    seeds: tuple[int, ...]
    campaign: str
    max_steps: int | None = None
    livelock_steps: int | None = None
    replay: bool = True
    shrink: bool = False
    duration_s: float = 2.0
    # the plugins loaded where the task was made: a worker loads them before it runs
    plugins: tuple[str, ...] = field(default_factory=_loaded_plugins)
    # PCT's step estimate for this configuration (campaign_pct_k); None: the static one
    pct_k: int | None = None


@dataclass
class UnitResult:
    """What a worker sends back for one unit: rows and artifact text, nothing else."""

    key: UnitKey
    outcome: str = ""
    kind: str = ""
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    artifact: tuple[str, dict[str, Any]] | None = None  # (path relative to out dir, JSON document)
    wall: float = 0.0
    error: str = ""  # a harness error (traceback); nothing is written for the unit


@dataclass(frozen=True)
class Skip:
    workload: str
    variant: str
    bugs: tuple[str, ...]
    reason: str


Config = tuple[str, str, tuple[str, ...], str]  # workload, variant, bugs, strategy


@dataclass(frozen=True)
class Units:
    """The units of a plan, seed-major (every configuration of seed 1, then of seed 2...),
    generated when iterated, never held: its memory does not depend on the seeds."""

    seeds: Seeds
    configs: tuple[Config, ...]
    engine: str

    def __len__(self) -> int:
        return len(self.seeds) * len(self.configs)

    def __iter__(self) -> Iterator[Unit]:
        for seed in self.seeds:
            for w, v, bs, st in self.configs:
                yield Unit(w, v, bs, seed, st, self.engine)

    @functools.cached_property
    def _config_keys(self) -> frozenset[tuple[str, str, str, str]]:
        return frozenset((w, v, "+".join(bs), st) for w, v, bs, st in self.configs)

    def has(self, key: UnitKey) -> bool:
        """Whether the unit of ``key`` (a runs.csv key) is one of these."""
        w, v, b, seed, st, e = key
        return e == self.engine and seed in self.seeds and (w, v, b, st) in self._config_keys


def expand(plan: Plan, workloads: Mapping[str, Workload]) -> tuple[Units, list[Skip]]:
    """Every unit of the plan, seed-major, lazily, and the configurations skipped (with why)."""
    configs: list[Config] = []
    skips: list[Skip] = []
    for wname, w in workloads.items():
        for v in plan.variants:
            for bs in plan.bugsets:
                try:
                    validate_variant_bugs(v, bs, w)
                except InvalidOption as e:
                    skips.append(Skip(wname, v, bs, str(e)))
                    continue
                for st in plan.strategies:
                    configs.append((wname, v, bs, st))
    return Units(plan.seeds, tuple(configs), plan.engine), skips


def make_tasks(
    plan: Plan, units: Iterable[Unit], workloads: Mapping[str, Workload], chunk: int
) -> Iterator[Task]:
    """Group units into tasks of up to ``chunk`` seeds of one configuration, keeping the
    seed-major order (block of seeds by block of seeds, across all configurations).
    Lazy: it holds at most ``chunk`` seeds per configuration."""
    js = {n: workload_to_json(w) for n, w in workloads.items()}
    open_: dict[Config, list[int]] = {}
    ks: dict[Config, int | None] = {}

    def flush(cfg: Config) -> Task:
        seeds = open_.pop(cfg)
        w, v, bs, st = cfg
        if st == "pct" and cfg not in ks:
            ks[cfg] = campaign_pct_k(workloads[w], v, bs, plan)
        return Task(
            js[w],
            v,
            bs,
            st,
            plan.engine,
            tuple(seeds),
            plan.name,
            plan.max_steps,
            plan.livelock_steps,
            plan.replay,
            plan.shrink,
            plan.duration_s,
            pct_k=ks.get(cfg),
        )

    for u in units:
        cfg = (u.workload, u.variant, u.bugs, u.strategy)
        open_.setdefault(cfg, []).append(u.seed)
        if len(open_[cfg]) >= chunk:
            yield flush(cfg)
    for cfg in list(open_):
        yield flush(cfg)


PCT_PROBE_SEEDS = (0, 1, 2)


def campaign_pct_k(w: Workload, variant: str, bugs: tuple[str, ...], plan: Plan) -> int | None:
    """PCT's step estimate for one configuration of a campaign: the median length in
    shared steps (``pct_k.learned_k``) of PCT runs of it on the probe seeds 0-2 with the
    static estimate; ``None`` when the workload sets its own ``pct_k``.

    A function of the configuration and the plan's step budgets only, so every unit of
    the configuration gets the same ``k`` whatever the jobs, the chunks, the order or a
    resume. Each run records it (its scheduler record: ``strategy_params`` in runs.csv
    and in the artifact): an artifact replays its schedule exactly, and
    ``run_deterministic(..., strategy="pct", pct_k=K)`` runs the unit again. The probe
    costs three runs per PCT configuration, in the parent, before its first task."""
    if w.pct_k:
        return None
    from .pct_k import learned_k

    steps = [
        run_deterministic(
            w, variant=variant, bugs=bugs, seed=seed, strategy="pct",
            max_steps=plan.max_steps, livelock_steps=plan.livelock_steps,
        ).result.shared_steps
        for seed in PCT_PROBE_SEEDS
    ]
    return learned_k(steps)


class _TaskQueue:
    """The tasks still to submit: an iterator with one task of lookahead (``bool`` says
    whether one is left), drawn as the campaign goes."""

    def __init__(self, tasks: Iterable[Task]) -> None:
        self._it = iter(tasks)
        self._head = next(self._it, None)

    def __bool__(self) -> bool:
        return self._head is not None

    def popleft(self) -> Task:
        t = self._head
        assert t is not None
        self._head = next(self._it, None)
        return t

    def clear(self) -> None:
        self._it = iter(())
        self._head = None


# --------------------------------------------------------------------------------------
# the worker side


def _run_one(w: Workload, t: Task, seed: int) -> UnitResult:
    from . import output
    from .artifacts import artifact_json

    key: UnitKey = (w.name, t.variant, "+".join(t.bugs), seed, t.strategy, t.engine)
    if t.engine == "parallel":
        rec = check_parallel_engine()(w, variant=t.variant, bugs=t.bugs, seed=seed, duration=t.duration_s)
    else:
        rec = run_deterministic(
            w,
            variant=t.variant,
            bugs=t.bugs,
            seed=seed,
            strategy=t.strategy,
            max_steps=t.max_steps,
            livelock_steps=t.livelock_steps,
            pct_k=t.pct_k,
        )
    if str(rec.outcome) == "interrupted":
        # a parallel run cut short by a signal to this worker: not a result; recording it
        # would mark the unit done, so it is left for the rerun (a `killed` run is recorded)
        why = rec.options.get("stop_reason", "interrupted")
        return UnitResult(key, error=f"the run was {why}: not recorded, a rerun runs it again")
    res = UnitResult(key, outcome=str(rec.outcome), wall=rec.wall)
    failure = rec.result.failure
    reproduced = ""
    from_parallel: dict[str, Any] | None = None
    shrunk_steps = -1
    art_rec = rec  # the run the artifact holds: the shrunk one when shrinking
    if failure is not None:
        res.kind = failure.kind.value
        if t.replay and t.engine == "deterministic":
            reproduced = "yes" if _replays(w, t, seed, rec) else "no"
        elif t.replay and not rec.options.get("watchdog_only"):
            # a parallel failure: the deterministic run that reproduces it is the artifact
            # (it replays exactly and shrinks); else the raw trace (docs/parallel.md)
            from .parallel.reproduce import reproduce

            rep = reproduce(rec, guided_tries=CAMPAIGN_GUIDED_TRIES, budget_s=CAMPAIGN_GUIDED_S)
            reproduced = "yes" if rep.reproduced else "no"
            if rep.record is not None:
                art_rec = rep.record
                from_parallel = {"engine": "parallel", "by": rep.how, "reason": rep.reason,
                                 "failure": failure.to_json()}
        if t.shrink and art_rec.engine == "deterministic":
            art_rec, shrunk_steps = _shrink(art_rec)
    run_id = output.run_id(rec)
    rel = f"artifacts/{run_id}.json" if failure is not None else ""
    # rows describe the run as it ran; only the artifact is shrunk
    res.rows = output.rows_for(rec, run_id, rel, campaign=t.campaign)
    for row in res.rows.get(FAILURES.file, ()):
        row["reproduced"] = reproduced
        row["shrunk_steps"] = shrunk_steps
    if failure is not None:
        doc = artifact_json(art_rec, run_id)
        if from_parallel is not None:
            doc["reproduced_from"] = from_parallel
        res.artifact = (rel, doc)
    return res


def _replays(w: Workload, t: Task, seed: int, rec: Any) -> bool:
    """Replay the recorded schedule strictly; reproduced when the same oracle fires."""
    try:
        again = run_deterministic(
            w,
            variant=t.variant,
            bugs=t.bugs,
            seed=seed,
            strategy=t.strategy,
            schedule=list(rec.result.schedule),
            strict=True,
            ops_override=rec.ops,
            max_steps=t.max_steps,
            livelock_steps=t.livelock_steps,
            pct_k=t.pct_k,
        )
    except ScheduleDiverged:  # the run is not the one recorded: not reproduced
        return False
    f = again.result.failure
    return f is not None and same_failure(f, rec.result.failure)


# A parallel failure's guided reproduction in a campaign: fewer tries than `pagerace run`.
CAMPAIGN_GUIDED_TRIES = 16
CAMPAIGN_GUIDED_S = 20.0
SHRINK_BUDGET_S = 5.0  # per failure: a campaign finds many, each gets a short shrink


def _shrink(rec: Any) -> tuple[Any, int]:
    """(shrunk record, its steps); the record unchanged and -1 without a shrinker."""
    try:
        from .shrink import shrink_record
    except ImportError:
        return rec, -1
    small = shrink_record(rec, budget_s=SHRINK_BUDGET_S).record
    if small.result.failure is None:  # pragma: no cover - the shrinker keeps the failure
        return rec, -1
    return small, int(small.result.steps)


def check_parallel_engine() -> Callable[..., Any]:
    """``pagerace.harness.parallel.run_parallel``.

    Raises:
        InvalidOption: this build has no parallel engine.
    """
    import importlib

    try:
        mod = importlib.import_module("pagerace.harness.parallel")
    except ModuleNotFoundError as e:
        if e.name not in ("pagerace.harness.parallel",):
            raise
        mod = None
    fn = getattr(mod, "run_parallel", None)
    if fn is None:
        raise InvalidOption(
            "--engine parallel: the parallel engine is not available in this build; "
            "use --engine deterministic"
        )
    return fn  # type: ignore[no-any-return,unused-ignore]


def run_task(t: Task) -> list[UnitResult]:
    """Worker entry point: run every seed of ``t``; a harness error in one unit is
    returned as that unit's ``error`` (nothing gets written for it, so a rerun retries)."""
    from .plugins import ensure_loaded

    ensure_loaded(t.plugins)
    w = workload_from_json(t.workload)
    out: list[UnitResult] = []
    for seed in t.seeds:
        try:
            out.append(_run_one(w, t, seed))
        except BadInput:
            raise
        except Exception:
            key: UnitKey = (w.name, t.variant, "+".join(t.bugs), seed, t.strategy, t.engine)
            out.append(UnitResult(key, error=traceback.format_exc()))
    return out


# --------------------------------------------------------------------------------------
# backends


class Backend(Protocol):
    jobs: int

    def submit(self, t: Task) -> Any: ...
    def cancel(self, f: Any) -> bool: ...
    def wait(self, futures: Sequence[Any], timeout: float) -> list[Any]: ...
    def result(self, f: Any) -> list[UnitResult]: ...
    def close(self, cancel: bool) -> None: ...


class _Done:
    def __init__(self, value: list[UnitResult]) -> None:
        self.value = value


class InlineBackend:
    """Runs each task in this process when it is submitted (``jobs=1``)."""

    jobs = 1
    depth = 1  # a submitted task has already run: nothing is ever ahead

    def submit(self, t: Task) -> _Done:
        return _Done(run_task(t))

    def cancel(self, f: _Done) -> bool:
        return False

    def wait(self, futures: Sequence[Any], timeout: float) -> list[Any]:
        return list(futures)

    def result(self, f: _Done) -> list[UnitResult]:
        return f.value

    def close(self, cancel: bool) -> None:
        pass


# --------------------------------------------------------------------------------------
# the output directory: done keys, repair, committing results


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as fh:
        r = csv.reader(fh)
        header = next(r, [])
        return header, [row for row in r if row]


def check_header(path: Path) -> None:
    """Refuse a file in the output directory written with another schema.

    Raises:
        BadInput: naming the file, what its header has and what this version writes.
    """
    schema = SCHEMAS[path.name]
    with path.open(newline="") as fh:
        header = next(csv.reader(fh), [])
    if header and header != schema.names:
        raise BadInput(
            f"{path}: its header does not match {path.name} schema version {schema.version} "
            f"(first differing column: {_first_diff(header, schema.names)}); use a new --out directory"
        )


def _first_diff(a: Sequence[str], b: Sequence[str]) -> str:
    for x, y in zip(a, b):
        if x != y:
            return f"{x!r} where {y!r} was expected"
    return f"{len(a)} columns where {len(b)} were expected"


def _truncate_partial_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with path.open("r+b") as fh:
            fh.truncate(cut)


def repair(out: Path) -> dict[str, int]:
    """Make the directory consistent after a crash: cut a partial last line, drop rows
    of ``failures/contention/outcomes.csv`` whose run is not in ``runs.csv``, and drop
    from ``runs.csv`` the runs a cut batch left without their contention
    (:func:`pagerace.reports.schema.uncovered_runs`; they run again, with their rows in
    the other files). A ``contention.csv`` of schema version 1 is upgraded in place
    first. Returns the number of rows removed per file."""
    removed: dict[str, int] = {}
    for s in SCHEMAS.values():
        p = out / s.file
        if p.exists():
            _truncate_partial_line(p)
            if s is CONTENTION:
                upgrade_contention(out)
            check_header(p)
    runs = out / RUNS.file
    have: set[str] = set()
    if runs.exists():
        header, rows = _read_rows(runs)
        i = header.index("run_id")
        have = {r[i] for r in rows if len(r) > i}
        cont = out / CONTENTION.file
        if cont.exists():
            ch, crows = _read_rows(cont)
            drop = uncovered_runs(
                (dict(zip(header, r)) for r in rows if len(r) == len(header)),
                (dict(zip(ch, r)) for r in crows if len(r) == len(ch)),
            )
            if drop:
                keep = [r for r in rows if len(r) > i and r[i] not in drop]
                removed[RUNS.file] = len(rows) - len(keep)
                _rewrite(runs, header, keep)
                have -= drop
    for s in (FAILURES, CONTENTION, OUTCOMES):
        p = out / s.file
        if not p.exists():
            continue
        header, rows = _read_rows(p)
        i = header.index("run_id")
        keep = [r for r in rows if len(r) > i and r[i] in have]
        if len(keep) != len(rows):
            removed[s.file] = len(rows) - len(keep)
            _rewrite(p, header, keep)
    return removed


def _rewrite(p: Path, header: list[str], rows: list[list[str]]) -> None:
    """Replace the CSV file ``p`` by ``header`` and ``rows`` (synced, then renamed)."""
    tmp = p.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)


def ensure_files(out: Path) -> None:
    """Create each of the four CSV files that does not exist yet, with its header only, so
    a campaign directory always has all four (a night without failures still has a
    ``failures.csv`` that loads as an empty table with the documented columns)."""
    for s in SCHEMAS.values():
        p = out / s.file
        if p.exists() and p.stat().st_size > 0:
            continue
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(s.names)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(buf.getvalue())
        os.replace(tmp, p)


def done_keys(out: Path) -> set[UnitKey]:
    """Keys of the units already in ``out/runs.csv``."""
    p = out / RUNS.file
    if not p.exists():
        return set()
    header, rows = _read_rows(p)
    idx = [header.index(c) for c in KEY_COLUMNS]
    keys: set[UnitKey] = set()
    for r in rows:
        w, v, b, s, st, e = (r[i] for i in idx)
        keys.add((w, v, b, int(s), st, e))
    return keys


def commit(out: Path, results: Sequence[UnitResult], writer: Any = None) -> int:
    """Write the artifacts of ``results``, then hand their rows to ``writer`` (a
    :class:`pagerace.harness.output.RowWriter`, which writes them with its next batch,
    ``runs.csv`` last); without a writer, write the rows now, as one batch. Returns the
    units committed (errors are not)."""
    good = [r for r in results if not r.error]
    for r in good:
        if r.artifact is not None:
            write_json_atomic(out / r.artifact[0], r.artifact[1])
    if writer is None:
        with RowWriter(out) as w:
            for r in good:
                w.add(r.rows)
    else:
        for r in good:
            writer.add(r.rows)
    return len(good)


# --------------------------------------------------------------------------------------
# the campaign loop


@dataclass
class Progress:
    """What a progress callback sees after each batch of rows written (units whose rows
    are on disk: ``done``, ``failed``, ``last``) and after each harness error."""

    total: int
    done: int = 0
    failed: int = 0
    errors: int = 0
    elapsed: float = 0.0
    last: list[UnitResult] = field(default_factory=list)


@dataclass
class CampaignResult:
    out: Path
    plan: Plan
    planned: int  # units in the plan (runnable configurations)
    already: int  # units found done in the directory
    ran: int  # units run and committed now
    failed: int  # of those, failed
    errors: list[UnitResult]
    skips: list[Skip]
    repaired: dict[str, int]
    stopped: str  # "", "budget", "interrupted", "killed" or "errors"
    not_run: int  # units left for a rerun
    elapsed: float
    killed: str = ""  # stopped == "killed": which worker, which signal

    @property
    def rate(self) -> float:
        return self.ran / self.elapsed if self.elapsed > 0 else 0.0


def _chunk_for(plan: Plan, n_units: int, jobs: int) -> int:
    if plan.chunk > 0:
        return plan.chunk
    return max(1, min(8, n_units // max(1, jobs * 16)))


def resolve_workloads(plan: Plan) -> dict[str, Workload]:
    ws: dict[str, Workload] = {}
    for n in plan.workloads:
        w = load_workload(n)
        check_fits(w, f"workload {n!r}")
        check_buildable(w, f"workload {n!r}")
        if w.name in ws and ws[w.name] != w:
            raise InvalidOption(
                f"two workloads are named {w.name!r}; rename one (workloads: {', '.join(plan.workloads)})"
            )
        ws[w.name] = w
    return ws


def run_campaign(
    plan: Plan,
    out: str | os.PathLike[str],
    *,
    backend: Backend | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    limit_units: int | None = None,
    on_start: Callable[[int, int], None] | None = None,
    batch_runs: int | None = None,
) -> CampaignResult:
    """Run (or resume) ``plan`` into ``out``.

    Args:
        plan: the campaign.
        out: output directory (created; reused to resume).
        backend: where tasks run; default: in-process for ``plan.jobs == 1``, else a
            local process pool.
        on_progress: called in the parent after a task whose rows completed a batch
            written to disk (``Progress.done`` counts the units on disk), after a harness
            error, and once at the end. A
            ``KeyboardInterrupt`` raised from it (or anywhere in the loop) stops the
            campaign the way Ctrl-C does.
        limit_units: run at most this many of the remaining units (tests, dry slices).
        on_start: called once with (units to run, units already done) before any runs.
        batch_runs: units per batch of rows (default: the RowWriter's, 500); a batch is
            also written once its oldest unit was taken a second before.

    Raises:
        BadInput: a file in ``out`` with another schema; bad plan values.
        HarnessInternalError: the worker pool broke (a worker died).
    """
    t0 = time.perf_counter()
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    repaired = repair(outp)
    ensure_files(outp)
    workloads = resolve_workloads(plan)
    units, skips = expand(plan, workloads)
    done = done_keys(outp)
    already = sum(1 for k in done if units.has(k))
    todo: Iterable[Unit] = (u for u in units if u.key not in done)
    total = len(units) - already
    if limit_units is not None:
        todo = itertools.islice(todo, limit_units)
        total = min(total, limit_units)
    own = backend is None
    if backend is None:
        backend = InlineBackend() if plan.jobs == 1 else PoolBackend(plan.jobs, task=run_task)
    tasks = _TaskQueue(make_tasks(plan, todo, workloads, _chunk_for(plan, total, backend.jobs)))
    deadline = t0 + plan.budget_s if plan.budget_s else None
    # tasks submitted ahead, so no worker idles while the parent commits
    depth = getattr(backend, "depth", 2 * backend.jobs)
    prog = Progress(total=total)
    if on_start is not None:
        on_start(total, already)
    inflight: dict[Any, Task] = {}
    stopped = ""
    errors: list[UnitResult] = []
    stopped_box: list[str] = []  # set from take(): "errors"
    cancel = False
    killed = ""

    # Units whose rows the writer holds, not yet on disk: they count in `prog` only once
    # the flush that wrote them returned, and the progress callback hears of them after
    # the task that filled the batch was handed over whole (a Ctrl-C raised from the
    # callback never leaves half a task outside the writer).
    unflushed: list[UnitResult] = []
    reported = [0]  # writer.flushes when the callback was last called

    def flushed(n: int) -> None:
        batch, unflushed[:n] = unflushed[:n], []
        prog.done += len(batch)
        prog.failed += sum(r.outcome == "failed" for r in batch)
        prog.last = batch

    writer = RowWriter(outp, on_flush=flushed, batch_runs=batch_runs or BATCH_RUNS)

    def report(now: bool = False) -> None:
        if on_progress is not None and (now or writer.flushes != reported[0]):
            reported[0] = writer.flushes
            prog.elapsed = time.perf_counter() - t0
            on_progress(prog)

    def take(results: list[UnitResult]) -> None:
        good = [r for r in results if not r.error]
        bad = [r for r in results if r.error]
        for r in good:  # one unit per add: a flush writes exactly the units added before it
            unflushed.append(r)
            commit(outp, [r], writer)
        if bad:
            errors.extend(bad)
            prog.errors += len(bad)
            prog.last = bad
        report(now=bool(bad))
        if prog.errors >= ERROR_STOP and prog.errors > prog.done + len(unflushed) and not stopped_box:
            # most units hit a harness error: the build is broken, stop burning the night
            stopped_box.append("errors")
            tasks.clear()

    try:
        try:
            while tasks or inflight:
                while tasks and len(inflight) < depth:
                    if deadline is not None and time.perf_counter() >= deadline:
                        stopped = "budget"
                        tasks.clear()
                        break
                    t = tasks.popleft()
                    inflight[backend.submit(t)] = t
                if not inflight:
                    break
                came = backend.wait(list(inflight), timeout=0.5)
                for f in came:
                    inflight.pop(f)
                    take(backend.result(f))
                if came:
                    continue
                # nothing came back for a while (long units): the batch waiting in the
                # writer is written once it is due, not only when the next unit arrives
                writer.tick()
                report()
                why = _stalled(backend)
                if why is not None:
                    # nothing can run (issue 10 item 9: a Dask cluster without workers
                    # made the campaign wait forever, budget or not)
                    raise BackendStalled(why)
                now = time.perf_counter()
                if deadline is not None and now >= deadline + _budget_grace(plan.budget_s):
                    # units still out long after the budget ran out are abandoned (a
                    # rerun runs them): the budget bounds the campaign, not only its starts
                    stopped = "budget"
                    tasks.clear()
                    for f in list(inflight):
                        backend.cancel(f)
                    abandoned = len(inflight)
                    inflight.clear()
                    cancel = abandoned > 0
        except KeyboardInterrupt:
            stopped = "interrupted"
            tasks.clear()
            # tasks queued but not started are cancelled; the running ones finish and are
            # kept; a second Ctrl-C abandons them too
            for f in list(inflight):
                if backend.cancel(f):
                    inflight.pop(f)
            try:
                while inflight:
                    for f in backend.wait(list(inflight), timeout=0.5):
                        inflight.pop(f)
                        with contextlib.suppress(KeyboardInterrupt):
                            take(backend.result(f))
            except KeyboardInterrupt:
                cancel = True
    except BackendStalled as e:
        cancel = True
        raise InvalidOption(
            f"{e}; {prog.done} finished unit(s) are saved in {outp}; rerun the same command to resume"
        ) from None
    except BrokenProcessPool as e:
        cancel = True
        why = _pool_death(backend)
        if why is None:
            raise HarnessInternalError(
                f"a campaign worker died ({e}); the finished units are in {outp}, rerun to resume"
            ) from e
        stopped, killed = "killed", why
    except BaseException:
        cancel = True
        raise
    finally:
        try:
            writer.close()  # the rows of every unit taken, whatever stopped the loop
        finally:
            if own:
                backend.close(cancel=cancel or bool(inflight))
    with contextlib.suppress(KeyboardInterrupt):
        report()  # the last batch
    ran = prog.done
    stopped = stopped or (stopped_box[0] if stopped_box else "")
    return CampaignResult(
        out=outp,
        plan=plan,
        planned=len(units),
        already=already,
        ran=ran,
        failed=prog.failed,
        errors=errors,
        skips=skips,
        repaired=repaired,
        stopped=stopped,
        not_run=len(units) - already - ran,
        elapsed=time.perf_counter() - t0,
        killed=killed,
    )


class BackendStalled(InvalidOption):
    """The backend cannot run anything (a Dask cluster with no running worker for a while)."""


def _stalled(backend: Backend) -> str | None:
    """The backend's reason why nothing can run (Dask: no running worker for a while)."""
    check = getattr(backend, "stalled", None)
    return check() if check is not None else None


def _budget_grace(budget_s: float | None) -> float:
    """How long after the budget the campaign waits for units still out: a tenth of the
    budget, between 5 s and 2 min."""
    return min(120.0, max(5.0, 0.1 * (budget_s or 0.0)))


def _pool_death(backend: Backend) -> str | None:
    """Why a pool worker died, when a signal from outside killed it (the OOM killer's
    SIGKILL, an operator's kill): a harness event to report and resume from, not a bug
    in pagerace. None when it crashed by its own fault (a crash signal or an exit)."""
    outside, why = worker_death(backend, "campaign worker")
    return why if outside else None


# --------------------------------------------------------------------------------------
# the summary table (from runs.csv, standard library only: the harness has no pandas)


@dataclass(frozen=True)
class SummaryRow:
    workload: str
    variant: str
    bugs: str
    units: int
    clean: int
    budget: int
    failed: int
    kinds: str

    @property
    def rate(self) -> float:
        return self.failed / self.units if self.units else 0.0


def summarize(out: str | os.PathLike[str], campaign: str | None = None) -> list[SummaryRow]:
    """Per workload × variant × bugs of ``out/runs.csv``: units, outcomes and failure kinds."""
    p = Path(out) / RUNS.file
    if not p.exists():
        return []
    header, rows = _read_rows(p)
    ix = {c: header.index(c) for c in ("campaign", "workload", "variant", "bugs", "outcome", "failure_kind")}
    groups: dict[tuple[str, str, str], Counter[str]] = {}
    kinds: dict[tuple[str, str, str], Counter[str]] = {}
    for r in rows:
        if campaign is not None and r[ix["campaign"]] != campaign:
            continue
        g = (r[ix["workload"]], r[ix["variant"]], r[ix["bugs"]])
        groups.setdefault(g, Counter())[r[ix["outcome"]]] += 1
        if r[ix["outcome"]] == "failed":
            kinds.setdefault(g, Counter())[r[ix["failure_kind"]] or "?"] += 1
    out_rows = []
    for g in sorted(groups):
        c = groups[g]
        k = kinds.get(g, Counter())
        out_rows.append(
            SummaryRow(
                *g,
                units=sum(c.values()),
                clean=c["clean"],
                budget=c["budget"],
                failed=c["failed"],
                kinds=", ".join(f"{n} {m}" for n, m in sorted(k.items(), key=lambda x: (-x[1], x[0]))),
            )
        )
    return out_rows


def format_summary(rows: Sequence[SummaryRow]) -> str:
    """The summary as a fixed-width text table."""
    head = ("workload", "variant", "bugs", "units", "clean", "budget", "failed", "rate", "failures by kind")
    body = [
        (
            r.workload,
            r.variant,
            r.bugs or "-",
            str(r.units),
            str(r.clean),
            str(r.budget),
            str(r.failed),
            f"{100 * r.rate:.1f}%",
            r.kinds or "-",
        )
        for r in rows
    ]
    if not body:
        return "(no runs)"
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    right = {3, 4, 5, 6, 7}

    def line(cells: Sequence[str]) -> str:
        cols = (c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells))
        return "  ".join(cols).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def plan_with(plan: Plan, **changes: Any) -> Plan:
    """A copy of ``plan`` with ``changes`` (validated again)."""
    return replace(plan, **changes)


def describe_result(res: CampaignResult) -> list[str]:
    """Human lines about how the campaign went (the command prints them)."""
    lines = []
    for s in res.skips:
        bugs = " +" + "+".join(s.bugs) if s.bugs else ""
        lines.append(f"skipped {s.workload} × {s.variant}{bugs}: {s.reason}")
    for f, n in sorted(res.repaired.items()):
        if f == RUNS.file:
            lines.append(f"repaired {f}: removed {n} run(s) a crash left without their contention rows "
                         "(they run again)")
        else:
            lines.append(f"repaired {f}: removed {n} row(s) of runs interrupted before their runs.csv row")
    lines.append(
        f"{res.ran} unit(s) run in {res.elapsed:.1f}s ({res.rate:.1f}/s), {res.failed} failed; "
        f"{res.already} already done in {res.out}; plan: {res.planned} unit(s)"
    )
    if res.errors:
        first = res.errors[0]
        lines.append(
            f"{len(res.errors)} unit(s) hit a harness error and were not recorded (rerun retries them); "
            f"first: {first.key}:\n{first.error.rstrip()}"
        )
    if res.stopped == "budget":
        lines.append(f"budget reached: {res.not_run} unit(s) not run; rerun the same command to continue")
    elif res.stopped == "errors":
        lines.append(
            f"stopped: more units hit a harness error than ran; {res.not_run} unit(s) not run "
            "(fix the error above, then rerun the same command)"
        )
    elif res.stopped == "killed":
        lines.append(
            f"stopped: {res.killed} (not a kernel failure); finished units are saved in {res.out}; "
            f"{res.not_run} unit(s) not run; rerun the same command to resume"
        )
    elif res.stopped == "interrupted":
        lines.append(
            f"interrupted: finished units are saved in {res.out}; {res.not_run} unit(s) not run; "
            "rerun the same command to resume"
        )
    return lines


def plan_json(plan: Plan) -> str:
    """The plan as JSON (written to ``out/campaign.json`` for the record)."""
    d = {k: getattr(plan, k) for k in plan.__dataclass_fields__}
    d["seeds"] = str(plan.seeds)
    return json.dumps(d, indent=2, default=list)

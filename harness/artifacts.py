"""Failure artifacts: one JSON file per failure, and their strict replay.

An artifact holds everything needed to run the failing run again, and nothing that
depends on the machine that found it: the fully resolved workload (its raw TOML table,
limits included), variant, bug toggles, injected faults, engine, seed, strategy and its
parameters, the limits, every actor's operation list, and the recorded schedule, one
actor id per step, run-length encoded as ``[[actor, count], ...]``. Next to that it keeps
what was seen (the :class:`~pagerace.core.machine.errors.Failure`, the trace fingerprint) and a
readable list of the last steps before the failure (``[step, actor, function:line,
site]``), for a human who wants to see the interleaving without replaying it.

The format is versioned by :data:`ARTIFACT_SCHEMA`. :func:`load_artifact` refuses a file
of another version with a message naming both, the way Hypothesis refuses a
``@reproduce_failure`` blob from another version: a schedule recorded by another layout
means another run.

:func:`replay` reruns an artifact on the deterministic engine with its schedule. A
deterministic-engine artifact replays strictly (the recorded actor must be runnable at
every step, else the replay has diverged); a parallel-engine artifact replays leniently
(the schedule comes from a global ticket order, which the deterministic engine follows
as closely as the model allows).

Files are written atomically (a temporary file in the same directory, then
``os.replace``), so a crash or a bad input never leaves a partial artifact behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..core.machine.errors import CorruptArtifact, Failure, FailureKind, InvalidOption, InvalidWorkload
from ..workloads import Workload, workload_from_json, workload_to_json
from .runner import RunRecord, limits_for, run_deterministic, validate_variant_bugs
from .schedulers import STRATEGIES, ScheduleDiverged

ARTIFACT_SCHEMA = 1
#: The most steps a run may take (a step budget, a recorded schedule): ~1 GB of schedule.
MAX_STEPS = 100_000_000
STEP_LIST_LEN = 200  # readable steps kept before the failure

REQUIRED_KEYS = (
    "schema",
    "pagerace_version",
    "workload",
    "variant",
    "bugs",
    "engine",
    "seed",
    "strategy",
    "strategy_params",
    "limits",
    "schedule",
    "ops",
    "failure",
    "fingerprint",
)


# ----------------------------------------------------------------------------------------
# Schedules


def rle_encode(schedule: Iterable[int]) -> list[list[int]]:
    """``[0, 0, 1, 0]`` → ``[[0, 2], [1, 1], [0, 1]]``."""
    out: list[list[int]] = []
    for aid in schedule:
        aid = int(aid)
        if out and out[-1][0] == aid:
            out[-1][1] += 1
        else:
            out.append([aid, 1])
    return out


def rle_decode(runs: Iterable[Sequence[int]]) -> list[int]:
    out: list[int] = []
    for aid, count in runs:
        out.extend([int(aid)] * int(count))
    return out


# ----------------------------------------------------------------------------------------
# The artifact record


@dataclass(frozen=True)
class Artifact:
    """A loaded, validated failure artifact.

    Attributes:
        path: where it was read from ("" if built in memory).
        workload: the fully resolved workload.
        schedule: the recorded schedule, decoded (one actor id per step).
        ops: each actor's operation list, as the run executed it.
        failure: what the run saw.
        steps: the readable step list (``[step, actor, function:line, site]``).
        raw: the JSON document as read.
    """

    path: str
    pagerace_version: str
    workload: Workload
    variant: str
    bugs: tuple[str, ...]
    faults: tuple[str, ...]
    engine: str
    seed: int
    strategy: str
    strategy_params: dict[str, Any]
    limits: dict[str, int]
    schedule: list[int]
    ops: list[list[tuple[Any, ...]]]
    failure: Failure
    fingerprint: str
    steps: list[list[Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def _trace_steps(record: RunRecord) -> tuple[list[list[Any]], str]:
    """The readable step list of ``record``: its own trace if it has one, else a traced
    rerun on the deterministic engine with the recorded schedule."""
    trace = record.result.trace
    note = ""
    if not trace:
        try:
            rerun = _rerun(
                record.workload,
                variant=record.variant,
                bugs=record.bugs,
                seed=record.seed,
                strategy=record.strategy,
                options=record.options,
                limits=_limits_of(record),
                schedule=list(record.result.schedule),
                ops=record.ops,
                strict=record.engine == "deterministic",
                trace=True,
            )
            trace = rerun.result.trace
            if record.engine != "deterministic":
                note = "steps of a lenient deterministic replay of the parallel run"
        except ScheduleDiverged as exc:
            return [], f"no step list: the traced rerun diverged ({exc})"
    names = [a.name for a in record.actors]
    steps = [
        [int(st), names[aid] if 0 <= aid < len(names) else str(aid), where, site]
        for st, aid, where, site in trace[-STEP_LIST_LEN:]
    ]
    return steps, note


def last_touch(record: RunRecord) -> dict[str, Any] | None:
    """For a failure seen by a global oracle (``sites`` all ``global_invariants...``),
    the last kernel path that took the lock of one of its pages before it was seen:
    ``{"actor", "where" (function:line), "site", "step", "lock"}``; ``None`` for a local
    failure, a failure naming no page, or when no path took those pages' locks. The
    report titles the failure with it (``lost_write after migrate_vma_pages:412``)
    rather than with the oracle's name. Costs one traced rerun, for those failures only.
    """
    f = record.result.failure
    if f is None or not f.pages or not f.sites:
        return None
    if not all(s.startswith("global_invariants") for s in f.sites):
        return None
    from .steps import step_events  # steps imports runner/explore: keep this module light

    try:
        events, _again = step_events(record)
    except ScheduleDiverged:
        return None
    want = {f"page:{p}" for p in f.pages}
    for e in reversed(events):
        if e.what == "takes" and e.lock in want and e.step <= max(f.step, 0) + 1:
            return {"actor": e.actor, "where": e.where, "site": e.site, "step": e.step, "lock": e.lock}
    return None


def _limits_of(record: RunRecord) -> dict[str, int]:
    lim = record.options.get("limits")
    if isinstance(lim, dict):
        return {k: int(v) for k, v in lim.items()}
    base = limits_for(record.workload)
    return {
        "max_steps": base.max_steps,
        "livelock_steps": base.livelock_steps,
        "check_every": base.check_every,
    }


def artifact_json(record: RunRecord, run_id: str = "") -> dict[str, Any]:
    """The artifact document of a failed run.

    Raises:
        ValueError: the run did not fail (there is nothing to write).
    """
    failure = record.result.failure
    if failure is None:
        raise ValueError("artifact_json() needs a failed run")
    steps, note = _trace_steps(record)
    doc: dict[str, Any] = {
        "schema": ARTIFACT_SCHEMA,
        "pagerace_version": __version__,
        "created": time.time(),
        "run_id": run_id,
        "workload": workload_to_json(record.workload),
        "variant": record.variant,
        "bugs": list(record.bugs),
        "faults": list(record.options.get("faults", ())),
        "engine": record.engine,
        "seed": int(record.seed),
        "strategy": record.strategy,
        "strategy_params": {
            "pct_depth": int(record.options.get("pct_depth", 3)),
            "quantum": int(record.options.get("quantum", 1)),
            "scheduler": record.result.scheduler,
        },
        "limits": _limits_of(record),
        "actors": [a.name for a in record.actors],
        "ops": [[list(op) for op in ops] for ops in record.ops],
        "schedule_steps": len(record.result.schedule),
        "schedule": rle_encode(record.result.schedule),
        "failure": failure.to_json(),
        "fingerprint": record.result.fingerprint,
        "steps": steps,
    }
    if note:
        doc["steps_note"] = note
    from .plugins import needed_by

    plugins = needed_by(
        record.variant,
        sorted({a.kind for a in record.workload.actors}),
        sorted({str(op[0]) for ops in record.ops for op in ops}),
    )
    if plugins:
        doc["plugins"] = plugins
    touch = last_touch(record)
    if touch is not None:
        doc["last_touch"] = touch
    return doc


def write_json_atomic(path: str | os.PathLike[str], doc: Any) -> Path:
    """Write ``doc`` as JSON to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(doc, indent=1, sort_keys=False, default=_json_default) + "\n"
    import tempfile  # here: tempfile imports shutil, bz2, lzma (start-up of every command)

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes it 0600; an artifact is read as the CSVs are (a CI job publishes
        # both): the CSVs' mode, 0644 under the umask (issue 10 item 10)
        os.fchmod(fd, 0o644 & ~_umask())
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    """This process's umask, read without changing it (from /proc), else by setting and
    restoring it."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _json_default(o: Any) -> Any:
    # numpy scalars and enums in scheduler descriptions and failure details
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "value"):
        return o.value
    if isinstance(o, (set, frozenset, tuple)):
        return sorted(o) if isinstance(o, (set, frozenset)) else list(o)
    return str(o)


def write_artifact(path: str | os.PathLike[str], record: RunRecord, run_id: str = "") -> Path:
    """Write the artifact of a failed run to ``path`` (atomically)."""
    return write_json_atomic(path, artifact_json(record, run_id))


# ----------------------------------------------------------------------------------------
# Loading


def _corrupt(path: str, why: str) -> CorruptArtifact:
    return CorruptArtifact(f"corrupt artifact {path!r}: {why}")


def _check_loaded(p: str, variant: Any, bugs: Any, version: Any) -> None:
    """An artifact that names a variant or bug this pagerace does not have (written by
    another version, or by one with a plugin that is not loaded here) is not corrupt:
    say what is missing.

    Raises:
        InvalidOption: naming the variant or bug and the ones loaded.
    """
    from ..core.bugs import CATALOG
    from ..core.variants import VARIANTS

    by = f"pagerace {version}" if isinstance(version, str) else "another pagerace"
    if isinstance(variant, str) and variant not in VARIANTS:
        raise InvalidOption(
            f"artifact {p!r} needs variant {variant!r}, which is not loaded in this pagerace "
            f"({__version__}; loaded: {', '.join(sorted(VARIANTS))}); it was written by {by}: "
            "load the plugin that provides it, or replay it with that version"
        )
    if isinstance(bugs, list):
        missing = [b for b in bugs if isinstance(b, str) and b not in CATALOG]
        if missing:
            raise InvalidOption(
                f"artifact {p!r} needs bug toggle {missing[0]!r}, which is not loaded in this "
                f"pagerace ({__version__}; see 'pagerace list --bugs'); it was written by {by}"
            )
def _check_plugins(p: str, d: dict[str, Any]) -> None:
    """An artifact of a plugin's variant, actor kind or operation, read where that plugin
    is not loaded, is not corrupt: name the plugin, what it provides and how to load it.

    Raises:
        InvalidOption: the artifact records a plugin for something this process lacks.
    """
    from .plugins import missing_for

    raw = d.get("workload")
    actors = raw.get("raw", {}).get("actor", []) if isinstance(raw, dict) else []
    kinds = [a["kind"] for a in actors if isinstance(a, dict) and isinstance(a.get("kind"), str)]
    ops_raw = d.get("ops")
    ops = sorted(
        {op[0] for ops in ops_raw if isinstance(ops, list) for op in ops if isinstance(op, list) and op
         and isinstance(op[0], str)}
    ) if isinstance(ops_raw, list) else []
    variant = d.get("variant")
    why = missing_for(d.get("plugins"), variant if isinstance(variant, str) else "", kinds, ops)
    if why is not None:
        raise InvalidOption(f"artifact {p!r} {why}")


def _int_field(path: str, d: dict[str, Any], key: str) -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise _corrupt(path, f"{key!r} must be an integer, not {v!r}")
    return v


def load_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Read and validate an artifact.

    Raises:
        CorruptArtifact: unreadable file, invalid JSON, a missing or ill-typed key, an
            unknown variant, bug or failure kind, or another schema version (the message
            names both versions).
    """
    p = str(path)
    try:
        text = Path(p).read_text()
    except OSError as exc:
        raise CorruptArtifact(f"cannot read artifact {p!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise _corrupt(p, "not a text file") from None
    except ValueError:  # a NUL byte in the path (UnicodeDecodeError is one too: above)
        raise CorruptArtifact(f"cannot read artifact {p!r}: not a valid path") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _corrupt(p, f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(d, dict):
        raise _corrupt(p, f"expected a JSON object, found {type(d).__name__}")
    if "schema" not in d:
        raise _corrupt(p, "no 'schema' key; is this a pagerace failure artifact?")
    if d["schema"] != ARTIFACT_SCHEMA:
        raise CorruptArtifact(
            f"artifact {p!r} has schema version {d['schema']!r} (written by pagerace "
            f"{d.get('pagerace_version', '?')}); this pagerace ({__version__}) reads schema "
            f"version {ARTIFACT_SCHEMA} only"
        )
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise _corrupt(p, f"missing key(s): {', '.join(missing)}")
    _check_plugins(p, d)
    try:
        w = workload_from_json(d["workload"])
    except InvalidWorkload as exc:
        raise _corrupt(p, f"its workload is invalid: {exc}") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise _corrupt(p, f"its 'workload' is malformed ({exc!r})") from None
    variant = d["variant"]
    bugs = d["bugs"]
    if (
        not isinstance(variant, str)
        or not isinstance(bugs, list)
        or not all(isinstance(b, str) for b in bugs)
    ):
        raise _corrupt(p, "'variant' must be a string and 'bugs' a list of strings")
    _check_loaded(p, variant, bugs, d.get("pagerace_version"))
    try:
        validate_variant_bugs(variant, bugs, w)
    except InvalidOption as exc:
        raise _corrupt(p, str(exc)) from None
    check_fits(w, f"artifact {p!r}")
    check_buildable(w, f"artifact {p!r}")
    seed = _int_field(p, d, "seed")
    if not 0 <= seed < 2**63:
        raise _corrupt(p, f"'seed' must be an integer in 0..2^63-1, not {seed}")
    limits = d["limits"]
    if not isinstance(limits, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in limits.values()
    ):
        raise _corrupt(p, f"'limits' must map names to non-negative integers, not {limits!r}")
    unknown = sorted(set(limits) - {"max_steps", "livelock_steps", "check_every"})
    if unknown:
        raise _corrupt(p, f"unknown limit(s) {', '.join(unknown)}")
    too_big = sorted(k for k, v in limits.items() if v > MAX_STEPS)
    if too_big:
        raise _corrupt(p, f"'limits' {too_big[0]} = {limits[too_big[0]]} is more than {MAX_STEPS:,}")
    n_actors = w.n_actors()
    sched_raw = d["schedule"]
    if not isinstance(sched_raw, list) or not all(
        isinstance(r, list)
        and len(r) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in r)
        and 0 <= r[0] < n_actors
        and r[1] > 0
        for r in sched_raw
    ):
        raise _corrupt(p, f"'schedule' must be a list of [actor, count] pairs with 0 <= actor < {n_actors}")
    # a schedule is never longer than its run's step budget: checked before it is decoded
    # (a count of 10**15 would take all memory)
    budget = int(limits.get("max_steps", limits_for(w).max_steps))
    length = sum(r[1] for r in sched_raw)
    if length > budget:
        raise _corrupt(
            p, f"'schedule' has {length:,} steps, more than its step budget limits.max_steps = {budget:,}"
        )
    ops = _load_ops(p, d["ops"], n_actors, w)
    try:
        failure = Failure.from_json(d["failure"])
    except ValueError:
        raise _corrupt(
            p,
            f"unknown failure kind {d['failure'].get('kind')!r}; valid kinds: "
            + ", ".join(k.value for k in FailureKind),
        ) from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise _corrupt(p, f"'failure' is malformed ({exc!r})") from None
    engine = d["engine"]
    if engine not in ("deterministic", "parallel"):
        raise _corrupt(p, f"unknown engine {engine!r}; valid engines: deterministic, parallel")
    strategy = d["strategy"]
    params = d["strategy_params"]
    if not isinstance(strategy, str) or not isinstance(params, dict):
        raise _corrupt(p, "'strategy' must be a string and 'strategy_params' an object")
    for key, lo, hi in (("pct_depth", 1, 10_000), ("quantum", 1, MAX_STEPS)):
        v = params.get(key, lo)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise _corrupt(p, f"'strategy_params' {key} must be an integer in {lo}..{hi:,}, not {v!r}")
    faults = d.get("faults", [])
    if not isinstance(faults, list) or not all(isinstance(f, str) for f in faults):
        raise _corrupt(p, "'faults' must be a list of fault names")
    from ..core.faults import validate_faults

    try:
        validate_faults(faults)
    except InvalidOption as exc:
        raise _corrupt(p, f"'faults': {exc}") from None
    steps = d.get("steps", [])
    return Artifact(
        path=p,
        pagerace_version=str(d["pagerace_version"]),
        workload=w,
        variant=variant,
        bugs=tuple(bugs),
        faults=tuple(str(f) for f in faults),
        engine=engine,
        seed=seed,
        strategy=strategy,
        strategy_params=params,
        limits=dict(limits),
        schedule=rle_decode(sched_raw),
        ops=ops,
        failure=failure,
        fingerprint=str(d["fingerprint"]),
        steps=steps if isinstance(steps, list) else [],
        raw=d,
    )


def _load_ops(p: str, raw: Any, n_actors: int, w: Workload | None = None) -> list[list[tuple[Any, ...]]]:
    from ..core.actors import OPS

    if not isinstance(raw, list) or len(raw) != n_actors:
        raise _corrupt(p, f"'ops' must hold one operation list per actor ({n_actors})")
    out: list[list[tuple[Any, ...]]] = []
    for aid, ops in enumerate(raw):
        if not isinstance(ops, list):
            raise _corrupt(p, f"'ops' of actor {aid} is not a list")
        lst = []
        for i, op in enumerate(ops):
            if not isinstance(op, list) or not op or not isinstance(op[0], str):
                raise _corrupt(p, f"actor {aid}: malformed operation {op!r}")
            if op[0] not in OPS:
                raise _corrupt(
                    p, f"actor {aid}: unknown operation {op[0]!r}; known: {', '.join(sorted(OPS))}"
                )
            if w is not None:
                why = check_op(op, w)
                if why:
                    raise _corrupt(p, f"'ops' actor {aid} operation {i} {op!r}: {why}")
            lst.append(tuple(op))
        out.append(lst)
    return out


# What each argument of an operation names, by operation (core/actors.py OPS and the modules
# that register more). An operation not listed here (one a plugin registers) gets the
# generic checks: its arity from its signature, integer arguments of bounded size.
OP_ARGS: dict[str, tuple[str, ...]] = {
    "read": ("mm", "page"),
    "write": ("mm", "page"),
    "migrate_to_device": ("dev", "mm", "start", "end"),
    "migrate_to_system": ("dev", "mm", "start", "end"),
    "evict": ("dev",),
    "idle": ("count",),
    "munmap": ("mm", "start", "end"),
    "madv_dontneed": ("mm", "start", "end"),
    "child_exit": ("mm",),
    "fork": ("mm", "mm"),
    "mremap": ("mm", "page", "npages", "page"),
    "pin_dma": ("mm", "page", "pin_mode", "count", "flag"),
    "file_read": ("file", "fpage", "fcount", "mm?", "page?"),
    "file_write": ("file", "fpage"),
    "compact": ("compact_mode", "count"),
    "readahead": ("count", "count", "count"),
    "reclaim": ("count", "count"),
}
MAX_OP_COUNT = 1 << 31  # any count an operation takes (idle steps, pins held...)


def check_op(op: Sequence[Any], w: Workload) -> str:
    """Why ``op`` cannot run on ``w``'s geometry ("" when it can): its arity, integer
    arguments, and every mm, device, page, file and mode it names in range (a page just
    past the end of an mm would read the next mm's page table)."""
    import inspect

    from ..core.actors import OPS
    from ..core.mm.gup import MODE_NAMES

    name, args = op[0], list(op[1:])
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in args):
        return "arguments must be integers"
    params = list(inspect.signature(OPS[name]).parameters.values())[2:]  # after (k, a)
    need = sum(1 for q in params if q.default is inspect.Parameter.empty)
    if not need <= len(args) <= len(params):
        n = str(need) if need == len(params) else f"{need} to {len(params)}"
        return f"takes {n} arguments, not {len(args)}"
    g = w.geometry
    ppm, ppf = g.pages_per_mm, g.pages_per_file
    bounds = {
        "mm": (0, g.mms - 1, "geometry.mms"),
        "dev": (0, g.devices - 1, "geometry.devices"),
        "page": (0, ppm - 1, "geometry.pages_per_mm"),
        "start": (0, ppm - 1, "geometry.pages_per_mm"),
        "end": (1, ppm, "geometry.pages_per_mm"),
        "npages": (0, ppm, "geometry.pages_per_mm"),
        "file": (0, g.files - 1, "geometry.files"),
        "fpage": (0, ppf - 1, "geometry.pages_per_file"),
        "fcount": (0, ppf, "geometry.pages_per_file"),
        "pin_mode": (0, len(MODE_NAMES) - 1, "pin modes " + ", ".join(MODE_NAMES)),
        "compact_mode": (0, 2, "modes 0 async, 1 sync-light, 2 sync"),
        "count": (0, MAX_OP_COUNT - 1, "a count"),
        "flag": (0, 1, "0 or 1"),
    }
    kinds = OP_ARGS.get(name, ("count",) * len(args))
    for i, (kind, v) in enumerate(zip(kinds, args)):
        optional = kind.endswith("?")
        kind = kind.rstrip("?")
        if optional and v == -1:
            continue
        lo, hi, what = bounds[kind] if name in OP_ARGS else (-MAX_OP_COUNT, MAX_OP_COUNT - 1, "")
        if not lo <= v <= hi:
            label = params[i].name if i < len(params) else f"argument {i + 1}"
            rng = f"{lo}..{hi}" if hi >= lo else "none (the geometry has none)"
            return f"{label} {v} is out of range; valid: {rng}" + (f" ({what})" if what else "")
    if name in OP_ARGS and "start" in kinds and "end" in kinds:
        start, end = args[kinds.index("start")], args[kinds.index("end")]
        if not start < end:
            return f"the range [{start}, {end}) is empty"
    if name == "file_read" and args[1] + args[2] > ppf:
        return f"pages {args[1]}..{args[1] + args[2] - 1} run past the file's {ppf} pages"
    if name == "mremap" and args[1] + args[2] > ppm:
        return f"source pages {args[1]}..{args[1] + args[2] - 1} run past the mm's {ppm} pages"
    return ""


def check_fits(w: Workload, what: str) -> None:
    """Refuse a workload whose model would not fit in this machine's memory (its
    geometry's sizes are each bounded, their product is not).

    Raises:
        InvalidWorkload: naming the bytes needed and the bytes available.
    """
    from ..core.machine.layout import Layout

    need = Layout(w.geometry).words * 8
    avail = _available_memory()
    if need > avail // 2:
        raise InvalidWorkload(
            f"{what}: the model of workload {w.name!r} needs {need / 2**20:,.0f} MiB "
            f"(geometry {w.geometry}), more than half of this machine's available "
            f"{avail / 2**20:,.0f} MiB; use a smaller geometry"
        )


def check_buildable(w: Workload, what: str) -> None:
    """Refuse a workload whose initial memory picture cannot be built (the schema checks
    each table; the model builder finds what they say together: two VMAs that overlap,
    pages shared from an mm that has none...). The builder raises ``ValueError`` for such
    input on purpose; it is bad input, exit 2, never an internal error.

    Raises:
        InvalidWorkload: naming the workload and what the builder refused.
    """
    from .runner import build_state

    try:
        build_state(w).close()
    except ValueError as exc:
        raise InvalidWorkload(f"{what}: workload {w.name!r} cannot be built: {exc}") from None


def _available_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - no psutil or no /proc
        return 1 << 34


# ----------------------------------------------------------------------------------------
# Replay


def _rerun(
    w: Workload,
    *,
    variant: str,
    bugs: Sequence[str],
    seed: int,
    strategy: str,
    options: dict[str, Any],
    limits: dict[str, int],
    schedule: list[int],
    ops: list[list[tuple[Any, ...]]],
    strict: bool,
    trace: bool,
    faults: Sequence[str] | None = None,
) -> RunRecord:
    return run_deterministic(
        w,
        variant=variant,
        bugs=bugs,
        seed=seed,
        strategy=strategy if strategy in STRATEGIES else "random",
        pct_depth=int(options.get("pct_depth", 3)),
        quantum=int(options.get("quantum", 1)),
        schedule=schedule,
        strict=strict,
        trace=trace,
        faults=tuple(options.get("faults", ())) if faults is None else tuple(faults),
        max_steps=limits.get("max_steps"),
        livelock_steps=limits.get("livelock_steps"),
        check_every=limits.get("check_every"),
        ops_override=ops,
    )


def same_failure(a: Failure, b: Failure) -> bool:
    """Two failures count as the same when their kinds share a family (a deadlock and a
    livelock are both hangs)."""
    return a.kind.family == b.kind.family


def replay(art: Artifact, trace: bool = False) -> tuple[RunRecord, bool, str]:
    """Run ``art`` again on the deterministic engine with its recorded schedule.

    Returns:
        ``(record, reproduced, reason)``: the replay's record, whether it failed the same
        way (same :attr:`FailureKind.family`), and a one-line explanation.
    """
    strict = art.engine == "deterministic"
    kw: dict[str, Any] = dict(
        variant=art.variant,
        bugs=art.bugs,
        seed=art.seed,
        strategy=art.strategy,
        options=art.strategy_params,
        limits=art.limits,
        schedule=art.schedule,
        ops=art.ops,
        trace=trace,
        faults=art.faults,
    )
    try:
        rec = _rerun(art.workload, strict=strict, **kw)
    except ScheduleDiverged as exc:
        rec = _rerun(art.workload, strict=False, **kw)
        other = (
            f"; the artifact was written by pagerace {art.pagerace_version}, this is {__version__}"
            if art.pagerace_version != __version__
            else ""
        )
        why = (
            f"the schedule diverged at {exc}: the run is not the one recorded (its model, "
            f"workload or toggles differ{other}); a lenient replay ended {_ended(rec)}"
        )
        return rec, False, why
    got = rec.result.failure
    want = art.failure
    if got is None:
        return (
            rec,
            False,
            (f"expected {want.kind.value} at step {want.step}, but the replay ended {_ended(rec)}"),
        )
    if not same_failure(got, want):
        return (
            rec,
            False,
            (
                f"expected {want.kind.value} at step {want.step}, but the replay failed "
                f"differently: {got.headline()}"
            ),
        )
    extra = ""
    if strict and rec.result.fingerprint != art.fingerprint:
        extra = f" (fingerprint {rec.result.fingerprint} differs from the recorded {art.fingerprint})"
    return rec, True, got.headline() + extra


def _ended(rec: RunRecord) -> str:
    r = rec.result
    if r.failure is not None:
        return f"failed: {r.failure.headline()}"
    return f"{r.outcome.value} after {r.steps} steps"

"""A parallel failure, made a deterministic artifact: three tries, then an honest no.

A parallel run's trace (the steps merged by ticket, ``trace.py``) is not an exact total
order: two workers' steps overlap in real time, and a replay that serialises them can
take another branch at a trylock and go on into another run. :func:`reproduce` makes
three tries on the deterministic engine, over the operation lists the parallel run
started, and stops at the first that fails the same way:

1. ``ticket-order``: :class:`~.trace.TicketOrder` (blocked actors deferred);
2. ``lenient``: what ``pagerace replay`` does with a parallel artifact (the next
   runnable actor when the recorded one cannot run);
3. ``guided``: a bounded search guided by the trace. Each try follows the recorded
   order (ticket order) up to a cut point, then continues with a seeded random walk
   or PCT. Cut points start at the replay's first deferred step (where it visibly left
   the recorded run) and at the end of the trace, and step back from there, since a
   replay often diverged silently some steps before it had to defer. It accepts only a
   run that fails with the same :class:`~pagerace.core.machine.errors.FailureKind`
   (``migration_entry_left`` for ``migration_entry_left``, not any hang).

Tries 1 and 2 accept the same failure family (``deadlock`` and ``livelock`` are both a
hang, as ``pagerace replay`` does); the record says whether the kind matched too.

Whichever try reproduced the failure, its executed schedule (one actor id per step) is
run again with a strict replay, and that run is :attr:`Reproduction.record`: a
deterministic-engine record whose artifact replays exactly and can be shrunk. When no
try reproduces it, :attr:`Reproduction.record` is None and the reason says what each
try ended in; the caller keeps the raw parallel trace (exit code 4).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .trace import TicketOrder, _Replayable, _replayable

#: Guided tries after ticket order and the lenient replay (each runs the model once).
GUIDED_TRIES = 64
#: Seconds the guided search may take in all (each try is also bounded in steps).
GUIDED_BUDGET_S = 60.0
#: Steps allowed past the end of the trace for the failure to show.
SLACK = 50_000
TRIES = ("ticket-order", "lenient", "guided")
# How far back from a reference step each guided try cuts, as fractions of it: 0 is
# the reference itself. The tries go round these, alternating random walk and PCT.
_BACK = (0.0, 0.002, 0.01, 0.03, 0.1, 0.25, 0.5, 1.0)


class GuidedTrace(TicketOrder):
    """Follows the recorded order (as :class:`~.trace.TicketOrder`) for the first
    ``cut`` steps, then lets ``then`` (a seeded random walk or PCT) choose.

    Args:
        schedule: the merged parallel trace.
        cut: steps of the replay that follow the trace.
        then: the continuation scheduler; it is started with its own ``stream``.
        stream: the continuation's seeded stream (:class:`~pagerace.harness._rng.Stream`).
    """

    name = "guided"

    def __init__(self, schedule: Any, cut: int, then: Any, stream: Any) -> None:
        super().__init__(schedule)
        self.cut = cut
        self.then = then
        self._stream = stream

    def start(self, n_actors: int, stream: Any) -> None:
        super().start(n_actors, stream)
        self.then.start(n_actors, self._stream)

    def choose(self, runnable: list[int], step: int) -> int:
        if step < self.cut:
            return super().choose(runnable, step)
        return int(self.then.choose(runnable, step - self.cut))

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "strategy": self.name, "cut": self.cut,
                "then": self.then.describe()}


@dataclass
class Reproduction:
    """What :func:`reproduce` found.

    Attributes:
        reproduced: a try failed the same way.
        how: the try that did (``ticket-order``, ``lenient`` or ``guided``), "" if none.
        reason: one line: what reproduced it, or what each try ended in.
        record: the deterministic-engine record of the reproducing run (its schedule
            replays strictly); None when nothing reproduced it.
        same_kind: the reproducing run's failure kind is the parallel run's.
        guided_tries: guided tries run (0 when an earlier try reproduced it).
        tries: one entry per try run: ``{"try", "outcome", "kind", "steps", ...}``.
        seconds: time taken.
        other: when nothing reproduced the failure but a try failed otherwise (another
            kernel-model failure, e.g. a ``use_after_free`` for a ``stale_read``): the
            deterministic record of the first such try (its schedule replays strictly).
            It is not the parallel run's failure, and is never called a reproduction.
        other_by: the try that found ``other``.
    """

    reproduced: bool
    how: str
    reason: str
    record: Any = None
    same_kind: bool = False
    guided_tries: int = 0
    tries: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    other: Any = None
    other_by: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "reproduced": self.reproduced, "by": self.how or None, "reason": self.reason,
            "same_kind": self.same_kind, "guided_tries": self.guided_tries,
            "seconds": round(self.seconds, 3),
            "other": (
                {"kind": self.other.result.failure.kind.value, "by": self.other_by}
                if self.other is not None else None
            ),
        }


def _engine_run(rp: _Replayable, sched: Any, max_steps: int) -> Any:
    """One deterministic run of ``rp``'s model and operation lists under ``sched``."""
    from ...core.actors import program
    from ...core.oracles.invariants import check_all
    from ..engine import DeterministicEngine
    from ..runner import build_model, limits_for

    m = build_model(rp.workload, rp.variant, rp.bugs, rp.seed)
    m.ops = [list(o) for o in rp.ops]
    programs = [program(m.kernel, a, o) for a, o in zip(m.actors, m.ops)]
    eng = DeterministicEngine(
        m.kernel, m.actors, programs, sched, seed=rp.seed,
        limits=limits_for(rp.workload, max_steps=max_steps), invariants=check_all,
    )
    return eng.run()


def exact_record(rp: _Replayable, schedule: Any, max_steps: int) -> Any:
    """The strict replay of an executed deterministic ``schedule`` over ``rp``'s model:
    the record a reproduction's artifact is written from (it replays exactly)."""
    from ..runner import run_deterministic

    return run_deterministic(
        rp.workload, variant=rp.variant, bugs=rp.bugs, seed=rp.seed,
        schedule=list(schedule), strict=True, ops_override=rp.ops, max_steps=max_steps,
    )


def _entry(name: str, res: Any, **extra: Any) -> dict[str, Any]:
    f = res.failure
    return {"try": name, "outcome": res.outcome.value, "kind": f.kind.value if f else None,
            "steps": res.steps, **extra}


def _ended(res: Any) -> str:
    f = res.failure
    if f is not None:
        return f"{f.kind.value} at step {f.step}"
    return f"{res.outcome.value} after {res.steps} steps"


def cut_points(n_trace: int, first_deferred: int, tries: int) -> list[int]:
    """The guided tries' cut points: back from the first deferred step (when the ticket
    order replay deferred one) and from the end of the trace, by the fractions of
    ``_BACK``, alternating, without repeats, ``tries`` of them (repeating the list when
    there are more tries than distinct cuts: each repeat gets another continuation)."""
    refs = [r for r in (first_deferred, n_trace) if r > 0] or [0]
    cuts: list[int] = []
    for back in _BACK:
        for ref in refs:
            c = max(0, int(ref * (1.0 - back)))
            if c not in cuts:
                cuts.append(c)
    if not cuts:
        cuts = [0]
    return [cuts[i % len(cuts)] for i in range(tries)]


def reproduce(
    record: Any,
    *,
    guided_tries: int = GUIDED_TRIES,
    budget_s: float = GUIDED_BUDGET_S,
    slack: int = SLACK,
    only: tuple[str, ...] = TRIES,
) -> Reproduction:
    """Reproduce a parallel run's failure on the deterministic engine (module docstring).

    Args:
        record: a parallel :class:`~pagerace.harness.runner.RunRecord`, or a loaded
            artifact of one (``harness.artifacts.load_artifact``).
        guided_tries: at most this many guided tries (0: none).
        budget_s: the guided search stops starting tries after this many seconds.
        slack: steps allowed past the end of the trace.
        only: the tries to make, in order (tests use this to show one try alone).

    Returns:
        A :class:`Reproduction`.
    """
    from .._rng import Stream
    from ..runner import run_deterministic
    from ..schedulers import PCT, RandomWalk

    t0 = time.monotonic()
    rp = _replayable(record)
    failure = rp.failure
    if failure is None:
        return Reproduction(False, "", "the parallel run did not fail: nothing to reproduce")
    if rp.watchdog_only:
        return Reproduction(False, "", f"{failure.kind.value}: a harness verdict, not a kernel-model failure")
    schedule = rp.schedule
    n = len(schedule)
    max_steps = n + slack
    want_family, want_kind = failure.kind.family, failure.kind
    tries: list[dict[str, Any]] = []
    said: list[str] = []
    other: list[Any] = []  # (try, schedule) of the first try that failed otherwise

    def note_other(how: str, res: Any) -> None:
        got = res.failure
        if not other and got is not None and got.kind is not want_kind:
            other.append((how, res.schedule))

    def accept(how: str, res: Any, strict_kind: bool) -> Reproduction | None:
        got = res.failure
        if got is None or got.kind.family != want_family:
            return None
        if strict_kind and got.kind is not want_kind:
            return None
        exact = exact_record(rp, res.schedule, len(res.schedule) + 1)
        again = exact.result.failure
        if again is None or again.kind is not got.kind:  # pragma: no cover - engine nondeterminism
            said.append(f"{how}: its schedule did not replay strictly ({_ended(exact.result)})")
            return None
        return Reproduction(
            True, how, f"reproduced {got.kind.value} at step {got.step} by {how} ({'; '.join(said)})"
            if said else f"reproduced {got.kind.value} at step {got.step} by {how}",
            record=exact, same_kind=got.kind is want_kind, tries=tries,
        )

    first_deferred = -1
    if "ticket-order" in only:
        sched = TicketOrder(schedule)
        res = _engine_run(rp, sched, max_steps)
        first_deferred = sched.first_deferred
        tries.append(_entry("ticket-order", res, deferred=sched.deferred, first_deferred=first_deferred))
        done = accept("ticket order", res, strict_kind=False)
        if done is not None:
            done.how = "ticket-order"
            done.reason += f" ({sched.deferred} of {n} recorded steps deferred)"
            done.seconds = time.monotonic() - t0
            return done
        said.append(f"ticket order: {_ended(res)}")
        note_other("ticket-order", res)
    if "lenient" in only:
        rr = run_deterministic(
            rp.workload, variant=rp.variant, bugs=rp.bugs, seed=rp.seed, schedule=schedule,
            strict=False, ops_override=rp.ops, max_steps=max_steps,
        )
        diverged = rr.result.scheduler.get("diverged", 0)
        tries.append(_entry("lenient", rr.result, diverged=diverged))
        done = accept("lenient replay", rr.result, strict_kind=False)
        if done is not None:
            done.how = "lenient"
            done.reason += f" ({diverged} of {n} recorded steps diverged)"
            done.seconds = time.monotonic() - t0
            return done
        said.append(f"lenient replay: {_ended(rr.result)}")
        note_other("lenient", rr.result)
    ran = 0
    if "guided" in only and guided_tries > 0:
        seen: dict[str, int] = {}
        cuts = cut_points(n, first_deferred, guided_tries)
        for i, cut in enumerate(cuts):
            if i and time.monotonic() - t0 > budget_s:
                break
            then: Any = RandomWalk() if i % 2 == 0 else PCT(depth=3, k=max(200, n - cut + 200))
            sched = GuidedTrace(schedule, cut, then, Stream([rp.seed, i, 0x6D1DE]))
            res = _engine_run(rp, sched, max_steps)
            ran += 1
            tries.append(_entry("guided", res, cut=cut, then=then.name))
            got = res.failure
            key = got.kind.value if got is not None else res.outcome.value
            seen[key] = seen.get(key, 0) + 1
            note_other("guided", res)
            done = accept("guided search", res, strict_kind=True)
            if done is not None:
                done.how = "guided"
                done.guided_tries = ran
                done.reason += (f" (try {ran} of at most {guided_tries}: the recorded order for "
                                f"{cut} of {n} steps, then {then.name})")
                done.seconds = time.monotonic() - t0
                return done
        said.append(
            f"guided search: {ran} tries, none {want_kind.value} ("
            + ", ".join(f"{k} {v}" for k, v in sorted(seen.items())) + ")"
        )
    rep = Reproduction(
        False, "", f"expected {want_kind.value}; " + "; ".join(said), guided_tries=ran,
        tries=tries,
    )
    if other:
        how, sched_other = other[0]
        exact = exact_record(rp, sched_other, len(sched_other) + 1)
        if exact.result.failure is not None:
            rep.other, rep.other_by = exact, how
    rep.seconds = time.monotonic() - t0
    return rep


def reproduction_artifact(
    rep: Reproduction, parallel: Any, run_id: str, trace_path: str, other: bool = False
) -> dict[str, Any]:
    """The artifact document of a reproduction: the deterministic record's (it replays
    strictly and shrinks), plus ``reproduced_from``: the parallel run's failure, the try
    that reproduced it and where the raw parallel trace was saved. With ``other``: the
    document of :attr:`Reproduction.other` instead (``reproduced_from.same_kind`` false:
    another failure than the parallel run's).

    Raises:
        ValueError: there is no such record.
    """
    from ..artifacts import artifact_json

    record = rep.other if other else rep.record
    if record is None:
        raise ValueError("reproduction_artifact() needs a deterministic record")
    doc = artifact_json(record, run_id)
    f = parallel.result.failure
    doc["reproduced_from"] = {
        "engine": "parallel", "by": rep.other_by if other else rep.how,
        "same_kind": False if other else rep.same_kind, "reason": rep.reason,
        "failure": f.to_json() if f is not None else None, "trace_artifact": trace_path,
        "workers": parallel.options.get("workers"),
        "exact_trace": bool(parallel.options.get("exact_trace", False)),
    }
    if other:
        doc["reproduced_from"]["note"] = (
            "not the parallel run's failure: another failure a deterministic try found "
            "while trying to reproduce it"
        )
    return doc


def replay_parallel_failure(
    record: Any, slack: int = 50_000, guided_tries: int | None = None
) -> tuple[bool, str]:
    """Replay a failed parallel run's merged trace on the deterministic engine.

    Three tries (:func:`reproduce`): ticket order with blocked actors deferred
    (:class:`TicketOrder`), the lenient replay ``pagerace replay`` does, then a search
    guided by the trace that accepts only the same failure kind.

    Args:
        record: a :class:`~pagerace.harness.runner.RunRecord` of the parallel engine, or
            a loaded failure artifact of one (``harness.artifacts.load_artifact``).
        slack: steps allowed past the end of the trace for the failure to show.
        guided_tries: at most this many guided tries (default ``reproduce.GUIDED_TRIES``;
            0: only the two replays).

    Returns:
        (reproduced, a one-line reason naming the try that did it).
    """
    rep = reproduce(record, slack=slack, guided_tries=GUIDED_TRIES if guided_tries is None else guided_tries)
    return rep.reproduced, rep.reason

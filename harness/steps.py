"""The readable step list of a failing run: who took which lock, who waited on what.

:func:`step_events` re-runs the record's schedule (strictly) with tracing on and with
the kernel's lock bookkeeping observed, and returns one event per lock taken or
released and per wait, with the step, the actor, the kernel function and line, and the
call site. :func:`format_steps` prints the ones that matter for the failure (the last
take of each lock it names, and the waits on them), with the operation each actor was
in, and counts the steps in between, so the AB-BA deadlock reads as::

    driver0  takes page:37 (migrate_vma_prepare:lock_page) in migrate_to_system(...)
    ... 35 steps ...
    driver1  takes page:38 (migrate_vma_prepare:lock_page) in migrate_to_system(...)
    driver1  waits on page:37 held by driver0 (migrate_vma_prepare:lock_page)
    driver0  waits on page:38 held by driver1 (migrate_vma_prepare:lock_page)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .engine import Limits
from .explore import run_custom
from .runner import RunRecord, limits_for
from .schedulers.replay import Replay


@dataclass(frozen=True)
class Event:
    step: int
    actor: str
    where: str  # kernel function:line
    what: str  # "takes", "releases", "waits"
    lock: str  # page:N, ptl:M:T, mmap:M
    site: str
    owner: str = ""  # for waits: who holds it
    op: str = ""  # the operation the actor was in, e.g. migrate_to_device(0, 1, 0, 8)


def _limits(rec: RunRecord) -> Limits:
    lim = rec.options.get("limits")
    if isinstance(lim, dict):
        return Limits(**{k: int(v) for k, v in lim.items()})
    return limits_for(rec.workload)


def step_events(rec: RunRecord) -> tuple[list[Event], RunRecord]:
    """Lock events of a traced strict re-run of ``rec`` (and that re-run)."""
    log: list[tuple[int, int, str, str, str, int]] = []  # step, aid, what, lock, site, op#

    def hook(k: Any) -> None:
        acq, rel = k._acquired, k._released

        def acquired(a: Any, word: int, site: str) -> None:
            log.append((k.step_hook(), a.id, "takes", k.lock_name(word), site, a.progress))
            acq(a, word, site)

        def released(a: Any, word: int) -> None:
            log.append(
                (k.step_hook(), a.id, "releases", k.lock_name(word), a.held.get(word, ""),
                 a.progress)
            )
            rel(a, word)

        k._acquired = acquired
        k._released = released

    again = run_custom(
        rec.workload,
        variant=rec.variant,
        bugs=rec.bugs,
        seed=rec.seed,
        scheduler=Replay(list(rec.result.schedule), strict=False),
        strategy="replay",
        limits=_limits(rec),
        ops=rec.ops,
        trace=True,
        faults=tuple(rec.options.get("faults", ())),
        kernel_hook=hook,
    )
    names = [a.name for a in again.actors]

    def op_name(aid: int, idx: int) -> str:
        ops = again.ops[aid]
        if 0 <= idx < len(ops):
            return f"{ops[idx][0]}{tuple(ops[idx][1:])}"
        return ""

    where = {st: fn for st, _aid, fn, _s in again.result.trace}
    holder: dict[str, str] = {}
    by_step: dict[int, list[tuple[int, str, str, str, int]]] = {}
    for st, aid, what, lock, site, opi in log:
        by_step.setdefault(st, []).append((aid, what, lock, site, opi))
    last_op: dict[int, int] = {}
    events: list[Event] = []
    for st, aid, fn, site in again.result.trace:
        for a2, what, lock, s2, opi in by_step.get(st, []):
            last_op[a2] = opi
            if what == "takes":
                holder[lock] = names[a2]
            elif holder.get(lock) == names[a2]:
                del holder[lock]
            events.append(
                Event(st, names[a2], where.get(st, fn), what, lock, s2, op=op_name(a2, opi))
            )
        if site.startswith("waits on "):
            lock = site.split()[2]
            at = site.split(" at ", 1)[1] if " at " in site else ""
            events.append(
                Event(st, names[aid], fn, "waits", lock, at, holder.get(lock, "nobody"),
                      op=op_name(aid, last_op.get(aid, 0)))
            )
    return events, again


def _line(e: Event) -> str:
    if e.what == "waits":
        txt = f"waits on {e.lock} held by {e.owner} ({e.site})"
    else:
        txt = f"{e.what} {e.lock} ({e.site})"
    op = f" in {e.op}" if e.op else ""
    return f"  step {e.step:>5}  {e.actor:<11} {txt}{op}  [{e.where}]"


def format_steps(
    events: list[Event], rec: RunRecord, full: bool = False, tail: int = 16
) -> list[str]:
    """Lines of the step list.

    Focused (default): when the failure names locks or pages, the last time each of
    them was taken before the failure and every wait on them, in step order (the
    interleaving that matters; the steps in between are counted, not listed). Other
    failures: the last ``tail`` page-lock events and waits. ``full``: every event,
    page-table and mmap locks included.
    """
    f = rec.result.failure
    lines: list[str] = []
    if full:
        chosen = list(events)
    else:
        focus = set(f.locks) | {f"page:{p}" for p in f.pages} if f is not None else set()
        chosen = []
        if focus:
            last_take: dict[str, int] = {}
            for n, e in enumerate(events):
                if e.lock in focus and e.what == "takes":
                    last_take[e.lock] = n
            keep = set(last_take.values()) | {
                n for n, e in enumerate(events) if e.what == "waits" and e.lock in focus
            }
            chosen = [events[n] for n in sorted(keep)]
        if not chosen:
            pick = [e for e in events if e.what == "waits" or e.lock.startswith("page:")]
            chosen = pick[-tail:]
    prev_step = -1
    for e in chosen:
        if prev_step >= 0 and e.step - prev_step > 1 and not full:
            lines.append(f"  {'':>10}  ... {e.step - prev_step - 1} steps ...")
        lines.append(_line(e))
        prev_step = e.step
    if f is not None:
        lines.append(f"  => {f.headline()}")
    return lines


def readable_steps(rec: RunRecord, full: bool = False) -> list[str]:
    """The printed step list of a failed (or any) run."""
    events, again = step_events(rec)
    return format_steps(events, again, full)


__all__ = ["Event", "format_steps", "readable_steps", "step_events"]

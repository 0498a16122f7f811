"""Actors: what a CPU, a driver or a user process does, as a list of operations.

An actor's program is a list of operations, each a tuple ``(name, *args)`` of plain
ints, so a program is data: workloads build it from a per-actor seeded stream,
artifacts store it, and the shrinker can drop operations. :data:`OPS` maps each name to
the generator that runs it against the model.

The program runs one operation at a time. Between operations the actor is *idle*: it
holds no lock (checked: the lock-balance oracle) and the engine may run the global
invariants when every actor is idle (a quiet point).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .machine.errors import FailureKind
from .machine.kernel import Actor, Kernel, Path
from .mm.memory import ACCESS_SIGBUS, cpu_access, mm_unstable

Op = tuple[Any, ...]


# The operations below only forward to the path that runs them: plain functions that
# return the path's generator, so ``program``'s ``yield from`` resumes the path itself
# (one frame fewer at every preemption point; the step list names the same innermost
# functions).


def op_read(k: Kernel, a: Actor, mm: int, vpn: int) -> Path:
    """A CPU load from ``mm``'s page ``vpn``: ``cpu_access(write=False)``."""
    return cpu_access(k, a, mm, vpn, False)


def op_write(k: Kernel, a: Actor, mm: int, vpn: int) -> Path:
    """A CPU store of a fresh content token to ``mm``'s page ``vpn``:
    ``cpu_access(write=True)``."""
    return cpu_access(k, a, mm, vpn, True)


def op_migrate_to_device(k: Kernel, a: Actor, dev: int, mm: int, start: int, end: int) -> Path:
    """``HMM_DMIRROR_MIGRATE_TO_DEV`` over ``[start, end)``: the device's
    ``migrate_to_device`` (``dmirror_migrate_to_device``)."""
    return k.devices[dev].migrate_to_device(k, a, mm, start, end)


def op_migrate_to_system(k: Kernel, a: Actor, dev: int, mm: int, start: int, end: int) -> Path:
    """``HMM_DMIRROR_MIGRATE_TO_SYS`` over ``[start, end)``: the device's
    ``migrate_to_system`` (``dmirror_migrate_to_system``)."""
    return k.devices[dev].migrate_to_system(k, a, mm, start, end)


def op_evict(k: Kernel, a: Actor, dev: int) -> Path:
    """``HMM_DMIRROR_RELEASE``: evict all of the device's memory (the device's
    ``release``)."""
    return k.devices[dev].release(k, a)


def op_idle(k: Kernel, a: Actor, n: int) -> Path:
    """Do nothing for ``n`` preemption points (think time)."""
    for _ in range(n):
        yield
    return 0


OPS: dict[str, Callable[..., Path]] = {
    "read": op_read,
    "write": op_write,
    "migrate_to_device": op_migrate_to_device,
    "migrate_to_system": op_migrate_to_system,
    "evict": op_evict,
    "idle": op_idle,
}


def register_op(name: str, fn: Callable[..., Path]) -> None:
    """Add an operation kind (modules with more paths register theirs)."""
    OPS[name] = fn


def program(k: Kernel, a: Actor, ops: Sequence[Op]) -> Path:
    """Run ``ops`` one after the other; check lock balance at every operation's end. A
    kworker (``a.daemon``) runs its CPU's work instead (``Kernel.worker_thread``)."""
    if a.daemon:
        yield from k.worker_thread(a, a.cpu)
        return
    for op in ops:
        a.idle = False
        a.op = op[0]
        fn = OPS[op[0]]
        r = yield from fn(k, a, *op[1:])
        if a.held:
            held = sorted(a.held.items())
            raise k.fail(
                FailureKind.LOCK_BALANCE,
                f"{a.name} finished {op[0]}{tuple(op[1:])} still holding "
                + ", ".join(f"{k.lock_name(w)} (taken at {site})" for w, site in held),
                actors=[a],
                sites=[site for _, site in held],
                locks=[k.lock_name(w) for w, _ in held],
            )
        if (
            r == ACCESS_SIGBUS
            and op[0] in ("read", "write")
            and not k.sigbus_expected()
            # An OOM-reaped mm's faults SIGBUS by design (check_stable_address_space).
            and not mm_unstable(k, op[1])
        ):
            raise k.fail(
                FailureKind.SIGBUS,
                f"{a.name} got SIGBUS on {op[0]} of mm {op[1]} page {op[2]} and no error "
                "was injected",
                actors=[a],
                sites=["cpu_access"],
            )
        k.progress(a)
        a.idle = True
        yield

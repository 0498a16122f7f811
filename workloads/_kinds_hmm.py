"""Actor kinds for the driver's side of the mirror (``core/lib/test_hmm.py``): device
reads, writes and snapshots through a dmirror's own page table, migrations started
through a mirror (whose device page table they update), and device-exclusive access
(``HMM_DMIRROR_EXCLUSIVE`` / ``CHECK_EXCLUSIVE``).

Each names its mirror (``mirror``: the index of a ``[[dmirror]]`` table of the
workload). They need ``hmm_range_fault`` (``v6``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core.machine.errors import InvalidWorkload
from ._schema import KIND_NEEDS, OpList, register_actor_kind


def _starts(p: Mapping[str, Any], rng: np.random.Generator, n: int) -> int:
    lo, hi = (int(x) for x in p["range"])
    n = min(n, hi - lo)
    return lo + int(rng.integers(0, hi - lo - n + 1))


def _access_ops(op: str) -> Any:
    def ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
        lo, hi = (int(x) for x in p["range"])
        out: OpList = []
        for _ in range(int(p["ops"])):
            think = int(rng.integers(0, int(p["think"]) + 1))
            if think:
                out.append(("idle", think))
            n = min(max(1, int(p["npages"])), hi - lo)
            out.append((op, int(p["mirror"]), _starts(p, rng, n), n))
        return out

    return ops


_DEFAULTS = {"mirror": 0, "range": [0, 16], "ops": 8, "npages": 1, "think": 4}

register_actor_kind(
    "device_read",
    dict(_DEFAULTS),
    "a device reading through its mirror: HMM_DMIRROR_READ (dmirror_read: the device page "
    "table, hmm_range_fault on a miss; lib/test_hmm.c 7.0)",
    _access_ops("device_read"),
)
register_actor_kind(
    "device_write",
    dict(_DEFAULTS),
    "a device writing through its mirror: HMM_DMIRROR_WRITE (dmirror_write, faulting for "
    "write on a miss)",
    _access_ops("device_write"),
)
register_actor_kind(
    "snapshot",
    {**_DEFAULTS, "npages": 4},
    "HMM_DMIRROR_SNAPSHOT: hmm_range_fault without faulting, under a temporary interval "
    "notifier inserted and removed per call",
    _access_ops("snapshot"),
)


def _mirror_driver_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    lo, hi = (int(x) for x in p["range"])
    chunk = int(p["chunk"]) or (hi - lo)
    pattern = list(p["pattern"])
    out: OpList = []
    for i in range(int(p["ops"])):
        what = pattern[i % len(pattern)]
        think = int(rng.integers(0, int(p["think"]) + 1))
        if think:
            out.append(("idle", think))
        if what == "fail_alloc":  # HMM_DMIRROR_FLAGS, HMM_DMIRROR_FLAG_FAIL_ALLOC
            out.append(("dmirror_flags", int(p["mirror"]), 1))
            continue
        start = _starts(p, rng, chunk)
        end = min(hi, start + chunk)
        if what == "to_device":
            out.append(("mirror_to_device", int(p["mirror"]), start, end))
        elif what == "to_system":
            out.append(("mirror_to_system", int(p["mirror"]), start, end))
        else:
            raise InvalidWorkload(
                f"mirror_driver pattern entry {what!r} is not valid; valid: fail_alloc, to_device, "
                "to_system"
            )
    return out


register_actor_kind(
    "mirror_driver",
    {"mirror": 0, "range": [0, 16], "ops": 4, "chunk": 0, "think": 4,
     "pattern": ["to_device", "to_system"]},
    "HMM_DMIRROR_MIGRATE_TO_DEV / TO_SYS through a mirror (dmirror_migrate_finalize_and_map "
    "maps the device pages into its page table; lib/test_hmm.c 7.0); the pattern entry "
    "fail_alloc sets HMM_DMIRROR_FLAG_FAIL_ALLOC (HMM_DMIRROR_FLAGS)",
    _mirror_driver_ops,
)


def _flags_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    out: OpList = []
    for _ in range(int(p["ops"])):
        think = int(rng.integers(0, int(p["think"]) + 1))
        if think:
            out.append(("idle", think))
        out.append(("dmirror_flags", int(p["mirror"]), int(p["flags"])))
    return out


register_actor_kind(
    "mirror_flags",
    {"mirror": 0, "ops": 1, "think": 4, "flags": 1},
    "HMM_DMIRROR_FLAGS through a mirror: dmirror->flags = flags (1: "
    "HMM_DMIRROR_FLAG_FAIL_ALLOC, the next allocation attempt through the mirror fails "
    "and clears it; lib/test_hmm.c 7.0), after think time, ops times",
    _flags_ops,
)

for _kind in ("device_read", "device_write", "snapshot", "mirror_driver", "mirror_flags"):
    KIND_NEEDS[_kind] = ["hmm_range_fault"]


def _release_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    out: OpList = []
    for _ in range(int(p["ops"])):
        think = int(rng.integers(0, int(p["think"]) + 1))
        if think:
            out.append(("idle", think))
        out.append(("release", int(p["device"])))
    return out


register_actor_kind(
    "release",
    {"device": 0, "ops": 1, "think": 8},
    "HMM_DMIRROR_RELEASE / driver unload: dmirror_device_remove_chunks (remove = true, the "
    "free pages dropped, dmirror_device_evict_chunk through migrate_device_range, then "
    "memunmap_pages sleeping until every device page is freed; lib/test_hmm.c 7.0), after "
    "think time, ops times",
    _release_ops,
)
KIND_NEEDS["release"] = ["migrate_device_range"]


def _exclusive_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    lo, hi = (int(x) for x in p["range"])
    out: OpList = []
    for _ in range(int(p["ops"])):
        think = int(rng.integers(0, int(p["think"]) + 1))
        if think:
            out.append(("idle", think))
        n = min(max(1, int(p["npages"])), hi - lo)
        start = _starts(p, rng, n)
        out.append(("exclusive", int(p["mirror"]), start, n))
        if p["check"]:
            think = int(rng.integers(0, int(p["think"]) + 1))
            if think:
                out.append(("idle", think))
            out.append(("check_exclusive", int(p["mirror"]), start, n))
    return out


register_actor_kind(
    "exclusive",
    {**_DEFAULTS, "check": True},
    "HMM_DMIRROR_EXCLUSIVE: make_device_exclusive per page and the ATOMIC device-PT entry "
    "(dmirror_exclusive, lib/test_hmm.c 7.0), then (check = true) HMM_DMIRROR_CHECK_EXCLUSIVE "
    "on the same range (counts check_exclusive_atomic / _revoked)",
    _exclusive_ops,
)

# make_device_exclusive (5.13+; 7.0's one-page form): v6 only.
KIND_NEEDS["exclusive"] = ["hmm_range_fault", "device_exclusive"]

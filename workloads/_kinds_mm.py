"""Actor kinds of the memory-management world around device migration: pinners,
forkers, unmappers, protectors, remappers, reclaimers and the OOM reaper (the paths in
``core/mm/gup.py``, ``core/mm/fork.py``, ``core/mm/vma.py``, ``core/mm/mprotect.py``,
``core/mm/mremap.py``, ``core/mm/vmscan.py``, ``core/mm/oom_kill.py``).

Each kind turns its parameters and the actor's own seeded stream into an operation
list, like the kinds in ``_schema.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core.machine.errors import InvalidWorkload
from ..core.mm.gup import MODE_NAMES
from ._schema import KIND_GEOMETRY, OpList, register_actor_kind


def _range(p: Mapping[str, Any]) -> tuple[int, int]:
    lo, hi = p["range"]
    return int(lo), int(hi)


def _pages(p: Mapping[str, Any], rng: np.random.Generator) -> int:
    hot = [int(x) for x in p.get("hot", [])]
    if hot:
        return hot[int(rng.integers(len(hot)))]
    lo, hi = _range(p)
    return int(rng.integers(lo, hi))


def _pinner_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    modes = []
    for m in p["modes"]:
        if m not in MODE_NAMES:
            raise InvalidWorkload(
                f"pinner mode {m!r} is not valid; valid: {', '.join(MODE_NAMES)}"
            )
        modes.append(MODE_NAMES.index(m))
    ops: OpList = []
    for _ in range(int(p["ops"])):
        vpn = _pages(p, rng)
        mode = modes[int(rng.integers(len(modes)))]
        write = 1 if rng.random() < float(p["write_ratio"]) else 0
        ops.append(("pin_dma", int(p["mm"]), vpn, mode, int(p["hold"]), write))
        if int(p["think"]):
            ops.append(("idle", int(rng.integers(0, int(p["think"]) + 1))))
    return ops


register_actor_kind(
    "pinner",
    {"mm": 0, "range": [0, 8], "hot": [], "ops": 4, "hold": 6, "write_ratio": 1.0,
     "modes": ["pin", "pin_fast"], "think": 4},
    "GUP: pin_user_pages{,_fast} / get_user_pages{,_fast} / FOLL_LONGTERM one page, DMA "
    "through it, unpin",
    _pinner_ops,
)


def _reclaimer_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    ops: OpList = []
    for _ in range(int(p["ops"])):
        ops.append(("idle", int(rng.integers(0, int(p["think"]) + 1))))
        ops.append(("reclaim", int(rng.integers(0, 1 << 16)), int(p["nr"])))
    return ops


register_actor_kind(
    "reclaimer",
    {"ops": 3, "nr": 4, "think": 8},
    "kswapd: isolate LRU pages, unmap them to swap entries, write dirty ones out, drop clean ones",
    _reclaimer_ops,
)


def _forker_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    parent, child = int(p["mm"]), int(p["child"])
    lo, hi = _range(p)
    ops: OpList = []
    for _ in range(int(p["ops"])):
        ops.append(("idle", int(rng.integers(0, int(p["think"]) + 1))))
        ops.append(("fork", parent, child))
        for _ in range(int(p["child_ops"])):
            vpn = int(rng.integers(lo, hi))
            kind = "write" if rng.random() < float(p["write_ratio"]) else "read"
            ops.append((kind, child, vpn))
        ops.append(("child_exit", child))
    return ops


register_actor_kind(
    "forker",
    {"mm": 0, "child": 1, "range": [0, 8], "ops": 1, "child_ops": 6, "write_ratio": 0.5,
     "think": 8},
    "fork(): copy the parent's page tables into a child mm, run the child's loads and "
    "stores, then exit (zap the child's mm)",
    _forker_ops,
)


def _unmapper_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    lo, hi = _range(p)
    what = str(p["what"])
    if what not in ("munmap", "madv_dontneed"):
        raise InvalidWorkload(f"unmapper what {what!r} is not valid; valid: munmap, madv_dontneed")
    ops: OpList = []
    for _ in range(int(p["ops"])):
        ops.append(("idle", int(rng.integers(0, int(p["think"]) + 1))))
        n = int(p["pages"])
        start = lo + int(rng.integers(0, max(hi - lo - n, 0) + 1))
        ops.append((what, int(p["mm"]), start, min(hi, start + n)))
    return ops


register_actor_kind(
    "unmapper",
    {"mm": 0, "range": [0, 8], "pages": 4, "ops": 1, "what": "madv_dontneed", "think": 16},
    "munmap() / madvise(MADV_DONTNEED) of part of a range (zap_pte_range)",
    _unmapper_ops,
)


def _protector_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    lo, hi = _range(p)
    ops: OpList = []
    for i in range(int(p["ops"])):
        ops.append(("idle", int(rng.integers(0, int(p["think"]) + 1))))
        ops.append(("mprotect", int(p["mm"]), lo, hi, i % 2))
    return ops


register_actor_kind(
    "protector",
    {"mm": 0, "range": [0, 8], "ops": 2, "think": 16},
    "mprotect() of whole VMAs (range: their union): read-only, then read-write again, "
    "alternately (change_pte_range, MMU_NOTIFY_PROTECTION_VMA)",
    _protector_ops,
)


def _remapper_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    ops: OpList = []
    for _ in range(int(p["ops"])):
        ops.append(("idle", int(rng.integers(0, int(p["think"]) + 1))))
        ops.append(("mremap", int(p["mm"]), int(p["src"]), int(p["pages"]), int(p["dst"])))
    return ops


register_actor_kind(
    "remapper",
    {"mm": 0, "src": 0, "pages": 2, "dst": 8, "ops": 1, "think": 16},
    "mremap() part of a range to another address (move_page_tables)",
    _remapper_ops,
)

def _oom_reaper_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    ops: OpList = []
    for _ in range(int(p["ops"])):
        ops.append(("idle", int(rng.integers(0, int(p["think"]) + 1))))
        ops.append(("oom_reap", int(p["mm"])))
    return ops


register_actor_kind(
    "oom_reaper",
    {"mm": 0, "ops": 1, "think": 16},
    "the oom_reaper kthread reaping victim mm: mmap_read_trylock (10 attempts), "
    "MMF_UNSTABLE, zap of every private VMA under a non-blocking MMU_NOTIFY_UNMAP "
    "(mm/oom_kill.c 7.0)",
    _oom_reaper_ops,
)
KIND_GEOMETRY["oom_reaper"] = {"mm_flags": True}

__all__: list[str] = []

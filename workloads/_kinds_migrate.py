"""Actor kinds for the generic migration paths (``core/mm/migrate.py``): compaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core.machine.errors import InvalidWorkload
from ..core.mm.migrate import MIGRATE_ASYNC, MIGRATE_SYNC, MIGRATE_SYNC_LIGHT
from ._schema import OpList, register_actor_kind

_MODES = {"async": MIGRATE_ASYNC, "sync_light": MIGRATE_SYNC_LIGHT, "sync": MIGRATE_SYNC}


def _compactor_ops(p: Mapping[str, Any], rng: np.random.Generator) -> OpList:
    mode = p["mode"]
    if mode not in _MODES:
        raise InvalidWorkload(
            f"compactor mode {mode!r} is not valid; valid: {', '.join(_MODES)}"
        )
    pattern = list(p["pattern"])
    ops: OpList = []
    for i in range(int(p["ops"])):
        what = pattern[i % len(pattern)]
        think = int(rng.integers(0, int(p["think"]) + 1))
        if think:
            ops.append(("idle", think))
        if what == "compact":
            ops.append(("compact", _MODES[mode], int(p["limit"])))
        elif what == "readahead":
            ops.append(("readahead", int(p["readahead"]), int(p["watermark"]), int(p["limit"])))
        else:
            raise InvalidWorkload(
                f"compactor pattern entry {what!r} is not valid; valid: compact, readahead"
            )
    return ops


register_actor_kind(
    "compactor",
    {
        "ops": 2,
        "mode": "async",
        "pattern": ["readahead", "compact"],
        "readahead": 3,
        "watermark": 1 << 20,
        "limit": 8,
        "think": 4,
    },
    "memory compaction: kcompactd (compact) and readahead whose allocations enter direct "
    "compaction with earlier pages still locked (mm/migrate.c migrate_pages, seed 002)",
    _compactor_ops,
)

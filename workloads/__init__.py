"""pagerace.workloads: scenario definitions (TOML) and the loader that validates them."""

from . import (
    _kinds_hmm,  # noqa: F401  (registers device_read, device_write, snapshot, mirror_driver, exclusive)
    _kinds_migrate,  # noqa: F401  (registers the compactor kind)
    _kinds_mm,  # noqa: F401  (registers pinner, forker, unmapper, protector, remapper, reclaimer)
    _kinds_pagecache,  # noqa: F401  (registers file_reader, file_writer)
)
from ._schema import (
    ACTOR_KINDS as ACTOR_KINDS,
)
from ._schema import (
    Workload as Workload,
)
from ._schema import (
    actor_programs as actor_programs,
)
from ._schema import (
    load_workload as load_workload,
)
from ._schema import (
    parse_workload as parse_workload,
)
from ._schema import (
    register_actor_kind as register_actor_kind,
)
from ._schema import (
    workload_from_json as workload_from_json,
)
from ._schema import (
    workload_names as workload_names,
)
from ._schema import (
    workload_to_json as workload_to_json,
)

__all__ = [
    "ACTOR_KINDS",
    "Workload",
    "actor_programs",
    "load_workload",
    "parse_workload",
    "register_actor_kind",
    "workload_from_json",
    "workload_names",
    "workload_to_json",
]

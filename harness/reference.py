"""The workload reference, generated from the code: every TOML key (with its default,
from the dataclasses the loader fills) and every actor kind with its parameters (from
:data:`~pagerace.workloads.ACTOR_KINDS`, so plugin kinds appear when loaded).

``docs/workloads.md`` is this module's output (``python -m pagerace.harness.reference
> docs/workloads.md``); ``tests/unit/test_reference.py`` keeps the two identical and
checks that every key the loader accepts is documented here and nothing else is.
``pagerace list --kinds`` prints :func:`kinds` as text or JSON.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..core.machine.layout import Geometry
from ..workloads._schema import (
    ACTOR_KINDS,
    DEVICE_KEYS,
    GEOMETRY_KEYS,
    KIND_NEEDS,
    LIMIT_KEYS,
    MM_KEYS,
    TOP_KEYS,
    VMA_FLAG_NAMES,
)

# (key, what it is, default) per table; the defaults of geometry and device keys are
# read from Geometry and DeviceSpec below, the limits' from the engine's Limits.
TOP_DOC: dict[str, tuple[str, str]] = {
    "name": ("string, required", "the workload's name (runs.csv `workload`)"),
    "description": ("string", "one line: what runs against what"),
    "mirrors": ("string", "the kernel selftest (tools/testing/selftests/mm/hmm-tests.c...) it mirrors"),
    "gap": ("string", "the race no selftest covers that it exercises"),
    "needs": ("list of strings", "paths the variant must provide (`Variant.provides`: migrate_device_range, "
              "device_coherent, device_public...); those the actors imply are added"),
    "faults": ("list of strings", "injected faults (`core/faults.py`), on every run of the workload"),
    "pct_k": ("integer", "PCT's estimate of a run's length in steps (0: 30 x the operations, at least 200)"),
    "cpus": ("integer 0-64", "CPUs modelled, each with a kworker for per-CPU work "
             "(`lru_add_drain_all`); 0: none, every actor is its own CPU"),
    "preemption": ("string", "the preemption model: full (every yield a preemption point), voluntary or "
                   "none (CONFIG_PREEMPT_*); other than full needs cpus >= 1"),
    "page_lock_unfairness": ("integer", "sysctl vm.page_lock_unfairness: rounds an exclusive page-lock "
                             "waiter loses before the lock is handed to it (default 5; 0: always)"),
    "geometry": ("table", "sizes of the model (below)"),
    "limits": ("table", "step budgets (below)"),
    "mm": ("array of tables", "address spaces and what is mapped before the run (below); default: mm 0 "
           "with one read/write anonymous VMA over all its pages"),
    "device": ("array of tables", "device options (below); default: one device per `geometry.devices`"),
    "dmirror": ("array of tables {device, mm}", "open dmirror files (lib/test_hmm.c): each a mirror of mm "
                "`mm` on device `device`, with its own device page table and interval notifier"),
    "finding": ("table {doc, kinds} or array of tables {doc, kinds, variants}",
                "the documented finding(s) (docs/findings/) whose failure kinds this workload may show "
                "on an unmodified generation: `variants` names the generations each applies to (all "
                "when absent); the clean checks allow exactly those kinds on those generations"),
    "actor": ("array of tables, at least one", "who runs: `kind`, `count` and the kind's parameters (below)"),
}
GEOMETRY_DOC: dict[str, str] = {
    "sys_frames": "page frames of system RAM",
    "dev_frames": "page frames per device",
    "devices": "number of devices (at least one more than the highest `device.id`)",
    "mms": "number of address spaces (processes)",
    "pages_per_mm": "virtual pages per address space",
    "ptes_per_table": "entries per page table, i.e. per page-table lock",
    "max_vmas": "VMA rows per mm",
    "swap_slots": "swap slots",
    "coherent": "ids of devices whose memory is DEVICE_COHERENT (also `device.coherent`)",
    "files": "files with a page cache; 0 for none",
    "pages_per_file": "page-cache slots per file (at least 1 when `files` > 0)",
}
LIMIT_DOC: dict[str, str] = {
    "max_steps": "stop with outcome `budget` after this many preemption points",
    "livelock_steps": "an actor's own steps without finishing an operation before it is a livelock "
                      "suspect (then confirmed under a fair round robin)",
    "check_every": "run the global invariants at a quiet point at most every this many steps",
}
MM_DOC: dict[str, tuple[str, str]] = {
    "id": ("integer", "the mm (default: its position in the array)"),
    "vmas": ("list of {start, end, flags}", "its VMAs, pages [start, end); flags from: "
             + ", ".join(VMA_FLAG_NAMES) + " (default: one VMA over all pages, read/write/anon; "
             "hugepage: madvise(MADV_HUGEPAGE), THP-eligible: a fault on a PMD that maps "
             "nothing maps a THP; adds `thp` to `needs`: v7 only)"),
    "populate": ("list of {start, end}", "pages present in system RAM, writable"),
    "readonly": ("list of {start, end}", "pages present in system RAM, mapped read-only"),
    "device": ("list of {dev, start, end}",
               "pages already migrated to device `dev` (device-private entries)"),
    "share": ("list of {from_mm, from, to, count, reverse}", "`count` pages of `from_mm` from page `from` "
              "shared copy-on-write at page `to` of this mm, as fork and mremap leave them (`reverse`: "
              "in opposite order)"),
    "thp": ("list of {start, end}", "PMD-mapped anonymous THPs in system RAM, writable: each "
            "range a multiple of `ptes_per_table` pages on a PMD boundary (adds `thp` to "
            "`needs`: v7 only)"),
    "thp_pte": ("list of {start, end}", "PTE-mapped anonymous THPs: as `thp`, then split as "
                "`__split_huge_pmd_locked` leaves them (the PMD a PTE table, one PTE per page "
                "of the still large folio; v7 only)"),
}
DEVICE_DOC: dict[str, str] = {
    "id": "the device (default: its position in the array)",
    "coherent": "DEVICE_COHERENT memory (mapped present, CPUs access it) instead of DEVICE_PRIVATE",
    "fail_alloc": ("every n-th allocation of the driver fails (the model's memory pressure; 7.0's "
                   "one-shot HMM_DMIRROR_FLAG_FAIL_ALLOC is the `mirror_flags` kind); 0: never"),
    "fault_range": "pages migrated back around a faulting page (1: just the page), up to 512",
    "fault_work": "preemption points of driver work in migrate_to_ram before it migrates, up to 10000",
    "copy_work": "preemption points each page copy (the DMA) takes, up to 10000",
    "copy_error": "every n-th copy back to system memory fails (MIGRATE_PFN_ERROR); 0: never",
    "policy": "how the driver migrates to the device: `dmirror` (lib/test_hmm.c: whatever was "
              "collected) or `all_or_nothing` (drm_pagemap_migrate_to_devmem: only a fully "
              "collected range, else release and retry; needs v6)",
    "migrate_retries": "the all-or-nothing driver's attempts per migration (1-64; Xe's "
                       "migrate_try_count)",
}
ACTOR_COMMON: dict[str, str] = {
    "kind": "the actor kind (below)",
    "count": "how many actors of this table (1-256); each draws its own operations",
    "cpu": "the CPU each actor of this table runs on (an integer, or a list of one per actor); "
           "needs cpus >= 1 (default: actor i on CPU i % cpus)",
}


def _limits_defaults() -> dict[str, int]:
    from .engine import Limits

    return {f.name: f.default for f in dataclasses.fields(Limits) if f.name in LIMIT_KEYS}  # type: ignore[misc]


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    return type(v).__name__


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return str(v)


def kinds() -> list[dict[str, Any]]:
    """Every actor kind: name, doc, the variant paths it needs, and its parameters with
    their defaults and types, sorted by name."""
    out = []
    for name in sorted(ACTOR_KINDS):
        _fn, defaults, doc = ACTOR_KINDS[name]
        out.append({
            "name": name,
            "doc": doc,
            "needs": list(KIND_NEEDS.get(name, [])),
            "params": [
                {"name": k, "default": v, "type": _type_name(v)} for k, v in sorted(defaults.items())
            ],
        })
    return out


def kinds_text() -> list[str]:
    """``pagerace list --kinds``: each kind, its doc and its parameters with defaults."""
    lines = ["actor kinds ([[actor]] kind = NAME; every table also takes count):"]
    for k in kinds():
        needs = f" (needs {', '.join(k['needs'])})" if k["needs"] else ""
        lines.append(f"  {k['name']}{needs}: {k['doc']}")
        for p in k["params"]:
            lines.append(f"      {p['name']} = {_toml(p['default'])}  ({p['type']})")
    return lines


def markdown() -> str:
    """``docs/workloads.md``."""
    geo_defaults = {f.name: f.default if f.default is not dataclasses.MISSING else []
                    for f in dataclasses.fields(Geometry)}
    from ..workloads._schema import DeviceSpec

    dev_defaults = {f.name: f.default for f in dataclasses.fields(DeviceSpec)}
    dev_defaults["id"] = "position"
    lim = _limits_defaults()
    L = [
        "# Workload reference",
        "",
        "Generated from the code (`python -m pagerace.harness.reference > docs/workloads.md`; "
        "`tests/unit/test_reference.py` keeps it in sync). A workload is a TOML file: "
        "`pagerace run my-workload.toml`. Every key is checked: an unknown key, a wrong type or "
        "an out-of-range value is exit 2 with a message naming the file, the key and the valid "
        "choices. `workloads/*.toml` are the built-in examples; `pagerace list --kinds` prints "
        "the actor kinds of this installation (plugins included).",
        "",
        "## Top-level keys",
        "",
        "| key | type | meaning |",
        "|---|---|---|",
    ]
    L += [f"| `{k}` | {t} | {d} |" for k, (t, d) in sorted(TOP_DOC.items())]
    L += ["", "## `[geometry]`", "", "| key | default | meaning |", "|---|---|---|"]
    L += [f"| `{k}` | {_toml(geo_defaults[k])} | {d} |" for k, d in sorted(GEOMETRY_DOC.items())]
    L += ["", "## `[limits]`", "", "| key | default | meaning |", "|---|---|---|"]
    L += [f"| `{k}` | {lim[k]} | {d} |" for k, d in sorted(LIMIT_DOC.items())]
    L += ["", "## `[[mm]]`", "", "| key | type | meaning |", "|---|---|---|"]
    L += [f"| `{k}` | {t} | {d} |" for k, (t, d) in sorted(MM_DOC.items())]
    L += ["", "## `[[device]]`", "", "| key | default | meaning |", "|---|---|---|"]
    L += [f"| `{k}` | {_toml(dev_defaults[k])} | {d} |" for k, d in sorted(DEVICE_DOC.items())]
    L += ["", "## `[[actor]]`", "", "Every actor table has:", "", "| key | meaning |", "|---|---|"]
    L += [f"| `{k}` | {d} |" for k, d in ACTOR_COMMON.items()]
    L += ["", "and the parameters of its kind, each optional (its default is used when absent); a "
          "value must have the default's type. A kind that needs a path (`needs`) refuses "
          "variants without it.", ""]
    for k in kinds():
        L += [f"### `{k['name']}`", "", k["doc"] + ("." if not k["doc"].endswith(".") else ""), ""]
        if k["needs"]:
            L += [f"Needs: {', '.join(k['needs'])}.", ""]
        L += ["| parameter | default | type |", "|---|---|---|"]
        L += [f"| `{p['name']}` | `{_toml(p['default'])}` | {p['type']} |" for p in k["params"]]
        L.append("")
    return "\n".join(L)


def undocumented() -> dict[str, set[str]]:
    """Keys the loader accepts without documentation here, and documented keys it does
    not accept, per table (empty sets when all is in order)."""
    pairs = {
        "top": (TOP_KEYS, set(TOP_DOC)),
        "geometry": (GEOMETRY_KEYS, set(GEOMETRY_DOC)),
        "limits": (LIMIT_KEYS, set(LIMIT_DOC)),
        "mm": (MM_KEYS, set(MM_DOC)),
        "device": (DEVICE_KEYS, set(DEVICE_DOC)),
    }
    return {t: set(a) ^ b for t, (a, b) in pairs.items()}


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.stdout.write(markdown() + "\n")

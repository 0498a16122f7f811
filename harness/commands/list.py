"""``pagerace list``: workloads, protocol variants, bug toggles and strategies."""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

from ...core.bugs import CATALOG
from ...core.machine.errors import InvalidWorkload
from ...core.variants import VARIANTS
from ...workloads import ACTOR_KINDS, load_workload, workload_names
from ..schedulers import STRATEGIES

NAME = "list"
HELP = "list workloads, protocol variants, bug toggles and scheduling strategies"
EXAMPLES = [
    ("pagerace list", "everything, one line each"),
    (
        "pagerace list --bugs",
        "with the bug catalog in full: what each toggle changes, what goes wrong, the fix",
    ),
    ("pagerace list --format json", "everything, bug catalog in full, for scripts"),
    ("pagerace list --kinds", "the actor kinds of workload TOML files, with every parameter and its default"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["text", "json"], default="text", help="output format (default: text)")
    p.add_argument(
        "--bugs",
        action="store_true",
        help="show the bug catalog in full (text format; JSON always has it all)",
    )
    p.add_argument(
        "--kinds",
        action="store_true",
        help="show only the actor kinds of workload TOML files, with their parameters and defaults "
        "(plugins' kinds included; docs/workloads.md has every key)",
    )


def catalog() -> tuple[dict[str, Any], list[str]]:
    """Everything ``list`` shows, as JSON-able data, and the workloads that failed to load."""
    workloads = []
    broken = []
    for name in workload_names():
        try:
            w = load_workload(name)
        except InvalidWorkload as exc:
            broken.append(f"{name} ({exc})")
            continue
        workloads.append(
            {
                "name": w.name,
                "description": w.description,
                "mirrors": w.mirrors,
                "gap": w.gap,
                "actors": w.n_actors(),
                "needs": list(w.needs),
                "finding": w.finding,
                "findings": [
                    {"doc": f.doc, "kinds": list(f.kinds), "variants": list(f.variants)}
                    for f in w.findings
                ],
                "variants": sorted(v for v, c in VARIANTS.items() if set(w.needs) <= c.provides),
            }
        )
    variants = [
        {
            "name": name,
            "description": v.description,
            "seed": v.seed,
            "provides": sorted(v.provides),
            "plugin": _plugin_of("variants", name),
        }
        for name, v in sorted(VARIANTS.items())
    ]
    bugs = [
        {
            "name": e.name,
            "variants": list(e.variants),
            "changes": e.changes,
            "goes_wrong": e.goes_wrong,
            "fix": e.fix,
            "oracle": list(e.oracle),
            "workload": e.workload,
            "intrinsic": e.intrinsic,
        }
        for e in sorted(CATALOG.values(), key=lambda e: e.name)
    ]
    strategies = [{"name": n, "description": d} for n, d in STRATEGIES.items()]
    kinds = [
        {"name": n, "description": doc, "params": sorted(defaults)}
        for n, (_fn, defaults, doc) in sorted(ACTOR_KINDS.items())
    ]
    return (
        {
            "workloads": workloads, "variants": variants, "bugs": bugs,
            "strategies": strategies, "actor_kinds": kinds,
        },
        broken,
    )


def _plugin_of(what: str, name: str) -> str | None:
    """The name of the plugin that registered ``name`` (None for a built-in)."""
    from ..plugins import owner

    p = owner(what, name)
    return p.name if p is not None else None


def _wrap(text: str, indent: int, width: int = 100) -> str:
    return textwrap.fill(text, width=width, initial_indent=" " * indent, subsequent_indent=" " * indent)


def render_text(data: dict[str, Any], full_bugs: bool) -> str:
    out: list[str] = []
    ws = data["workloads"]
    w_width = max((len(w["name"]) for w in ws), default=0)
    out.append("workloads (pagerace run WORKLOAD; or a path to a .toml file):")
    for w in ws:
        out.append(f"  {w['name']:<{w_width}}  {w['description']}")
        pad = " " * (w_width + 4)
        if w["mirrors"]:
            out.append(f"{pad}mirrors: {w['mirrors']}")
        if w["gap"]:
            out.append(f"{pad}gap: {w['gap']}")
        for f in w.get("findings") or ([{"doc": w["finding"], "variants": []}] if w["finding"] else []):
            on = f" (on {', '.join(f['variants'])})" if f["variants"] else ""
            out.append(f"{pad}keeps a finding{on}: {f['doc']}")
    out.append("")
    ks = data["actor_kinds"]
    k_width = max((len(k["name"]) for k in ks), default=0)
    out.append("actor kinds ([[actor]] kind = ...):")
    for k in ks:
        out.append(f"  {k['name']:<{k_width}}  {k['description']}")
    out.append("")
    out.append("variants (--variant):")
    for v in data["variants"]:
        width = max(9, *(len(x["name"]) for x in data["variants"]))
        plug = f" [plugin {v['plugin']}]" if v.get("plugin") else ""
        out.append(f"  {v['name']:<{width}} {v['description']}{plug}")
    out.append("")
    bugs = data["bugs"]
    b_width = max((len(b["name"]) for b in bugs), default=0)
    out.append("bug toggles (--bug NAME, repeatable):")
    for b in bugs:
        tag = " (intrinsic to the variant)" if b["intrinsic"] else ""
        head = f"  {b['name']:<{b_width}}  [{'/'.join(b['variants'])}] oracle: {', '.join(b['oracle'])}{tag}"
        out.append(head)
        if full_bugs:
            for label, key in (
                ("changes", "changes"),
                ("goes wrong", "goes_wrong"),
                ("fix", "fix"),
                ("hunted on", "workload"),
            ):
                out.append(_wrap(f"{label}: {b[key]}", 6))
        else:
            out.append(_wrap(b["changes"], 6))
            out.append(_wrap(f"fix: {b['fix']}", 6))
    if not full_bugs:
        out.append("  (pagerace list --bugs shows what goes wrong and where each is hunted)")
    out.append("")
    out.append("strategies (--strategy):")
    for s in data["strategies"]:
        out.append(f"  {s['name']:<7} {s['description']}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    if args.kinds:
        from ..reference import kinds, kinds_text

        if args.format == "json":
            print(json.dumps({"kinds": kinds()}, indent=1))
        else:
            print("\n".join(kinds_text()))
        return 0
    data, broken = catalog()
    if args.format == "json":
        print(json.dumps(data, indent=1))
    else:
        print(render_text(data, args.bugs))
    if broken:
        raise InvalidWorkload(f"cannot load workload(s): {'; '.join(broken)}")
    return 0

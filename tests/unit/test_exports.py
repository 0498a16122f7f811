"""The public namespaces are thin and complete (trio's ``test_exports.py``), and the
layers keep their dependencies: ``pagerace.core`` imports numpy only."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

PUBLIC = ["pagerace", "pagerace.core", "pagerace.harness", "pagerace.workloads", "pagerace.extend"]
HEAVY = ("pandas", "matplotlib", "multiprocess", "multiprocessing", "psutil", "tqdm", "dask", "ray")


@pytest.mark.parametrize("name", PUBLIC)
def test_public_namespace_defines_all_and_everything_resolves(name: str) -> None:
    mod = importlib.import_module(name)
    assert hasattr(mod, "__all__"), f"{name} has no __all__"
    exported = list(mod.__all__)
    assert exported, f"{name}.__all__ is empty"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    for sym in exported:
        assert not sym.startswith("_") or sym == "__version__", f"{name} exports private {sym}"
        obj = getattr(mod, sym)  # raises AttributeError if it does not resolve
        assert obj is not None


@pytest.mark.parametrize("name", PUBLIC)
def test_star_import_gives_exactly_all(name: str) -> None:
    ns: dict[str, object] = {}
    exec(f"from {name} import *", ns)
    ns.pop("__builtins__", None)
    assert set(ns) == set(importlib.import_module(name).__all__)


def test_version_is_a_string() -> None:
    import pagerace

    assert isinstance(pagerace.__version__, str) and pagerace.__version__.count(".") >= 1


def _imported_by(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_core_imports_numpy_only() -> None:
    """Every module of pagerace.core, imported in a fresh interpreter, pulls in none of
    the heavy or process layers (pandas, matplotlib, multiprocess...)."""
    import pagerace.core as core

    mods = sorted(
        m.name
        for m in pkgutil.walk_packages(core.__path__, "pagerace.core.")
        if not m.name.endswith("_atomicwords")  # the C extension, checked below
    )
    assert "pagerace.core.mm.migrate_device" in mods and "pagerace.core.oracles.invariants" in mods
    code = "\n".join(f"import {m}" for m in mods) + "\nimport pagerace.core.machine._atomicwords"
    loaded = _imported_by(code)
    assert set(mods) <= set(loaded)
    bad = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert not bad, f"pagerace.core imported {bad}"
    outside = sorted(
        m for m in loaded if m.startswith("pagerace.") and not m.startswith("pagerace.core")
        and m != "pagerace._version"
    )
    assert not outside, f"pagerace.core imported other layers: {outside}"


def _import_graph() -> dict[str, set[str]]:
    """Every pagerace module and the pagerace modules it imports, at module level or
    inside a function (a lazy import is still an edge: it hides a cycle, it does not
    break it), read from the sources with ``ast``."""
    import ast
    import os

    import pagerace

    roots = {
        "pagerace.core": "core",
        "pagerace.harness": "harness",
        "pagerace.workloads": "workloads",
        "pagerace.reports": "reports",
    }
    base = os.path.dirname(os.path.dirname(os.path.abspath(pagerace.__file__)))
    if not os.path.isdir(os.path.join(base, "core")):
        pytest.skip("needs the source checkout")
    files: dict[str, str] = {}
    for pkg, d in roots.items():
        for dirpath, _dirs, names in os.walk(os.path.join(base, d)):
            rel = os.path.relpath(dirpath, os.path.join(base, d))
            sub = "" if rel == "." else "." + rel.replace(os.sep, ".")
            for n in names:
                if n.endswith(".py"):
                    mod = pkg + sub + ("" if n == "__init__.py" else "." + n[:-3])
                    files[mod] = os.path.join(dirpath, n)
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        is_pkg = path.endswith("__init__.py")
        package = mod if is_pkg else mod.rsplit(".", 1)[0]
        edges: set[str] = set()
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    stem = ".".join(parts + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [stem] + [f"{stem}.{a.name}" for a in node.names]
            for t in targets:
                if t in files and t != mod:
                    edges.add(t)
        graph[mod] = edges
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for e in sorted(graph.get(m, ())):
            if state.get(e) == 1:
                return stack[stack.index(e) :] + [e]
            if e not in state:
                found = visit(e)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_cycle_finder_finds_a_lazy_cycle() -> None:
    # the shape of the old core: the primitives lazily imported the variants, which
    # import the paths, which import the primitives
    g = {"k": {"variants"}, "variants": {"paths"}, "paths": {"k"}, "x": {"k"}}
    assert _find_cycle(g) == ["k", "variants", "paths", "k"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    """No pagerace module reaches itself through imports, lazy ones included. A package
    importing its own submodules (for re-export) is left out: its ``__init__`` runs
    first by construction."""
    graph = {m: {e for e in es if not e.startswith(m + ".")} for m, es in _import_graph().items()}
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_core_layers() -> None:
    """Inside core: the machinery imports no path, oracle or variant; the oracles import
    only the machinery; the kernel's paths never import the harness."""
    graph = _import_graph()
    for mod, edges in graph.items():
        if mod.startswith("pagerace.core.machine"):
            bad = sorted(e for e in edges if not e.startswith("pagerace.core.machine"))
            assert not bad, f"{mod} (machinery) imports {bad}"
        if mod.startswith("pagerace.core.oracles"):
            bad = sorted(
                e for e in edges if not e.startswith(("pagerace.core.machine", "pagerace.core.oracles"))
            )
            assert not bad, f"{mod} (oracle) imports {bad}"
        if mod.startswith("pagerace.core"):
            bad = sorted(e for e in edges if not e.startswith("pagerace.core"))
            assert not bad, f"{mod} (model) imports {bad}"


def test_workloads_import_neither_harness_nor_reports() -> None:
    """The workloads sit between the model and what runs it: they import the model (and
    its seeded streams, core.machine.seeding), never the harness or the reports."""
    graph = _import_graph()
    assert any(m.startswith("pagerace.workloads") for m in graph)
    for mod, edges in graph.items():
        if mod.startswith("pagerace.workloads"):
            bad = sorted(e for e in edges if e.startswith(("pagerace.harness", "pagerace.reports")))
            assert not bad, f"{mod} (workloads) imports {bad}"

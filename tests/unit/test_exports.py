"""The public namespaces are thin and complete (trio's ``test_exports.py``), and the
layers keep their dependencies: ``pagerace.core`` imports numpy only."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

PUBLIC = ["pagerace", "pagerace.core", "pagerace.harness", "pagerace.workloads"]
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
        for m in pkgutil.iter_modules(core.__path__, "pagerace.core.")
        if not m.name.endswith("_atomicwords")  # the C extension, checked below
    )
    assert "pagerace.core.migrate_device" in mods and "pagerace.core.invariants" in mods
    code = "\n".join(f"import {m}" for m in mods) + "\nimport pagerace.core._atomicwords"
    loaded = _imported_by(code)
    assert set(mods) <= set(loaded)
    bad = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert not bad, f"pagerace.core imported {bad}"
    outside = sorted(
        m for m in loaded if m.startswith("pagerace.") and not m.startswith("pagerace.core")
        and m != "pagerace._version"
    )
    assert not outside, f"pagerace.core imported other layers: {outside}"

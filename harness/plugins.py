"""Plugins: Python files or modules that add variants, actor kinds and operations.

A plugin is loaded from

- ``--plugin FILE.py`` (or ``--plugin package.module``), repeatable, before or after
  the command;
- ``PAGERACE_PLUGINS``: the same, separated by ``os.pathsep`` (``:``);
- the entry-point group ``pagerace.plugins`` of every installed distribution (a
  package that ships a variant declares ``[project.entry-points."pagerace.plugins"]
  my_patch = "my_patch"``).

Loading a plugin imports it; its top level calls the registration functions of
:mod:`pagerace.extend`, which record here which plugin provided each name. That is how
an artifact names the plugins it needs (:func:`needed_by`) and how replaying it without
them says which one is missing (:func:`missing_for`) instead of "corrupt artifact".

Worker processes load the same plugins: campaign tasks carry their specs
(:func:`loaded_specs`) and :func:`ensure_loaded` loads them once per process (a forked
pool worker already has them; a spawned or Dask worker imports them, so a Dask worker
must see the same file path or have the module installed).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.machine.errors import InvalidOption

ENV = "PAGERACE_PLUGINS"
GROUP = "pagerace.plugins"


@dataclass
class Plugin:
    """One loaded plugin: its ``name`` (the file's stem, the module, or the entry
    point's name), the ``spec`` that loads it again (an absolute file path or a module
    name) and what it registered."""

    name: str
    spec: str
    provides: dict[str, list[str]] = field(
        default_factory=lambda: {"variants": [], "kinds": [], "ops": []}
    )

    def to_json(self) -> dict[str, Any]:
        provides = {k: sorted(v) for k, v in self.provides.items()}
        return {"name": self.name, "spec": self.spec, "provides": provides}


#: spec -> plugin, in load order
_LOADED: dict[str, Plugin] = {}
#: (what, name) -> the plugin that registered it
_OWNER: dict[tuple[str, str], Plugin] = {}
_CURRENT: list[Plugin] = []
_ENTRY_POINTS_DONE = False


def _norm(spec: str) -> str:
    """A file spec as an absolute path (so a worker in another directory finds it), a
    module name as it is."""
    if spec.endswith(".py") or os.sep in spec:
        return str(Path(spec).expanduser().resolve())
    return spec


def record(what: str, name: str) -> None:
    """Called by the ``register_*`` functions: ``name`` (a variant, kind or op) comes
    from the plugin being loaded, if any (built-in registrations have none)."""
    if _CURRENT:
        p = _CURRENT[-1]
        p.provides[what].append(name)
        _OWNER[(what, name)] = p


def owner(what: str, name: str) -> Plugin | None:
    """The plugin that registered ``name`` as a ``what`` (variants, kinds, ops)."""
    return _OWNER.get((what, name))


def load(spec: str, name: str | None = None) -> Plugin:
    """Load the plugin ``spec`` (a ``.py`` file or a module name) once per process.

    Raises:
        InvalidOption: the file does not exist, the module cannot be found, or importing
            it raised (the one-line message names the plugin and the error).
    """
    key = _norm(spec)
    if key in _LOADED:
        return _LOADED[key]
    is_file = key.startswith(os.sep)
    if is_file:
        path = Path(key)
        if not path.is_file():
            raise InvalidOption(f"--plugin {spec!r}: no such file (a plugin is a .py file or a module name)")
        pname = name or path.stem
    else:
        pname = name or key
    plugin = Plugin(pname, key)
    _CURRENT.append(plugin)
    try:
        if is_file:
            modname = f"pagerace_plugin_{pname}"
            mspec = importlib.util.spec_from_file_location(modname, key)
            if mspec is None or mspec.loader is None:
                raise InvalidOption(f"--plugin {spec!r}: not a Python file")
            mod = importlib.util.module_from_spec(mspec)
            sys.modules[modname] = mod
            mspec.loader.exec_module(mod)
        else:
            try:
                importlib.import_module(key)
            except ModuleNotFoundError as exc:
                if exc.name and key.startswith(exc.name):
                    raise InvalidOption(
                        f"--plugin {spec!r}: no such file or module (a plugin is a .py file or a module name)"
                    ) from None
                raise
    except InvalidOption:
        raise
    except Exception as exc:
        msg = " ".join(str(exc).split())
        raise InvalidOption(f"plugin {pname!r} ({key}) failed to load: {type(exc).__name__}: {msg}") from exc
    finally:
        _CURRENT.pop()
    _LOADED[key] = plugin
    return plugin


def from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The specs listed in ``PAGERACE_PLUGINS`` (empty entries skipped)."""
    env = os.environ if environ is None else environ
    return [s for s in env.get(ENV, "").split(os.pathsep) if s.strip()]


def load_entry_points() -> list[Plugin]:
    """Load every installed plugin of the ``pagerace.plugins`` entry-point group (once)."""
    global _ENTRY_POINTS_DONE
    if _ENTRY_POINTS_DONE:
        return []
    _ENTRY_POINTS_DONE = True
    out = []
    for name, value in entry_points_of_group(GROUP):
        out.append(load(value.split(":")[0].strip(), name=name))
    return out


def entry_points_of_group(group: str) -> list[tuple[str, str]]:
    """``(name, value)`` of the entry points of ``group`` in the distributions on
    ``sys.path`` (their ``*.dist-info`` / ``*.egg-info`` ``entry_points.txt``), sorted by
    name; the first distribution on the path wins a name, as ``importlib.metadata``
    would have it. Read directly: importing ``importlib.metadata`` costs every command
    tens of milliseconds of start-up for a group that is usually empty."""
    found: dict[str, str] = {}
    header = f"[{group}]"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for d in sorted(names):
            if not d.endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(os.path.join(entry or ".", d, "entry_points.txt")) as fh:
                    text = fh.read()
            except OSError:
                continue
            if header not in text:
                continue
            section = None
            for raw in text.splitlines():
                line = raw.strip()
                if not line or line.startswith(("#", ";")):
                    continue
                if line.startswith("[") and line.endswith("]"):
                    section = line
                elif section == header and "=" in line:
                    k, v = line.split("=", 1)
                    found.setdefault(k.strip(), v.strip())
    return sorted(found.items())


def load_all(specs: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> list[Plugin]:
    """What every command loads before it runs: the entry points, ``PAGERACE_PLUGINS``,
    then ``specs`` (``--plugin``)."""
    out = load_entry_points()
    for s in [*from_env(environ), *specs]:
        out.append(load(s))
    return out


def loaded_specs() -> tuple[str, ...]:
    """The specs of every plugin loaded so far, in load order (what a worker loads)."""
    return tuple(_LOADED)


def ensure_loaded(specs: Sequence[str]) -> None:
    """Load ``specs`` in this process if they are not loaded yet (campaign and Dask
    workers call it before running a task)."""
    for s in specs:
        load(s)


def needed_by(variant: str, kinds: Sequence[str] = (), ops: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The plugins a run of ``variant`` with actor ``kinds`` running ``ops`` needs, as
    artifacts record them (empty when it uses built-ins only)."""
    need: dict[str, Plugin] = {}
    for what, names in (("variants", [variant]), ("kinds", kinds), ("ops", ops)):
        for n in names:
            p = _OWNER.get((what, n))
            if p is not None:
                need.setdefault(p.spec, p)
    return [p.to_json() for p in need.values()]


def replay_flags(doc_plugins: Sequence[Mapping[str, Any]]) -> str:
    """``--plugin SPEC`` for each plugin an artifact records (what its replay command
    needs), each followed by a space; "" for built-ins."""
    return "".join(f"--plugin {p['spec']} " for p in doc_plugins)


def flags_for(variant: str, kinds: Sequence[str] = (), ops: Sequence[str] = ()) -> str:
    """``--plugin SPEC `` for the plugins a run of ``variant`` needs (see :func:`needed_by`)."""
    return replay_flags(needed_by(variant, kinds, ops))


def missing_for(recorded: Any, variant: str, kinds: Sequence[str], ops: Sequence[str]) -> str | None:
    """When an artifact names a variant, kind or op this process lacks and lists the
    plugin that provided it: the sentence that says so (None when nothing is missing or
    no recorded plugin explains it)."""
    from ..core.actors import OPS
    from ..core.variants import VARIANTS
    from ..workloads import ACTOR_KINDS

    have = {"variants": VARIANTS, "kinds": ACTOR_KINDS, "ops": OPS}
    asked = {"variants": [variant], "kinds": list(kinds), "ops": list(ops)}
    if not isinstance(recorded, list):
        return None
    for what in ("variants", "kinds", "ops"):
        for n in asked[what]:
            if n in have[what]:
                continue
            for p in recorded:
                if not isinstance(p, dict):
                    continue
                prov = p.get("provides", {})
                if isinstance(prov, dict) and n in prov.get(what, []):
                    noun = {"variants": "variant", "kinds": "actor kind", "ops": "operation"}[what]
                    return (
                        f"needs plugin {p.get('name')!r} for {noun} {n!r}, which is not loaded; "
                        f"load it with --plugin {p.get('spec')} (or {ENV})"
                    )
    return None


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """Tests: undo every plugin loaded and everything registered inside the block (the
    variant, actor kind and operation tables, and this module's records)."""
    from ..core.actors import OPS
    from ..core.variants import VARIANTS
    from ..workloads import ACTOR_KINDS
    from ..workloads._schema import KIND_NEEDS

    global _ENTRY_POINTS_DONE
    tables: list[dict[Any, Any]] = [_LOADED, _OWNER, OPS, VARIANTS, ACTOR_KINDS, KIND_NEEDS]
    saved = [dict(t) for t in tables]
    mods = set(sys.modules)
    ep = _ENTRY_POINTS_DONE
    try:
        yield
    finally:
        for t, old in zip(tables, saved):
            t.clear()
            t.update(old)
        for m in set(sys.modules) - mods:
            if m.startswith("pagerace_plugin_"):
                del sys.modules[m]
        _ENTRY_POINTS_DONE = ep

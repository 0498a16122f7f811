"""The public extension API: add your own protocol variant, actor kind or operation.

Write a plugin, a ``.py`` file that imports this module and registers what it adds, and
load it with ``pagerace --plugin my_patch.py COMMAND ...`` (every command, before or
after the command name), with ``PAGERACE_PLUGINS=my_patch.py``, or from an installed
package through the ``pagerace.plugins`` entry-point group. A worked example, from a
one-line kernel patch to a replayed failure: ``docs/your-patch.md``.

A variant is a subclass of one of the three generations (:class:`V6`, :class:`V50`,
:class:`HMM2017`) that overrides the hook your patch changes (``check_page``,
``collect``, ``unmap``, ``prepare``, ``fault_entry``, ``migrate_range``...; see
:class:`Variant`), with a new ``name``::

    from pagerace.extend import V6, register_variant

    @register_variant
    class MyPatch(V6):
        name = "v6-my-patch"
        description = "v6 with my change to migrate_vma_check_page"

        def check_page(self, k, pfn, fault_page):
            ...

Artifacts of a run that used a plugin's variant, actor kind or operation record the
plugin (name and path); replaying one without the plugin loaded says which plugin to
load, and exits 2.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from pagerace.core.machine.errors import InvalidOption
from pagerace.core.machine.kernel import Actor, Kernel, Path
from pagerace.core.variants import HMM2017, V6, V50, Variant

__all__ = [
    "HMM2017",
    "V6",
    "V50",
    "Actor",
    "Kernel",
    "Path",
    "Variant",
    "load_plugin",
    "register_actor_kind",
    "register_op",
    "register_variant",
]

V = TypeVar("V", bound=type[Variant])
OpsFn = Callable[[Mapping[str, Any], np.random.Generator], list[tuple[Any, ...]]]


def register_variant(cls: V) -> V:
    """Register the :class:`Variant` subclass ``cls`` under ``cls.name``, so that
    ``--variant NAME`` (run, hunt, campaign, compare...) runs it. Usable as a class
    decorator; returns ``cls``.

    Raises:
        InvalidOption: ``cls`` is not a Variant subclass, has no ``name`` of its own, or
            its name is already taken by another class.
    """
    from pagerace.core.variants import VARIANTS
    from pagerace.harness import plugins

    if not (isinstance(cls, type) and issubclass(cls, Variant)):
        raise InvalidOption(f"register_variant({cls!r}): expected a subclass of pagerace.extend.Variant")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name or name == "?" or any(c.isspace() for c in name):
        raise InvalidOption(
            f"register_variant({cls.__name__}): set a class attribute name = '...' (no spaces) "
            "that differs from its base's"
        )
    old = VARIANTS.get(name)
    if old is not None and old is not cls:
        raise InvalidOption(
            f"register_variant({cls.__name__}): variant name {name!r} is taken; taken names: "
            + ", ".join(sorted(VARIANTS))
        )
    VARIANTS[name] = cls
    plugins.record("variants", name)
    return cls


def register_actor_kind(
    name: str,
    defaults: dict[str, Any],
    doc: str,
    ops: OpsFn,
    needs: Sequence[str] = (),
) -> None:
    """Add an actor kind for the ``[[actor]] kind = NAME`` tables of workload TOML files.

    Args:
        name: the kind (``kind = "name"`` in TOML).
        defaults: every parameter the kind accepts with its default; a TOML key not in
            it is refused, and a value must have the default's type.
        doc: one line, shown by ``pagerace list --kinds``.
        ops: ``ops(params, rng) -> [(op_name, *int_args), ...]``: the actor's program,
            drawn from ``rng`` (a seeded ``numpy.random.Generator`` of its own).
        needs: the variant paths (``Variant.provides``) it calls, beyond migrate_vma.

    Raises:
        InvalidOption: ``name`` is taken, or ``defaults``/``ops`` are not what they must be.
    """
    from pagerace.harness import plugins
    from pagerace.workloads import ACTOR_KINDS
    from pagerace.workloads import register_actor_kind as _register
    from pagerace.workloads._schema import KIND_NEEDS

    if not isinstance(name, str) or not name or name in ACTOR_KINDS:
        raise InvalidOption(
            f"register_actor_kind({name!r}): expected a new kind name; taken: "
            + ", ".join(sorted(ACTOR_KINDS))
        )
    if not isinstance(defaults, dict) or not callable(ops):
        raise InvalidOption(f"register_actor_kind({name!r}): defaults must be a dict and ops a function")
    _register(name, defaults, doc, ops)
    if needs:
        KIND_NEEDS[name] = list(needs)
    plugins.record("kinds", name)


def register_op(name: str, fn: Callable[..., Path]) -> None:
    """Add an operation an actor program can run: ``fn(k, a, *int_args)`` is a generator
    (a kernel path) over the model; every ``yield`` is a preemption point.

    Raises:
        InvalidOption: ``name`` is taken or ``fn`` is not callable.
    """
    from pagerace.core.actors import OPS
    from pagerace.core.actors import register_op as _register
    from pagerace.harness import plugins

    if not isinstance(name, str) or not name or name in OPS:
        raise InvalidOption(
            f"register_op({name!r}): expected a new operation name; taken: " + ", ".join(sorted(OPS))
        )
    if not callable(fn):
        raise InvalidOption(f"register_op({name!r}): {fn!r} is not callable")
    _register(name, fn)
    plugins.record("ops", name)


def load_plugin(spec: str) -> None:
    """Load a plugin (a ``.py`` path or a module name) in this process, as ``--plugin``
    does; loading the same one twice does nothing.

    Raises:
        InvalidOption: no such file or module, or importing it raised.
    """
    from pagerace.harness import plugins

    plugins.load(spec)


def __dir__() -> list[str]:
    return list(__all__)

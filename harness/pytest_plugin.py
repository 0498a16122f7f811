"""The pytest plugin: a pagerace scenario as a test.

Registered through the ``pytest11`` entry point, so ``pip install pagerace`` is enough:
no ``conftest.py``, no ``-p``. A test asks for the ``pagerace`` fixture and hunts a
scenario on the deterministic engine; the ``pagerace`` marker gives the scenario's
defaults, so a file of scenarios reads as a table::

    import pytest

    @pytest.mark.pagerace(workload="migrate-vs-pin", variant="v6", seeds=range(100))
    def test_pins_are_never_migrated(pagerace):
        pagerace.hunt()

    def test_my_patch(pagerace):
        pagerace.hunt("migrate-vs-pin", variant="v6-my-patch", plugins=["my_patch.py"],
                      seeds=range(200), strategy="mix", budget="30s")

When an oracle fires, the test fails with the failure, the shrunk step list, the
artifact (written under ``--pagerace-out``, default: a ``pagerace`` directory in pytest's
temporary directory) and the ``pagerace replay`` command that reproduces it. A clean hunt
returns its :class:`~pagerace.harness.hunt.HuntResult`.

Options: ``--pagerace-out DIR`` (artifacts), ``--pagerace-shrink-time S`` (the shrinker's
time budget per failure, default 5 s; 0 keeps the failure as found).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

MARKER = "pagerace"
_KEYS = ("workload", "variant", "bugs", "seeds", "strategy", "budget", "plugins", "pct_depth")


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("pagerace", "pagerace scenarios")
    g.addoption("--pagerace-out", metavar="DIR", default=None,
                help="where failing scenarios write their artifacts (default: <basetemp>/pagerace)")
    g.addoption("--pagerace-shrink-time", metavar="S", type=float, default=5.0,
                help="shrinker time budget per failure in seconds; 0: no shrinking (default 5)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pagerace(workload, variant='v6', bugs=(), seeds=range(100), strategy='mix', budget=None, "
        "plugins=()): the defaults of the pagerace fixture's hunt() for this test",
    )


class Scenario:
    """What the ``pagerace`` fixture gives a test: :meth:`hunt`."""

    def __init__(self, defaults: dict[str, Any], out: Path, shrink_time: float, name: str) -> None:
        self.defaults = defaults
        self.out = out
        self.shrink_time = shrink_time
        self.name = name
        self.artifact: Path | None = None

    def hunt(self, workload: str | None = None, **kw: Any) -> Any:
        """Run the scenario; fail the test with the shrunk failure and its replay command
        when an oracle fires. Keyword arguments (``variant``, ``bugs``, ``seeds``: a range
        or a count, ``strategy``: mix, random, pct, rr or exhaustive, ``budget``: a time
        such as ``"30s"`` that stops the hunt early, ``plugins``, ``pct_depth``) override
        the marker's."""
        from ..core.machine.errors import InvalidOption
        from ..workloads import load_workload
        from . import plugins
        from .artifacts import write_artifact
        from .hunt import Budget, hunt
        from .output import run_id
        from .steps import readable_steps

        unknown = sorted(set(kw) - set(_KEYS))
        if unknown:
            raise TypeError(
                f"pagerace.hunt(): unknown argument(s) {', '.join(unknown)}; valid: {', '.join(_KEYS)}"
            )
        p = {**self.defaults, **kw}
        if workload is not None:
            p["workload"] = workload
        if "workload" not in p:
            raise TypeError("pagerace.hunt(): no workload (pass one, or set it in @pytest.mark.pagerace)")
        for spec in p.get("plugins", ()):
            plugins.load(str(spec))
        seeds = _seeds(p.get("seeds", 100))
        budget = Budget(runs=len(seeds))
        if p.get("budget") is not None:
            from .commands._options import parse_duration

            secs = parse_duration(p["budget"], "budget")
            if secs is None:
                raise InvalidOption(f"budget {p['budget']!r}: a time such as '30s' or '2m'")
            budget = Budget(seconds=secs)
        w = load_workload(str(p["workload"]))
        res = hunt(
            w, variant=p.get("variant", "v6"), bugs=list(p.get("bugs", ())), budget=budget,
            strategy=p.get("strategy", "mix"), pct_depth=int(p.get("pct_depth", 3)),
            base_seed=seeds[0], shrink=self.shrink_time > 0, shrink_budget=self.shrink_time or 1.0,
        )
        if res.found is None:
            return res
        found = res.found
        rec = res.shrunk.record if res.shrunk is not None else found
        rid = run_id(found)
        self.artifact = write_artifact(self.out / "artifacts" / f"{rid}.json", rec, rid)
        flags = plugins.flags_for(rec.variant, sorted({a.kind for a in w.actors}))
        lines = [
            f"pagerace: {w.name} · {found.variant} · {res.strategy}: failure after {res.runs} run(s), "
            f"seed {found.seed}",
        ]
        if found.result.failure is not None:
            lines.append(f"failure: {found.result.failure.headline()}")
        if res.shrunk is not None:
            lines.append(res.shrunk.summary())
        lines.append("steps (shrunk):" if res.shrunk is not None else "steps:")
        lines += list(readable_steps(rec))
        lines.append(f"artifact: {self.artifact}")
        lines.append(f"replay it: pagerace {flags}replay {self.artifact}")
        pytest.fail("\n".join(lines), pytrace=False)


def _seeds(seeds: int | Iterable[int] | str) -> Sequence[int]:
    """``range(0, 100)``, a count (100: seeds 0-99), a list of consecutive seeds, or
    ``"0-99"``."""
    if isinstance(seeds, int):
        out: Sequence[int] = range(seeds)
    elif isinstance(seeds, str):
        from .campaign import parse_seeds

        out = list(parse_seeds(seeds))
    else:
        out = list(seeds)
    if not out or list(out) != list(range(out[0], out[0] + len(out))):
        raise ValueError(f"pagerace: seeds must be a non-empty run of consecutive seeds, not {seeds!r}")
    return out


@pytest.fixture
def pagerace(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """A pagerace scenario runner: ``pagerace.hunt(workload, variant=..., seeds=...)``;
    the ``pagerace`` marker's keyword arguments are its defaults."""
    m = request.node.get_closest_marker(MARKER)
    defaults: dict[str, Any] = dict(m.kwargs) if m is not None else {}
    if m is not None and m.args:
        defaults.setdefault("workload", m.args[0])
    opt = request.config.getoption("--pagerace-out")
    out = Path(opt) if opt else tmp_path_factory.getbasetemp() / "pagerace"
    shrink = float(request.config.getoption("--pagerace-shrink-time"))
    return Scenario(defaults, out, shrink, request.node.name)

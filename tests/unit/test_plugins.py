"""The public extension API (``pagerace.extend``) and plugins (``harness/plugins.py``):
registration, loading from ``--plugin`` (before or after the command), from
``PAGERACE_PLUGINS`` and from the ``pagerace.plugins`` entry points, campaign workers
loading the plugins of their task, and artifacts that name the plugin they need.

Every test that loads a plugin runs inside ``plugins.isolated()``, which puts the
variant, actor-kind and operation tables back as they were.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pagerace.core.actors import OPS
from pagerace.core.machine.errors import InvalidOption
from pagerace.core.variants import VARIANTS
from pagerace.harness import cli, plugins
from pagerace.workloads import ACTOR_KINDS

from pagerace import extend

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "my_patch.py"
PATCHED = "v6-check-page-patch"

KIND_PLUGIN = '''
from pagerace.extend import register_actor_kind, register_op


def op_poke(k, a, mm, vpn):
    """A CPU store that yields twice first (a toy path)."""
    from pagerace.core.mm.memory import cpu_access
    yield
    yield
    r = yield from cpu_access(k, a, mm, vpn, True)
    return r


def poker_ops(p, rng):
    lo, hi = p["range"]
    return [("poke", 0, int(rng.integers(lo, hi))) for _ in range(int(p["ops"]))]


register_op("poke", op_poke)
register_actor_kind("poker", {"ops": 3, "range": [0, 4]}, "a CPU poking pages", poker_ops)
'''

KIND_WORKLOAD = '''
name = "pokes"
description = "pokers and a driver"
[geometry]
sys_frames = 16
dev_frames = 8
mms = 1
pages_per_mm = 4
[[mm]]
id = 0
populate = [{start = 0, end = 4}]
[[actor]]
kind = "poker"
count = 2
[[actor]]
kind = "driver"
'''


@pytest.fixture
def isolated() -> Iterator[None]:
    with plugins.isolated():
        yield


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ----------------------------------------------------------------------------------------
# registration


def test_isolated_puts_the_tables_back() -> None:
    before = (set(VARIANTS), set(ACTOR_KINDS), set(OPS))
    with plugins.isolated():
        plugins.load(str(EXAMPLE))
        assert PATCHED in VARIANTS
    assert (set(VARIANTS), set(ACTOR_KINDS), set(OPS)) == before
    assert plugins.owner("variants", PATCHED) is None


def test_register_variant_records_its_plugin_and_is_a_decorator(isolated: None) -> None:
    p = plugins.load(str(EXAMPLE))
    assert p.name == "my_patch" and p.spec == str(EXAMPLE.resolve())
    assert p.provides["variants"] == [PATCHED]
    assert issubclass(VARIANTS[PATCHED], extend.V6)
    assert plugins.owner("variants", PATCHED) is p
    assert plugins.owner("variants", "v6") is None  # built-ins belong to no plugin
    assert plugins.load(str(EXAMPLE)) is p  # loaded once


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("class X(V6):\n    pass", "set a class attribute name"),
        ("class X(V6):\n    name = 'v5.0'", "'v5.0' is taken"),
        ("class X:\n    name = 'x'", "expected a subclass"),
        ("class X(V6):\n    name = 'has space'", "no spaces"),
    ],
)
def test_register_variant_refuses(isolated: None, body: str, needle: str) -> None:
    ns: dict[str, object] = {"V6": extend.V6}
    exec(body, ns)
    with pytest.raises(InvalidOption, match=needle):
        extend.register_variant(ns["X"])  # type: ignore[arg-type]


def test_register_op_and_kind_refuse_taken_names(isolated: None) -> None:
    with pytest.raises(InvalidOption, match=r"'read'.*taken"):
        extend.register_op("read", lambda k, a: iter(()))
    with pytest.raises(InvalidOption, match=r"'cpu'.*taken"):
        extend.register_actor_kind("cpu", {}, "", lambda p, r: [])


def test_a_plugin_kind_and_op_run_from_a_toml_workload(
    isolated: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plug = tmp_path / "poker.py"
    plug.write_text(KIND_PLUGIN)
    wl = tmp_path / "pokes.toml"
    wl.write_text(KIND_WORKLOAD)
    out = tmp_path / "out"
    rc, _o, err = run_cli(capsys, "run", wl, "--plugin", plug, "--out", out, "--seed", "3")
    assert rc == 0, err
    p = plugins.owner("ops", "poke")
    assert p is not None and p.provides == {"variants": [], "kinds": ["poker"], "ops": ["poke"]}
    runs = (out / "runs.csv").read_text()
    assert "pokes" in runs


def test_a_workload_of_an_unloaded_kind_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wl = tmp_path / "pokes.toml"
    wl.write_text(KIND_WORKLOAD)
    rc, _o, err = run_cli(capsys, "run", wl, "--out", tmp_path / "o")
    assert rc == 2 and "'poker'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------
# loading: --plugin before and after the command, the environment, entry points


@pytest.mark.parametrize("where", ["before", "after"])
def test_plugin_option_before_or_after_the_command(
    isolated: None, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["list", "--format", "json"]
    argv = ["--plugin", str(EXAMPLE), *argv] if where == "before" else [*argv, "--plugin", str(EXAMPLE)]
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 0, err
    by_name = {v["name"]: v for v in json.loads(out)["variants"]}
    assert by_name[PATCHED]["plugin"] == "my_patch" and by_name["v6"]["plugin"] is None


def test_plugins_from_the_environment(
    isolated: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(plugins.ENV, f"{EXAMPLE}")
    rc, out, _err = run_cli(capsys, "list")
    assert rc == 0 and f"{PATCHED} v6 with migrate_vma_check_page() counting collect's reference twice " \
        "[plugin my_patch]" in out


def test_plugins_from_an_installed_entry_point(
    isolated: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A distribution on sys.path that declares ``[pagerace.plugins]`` (a real
    .dist-info directory, found by importlib.metadata) is loaded by every command."""
    (tmp_path / "epplug.py").write_text(EXAMPLE.read_text().replace(PATCHED, "v6-from-ep"))
    dist = tmp_path / "epplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: epplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pagerace.plugins]\nmine = epplug\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_ENTRY_POINTS_DONE", False)
    rc, out, _err = run_cli(capsys, "list")
    assert rc == 0 and "v6-from-ep" in out
    assert plugins.owner("variants", "v6-from-ep").name == "mine"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (lambda d: d / "missing.py", ["missing.py", "no such file"]),
        (lambda d: "no_such_module_xyz", ["no_such_module_xyz", "no such file or module"]),
    ],
)
def test_a_bad_plugin_is_bad_input(
    isolated: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, needles: list[str]
) -> None:
    spec = make(tmp_path)  # type: ignore[operator]
    rc, out, err = run_cli(capsys, "run", "--plugin", spec, "--out", tmp_path / "o")
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    for n in needles:
        assert n in err
    assert not (tmp_path / "o").exists()


def test_a_plugin_that_raises_is_bad_input_naming_it(
    isolated: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "broken_patch.py"
    p.write_text("raise RuntimeError('half-written patch')\n")
    rc, _out, err = run_cli(capsys, "list", "--plugin", p)
    assert rc == 2
    assert "plugin 'broken_patch'" in err and "RuntimeError: half-written patch" in err
    assert len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------
# campaign workers and artifacts


def test_a_campaign_task_carries_the_plugins_and_a_worker_loads_them() -> None:
    """A task made where the plugin is loaded runs in a process where it is not (as a
    spawned or Dask worker would): run_task loads it first."""
    from pagerace.harness.campaign import Task, run_task
    from pagerace.workloads import load_workload, workload_to_json

    w = load_workload("migrate-vs-pin")
    with plugins.isolated():
        plugins.load(str(EXAMPLE))
        t = Task(workload_to_json(w), PATCHED, (), "rr", "deterministic", (5,), "t")
    assert t.plugins == (str(EXAMPLE.resolve()),)
    assert PATCHED not in VARIANTS
    with plugins.isolated():
        (res,) = run_task(t)
        assert PATCHED in VARIANTS
    assert res.error == "" and res.kind == "lost_write"
    assert res.artifact is not None
    assert res.artifact[1]["plugins"][0]["provides"]["variants"] == [PATCHED]


def test_an_artifact_of_a_plugin_variant_names_the_plugin_when_it_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    with plugins.isolated():
        rc, _o, err = run_cli(capsys, "--plugin", EXAMPLE, "run", "migrate-vs-pin", "--variant", PATCHED,
                              "--seed", "5", "--strategy", "rr", "--out", out)
        assert rc == 1, err
    (art,) = (out / "artifacts").glob("*.json")
    doc = json.loads(art.read_text())
    assert doc["plugins"] == [
        {"name": "my_patch", "spec": str(EXAMPLE.resolve()),
         "provides": {"variants": [PATCHED], "kinds": [], "ops": []}}
    ]
    rc, o, err = run_cli(capsys, "replay", art)
    assert rc == 2 and o == ""
    assert len(err.strip().splitlines()) == 1 and "corrupt" not in err
    for n in ("plugin 'my_patch'", f"variant '{PATCHED}'", f"--plugin {EXAMPLE.resolve()}"):
        assert n in err
    with plugins.isolated():
        rc, o, err = run_cli(capsys, "replay", art, "--plugin", EXAMPLE)
    assert rc == 1 and "reproduced" in o


def test_an_artifact_of_built_ins_records_no_plugin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    rc, _o, err = run_cli(capsys, "run", "migrate-vs-pin", "--bug", "check-ignores-pins", "--seed", "5",
                          "--strategy", "random", "--out", out)
    assert rc == 1, err
    (art,) = (out / "artifacts").glob("*.json")
    assert "plugins" not in json.loads(art.read_text())


def test_the_entry_point_scan_agrees_with_importlib_metadata() -> None:
    """The cheap scan (no importlib.metadata at start-up) finds what importlib.metadata
    finds, on a group this installation has (pytest11: pagerace's own pytest plugin)."""
    from importlib.metadata import entry_points

    want = sorted({(e.name, e.value) for e in entry_points(group="pytest11")})
    assert ("pagerace", "pagerace.harness.pytest_plugin") in want
    assert plugins.entry_points_of_group("pytest11") == want


def test_a_campaign_plan_file_lists_its_plugins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "my_patch.py").write_text(EXAMPLE.read_text())
    plan = tmp_path / "nightly.toml"
    plan.write_text(
        'name = "n"\nplugins = ["patches/my_patch.py"]\nworkloads = ["migrate-vs-pin"]\n'
        f'variants = ["{PATCHED}"]\nseeds = "5"\nstrategies = ["rr"]\njobs = 1\nreplay = false\n'
    )
    with plugins.isolated():
        rc, _o, err = run_cli(capsys, "campaign", "--plan", plan, "--out", tmp_path / "o", "--quiet")
    assert rc == 1, err
    assert f"{PATCHED},,deterministic,5" in (tmp_path / "o" / "failures.csv").read_text()
    plan.write_text('plugins = "patches/my_patch.py"\n')
    rc, _o, err = run_cli(capsys, "campaign", "--plan", plan, "--out", tmp_path / "o2")
    assert rc == 2 and "'plugins' must be a list" in err

"""The workload reference (docs/workloads.md) is generated from the code and in sync
with it; every key the loader accepts is documented; ``pagerace list --kinds``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pagerace.harness import cli, plugins, reference
from pagerace.workloads import ACTOR_KINDS

DOC = Path(__file__).parents[2] / "docs" / "workloads.md"


def test_docs_workloads_md_is_the_generator_output() -> None:
    assert DOC.read_text() == reference.markdown() + "\n", (
        "docs/workloads.md is stale: python -m pagerace.harness.reference > docs/workloads.md"
    )


def test_every_key_the_loader_accepts_is_documented() -> None:
    assert reference.undocumented() == {key: set() for key in ("top", "geometry", "limits", "mm", "device")}


def test_a_new_key_without_documentation_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference, "MM_KEYS", {*reference.MM_KEYS, "hugepages"})
    assert reference.undocumented()["mm"] == {"hugepages"}


def test_every_actor_kind_and_parameter_is_in_the_reference() -> None:
    text = DOC.read_text()
    for name, (_fn, defaults, _doc) in ACTOR_KINDS.items():
        assert f"### `{name}`" in text
        section = text.split(f"### `{name}`", 1)[1].split("### ", 1)[0]
        for p in defaults:
            assert f"| `{p}` |" in section, (name, p)


def test_list_kinds_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list", "--kinds"]) == 0
    out = capsys.readouterr().out
    assert "  driver: " in out and '      pattern = ["to_device", "to_system"]  (list)' in out
    assert "evictor (needs migrate_device_range)" in out
    assert cli.main(["list", "--kinds", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {k["name"] for k in doc["kinds"]} == set(ACTOR_KINDS)


def test_list_kinds_shows_a_plugin_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "k.py"
    p.write_text(
        "from pagerace.extend import register_actor_kind\n"
        "register_actor_kind('napper', {'ops': 2, 'think': 3}, 'sleeps', "
        "lambda p, rng: [('idle', int(p['think']))] * int(p['ops']))\n"
    )
    with plugins.isolated():
        assert cli.main(["list", "--kinds", "--plugin", str(p)]) == 0
    out = capsys.readouterr().out
    assert "  napper: sleeps" in out and "      think = 3  (integer)" in out

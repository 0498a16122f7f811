"""Workloads as data: every TOML in ``workloads/`` loads and builds a clean state, and
each kind of bad input is an InvalidWorkload with a one-line message that names the
key and the value."""

from __future__ import annotations

import copy
from pathlib import Path

import pagerace.workloads
import pytest
from pagerace.core.machine.errors import InvalidWorkload
from pagerace.core.oracles.invariants import check_all
from pagerace.harness.runner import build_model
from pagerace.workloads import (
    actor_programs,
    load_workload,
    parse_workload,
    workload_from_json,
    workload_names,
    workload_to_json,
)

WORKLOAD_DIR = Path(pagerace.workloads.__file__).parent


def test_the_named_library_is_there() -> None:
    names = workload_names()
    assert {"default", "fault-storm", "opposite-order"} <= set(names)
    assert names == sorted(p.stem for p in WORKLOAD_DIR.glob("*.toml"))


@pytest.mark.parametrize("name", workload_names())
def test_every_workload_loads_and_builds_clean(name: str) -> None:
    w = load_workload(name)
    assert w.name == name and w.description
    assert w.n_actors() == w.geometry.actors >= 1
    progs = actor_programs(w, seed=0)
    assert len(progs) == w.n_actors() and all(ops for *_, ops in progs)
    assert len({name for name, *_ in progs}) == len(progs)  # unique actor names
    m = build_model(w, "v6", (), 0)
    check_all(m.kernel)
    # An artifact's copy of the workload rebuilds the same thing.
    again = workload_from_json(workload_to_json(w))
    assert again.geometry == w.geometry and again.actors == w.actors and again.mms == w.mms


def test_load_by_path(tmp_path: Path) -> None:
    p = tmp_path / "mine.toml"
    p.write_text((WORKLOAD_DIR / "default.toml").read_text())
    assert load_workload(str(p)).geometry == load_workload("default").geometry


def test_op_lists_depend_only_on_seed_and_actor() -> None:
    w = load_workload("default")
    assert actor_programs(w, 3) == actor_programs(w, 3)
    assert actor_programs(w, 3) != actor_programs(w, 4)


# -- bad input -------------------------------------------------------------------------------

GOOD = {
    "name": "t",
    "geometry": {"sys_frames": 16, "dev_frames": 8, "pages_per_mm": 8},
    "mm": [{"id": 0, "populate": [{"start": 0, "end": 4}]}],
    "actor": [{"kind": "cpu", "range": [0, 8]}, {"kind": "driver", "range": [0, 4]}],
}


def _with(path: str, value) -> dict:
    """GOOD with the value at a dotted path (list indexes as numbers) replaced."""
    d = copy.deepcopy(GOOD)
    *head, last = path.split(".")
    cur = d
    for part in head:
        cur = cur[int(part)] if part.isdigit() else cur.setdefault(part, {})
    if last.isdigit():
        cur[int(last)] = value
    else:
        cur[last] = value
    return d


BAD = [
    # unknown keys
    ("unknown_top_key", _with("bogus", 1), ["'bogus'"]),
    ("unknown_geometry_key", _with("geometry.frames", 4), ["'frames'", "sys_frames"]),
    ("unknown_actor_key", _with("actor.0.speed", 3), ["actor.speed", "write_ratio"]),
    ("unknown_mm_key", _with("mm.0.pages", 3), ["'pages'", "populate"]),
    ("unknown_limits_key", _with("limits", {"steps": 3}), ["'steps'", "max_steps"]),
    ("unknown_device_key", _with("device", [{"id": 0, "speed": 1}]), ["'speed'", "fault_range"]),
    ("unknown_vma_key", _with("mm.0.vmas", [{"start": 0, "end": 8, "prot": 1}]), ["'prot'"]),
    # wrong types
    ("name_not_string", _with("name", 5), ["name = 5"]),
    ("geometry_value_string", _with("geometry.sys_frames", "many"), ["geometry.sys_frames", "'many'"]),
    ("geometry_value_bool", _with("geometry.sys_frames", True), ["geometry.sys_frames", "True"]),
    ("geometry_not_table", _with("geometry", [1]), ["geometry = [1]"]),
    ("limits_not_table", _with("limits", 5), ["limits = 5"]),
    ("limit_not_int", _with("limits", {"max_steps": 1.5}), ["limits.max_steps", "1.5"]),
    ("mm_not_table", _with("mm", [5]), ["mm = 5"]),
    ("vmas_not_list", _with("mm.0.vmas", 5), ["mm.vmas = 5"]),
    ("vma_not_table", _with("mm.0.vmas", [5]), ["mm.vmas = 5"]),
    ("vma_flags_not_list", _with("mm.0.vmas", [{"start": 0, "end": 8, "flags": "anon"}]),
     ["mm.vmas.flags", "'anon'"]),
    ("populate_not_table", _with("mm.0.populate", [3]), ["mm.populate", "3"]),
    ("mm_device_not_table", _with("mm.0.device", [5]), ["mm.device = 5"]),
    ("share_not_table", _with("mm.0.share", [5]), ["mm.share = 5"]),
    ("device_not_table", _with("device", [5]), ["device = 5"]),
    ("actor_count_string", _with("actor.0.count", "two"), ["actor.count", "'two'"]),
    ("actor_ops_string", _with("actor.0.ops", "many"), ["actor.ops", "'many'"]),
    ("actor_ratio_string", _with("actor.0.write_ratio", "half"), ["actor.write_ratio", "'half'"]),
    ("actor_range_string", _with("actor.0.range", "0-8"), ["actor.range", "'0-8'"]),
    ("actor_hot_not_ints", _with("actor.0.hot", ["a"]), ["actor.hot", "'a'"]),
    ("needs_not_list", _with("needs", "migrate_vma"), ["needs", "'migrate_vma'"]),
    ("faults_not_strings", _with("faults", [1]), ["faults", "1"]),
    # out of range
    ("too_many_devices", _with("geometry.devices", 300), ["devices", "300"]),
    ("negative_frames", _with("geometry.sys_frames", -1), ["geometry.sys_frames", "-1"]),
    ("mm_id_past_mms", _with("mm.0.id", 3), ["mm.id = 3"]),
    ("actor_count_zero", _with("actor.0.count", 0), ["actor.count = 0"]),
    ("populate_past_end", _with("mm.0.populate", [{"start": 0, "end": 99}]), ["mm.populate.end = 99"]),
    ("fault_range_zero", _with("device", [{"id": 0, "fault_range": 0}]), ["device.fault_range = 0"]),
    ("ratio_above_one", _with("actor.0.write_ratio", 1.5), ["actor.write_ratio = 1.5"]),
    ("range_past_end", _with("actor.0.range", [0, 99]), ["actor.range", "99"]),
    ("range_reversed", _with("actor.0.range", [6, 2]), ["actor.range", "[6, 2]"]),
    ("hot_past_end", _with("actor.0.hot", [1, 40]), ["actor.hot", "40"]),
    ("populate_more_than_frames", _with("geometry.sys_frames", 2), ["sys_frames", "2"]),
    ("populate_outside_vma", _with("mm.0.vmas", [{"start": 4, "end": 8}]), ["mm.populate", "VMA"]),
    ("overlapping_vmas", _with("mm.0.vmas", [{"start": 0, "end": 6}, {"start": 4, "end": 8}]),
     ["mm.vmas", "overlaps"]),
    # unknown actor kind, bad enumerations
    ("unknown_actor_kind", _with("actor.0.kind", "gpu"),
     ["actor.kind = 'gpu'", "cpu, device_read, device_write, driver"]),
    ("missing_actor_kind", _with("actor.0", {"count": 1}), ["actor.kind = None"]),
    ("no_actors", _with("actor", []), ["actor = []"]),
    ("unknown_vma_flag", _with("mm.0.vmas", [{"start": 0, "end": 8, "flags": ["exec"]}]),
     ["mm.vmas.flags", "'exec'", "anon"]),
    ("unknown_driver_pattern", _with("actor.1.pattern", ["fly"]), ["'fly'", "to_device"]),
]


@pytest.mark.parametrize(("table", "names"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_precise_line(table: dict, names: list[str]) -> None:
    with pytest.raises(InvalidWorkload) as info:
        parse_workload(table, "t.toml")
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert msg.startswith("t.toml: "), msg
    for text in names:
        assert text in msg, f"{text!r} not in {msg!r}"


def test_good_table_is_good() -> None:
    """The base of the bad cases is itself valid (so each case tests one thing)."""
    w = parse_workload(copy.deepcopy(GOOD), "t.toml")
    check_all(build_model(w, "v6", (), 0).kernel)


def test_invalid_toml(tmp_path: Path) -> None:
    p = tmp_path / "broken.toml"
    p.write_text('name = "x"\n[geometry\nsys_frames = 4\n')
    with pytest.raises(InvalidWorkload) as info:
        load_workload(str(p))
    msg = str(info.value)
    assert "\n" not in msg and "invalid TOML" in msg and "broken.toml" in msg and "line 2" in msg


def test_unknown_workload_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidWorkload) as info:
        load_workload("no-such-workload")
    msg = str(info.value)
    assert "'no-such-workload'" in msg and "default" in msg and "fault-storm" in msg
    assert "\n" not in msg


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidWorkload, match="cannot read"):
        load_workload(str(tmp_path / "missing.toml"))

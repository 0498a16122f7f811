"""The one duration parser (``harness/commands/_options.py``) and the bounds on what a
user types: every command that takes a time uses it, and a bad value is one line, exit 2,
naming the value (issue 10, item 10)."""

from __future__ import annotations

import pytest
from pagerace.core.machine.errors import InvalidOption
from pagerace.harness.cli import main
from pagerace.harness.commands._options import MAX_DURATION_S, parse_duration


@pytest.mark.parametrize(
    ("text", "secs"),
    [
        ("1.5", 1.5),
        (".5", 0.5),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2m30s", 150.0),
        ("1d", 86400.0),
        (" 90S ", 90.0),
        (45, 45.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration_forms(text: str | float, secs: float) -> None:
    assert parse_duration(text) == secs


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("-5s", "cannot be negative"),
        (-5, "cannot be negative"),
        ("0", "more than zero"),
        ("0s", "more than zero"),
        ("soon", "not a duration"),
        ("1x", "not a duration"),
        ("1.2.3", "not a duration"),
        ("inf", "not a duration"),
        ("nan", "not a duration"),
        (float("nan"), "not a duration"),
        (True, "not a duration"),
        ("8d", "longer than the limit"),
        ("9" * 400, "longer than the limit"),
        (float("inf"), "longer than the limit"),
    ],
)
def test_parse_duration_rejects_naming_option_and_value(text: object, why: str) -> None:
    with pytest.raises(InvalidOption, match=why) as ei:
        parse_duration(text, "--budget")  # type: ignore[arg-type]
    assert str(ei.value).startswith("--budget ")
    assert "\n" not in str(ei.value)


def test_parse_duration_none_ok() -> None:
    for t in (None, "none", "", "0", 0):
        assert parse_duration(t, "budget", none_ok=True) is None
    with pytest.raises(InvalidOption, match="required"):
        parse_duration(None, "--duration")
    assert MAX_DURATION_S == 7 * 86400


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--engine", "parallel", "--duration", "-5s"],
        ["campaign", "--seeds", "-3-4", "--out", "OUT"],
        ["campaign", "--budget", "-5s", "--out", "OUT"],
        ["shrink", "x.json", "--time", "-1"],
        ["hunt", "default", "--shrink-time", "-2s"],
    ],
)
def test_negative_values_are_named_not_missing(
    argv: list[str], tmp_path: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: argparse said "expected one argument" for `--duration -5s` and `--seeds -3-4`."""
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "expected one argument" not in err
    value = argv[argv.index(next(a for a in argv if a.startswith("-") and a[1:2].isdigit()))]
    assert repr(value) in err or value in err, err
    import os

    assert os.listdir(".") == []  # nothing written

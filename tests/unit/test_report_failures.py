"""The morning report's findings: failure signatures (and the artifact's last_touch that
titles a global oracle's failure), the failures section, history over nights, the fixed
contention and outcome tables, the narrow text, and the JSON and JUnit outputs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pagerace.harness import campaign as c
from pagerace.harness.artifacts import last_touch, load_artifact, replay
from pagerace.harness.cli import main
from pagerace.reports import WIDTH, build_report, text_table
from pagerace.reports import aggregate as agg
from pagerace.reports import failures as fl
from pagerace.reports.load import Dataset, empty_frame, load_dir
from pagerace.reports.schema import CONTENTION, FAILURES, OUTCOMES, RUNS, CsvSchema

LOST_WRITE_SEEDS = "5,7"  # migrate-vs-pin × v6 × check-ignores-pins: lost_write within 300 steps


def _campaign(out: Path, workloads: str, bugs: str, seeds: str, **kw: object) -> Path:
    plan = dict(name=out.name, workloads=workloads, variants="v6", seeds=seeds, bugs=bugs, **kw)
    c.run_campaign(c.make_plan(plan), out)
    return out


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nights")
    fast = dict(max_steps=20000, livelock_steps=400)
    return {
        "n1": _campaign(root / "n1", "fault-storm", "none", "1-4", **fast),
        "n2": _campaign(root / "n2", "fault-storm", "no-fault-folio-exception", "1-4", **fast),
        "pins": _campaign(root / "pins", "migrate-vs-pin", "check-ignores-pins", LOST_WRITE_SEEDS),
    }


# -- signatures ------------------------------------------------------------------------------


def test_a_local_failure_is_titled_by_its_call_site_and_line() -> None:
    steps = [
        [10, "driver0", "migrate_vma_collect:292", "migrate_vma_collect_pmd:ptl"],
        [11, "cpu0", "do_swap_page_device:326", "do_swap_page:folio_trylock"],
        [12, "cpu1", "wait_on_page_locked:586", "waits on page:3 at do_swap_page:wait_on_locked"],
    ]
    s = fl.signature("livelock", "do_swap_page:folio_trylock;x:y", "cpu0", {"steps": steps})
    assert (s.title, s.where) == ("livelock in do_swap_page:folio_trylock", "do_swap_page_device:326")
    # a failed trylock leaves the label of the lock before it in the same function
    s = fl.signature("livelock", "migrate_vma_collect_pmd:folio_trylock", "", {"steps": steps})
    assert s.where == "migrate_vma_collect:292"
    # a wait's label names its site after " at "
    s = fl.signature("deadlock", "do_swap_page:wait_on_locked", "cpu1", {"steps": steps})
    assert s.where == "wait_on_page_locked:586"
    # no artifact: the title stays, the line is unknown
    assert fl.signature("livelock", "do_swap_page:folio_trylock", "", None).where == ""


def test_a_global_oracle_failure_is_titled_by_the_last_path_that_touched_the_page() -> None:
    touch = {"actor": "driver0", "where": "alloc_and_copy_to_ram:205", "site": "fault_copy:lock_dst"}
    s = fl.signature("lost_write", "global_invariants", "", {"last_touch": touch})
    assert s.title == "lost_write after fault_copy:lock_dst" and s.where == "alloc_and_copy_to_ram:205"
    # an artifact from before last_touch existed: the oracle's name, as before
    assert fl.signature("lost_write", "global_invariants", "", {}).title == "lost_write in global_invariants"


def test_artifacts_of_lost_writes_record_the_last_path_that_took_the_page(nights: dict[str, Path]) -> None:
    ds = load_dir(nights["pins"])
    lost = ds.failures[ds.failures["kind"] == "lost_write"]
    assert len(lost) >= 1
    for rel, pages in zip(lost["artifact"], lost["pages"]):
        doc = json.loads((nights["pins"] / rel).read_text())
        touch = doc["last_touch"]
        assert touch["lock"] == f"page:{pages.split(';')[0]}"
        assert touch["step"] <= doc["failure"]["step"]
        assert ":" in touch["where"] and ":" in touch["site"]
    # the report titles them by that path, not by the oracle
    g = fl.failure_groups(ds)
    assert not any("global_invariants" in t for t in g["signature"])
    assert any(t.startswith("lost_write after ") for t in g["signature"])


def test_last_touch_is_none_for_a_failure_a_local_check_saw(nights: dict[str, Path]) -> None:
    ds = load_dir(nights["n2"])
    rec, ok, _why = replay(load_artifact(nights["n2"] / ds.failures["artifact"].iloc[0]))
    assert ok and rec.result.failure is not None and rec.result.failure.sites
    assert last_touch(rec) is None


# -- the failures section ---------------------------------------------------------------------


def test_failures_are_grouped_by_signature_with_seed_artifact_and_commands(nights: dict[str, Path]) -> None:
    ds = load_dir(nights["n2"])
    g = fl.failure_groups(ds)
    assert list(g.columns) == fl.FAILURE_COLUMNS
    assert g["count"].sum() == len(ds.failures) == 4
    assert list(g["count"]) == sorted(g["count"], reverse=True)
    top = g.iloc[0]
    assert top["signature"].startswith("livelock in ")
    mine = ds.failures[
        [
            fl.signature(k, s, a, fl.read_artifact(ds.path, r)).title == top["signature"]
            for k, s, a, r in zip(
                ds.failures["kind"], ds.failures["sites"], ds.failures["actors"], ds.failures["artifact"]
            )
        ]
    ]
    first = mine.sort_values("seed").iloc[0]
    assert top["first_seed"] == first["seed"] and top["message"] == first["message"]
    assert top["artifact"] == first["artifact"] and (ds.path / top["artifact"]).is_file()
    assert top["replay"] == f"pagerace replay {ds.path / top['artifact']} --steps"
    assert top["shrink"] == f"pagerace shrink {ds.path / top['artifact']}"
    assert "fault-storm × v6 × no-fault-folio-exception" in top["configurations"]


def test_the_pasted_replay_command_reproduces(
    nights: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cmd = fl.failure_groups(load_dir(nights["n2"])).iloc[0]["replay"].split()
    assert cmd[:2] == ["pagerace", "replay"]
    assert main(cmd[1:]) == 1  # 1: it failed the same way again
    assert "livelock" in capsys.readouterr().out


# -- history -------------------------------------------------------------------------------------


def test_history_first_and_last_seen_and_the_rate_series(nights: dict[str, Path]) -> None:
    ds = [load_dir(nights[n]) for n in ("n1", "n2", "pins")]
    table, rates = fl.history(ds)
    assert list(table.columns) == fl.HISTORY_COLUMNS
    assert list(rates.index) == ["n1", "n2", "pins"]
    live = table[table["signature"].str.startswith("livelock")]
    assert set(live["first_seen"]) == {"n2"} and set(live["last_seen"]) == {"n2"}
    assert live["failures"].sum() == 4
    for s in live["series"]:
        assert s.split()[0] == "0/4" and s.split()[2] == "0/2"
    lost = table[table["signature"].str.startswith("lost_write")].iloc[0]
    assert (lost["first_seen"], lost["last_seen"], lost["nights"]) == ("pins", "pins", 1)
    assert table.iloc[0]["last_seen"] == "pins"  # most recent first
    assert rates.loc["n1"].sum() == 0 and abs(rates.loc["n2"].sum() - 1.0) < 1e-9


def test_history_accepts_a_directory_of_nights(nights: dict[str, Path], tmp_path: Path) -> None:
    root = nights["n1"].parent
    assert fl.night_dirs([root]) == sorted(d for d in root.iterdir() if (d / "runs.csv").exists())
    assert fl.night_dirs([nights["n2"]]) == [nights["n2"]]
    rep = build_report(nights["pins"], history=[root], out=tmp_path / "r", html=True)
    assert rep.history is not None and len(rep.history_rates) == 3
    assert set(rep.figures) == {"contention.png", "failure_rate.png", "outcome_mix.png", "history.png"}
    assert "== history over 3 nights" in rep.text()
    assert ">History</h2>" in rep.html.read_text()


# -- fixed tables ------------------------------------------------------------------------------


Rows = Sequence[dict[str, Any]]


def _ds(runs: Rows, contention: Rows = (), outcomes: Rows = ()) -> Dataset:
    def frame(schema: CsvSchema, rows: Rows) -> pd.DataFrame:
        base = empty_frame(schema)
        if not rows:
            return base
        df = pd.DataFrame(rows)
        for col in base.columns:
            blank = "" if base[col].dtype == "string" else 0
            df[col] = df[col].fillna(blank) if col in df.columns else blank
        return df[list(base.columns)].astype(base.dtypes.to_dict())

    return Dataset(
        Path("."),
        runs=frame(RUNS, runs),
        failures=empty_frame(FAILURES),
        contention=frame(CONTENTION, contention),
        outcomes=frame(OUTCOMES, outcomes),
    )


def test_wait_only_sites_rank_by_contentions_per_run_and_have_no_ratio() -> None:
    runs = [dict(run_id=f"r{i}", variant="v6", workload="w", outcome="clean") for i in range(4)]
    runs.append(dict(run_id="s0", variant="v5.0", workload="w", outcome="clean"))
    cont = [
        # waits only (acquired 0): the most contended site
        dict(
            run_id="r0",
            variant="v6",
            site="do_swap_page:wait_on_locked",
            time_unit="steps",
            contended=40,
            waits=40,
            wait_total=400,
        ),
        dict(
            run_id="r1",
            variant="v6",
            site="do_swap_page:ptl",
            time_unit="steps",
            acquired=100,
            contended=10,
            waits=10,
            wait_total=20,
        ),
        dict(
            run_id="s0",
            variant="v5.0",
            site="do_swap_page:ptl",
            time_unit="steps",
            acquired=10,
            contended=5,
            waits=5,
            wait_total=5,
        ),
    ]
    t = agg.contention_table(_ds(runs, cont))
    assert list(t["site"]) == ["do_swap_page:wait_on_locked", "do_swap_page:ptl", "do_swap_page:ptl"]
    w = t.iloc[0]
    # per run of the variant: 4 v6 runs, whether or not they reached the site
    assert (w["cont/run"], w["waits/run"], w["wait/run"], w["acq/run"]) == (10.0, 10.0, 100.0, 0.0)
    assert np.isnan(w["contention"])
    # v5.0's own single run: 5 per run, ahead of v6's 10 contentions over 4 runs
    assert t.iloc[1]["variant"] == "v5.0" and t.iloc[1]["cont/run"] == 5.0
    assert t.iloc[2]["contention"] == pytest.approx(0.1) and t.iloc[2]["cont/run"] == 2.5
    text = text_table(t)
    assert "wait only" in text and "0.0%" not in text.splitlines()[1]


def test_page_cache_reads_are_not_failed_migrations() -> None:
    runs = [dict(run_id="r0", variant="v6", workload="w", outcome="clean")]
    outs = [
        dict(run_id="r0", variant="v6", attempt="compact", collected=10, migrated=8, other=2),
        dict(run_id="r0", variant="v6", attempt="file_read", collected=50, other=50),
        dict(run_id="r0", variant="v6", attempt="file_write", collected=5, other=5),
    ]
    ds = _ds(runs, outcomes=outs)
    m = agg.migration_outcomes(ds)
    assert list(m["attempt"]) == ["compact"] and m.iloc[0]["success"] == pytest.approx(0.8)
    assert list(agg.outcome_mix(ds)["attempt"]) == ["compact"]
    pc = agg.page_cache_ops(ds)
    assert list(pc["attempt"]) == ["file_read", "file_write"] and list(pc["other"]) == [50, 5]
    # without the filter the mix would count 55 page-cache operations as "other" skips
    assert agg.outcome_mix(ds).iloc[0]["other"] == pytest.approx(0.2)


def test_only_failing_or_changed_configurations_are_listed(nights: dict[str, Path]) -> None:
    rates = agg.failure_rates(load_dir(nights["n1"]))
    assert agg.interesting_rates(rates).empty  # all clean
    key = tuple(rates.iloc[0][["workload", "variant", "bugs"]])
    assert len(agg.interesting_rates(rates, {key})) == 1
    rep = build_report(nights["n2"], baseline=nights["n1"], figures=False)
    t = next(df for title, df in rep.tables.items() if title.startswith("failure rate"))
    assert list(t["failed"]) == [4] and list(t["baseline"]) == ["0/4 (none)"]  # baseline bugs named


# -- the text, JSON and JUnit outputs ----------------------------------------------------------


def test_text_report_puts_the_verdict_first_and_fits_100_columns(nights: dict[str, Path]) -> None:
    rep = build_report(nights["n2"], baseline=nights["n1"], history=[nights["n1"]], figures=False)
    lines = rep.text().splitlines()
    assert lines[1].startswith("REGRESSION: ") and lines[-1] == lines[1]
    assert lines.index("== failures by signature (1) ==") < next(
        i for i, ln in enumerate(lines) if ln.startswith("== failure rate")
    )
    # the directories a user names are printed as given, whatever their length (a CI
    # job's $TMPDIR is long): measure the lines around them
    def width(ln: str) -> int:
        for d in nights.values():
            ln = ln.replace(str(d), "DIR")
        return len(ln)

    wide = [ln for ln in lines if width(ln) > WIDTH and not ln.lstrip().startswith("$ pagerace ")]
    assert wide == []
    # the changes are grouped per configuration, the regressions under their heading
    assert "fault-storm × v6  (2 regressions)" in lines


def test_clean_verdict_without_a_baseline(nights: dict[str, Path]) -> None:
    rep = build_report(nights["n1"], figures=False)
    assert rep.verdict() == ("info", "CLEAN: all 4 runs clean; no baseline given")
    assert rep.failures is not None and rep.failures.empty


def test_report_format_json_and_junit(
    nights: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junit = tmp_path / "ci" / "report.xml"
    code = main(
        [
            "report",
            str(nights["n2"]),
            "--baseline",
            str(nights["n1"]),
            "--format",
            "json",
            "--junit",
            str(junit),
            "--no-figures",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "bad" and doc["regressions"] == 2 and doc["verdict"].startswith("REGRESSION")
    assert doc["failures"][0]["count"] == 4 and doc["failures"][0]["replay"].startswith("pagerace replay ")
    assert {f["configuration"] for f in doc["findings"]} >= {"fault-storm × v6"}
    assert set(doc["tables"]) == {
        "failure_rates",
        "contention",
        "migration_outcomes",
        "page_cache",
        "trylock_rates",
        "reproduction",
    }
    assert doc["tables"]["failure_rates"]["rows"][0]["failed"] == 4
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert int(suite.get("tests", "0")) == len(cases)
    failed = [tc for tc in cases if tc.find("failure") is not None]
    assert int(suite.get("failures", "0")) == len(failed) == 2  # the configuration, the regression
    text = failed[0].find("failure").text or ""  # type: ignore[union-attr]
    assert "4 of 4 runs failed" in text and "pagerace replay " in text
    # clean night: JUnit without failures, exit 0, --quiet prints nothing
    assert (
        main(
            [
                "report",
                str(nights["n1"]),
                "--junit",
                str(junit),
                "--no-figures",
                "--quiet",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == ""
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"  # type: ignore[union-attr]


def test_report_rejects_a_missing_history_night(
    nights: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(nights["n1"]), "--history", str(tmp_path / "nope"), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "no such directory" in err


def test_report_rejects_a_junit_path_it_cannot_write(
    nights: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", str(nights["n1"]), "--no-figures", "--out", str(tmp_path / "r")]
    assert main([*args, "--junit", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main([*args, "--junit", str(tmp_path / "file" / "report.xml")]) == 2
    assert "cannot write it" in capsys.readouterr().err

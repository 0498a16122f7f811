"""The morning report: loading with schema checks, aggregation numbers, figures, the
HTML page (parsed), and a baseline comparison that flags an injected bug toggle."""

from __future__ import annotations

import base64
import csv
import math
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from pagerace.harness import campaign as c
from pagerace.harness.cli import main
from pagerace.reports import aggregate as agg
from pagerace.reports import build_report
from pagerace.reports.compare import compare, two_proportion_z
from pagerace.reports.load import BadCsv, load_dir
from pagerace.reports.schema import SCHEMAS

PNG = b"\x89PNG\r\n\x1a\n"


def _campaign(out: Path, bugs: str, seeds: str = "1-8") -> Path:
    p = c.make_plan(
        dict(
            name=out.name,
            workloads="fault-storm,opposite-order",
            variants="v6",
            seeds=seeds,
            bugs=bugs,
            max_steps=20000,
            livelock_steps=400,
        )
    )
    c.run_campaign(p, out)
    return out


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reports")
    return {
        "base": _campaign(root / "base", "none"),
        "base2": _campaign(root / "base2", "none", seeds="9-16"),
        "bug": _campaign(root / "bug", "no-fault-folio-exception"),
    }


# -- loading ----------------------------------------------------------------------------------


def test_load_dir_types_columns(dirs: dict[str, Path]) -> None:
    ds = load_dir(dirs["bug"])
    assert len(ds.runs) == 16
    assert ds.runs["seed"].dtype == "int64" and ds.runs["wall_s"].dtype == "float64"
    assert ds.runs["bugs"].dtype == "string"
    assert set(ds.failures["run_id"]) <= set(ds.runs["run_id"])


def test_load_refuses_what_is_not_a_pagerace_directory(tmp_path: Path, dirs: dict[str, Path]) -> None:
    with pytest.raises(BadCsv, match="no such directory"):
        load_dir(tmp_path / "nope")
    with pytest.raises(BadCsv, match=r"no runs\.csv here"):
        load_dir(tmp_path)
    (tmp_path / "runs.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(BadCsv, match=r"header does not match runs\.csv schema version 1 \(missing column"):
        load_dir(tmp_path)
    # right header, rows of another schema version
    text = (dirs["base"] / "runs.csv").read_text().splitlines()
    (tmp_path / "runs.csv").write_text("\n".join([text[0], "7" + text[1][1:]]) + "\n")
    with pytest.raises(BadCsv, match=r"rows of schema version\(s\) 7; this pagerace reads version 1"):
        load_dir(tmp_path)
    # a value that is not a number in a numeric column
    head = text[0].split(",")
    row = next(csv.reader([text[1]]))
    row[head.index("steps")] = "many"
    with (tmp_path / "runs.csv").open("w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows([head, row])
    with pytest.raises(BadCsv, match="column 'steps': 'many' is not a number"):
        load_dir(tmp_path)


# -- aggregation ------------------------------------------------------------------------------


def test_wilson_interval_known_values() -> None:
    lo, hi = agg.wilson([0, 5, 20], [20, 10, 20])
    assert lo[0] == 0.0 and hi[0] == pytest.approx(0.1611, abs=1e-4)
    assert (lo[1], hi[1]) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert lo[2] == pytest.approx(0.8389, abs=1e-4) and hi[2] == 1.0
    lo, hi = agg.wilson(0, 0)
    assert (float(lo), float(hi)) == (0.0, 1.0)


def test_two_proportion_z() -> None:
    z, p = two_proportion_z(10, 100, 30, 100)
    assert z == pytest.approx(3.5355, abs=1e-3) and p == pytest.approx(4.07e-4, rel=0.02)
    assert two_proportion_z(0, 10, 0, 10) == (0.0, 1.0)


def test_failure_rates_match_a_count_of_runs_csv(dirs: dict[str, Path]) -> None:
    with (dirs["bug"] / "runs.csv").open(newline="") as fh:
        runs = list(csv.DictReader(fh))
    r = agg.failure_rates(load_dir(dirs["bug"])).set_index("workload")
    for w in ("fault-storm", "opposite-order"):
        mine = [x for x in runs if x["workload"] == w]
        failed = sum(x["outcome"] == "failed" for x in mine)
        assert r.loc[w, "runs"] == len(mine) and r.loc[w, "failed"] == failed
        assert r.loc[w, "rate"] == pytest.approx(failed / len(mine))
        assert r.loc[w, "ci_lo"] <= r.loc[w, "rate"] <= r.loc[w, "ci_hi"]
        assert r.loc[w, "bugs"] == "no-fault-folio-exception"
    assert r.loc["fault-storm", "kinds"] == "livelock 8"


def test_contention_trylock_outcomes_reproduction(dirs: dict[str, Path]) -> None:
    ds = load_dir(dirs["bug"])
    top = agg.contention_by_site(ds, top=3)
    assert len(top) == 3 and list(top["contended"]) == sorted(top["contended"], reverse=True)
    raw = ds.contention[ds.contention["site"] == top["site"][0]]
    assert top["contended"][0] == raw["contended"].sum()
    tr = agg.trylock_rates(ds)
    assert (tr["failures"] <= tr["attempts"]).all() and (tr["attempts"] > 0).all()
    mo = agg.migration_outcomes(ds)
    assert set(mo["attempt"]) <= set(ds.outcomes["attempt"]) and len(mo) > 0
    assert ((mo["success"] >= 0) & (mo["success"] <= 1)).all()
    mix = agg.outcome_mix(ds)
    assert mix.drop(columns="attempt").sum(axis=1).round(9).isin([0.0, 1.0]).all()
    rep = agg.reproduction(ds)
    fs = rep[rep["workload"] == "fault-storm"].iloc[0]
    assert (fs["failures"], fs["replayed"], fs["reproduced"], fs["rate"]) == (8, 8, 8, 1.0)


# -- figures, HTML -----------------------------------------------------------------------------


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables = 0
        self.rows = 0
        self.imgs: list[str] = []
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tables += tag == "table"
        self.rows += tag == "tr"
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        for k in ("src", "href"):
            v = a.get(k) or ""
            if v and not v.startswith("data:"):
                self.external.append(v)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_writes_figures_and_a_self_contained_html_page(dirs: dict[str, Path], tmp_path: Path) -> None:
    rep = build_report(dirs["bug"], baseline=dirs["base"], out=tmp_path / "r", html=True)
    assert set(rep.figures) == {"contention.png", "failure_rate.png", "outcome_mix.png"}
    for p in rep.figures.values():
        assert p.read_bytes().startswith(PNG) and p.stat().st_size > 5000
    assert rep.html == tmp_path / "r" / "index.html"
    page = _Page()
    page.feed(rep.html.read_text())
    assert page.tables >= 6  # the aggregate tables and the comparison
    # nothing external: the only links are the failure artifacts, relative to the page
    assert page.external
    for href in page.external:
        assert not href.startswith(("http:", "https:", "/"))
        target = (rep.html.parent / href).resolve()
        assert target.parent == (dirs["bug"] / "artifacts").resolve() and target.is_file()
    assert len(page.imgs) == 3
    for src in page.imgs:
        head, data = src.split(",", 1)
        assert head == "data:image/png;base64"
        assert base64.b64decode(data).startswith(PNG)
    text = " ".join(page.text)
    assert "REGRESSION: " in text and f"against {dirs['base']}" in text
    assert "new failure kind" in text and "fault-storm × v6 × livelock" in text
    assert "livelock in migrate_vma_collect_pmd:folio_trylock" in text  # the failures section


def test_report_text_has_the_tables(dirs: dict[str, Path], tmp_path: Path) -> None:
    rep = build_report(dirs["base"], out=tmp_path, figures=False)
    t = rep.text()
    for title in (
        "failure rate of the failing or changed configurations",
        "lock contention: top 10 call sites, per run of each variant",
        "trylock failure rate",
        "migration outcomes",
        "reproduction",
    ):
        assert title in t
    assert rep.comparison is None and rep.figures == {}


# -- comparison --------------------------------------------------------------------------------


def test_comparison_flags_the_injected_bug_toggle(dirs: dict[str, Path]) -> None:
    cmp = compare(load_dir(dirs["bug"]), load_dir(dirs["base"]))
    reg = {(f.category, f.subject) for f in cmp.regressions}
    assert ("new failure kind", "fault-storm × v6 × livelock") in reg
    assert ("failure rate", "fault-storm × v6 × no-fault-folio-exception") in reg
    row = cmp.rates.set_index("workload").loc["fault-storm"]
    assert row["baseline_bugs"] == "none" and row["p"] < 0.01
    # the toggle makes collect's trylock of the fault page fail: that hot spot moved
    notes = {f.subject: f.detail for f in cmp.findings if f.category == "contention"}
    assert "contention ratio" in notes["migrate_vma_collect_pmd:folio_trylock"]
    assert all(f.severity == "notice" for f in cmp.findings if f.category == "contention")


def test_comparison_of_equal_configurations_is_quiet(dirs: dict[str, Path]) -> None:
    # other seeds of the same clean configuration: nothing beyond noise
    cmp = compare(load_dir(dirs["base2"]), load_dir(dirs["base"]))
    assert cmp.regressions == []
    # the fix (bug off against bug on) is an improvement, not a regression
    fixed = compare(load_dir(dirs["base"]), load_dir(dirs["bug"]))
    assert fixed.regressions == []
    assert any(f.severity == "improvement" for f in fixed.findings)


def test_an_empty_baseline_is_a_notice_not_a_flood_of_regressions(
    dirs: dict[str, Path], tmp_path: Path
) -> None:
    for name, schema in SCHEMAS.items():
        (tmp_path / name).write_text(",".join(schema.names) + "\n")
    cmp = compare(load_dir(dirs["bug"]), load_dir(tmp_path))
    assert cmp.regressions == []
    assert [(f.severity, f.detail) for f in cmp.findings] == [
        ("notice", "the baseline has no runs; nothing compared")
    ]


def test_report_command_exit_codes(
    dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "r")
    assert (
        main(["report", str(dirs["bug"]), "--baseline", str(dirs["base"]), "--out", out, "--no-figures"]) == 1
    )
    text = capsys.readouterr().out
    assert "fault-storm × v6  (2 regressions)" in text
    assert "[regression] new failure kind livelock: 8 of 8 runs failed with livelock" in text
    assert (
        main(["report", str(dirs["base2"]), "--baseline", str(dirs["base"]), "--out", out, "--no-figures"])
        == 0
    )
    assert "no regression" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_empty_tables_and_figures_do_not_break(tmp_path: Path) -> None:
    # a directory with clean runs only and no migrations still gives a page
    ds = load_dir(_campaign(tmp_path / "one", "none", seeds="1"))
    assert agg.reproduction(ds).empty
    assert list(agg.reproduction(ds).columns)[:4] == ["workload", "variant", "bugs", "kind"]
    rep = build_report(ds.path, out=tmp_path / "r", html=True)
    assert rep.html is not None and rep.html.stat().st_size > 1000
    assert not math.isnan(float(pd.read_csv(ds.path / "runs.csv")["wall_s"].sum()))

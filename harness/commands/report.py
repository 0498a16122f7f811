"""``pagerace report``: the morning report over a directory of runs (and last night's)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ...core.machine.errors import InvalidOption
from ._options import check_out_dir

NAME = "report"
HELP = (
    "the morning report: verdict, failures by signature with replay commands, rates, contention; "
    "compare with a baseline, follow a history"
)
EXAMPLES = [
    ("pagerace report nightly/", "print the summary tables and write the figures to nightly/report/"),
    (
        "pagerace report tonight/ --baseline last-night/ --html",
        "flag what changed beyond noise (exit 1 on a regression); one-page HTML in tonight/report/index.html",
    ),
    ("pagerace report runs/ --html --out /srv/www/pagerace/", "write the figures and the page elsewhere"),
    (
        "pagerace report nights/2026-11-22 --baseline nights/2026-11-21 --history nights/ --html",
        "first seen / last seen and the rate of each failure signature over every night in nights/",
    ),
    ("pagerace report tonight/ --format json --junit report.xml", "for CI: JSON on stdout, JUnit XML"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "directory", metavar="DIR", help="output directory of 'pagerace run' or 'pagerace campaign'"
    )
    p.add_argument("--baseline", metavar="DIR2", help="compare with this directory (e.g. last night's)")
    p.add_argument("--html", action="store_true", help="also write a self-contained one-page index.html")
    p.add_argument("--out", metavar="REPORT_DIR", help="where figures and the page go (default: DIR/report)")
    p.add_argument(
        "--top", type=int, default=10, metavar="N", help="contended call sites to list (default: 10)"
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=0.01,
        metavar="P",
        help="significance level of the rate comparisons (default: 0.01)",
    )
    p.add_argument(
        "--no-figures", action="store_true", help="tables only, no PNG files (--html still draws its figures)"
    )
    p.add_argument(
        "--history",
        nargs="+",
        metavar="DIR",
        default=[],
        help="earlier nights, oldest first (or a directory of nights, sorted by name): "
        "first seen / last seen and the rate series of each failure signature",
    )
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="what goes to stdout: the text report or one JSON document (default: text)",
    )
    p.add_argument("--junit", metavar="FILE", help="also write the result as JUnit XML to FILE")
    p.add_argument(
        "--quiet", action="store_true", help="print nothing; the exit code says whether it regressed"
    )


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise InvalidOption(f"--top {args.top}: must be at least 1")
    if not 0.0 < args.alpha < 1.0:
        raise InvalidOption(f"--alpha {args.alpha}: must be between 0 and 1, e.g. 0.01")
    from pathlib import Path

    if args.junit and os.path.isdir(args.junit):
        raise InvalidOption(
            f"--junit {args.junit}: is a directory; give the XML file to write, e.g. report.xml"
        )
    from ...reports import build_report

    if args.out is not None:
        check_out_dir(args.out, "--out")
    elif Path(args.directory).is_dir():
        check_out_dir(Path(args.directory) / "report", "the report directory")

    rep = build_report(
        args.directory,
        baseline=args.baseline,
        out=args.out,
        html=args.html,
        top=args.top,
        alpha=args.alpha,
        figures=not args.no_figures,
        history=args.history,
    )
    if args.junit:
        from ...reports.junit import write_junit

        try:
            write_junit(rep, args.junit)
        except OSError as e:
            raise InvalidOption(f"--junit {args.junit}: cannot write it ({e.strerror})") from None
    if not args.quiet:
        if args.format == "json":
            print(json.dumps(rep.to_json(), indent=2, default=str))
        else:
            print(rep.text())
    if rep.regressions:
        if not args.quiet:
            print(
                f"pagerace report: {rep.regressions} regression(s) against {args.baseline}", file=sys.stderr
            )
        return 1
    return 0

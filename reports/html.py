"""The one-page HTML summary: inline CSS, figures as base64 ``data:`` URIs, no script,
no external resource, so it opens from ``file://`` (or as a mail attachment)."""

from __future__ import annotations

import base64
import datetime as dt
import html
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._version import __version__

CSS = """
body{font:14px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;
color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:12px}
table{border-collapse:collapse;margin:8px 0;font-size:12.5px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.regression td{background:#fde2e2}tr.improvement td{background:#e3f4e1}tr.notice td{background:#fff7dd}
.verdict{padding:10px 14px;border-radius:4px;font-weight:600;margin:12px 0}
.bad{background:#fde2e2;color:#8a1c1c}.good{background:#e3f4e1;color:#1d5e1d}.info{background:#eef2f7}
figure{margin:12px 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#666;font-size:12px}
"""


PERCENT_COLUMNS = {"rate", "ci_lo", "ci_hi", "contention", "success"}


def _fmt(v: object, col: str, shares: Collection[str]) -> tuple[str, bool]:
    """(text, is a number) of one cell."""
    if isinstance(v, np.integer | int) and not isinstance(v, bool):
        return f"{int(v):,}", True
    if isinstance(v, np.floating | float):
        if pd.isna(v):
            return "", True
        if col in PERCENT_COLUMNS or col in shares:
            return f"{100 * float(v):.1f}%", True
        return f"{float(v):,.2f}", True
    return str(v), False


def table(df: pd.DataFrame, shares: Sequence[str] = (), row_class: str | None = None) -> str:
    """``df`` as an escaped HTML table; columns in ``shares`` print as percentages."""
    if df.empty:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for c, v in zip(df.columns, rec):
            s, num = _fmt(v, str(c), shares)
            cells.append(f"<td{' class=num' if num else ''}>{html.escape(s)}</td>")
        cls = f' class="{html.escape(str(getattr(rec, row_class)))}"' if row_class else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def img(path: str | os.PathLike[str], alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(alt)}</figcaption></figure>"
    )


def page(
    title: str,
    meta: Mapping[str, object],
    verdict: tuple[str, str],
    sections: Sequence[tuple[str, str]],
) -> str:
    """The whole document. ``verdict`` is (css class good/bad/info, text); each section
    is (heading, HTML body already escaped)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    m = " · ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in meta.items())
    body = "".join(f"<h2>{html.escape(h)}</h2>{b}" for h, b in sections)
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><div class=meta>{m}<br>generated {now} by pagerace {__version__}</div>"
        f'<div class="verdict {verdict[0]}">{html.escape(verdict[1])}</div>{body}</body></html>\n'
    )


def write_page(rep: Any, path: str | os.PathLike[str], shares: Sequence[str] = ()) -> Path:
    """Write the one-page summary of a :class:`pagerace.reports.Report` to ``path``."""
    o = rep.overview
    meta: dict[str, object] = {
        "directory": rep.current.path,
        "runs": o.get("runs", 0),
        "failed": o.get("failed", 0),
        "campaigns": o.get("campaigns", "-"),
        "pagerace": o.get("versions", "-"),
    }
    if o.get("runs"):
        first = dt.datetime.fromtimestamp(float(o["first_run"]), dt.UTC).strftime("%Y-%m-%d %H:%M")
        last = dt.datetime.fromtimestamp(float(o["last_run"]), dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        meta["runs from"] = f"{first} to {last}"
    sections: list[tuple[str, str]] = []
    if rep.comparison is not None:
        meta["baseline"] = rep.baseline.path
        n = rep.regressions
        verdict = (
            ("bad", f"{n} regression(s) against the baseline")
            if n
            else ("good", "no regression against the baseline")
        )
        f = rep.comparison.frame()
        sections.append(
            (
                "What changed since the baseline",
                table(f, row_class="severity") if not f.empty else "<p>Nothing changed beyond noise.</p>",
            )
        )
    else:
        failed = int(o.get("failed", 0))
        verdict = (
            ("bad", f"{failed} failed run(s); no baseline given")
            if failed
            else ("info", "no failure; no baseline given")
        )
    figs = dict(rep.figures)
    order = [
        (
            "failure rate",
            "failure_rate.png",
            "Failure rate by workload × variant × bugs, 95% Wilson intervals",
        ),
        ("contended", "contention.png", "Lock contention by call site"),
        ("migration outcomes", "outcome_mix.png", "Migration outcome mix per attempt kind"),
    ]
    for title, df in rep.tables.items():
        body = table(df, shares=shares)
        for key, name, alt in order:
            if key in title and name in figs:
                body += img(figs.pop(name), alt)
        sections.append((title[:1].upper() + title[1:], body))
    for name, p in figs.items():
        sections.append((name, img(p, name)))
    doc = page(f"pagerace report: {Path(rep.current.path).name}", meta, verdict, sections)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out

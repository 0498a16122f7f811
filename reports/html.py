"""The one-page HTML summary: inline CSS, figures as base64 ``data:`` URIs, no script,
no external resource, so it opens from ``file://`` (or as a mail attachment). The only
links are the failure artifacts, relative to the page, so the page and the output
directory can move together (to a web server, say)."""

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
h3{font-size:14.5px;margin:14px 0 4px}
.meta{color:#666;font-size:12px}
table{border-collapse:collapse;margin:8px 0;font-size:12.5px;max-width:100%}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.regression td{background:#fde2e2}tr.improvement td{background:#e3f4e1}tr.notice td{background:#fff7dd}
tr.regression td:first-child,tr.improvement td:first-child,tr.notice td:first-child{white-space:nowrap}
.verdict{padding:10px 14px;border-radius:4px;font-weight:600;margin:12px 0}
.bad{background:#fde2e2;color:#8a1c1c}.good{background:#e3f4e1;color:#1d5e1d}.info{background:#eef2f7}
.failure{border:1px solid #e3c4c4;border-left:4px solid #c0504d;padding:6px 12px;margin:10px 0;
border-radius:3px}
.failure .msg{color:#444;font-size:13px}
.failure .where{color:#666;font-weight:normal;font-size:12.5px}
pre.cmd{background:#f6f8fa;padding:6px 8px;margin:4px 0;font-size:12px;white-space:pre-wrap;
overflow-wrap:anywhere}
figure{margin:12px 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#666;font-size:12px}
"""


PERCENT_COLUMNS = {"rate", "ci_lo", "ci_hi", "contention", "success"}
WAIT_ONLY = "wait only"


def _fmt(v: object, col: str, shares: Collection[str]) -> tuple[str, bool]:
    """(text, is a number) of one cell."""
    if isinstance(v, np.integer | int) and not isinstance(v, bool):
        return f"{int(v):,}", True
    if isinstance(v, np.floating | float):
        if pd.isna(v):
            return (WAIT_ONLY if col == "contention" else ""), True
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


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>'


def failures_section(rep: Any, page_dir: Path) -> str:
    """One block per failure signature: title and line, count and configurations, the
    first failure's seed and message, its artifact as a link relative to the page, and
    the replay / shrink commands ready to paste."""
    f = rep.failures
    if f is None or f.empty:
        return "<p>No failure.</p>"
    out = []
    for i, r in enumerate(f.itertuples(index=False), 1):
        where = f" <span class=where>[{html.escape(r.where)}]</span>" if r.where else ""
        art = ""
        if r.artifact:
            target = Path(rep.current.path) / r.artifact
            href = Path(os.path.relpath(target.resolve(), page_dir.resolve())).as_posix()
            art = f"<div>artifact: {_link(href, r.artifact)}</div>"
        cmds = f"<pre class=cmd>{html.escape(r.replay)}\n{html.escape(r.shrink)}</pre>" if r.replay else ""
        out.append(
            f'<div class=failure id="sig-{i}"><h3>{i}. {html.escape(r.signature)}{where}</h3>'
            f"<div><b>{r.count}</b> failure(s), first seed <b>{r.first_seed}</b>: "
            f"{html.escape(r.configurations)}</div>"
            f"<div class=msg>{html.escape(r.message)}</div>{art}{cmds}</div>"
        )
    return "".join(out)


def findings_section(rep: Any) -> str:
    """The comparison's findings, one table per configuration (regressions first)."""
    groups = rep.grouped_findings()
    if not groups:
        return "<p>Nothing changed beyond noise.</p>"
    out = []
    for key, fs in groups:
        df = pd.DataFrame(
            [(x.severity, x.category, x.subject, x.detail) for x in fs],
            columns=["severity", "category", "subject", "detail"],
        )
        nreg = sum(x.severity == "regression" for x in fs)
        out.append(
            f"<h3>{html.escape(key)}"
            + (f" ({nreg} regression{'s' if nreg > 1 else ''})" if nreg else "")
            + "</h3>"
            + table(df, row_class="severity")
        )
    return "".join(out)


def write_page(rep: Any, path: str | os.PathLike[str], shares: Sequence[str] = ()) -> Path:
    """Write the one-page summary of a :class:`pagerace.reports.Report` to ``path``:
    the verdict, what changed (per configuration), the failures by signature, the
    history, then the tables with their figures."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    o = rep.overview
    meta: dict[str, object] = {
        "directory": rep.current.path,
        "runs": o.get("runs", 0),
        "configurations": rep.configurations,
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
        sections.append(("What changed since the baseline, by configuration", findings_section(rep)))
    nsig = 0 if rep.failures is None else len(rep.failures)
    sections.append((f"Failures by signature ({nsig})", failures_section(rep, out.parent)))
    figs = dict(rep.figures)
    if rep.history is not None:
        body = table(rep.history)
        if "history.png" in figs:
            body += img(figs.pop("history.png"), "Failure rate per signature, night by night")
        sections.append(("History", body))
    order = [
        ("failure rate", "failure_rate.png", "Failure rate of the failing configurations, baseline in grey"),
        ("contention", "contention.png", "Lock contention per run, by variant"),
        ("migration outcomes", "outcome_mix.png", "Migration outcome mix per variant and attempt kind"),
    ]
    for title, df in rep.tables.items():
        body = table(df, shares=shares)
        for key, name, alt in order:
            if key in title and name in figs:
                body += img(figs.pop(name), alt)
        sections.append((title[:1].upper() + title[1:], body))
    for name, p in figs.items():
        sections.append((name, img(p, name)))
    doc = page(f"pagerace report: {Path(rep.current.path).name}", meta, rep.verdict(), sections)
    out.write_text(doc, encoding="utf-8")
    return out

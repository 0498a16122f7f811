"""The report as JUnit XML, for CI systems that show test results (``--junit FILE``).

One ``<testsuite name="pagerace">`` with:

- one test case per configuration run (classname = workload, name = ``variant × bugs``):
  failed when any of its runs failed, the failure's text listing its signatures, the
  first seed and the replay command of each;
- one test case per configuration the comparison names (``comparison``
  classname): failed when it holds a regression, the findings as the text.

Written with the standard library (``xml.etree``), atomically.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from . import failures as fl


def junit_xml(rep: Any) -> ET.Element:
    """The ``<testsuites>`` element of a :class:`pagerace.reports.Report`."""
    from . import aggregate as agg

    rates = agg.failure_rates(rep.current)
    sigs = fl.signatures(rep.current)
    suites = ET.Element("testsuites", name="pagerace report")
    suite = ET.SubElement(suites, "testsuite", name="pagerace")
    tests = failures = 0
    for r in rates.itertuples(index=False):
        tests += 1
        case = ET.SubElement(
            suite,
            "testcase",
            classname=str(r.workload),
            name=f"{r.variant} × {r.bugs}",
            time=f"{_wall(rep, r):.3f}",
        )
        if r.failed:
            failures += 1
            mine = sigs[
                (sigs["workload"] == r.workload)
                & (sigs["variant"] == r.variant)
                & (sigs["bugs"].astype(str).replace({"": "none"}) == r.bugs)
            ]
            lines = [f"{r.failed} of {r.runs} runs failed ({100 * r.rate:.1f}%)"]
            for title, g in mine.groupby("title", sort=True):
                g = g.sort_values("seed", kind="stable")
                first = g.iloc[0]
                replay, _ = fl.commands(rep.current.path, str(first["artifact"]))
                lines.append(
                    f"{title}: {len(g)} failure(s), first seed {int(first['seed'])}: {first['message']}"
                )
                if replay:
                    lines.append(f"  {replay}")
            el = ET.SubElement(case, "failure", message=lines[0], type=str(r.kinds or "failure"))
            el.text = "\n".join(lines)
    for key, fs in rep.grouped_findings():
        tests += 1
        case = ET.SubElement(suite, "testcase", classname="comparison", name=key)
        text = "\n".join(f"[{f.severity}] {f.category}: {f.subject}: {f.detail}" for f in fs)
        regs = [f for f in fs if f.severity == "regression"]
        if regs:
            failures += 1
            el = ET.SubElement(case, "failure", message=f"{len(regs)} regression(s)", type="regression")
            el.text = text
        else:
            ET.SubElement(case, "system-out").text = text
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suites.set("tests", str(tests))
    suites.set("failures", str(failures))
    return suites


def _wall(rep: Any, r: Any) -> float:
    runs = rep.current.runs
    m = (runs["workload"] == r.workload) & (runs["variant"] == r.variant)
    m &= runs["bugs"].astype(str).replace({"": "none"}) == r.bugs
    return float(runs.loc[m, "wall_s"].sum())


def write_junit(rep: Any, path: str | os.PathLike[str]) -> Path:
    """Write :func:`junit_xml` to ``path`` (atomically: a temporary file, then rename)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tree = ET.ElementTree(junit_xml(rep))
    ET.indent(tree)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            tree.write(fh, encoding="utf-8", xml_declaration=True)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


__all__ = ["junit_xml", "write_junit"]

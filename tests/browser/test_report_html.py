"""The HTML report in a real headless browser: it renders, fits a 1280-pixel window, its
figures decode, and every link resolves to a file.

A tier of its own, outside the default run (a browser start costs seconds):
``python -m pytest tests/browser``.

Needs Chromium (or Chrome) on PATH (``apt-get install chromium``; or set
``PAGERACE_BROWSER``); skipped with the reason when there is none, as on a fresh CI
machine. The browser loads a copy of the page with one small script appended that
writes what it measured into the DOM, which ``--dump-dom`` prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from pagerace.harness import campaign as c
from pagerace.reports import build_report

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser() -> str | None:
    env = os.environ.get("PAGERACE_BROWSER")
    if env:
        return shutil.which(env) or (env if Path(env).is_file() else None)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


BROWSER = find_browser()
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="no headless browser: install chromium (apt-get install chromium) or set PAGERACE_BROWSER",
)

WINDOW = (1280, 900)
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]);
  const links = [...document.links].map(a => a.href);
  const wide = [...document.querySelectorAll('table, pre, figure')]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth).map(e => e.tagName);
  const out = document.createElement('pre');
  out.id = 'pagerace-probe';
  out.textContent = JSON.stringify({imgs, links, wide, scroll: document.documentElement.scrollWidth,
    inner: window.innerWidth, h1: document.querySelector('h1').textContent,
    verdict: document.querySelector('.verdict').textContent});
  document.body.appendChild(out);
});
</script>"""


def _browser(*args: str) -> subprocess.CompletedProcess[str]:
    assert BROWSER is not None
    cmd = [
        BROWSER,
        "--headless",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    kw = dict(workloads="fault-storm", variants="v6", seeds="1-4", max_steps=20000, livelock_steps=400)
    base = root / "base"
    c.run_campaign(c.make_plan(dict(name="base", bugs="none", **kw)), base)
    bug = root / "bug"
    c.run_campaign(c.make_plan(dict(name="bug", bugs="no-fault-folio-exception", **kw)), bug)
    rep = build_report(bug, baseline=base, history=[base], out=root / "www", html=True)
    assert rep.html is not None
    return rep.html


def _resolves(href: str) -> bool:
    u = urlparse(href)
    target = Path(unquote(u.path))
    return u.scheme == "file" and target.suffix == ".json" and target.is_file()


def test_the_report_renders_fits_the_window_and_every_link_resolves(page: Path) -> None:
    probe = page.with_name("probe.html")  # same directory: relative links resolve the same
    # a test-only fault: one broken link, which the link check must catch (and only it)
    broken = '<a href="artifacts/no-such-artifact.json">broken</a>'
    probe.write_text(
        page.read_text(encoding="utf-8").replace("</body>", broken + PROBE + "</body>"), encoding="utf-8"
    )
    res = _browser("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    m = re.search(r'<pre id="pagerace-probe">(.*?)</pre>', res.stdout, re.S)
    assert m, f"the page did not load or the probe did not run: {res.stderr[-500:]}"
    got = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert got["h1"] == "pagerace report: bug"
    assert got["verdict"].startswith("REGRESSION: ")
    # figures: failure rate, contention, outcome mix, history, each decoded by the browser
    assert len(got["imgs"]) == 4
    assert all(done and w > 100 and h > 50 for done, w, h in got["imgs"])
    # links: the failure artifacts, resolved by the browser against the page's location
    unresolved = [href for href in got["links"] if not _resolves(href)]
    assert [Path(urlparse(h).path).name for h in unresolved] == ["no-such-artifact.json"]
    assert len(got["links"]) >= 2  # the failures section links its artifacts
    # nothing sticks out of a 1280-pixel window (the old contention table did)
    assert got["wide"] == [] and got["scroll"] <= got["inner"]


def test_the_report_screenshot_is_not_blank(page: Path) -> None:
    shot = page.with_name("shot.png")
    res = _browser(f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), res.stderr[-500:]
    import matplotlib.image as mpimg

    px = mpimg.imread(shot)
    assert px.shape[0] == WINDOW[1] and px.shape[1] == WINDOW[0]
    rgb = px[..., :3]
    # text and the red verdict box: many non-white pixels, and some clearly red ones
    assert (rgb.mean(axis=2) < 0.9).mean() > 0.01
    red = (rgb[..., 0] > 0.9) & (rgb[..., 1] < 0.92) & (rgb[..., 2] < 0.92)
    assert red.sum() > 1000

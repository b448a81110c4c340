"""report.html in a real browser: headless Chromium (Debian's `chromium` package) loads it,
and a script we inject reports, on window load, each image's naturalWidth and the tables.

`--dump-dom` prints the DOM after load; the script writes its findings into document.title,
so no browser-driving Python package is needed."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import HANG_S
from test_report import write_sweep

from lineage.report.collect import collect  # noqa: E402
from lineage.report.figures import FIGURE_SIZES  # noqa: E402
from lineage.report.html import write_report  # noqa: E402

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"
)

PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  document.title = 'PROBE:' + JSON.stringify({
    widths: imgs.map(i => i.naturalWidth),
    complete: imgs.every(i => i.complete),
    tables: document.querySelectorAll('table').length,
    rows: Array.from(document.querySelectorAll('table')).map(t => t.rows.length),
  });
});
</script>"""


def probe(page: Path, tmp: Path) -> dict:
    """Load a copy of `page` (with the probe script) in headless Chromium; return findings."""
    copy = tmp / f"probe_{page.name}"
    copy.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={tmp / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        copy.resolve().as_uri(),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_S)
    m = re.search(r"<title>PROBE:(.*?)</title>", r.stdout, re.S)
    assert m, f"no probe result (rc={r.returncode}): {r.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    sweep = write_sweep(tmp_path_factory.mktemp("browser"))
    return write_report(collect([sweep]), sweep / "report", decision_planes=False).html


def test_every_image_loads_and_tables_are_present(report_html, tmp_path):
    found = probe(report_html, tmp_path)
    assert len(found["widths"]) == len(FIGURE_SIZES)
    assert found["complete"]
    assert sorted(found["widths"]) == sorted(w for w, _ in FIGURE_SIZES.values())
    # jobs + issues, determination x2, AUC, timing; each with a header row and data rows
    assert found["tables"] >= 6
    assert all(n >= 2 for n in found["rows"])
    assert max(found["rows"]) >= 13  # the job table: header + 12 jobs


def test_a_broken_image_is_caught(report_html, tmp_path):
    """The probe can fail: a truncated data URI decodes to an image of width 0."""
    broken = tmp_path / "broken.html"
    text = report_html.read_text()
    broken.write_text(re.sub(r'(src="data:image/png;base64,)[^"]+"', r'\1iVBORw0K"', text, count=1))
    found = probe(broken, tmp_path)
    assert found["widths"].count(0) == 1

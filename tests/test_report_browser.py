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
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest
from conftest import HANG_S
from matplotlib.image import imread
from test_report import FIGURES, job_name, write_sweep, write_tree

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
    alts: imgs.filter(i => i.naturalWidth > 0).map(i => i.alt),
    verdicts: Array.from(document.querySelectorAll('#verdicts .verdict')).map(v => ({
      job: v.querySelector('h3').textContent,
      answer: v.querySelector('.answer').textContent,
      kinds: v.querySelectorAll('table.why tbody tr').length,
      strips: Array.from(v.querySelectorAll('svg.range')).map(s => s.getBBox().width),
    })),
    links: Array.from(document.querySelectorAll('a[href]'))
      .filter(a => !a.getAttribute('href').startsWith('#'))
      .map(a => ({text: a.textContent, url: a.href})),
    page: document.documentElement.clientWidth,
    pageScroll: document.documentElement.scrollWidth,
    jobs: (t => ({right: t.getBoundingClientRect().right, scroll: t.parentElement.scrollWidth,
                  box: t.parentElement.clientWidth}))(document.querySelector('#jobs table')),
  });
});
</script>"""


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
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
        *args,
    ]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"headless chromium hung on {args[-1]}")


def probe(page: Path, tmp: Path) -> dict:
    """Load a copy of `page` (with the probe script) in headless Chromium; return findings.
    The copy sits beside the page, so its relative links resolve as the page's do."""
    copy = page.with_name(f"probe_{page.name}")
    copy.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    r = chromium(
        tmp, "--virtual-time-budget=5000", "--window-size=1280,900", "--dump-dom", copy.as_uri()
    )
    m = re.search(r"<title>PROBE:(.*?)</title>", r.stdout, re.S)
    assert m, f"no probe result (rc={r.returncode}): {r.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    sweep = write_sweep(tmp_path_factory.mktemp("browser"))
    run = sweep / job_name("finetune", 0.2, 0) / "wandb" / "offline-run-20260101_000000-abc"
    run.mkdir(parents=True)
    (run / "run-abc.wandb").write_bytes(b"x")
    # a job named the way Hydra names a sweep over many keys: one long unbroken word
    long = ",".join(f"closeness.option_{i}=value_{i}" for i in range(8)) + ",seed=1"
    (sweep / job_name("pruning", 0.8, 1)).rename(sweep / long)
    write_tree(sweep / "tree")  # what `lineage tree --out` writes: its picture is a figure
    return write_report(collect([sweep]), sweep / "report", decision_planes=False).html


def test_every_image_loads_and_tables_are_present(report_html, tmp_path):
    found = probe(report_html, tmp_path)
    assert len(found["widths"]) == len(FIGURES) + 1  # the recovered tree's picture
    assert "The lineage tree that `lineage tree` recovered" in found["alts"]
    assert found["complete"] and 0 not in found["widths"]
    fixed = sorted(w for w, _ in FIGURE_SIZES.values())
    assert sorted(w for w in found["widths"] if w in fixed)[: len(fixed)] == fixed
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


def test_the_reader_sees_why_each_verdict_is_what_it_is(report_html, tmp_path):
    """Acceptance 5 of issue 29: each verdict's explanation, a reference-range plot, the
    lineage graph and working links, in the browser; the jobs table fits the page."""
    found = probe(report_html, tmp_path)
    verdicts = found["verdicts"]
    assert len(verdicts) == 12
    for v in verdicts:
        assert re.match(
            r"(lineage|not lineage|undetermined): combined p = \S+ [<>]=? alpha", v["answer"]
        )
        assert v["kinds"] == 2 and len(v["strips"]) == 2 and min(v["strips"]) > 0
    assert any(a.startswith("basin: each suspect's value against") for a in found["alts"])
    assert "The sweep's models and their lineage" in found["alts"]
    # every link, as the browser resolved it, names a file or folder that exists
    paths = {Path(url2pathname(urlparse(link["url"]).path)) for link in found["links"]}
    assert len(paths) >= 12 * 2 + 1 and all(p.exists() for p in paths)
    assert {"metrics.json", "config", "W&B run"} <= {link["text"] for link in found["links"]}
    # follow one: the browser opens the job's metrics.json
    metrics = next(link["url"] for link in found["links"] if link["text"] == "metrics.json")
    r = chromium(tmp_path, "--dump-dom", metrics)
    assert "derived.verdict.p_value" in r.stdout
    jobs = found["jobs"]
    assert jobs["right"] <= found["page"] and jobs["scroll"] <= jobs["box"]
    assert found["pageScroll"] <= found["page"]  # nothing on the page scrolls sideways


def test_screenshot(report_html, tmp_path):
    """A picture of the page as a reader sees it (the PNG a note can show)."""
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", report_html.as_uri())
    img = imread(shot)
    assert img.shape[:2] == (2400, 1280) and img[..., :3].std() > 0.05

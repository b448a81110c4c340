"""Write the report: report.html (self-contained: images inlined as base64 data URIs and
the reference-range strips as inline SVG, so it can be mailed as one file; only the links
to each job's files point outside it), report.md (references the PNGs beside it),
report.json (the numbers a script or test wants: job count, AUCs, issues), and the
metrics table.

The page is a Jinja2 template with autoescaping, so no value reaches the HTML unescaped;
the Markdown is built line by line, as Markdown has no escaping a template could apply."""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from jinja2 import Environment, StrictUndefined
from markupsafe import Markup

from ..text import md_fence, md_text, printable
from ..utils import atomic_write
from .collect import Collection, save_table
from .links import Links
from .ranges import range_svg
from .sections import Section, make_sections

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}
h1{border-bottom:2px solid #ccc}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}
img{max-width:100%;height:auto}.note{color:#8a5a00}.tw{overflow-x:auto;max-width:100%}
td,h3,p,li,figcaption{overflow-wrap:anywhere}td.n{white-space:nowrap}td:first-child{max-width:24em}
td.text{text-align:left}
.verdict{border-left:4px solid #999;padding:.1em .8em;margin:1em 0}
.verdict.lineage{border-color:#2ca02c}.verdict.not-lineage{border-color:#d62728}
.answer{font-weight:600}table.why td:nth-child(3){text-align:center}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.8em}
"""


@dataclass
class ReportFiles:
    out_dir: Path
    html: Path
    markdown: Path
    summary: Path
    tables: list[Path]
    sections: list[Section]
    summary_data: dict[str, Any]


def fmt(v: Any) -> str:
    """A value as the report shows it: control characters escaped (lineage.text)."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return printable(v)


MULTILINE = "\n\t"  # what a code block keeps of the control characters


def write_report(
    c: Collection,
    out_dir: str | Path,
    title: str = "Lineage sweep report",
    decision_planes: bool = True,
) -> ReportFiles:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = save_table(c.table, out)
    sections = make_sections(c, out, decision_planes=decision_planes)
    summary = _summary(c, sections)
    summary_path = atomic_write(out / "report.json", json.dumps(summary, indent=2) + "\n")
    md = atomic_write(out / "report.md", render_markdown(title, sections, summary))
    page = atomic_write(out / "report.html", render_html(title, sections, summary))
    for f in (summary_path, md, page, *tables):
        f.chmod(0o644)  # atomic_write's temp files are private; a report is meant to be shared
    return ReportFiles(out, page, md, summary_path, tables, sections, summary)


def _summary(c: Collection, sections: list[Section]) -> dict[str, Any]:
    auc: dict[str, float | None] = {}
    for s in sections:
        if s.key == "roc":
            for _, r in s.tables[0][1].iterrows():
                auc[r["detector"]] = None if r["auc"] == "n/a" else float(r["auc"])
    return {
        "jobs": len(c.table),
        "roots": [str(r) for r in c.roots],
        "auc": auc,
        "figures": {p.stem: p.name for s in sections for p, _ in s.figures},
        "issues": [{"kind": i.kind, "path": str(i.path), "detail": i.detail} for i in c.issues],
        "skipped": {s.key: s.notes for s in sections if s.notes},
    }


def _headline(summary: dict[str, Any]) -> str:
    kinds: dict[str, int] = {}
    for i in summary["issues"]:
        kinds[i["kind"]] = kinds.get(i["kind"], 0) + 1
    extra = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    return f"{summary['jobs']} job(s) with results" + (f"; {extra}" if extra else "")


# --- HTML ----------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<title>{{ title }}</title><style>{{ css }}</style></head><body>
<h1>{{ title }}</h1><p>{{ headline }}</p>
<ul>{% for s in sections %}<li><a href="#{{ s.key }}">{{ s.title|p }}</a></li>{% endfor %}</ul>
{% for s in sections %}<section id="{{ s.key }}"><h2>{{ s.title|p }}</h2>
{% if s.text %}<p>{{ s.text|p }}</p>{% endif %}
{% for e in s.explanations %}<div class="verdict {{ e.answer|replace(' ', '-') }}">
<h3>{{ e.job|p }}</h3><p class="answer">{{ e.summary()|p }}</p>
{% if e.links %}<p class="files">files: {{ links(e.links) }}</p>{% endif %}
<table class="why"><thead><tr><th>evidence</th><th>p</th><th>suspect among its references</th>
<th>why</th></tr></thead><tbody>{% for k in e.kinds %}<tr><td>{{ k.kind|p }}</td>
<td class="n">{{ "n/a" if k.p is none else "%.3g"|format(k.p) }}</td><td>{{ svg(k) }}</td>
<td class="text">{{ k.why|p }}</td></tr>{% endfor %}</tbody></table>
{% if e.reason %}<p class="note">note: {{ e.reason|p }}</p>{% endif %}
{% if e.caveat %}<p class="note">caution: {{ e.caveat|p }}</p>{% endif %}
</div>{% endfor %}
{% for png, caption in s.figures %}<figure><img src="{{ data_uri(png) }}" alt="{{ caption|p }}">
<figcaption>{{ caption|p }} ({{ png.name|p }})</figcaption></figure>{% endfor %}
{% for caption, df in s.tables %}<div class="tw"><table><caption>{{ caption|p }}</caption>
<thead><tr>{% for c in df.columns %}<th>{{ c|p }}</th>{% endfor %}</tr></thead><tbody>
{% for row in df.itertuples(index=False) %}<tr>
{% for v in row %}<td{{ number(v) }}>{{ cell(v) }}</td>{% endfor %}</tr>{% endfor %}
</tbody></table></div>{% endfor %}
{% for caption, text in s.code %}<h3>{{ caption|p }}</h3>
<pre><code>{{ text|p(multiline) }}</code></pre>{% endfor %}
{% for note in s.notes %}<p class="note">{{ note|p }}</p>{% endfor %}
</section>
{% endfor %}</body></html>
"""


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _links(links: Links | tuple[tuple[str, str], ...]) -> Markup:
    return Markup(" ").join(
        Markup('<a href="{}">{}</a>').format(href, printable(label)) for label, href in links
    )


def _cell(v: Any) -> Markup | str:
    return _links(v) if isinstance(v, Links) else fmt(v)


def _number(v: Any) -> Markup:
    """Numbers never break across lines (text cells may, anywhere, to fit the page)."""
    num = isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))
    return Markup(' class="n"') if num else Markup("")


def _environment() -> Environment:
    env = Environment(autoescape=True, undefined=StrictUndefined)
    env.filters["p"] = printable
    env.globals.update(
        data_uri=_data_uri,
        links=_links,
        cell=_cell,
        number=_number,
        svg=lambda k: Markup(range_svg(k)),  # built from escaped text (lineage.report.ranges)
        multiline=MULTILINE,
        css=CSS,
    )
    return env


def render_html(title: str, sections: list[Section], summary: dict[str, Any]) -> str:
    """The page from PAGE (Jinja2, autoescaped: every value is text, and `p` shows its
    control characters as escapes first)."""
    page = _environment().from_string(PAGE)
    return page.render(title=printable(title), headline=_headline(summary), sections=sections)


# --- Markdown ------------------------------------------------------------------------------


def _md_cell(v: Any) -> str:
    if isinstance(v, Links):  # hrefs are percent-quoted (lineage.report.links)
        return " ".join(f"[{md_text(label)}]({href})" for label, href in v)
    return md_text(fmt(v))


def md_table(df: pd.DataFrame) -> str:
    """A Markdown table whose every cell renders as its plain text (lineage.text.md_text):
    job names and error messages are strangers' text, never HTML or Markdown."""
    head = "| " + " | ".join(_md_cell(c) for c in df.columns) + " |"
    rule = "|" + "|".join(" --- " for _ in df.columns) + "|"
    rows = ["| " + " | ".join(_md_cell(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def render_markdown(title: str, sections: list[Section], summary: dict[str, Any]) -> str:
    lines = [f"# {md_text(title)}", "", md_text(_headline(summary), block=True), ""]
    for s in sections:
        lines += [f"## {md_text(s.title)}", ""]
        if s.text:
            lines += [md_text(s.text, block=True), ""]
        for e in s.explanations:
            lines += [f"### {md_text(e.job)}", ""]
            lines += [f"- {md_text(line)}" for line in e.lines()] + [""]
        for png, caption in s.figures:
            lines += [f"![{md_text(caption)}]({quote(png.name)})", ""]
        for caption, df in s.tables:
            lines += [f"**{md_text(caption)}**", "", md_table(df), ""]
        for caption, text in s.code:
            info = "yaml" if "config" in caption.lower() else "sh"
            lines += [f"**{md_text(caption)}**", "", md_fence(text, info), ""]
        for note in s.notes:
            lines += [f"> {md_text(note, block=True)}", ""]
    return "\n".join(lines)

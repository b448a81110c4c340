"""Write the report: report.html (self-contained: images inlined as base64 data URIs, so it
can be mailed as one file), report.md (references the PNGs beside it), report.json (the
numbers a script or test wants: job count, AUCs, issues), and the metrics table."""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from ..text import md_fence, md_text, printable
from ..utils import atomic_write
from .collect import Collection, save_table
from .sections import Section, make_sections

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}
h1{border-bottom:2px solid #ccc}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}
img{max-width:100%;height:auto}.note{color:#8a5a00}.tw{overflow-x:auto}
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


def _h(v: Any, keep: str = "") -> str:
    """HTML text: control characters escaped, then HTML-escaped."""
    return html.escape(printable(v, keep))


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


def _html_table(df: pd.DataFrame, caption: str) -> str:
    head = "".join(f"<th>{_h(c)}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_h(fmt(v))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return (
        f'<div class="tw"><table><caption>{_h(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def render_html(title: str, sections: list[Section], summary: dict[str, Any]) -> str:
    toc = "".join(f'<li><a href="#{s.key}">{_h(s.title)}</a></li>' for s in sections)
    parts = [
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_h(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_h(title)}</h1><p>{_h(_headline(summary))}</p>",
        f"<ul>{toc}</ul>",
    ]
    for s in sections:
        parts.append(f'<section id="{s.key}"><h2>{_h(s.title)}</h2>')
        if s.text:
            parts.append(f"<p>{_h(s.text)}</p>")
        for png, caption in s.figures:
            parts.append(
                f'<figure><img src="{_data_uri(png)}" alt="{_h(caption)}">'
                f"<figcaption>{_h(caption)} ({_h(png.name)})</figcaption>"
                "</figure>"
            )
        for caption, df in s.tables:
            parts.append(_html_table(df, caption))
        for caption, text in s.code:
            parts.append(
                f"<h3>{_h(caption)}</h3><pre><code>{_h(text, keep=MULTILINE)}</code></pre>"
            )
        for note in s.notes:
            parts.append(f'<p class="note">{_h(note)}</p>')
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# --- Markdown ------------------------------------------------------------------------------


def _md_cell(v: Any) -> str:
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

"""Reference-range pictures: each suspect's value of one kind of evidence against the
values its references gave (lineage.report.explain), so a reader sees why its p-value is
what it is.

`range_figure` is the sweep's overview, one PNG per kind (a row per job: references grey,
the suspect red, its p at the right); the left panel is the kind's headline value, the
right one the verdict's scale, which is what the p-value is computed on. `range_svg` is
the same for one job and kind as a small inline SVG whose marks name their model and value
when pointed at (an SVG <title>), so the page stays one file and needs no script.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from matplotlib.figure import Figure

from ..text import printable
from .explain import Explanation, KindEvidence
from .figures import DPI, Skip

MAX_ROWS = 40  # jobs per overview figure; a larger sweep gets several
LABEL = 38  # characters of a job name shown on an axis


def _short(name: str) -> str:
    s = printable(name)
    return s if len(s) <= LABEL else "…" + s[-(LABEL - 1) :]


def range_figures(exps: list[Explanation], kind: str, out_dir: Path) -> list[Path]:
    """The overview of `kind` over every job that has it, MAX_ROWS jobs per PNG."""
    rows = [(e.job, k) for e in exps for k in e.kinds if k.kind == kind and k.value is not None]
    if not rows:
        raise Skip(f"no job recorded a {kind} value")
    out = []
    for start in range(0, len(rows), MAX_ROWS):
        part = rows[start : start + MAX_ROWS]
        n = start // MAX_ROWS
        out.append(_figure(part, kind, out_dir, f"reference_range_{kind}" + (f"_{n}" if n else "")))
    return out


def _figure(rows: list[tuple[str, KindEvidence]], kind: str, out_dir: Path, name: str) -> Path:
    scaled = any(k.stat is not None and k.ref_stats for _, k in rows)
    height = max(2.6, 1.1 + 0.32 * len(rows))
    fig = Figure(figsize=(10 if scaled else 7, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 2 if scaled else 1, sharey=True, squeeze=False)[0]
    headline = rows[0][1].headline
    panels = [(axes[0], f"{kind} {headline}", False)]
    if scaled:
        panels.append((axes[1], "verdict scale (higher: more parent-like)", True))
    for ax, xlabel, on_scale in panels:
        for y, (_, k) in enumerate(rows):
            refs = [v for _, v in (k.ref_stats if on_scale else k.refs)]
            mine = k.stat if on_scale else k.value
            if refs:
                ax.plot([min(refs), max(refs)], [y, y], color="0.75", lw=6, solid_capstyle="butt")
                ax.plot(refs, [y] * len(refs), "o", color="0.35", ms=4, alpha=0.7)
            if mine is not None:
                ax.plot([mine], [y], "D", color="tab:red", ms=7)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), [_short(j) for j, _ in rows], fontsize=7)
    axes[0].invert_yaxis()
    right = axes[-1]
    for y, (_, k) in enumerate(rows):
        p = "p n/a" if k.p is None else f"p {k.p:.3g}"
        right.annotate(p, (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=7)
    fig.suptitle(
        f"{kind}: each suspect (red) against its references (grey dots, bar: their range)",
        fontsize=10,
    )
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=DPI, format="png")
    return path


# --- one job, one kind, inline -------------------------------------------------------------

SVG_W, SVG_H, PAD = 320, 30, 10


def range_svg(k: KindEvidence) -> str:
    """The suspect and its references on the verdict's scale when known, else on the
    headline value: a grey bar over the references' range, a dot per reference, a red
    diamond for the suspect; every mark has a tooltip."""
    on_scale = k.stat is not None and len(k.ref_stats) >= 2
    refs = k.ref_stats if on_scale else k.refs
    mine = k.stat if on_scale else k.value
    vals = [v for _, v in refs] + ([mine] if mine is not None else [])
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
    lo, hi = lo - 0.05 * span, hi + 0.05 * span

    def x(v: float) -> float:
        return PAD + (SVG_W - 2 * PAD) * (v - lo) / (hi - lo)

    unit = "verdict scale" if on_scale else k.headline
    what = f"{k.kind} on the {unit}"
    parts = [
        f'<svg class="range" width="{SVG_W}" height="{SVG_H}" viewBox="0 0 {SVG_W} {SVG_H}" '
        f'role="img" aria-label="{html.escape(what)}"><title>{html.escape(what)}</title>'
    ]
    if refs:
        r_lo, r_hi = x(min(v for _, v in refs)), x(max(v for _, v in refs))
        parts.append(
            f'<rect x="{r_lo:.1f}" y="11" width="{max(r_hi - r_lo, 1):.1f}" height="8" '
            'fill="#ccc"/>'
        )
    for rid, v in refs:
        tip = html.escape(printable(f"reference {rid}: {v:.4g}"))
        parts.append(
            f'<circle cx="{x(v):.1f}" cy="15" r="4" fill="#555" fill-opacity=".7">'
            f"<title>{tip}</title></circle>"
        )
    if mine is not None and math.isfinite(mine):
        cx = x(mine)
        tip = html.escape(printable(f"suspect: {mine:.4g}"))
        parts.append(
            f'<polygon points="{cx:.1f},6 {cx + 6:.1f},15 {cx:.1f},24 {cx - 6:.1f},15" '
            f'fill="#d62728"><title>{tip}</title></polygon>'
        )
    parts.append("</svg>")
    return "".join(parts)

"""The short summary a job prints at the end: verdicts, barrier, closeness, accuracies, times."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..text import printable


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else printable(v)


def text_table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    cells = [tuple(head)] + [tuple(_fmt(c) for c in r) for r in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def summary_table(m: dict[str, Any]) -> str:
    """One row per model (parent, derived, each reference), one column per measure, then a
    caution line for each verdict that carries a caveat."""
    judged = [("derived", "derived.")] if "derived.id" in m else []
    i = 0
    while f"independent.{i}.id" in m:
        judged.append((f"independent {i}", f"independent.{i}."))
        i += 1
    rows = [("parent", m.get("parent.id"), m.get("parent.accuracy"), *[None] * 6)]
    rows += [_row(name, m, p) for name, p in judged]
    head = (
        "model",
        "id",
        "accuracy",
        "lineage?",
        "p",
        "barrier",
        "closeness",
        "95% CI",
        "inherited",
    )
    lines = [text_table(head, rows)]
    cautions = [
        f"caution ({name}): {printable(m[p + 'determination.caveat'])}"
        for name, p in judged
        if m.get(p + "determination.caveat")
    ]
    times = ", ".join(
        f"{k[5:-2]} {v:.1f}s"
        for k, v in m.items()
        if k.startswith("time.") and isinstance(v, (int, float))
    )
    title = f"{printable(m.get('data'))} / {printable(m.get('model'))}"
    if m.get("modification"):
        title += f" / {printable(m['modification'])} ratio={m.get('ratio')}"
    return "\n".join([title, *lines, *cautions, f"time: {times}"])


def _row(name: str, m: dict[str, Any], p: str) -> tuple[Any, ...]:
    ci = None
    if f"{p}closeness.ci_low" in m:
        ci = f"[{m[p + 'closeness.ci_low']:.3f}, {m[p + 'closeness.ci_high']:.3f}]"
    pv = m.get(p + "determination.p_value")
    verdict = m.get(p + "determination.is_lineage")
    if m.get(p + "determination.calibrated") is False:
        verdict = "undetermined"
    return (
        name,
        m.get(p + "id"),
        m.get(p + "accuracy"),
        verdict,
        None if pv is None else f"{pv:.2g}",
        m.get(p + "determination.barrier"),
        m.get(p + "closeness.score"),
        ci,
        m.get(p + "inherited.score"),
    )

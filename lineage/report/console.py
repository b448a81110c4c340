"""The short summary a job prints at the end: verdicts, barrier, closeness, accuracies, times."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..evaluate.verdict import answer
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
    """One row per model (parent, derived, each reference), one column per measure (the
    verdict, then each kind of evidence's headline value), then a caution line for each
    verdict that carries a caveat."""
    from ..evaluate import evidence

    judged = [("derived", "derived.")] if "derived.id" in m else []
    i = 0
    while f"independent.{i}.id" in m:
        judged.append((f"independent {i}", f"independent.{i}."))
        i += 1
    kinds = [(k.name, k.headline) for k in evidence.kinds()]
    kinds = [(n, h) for n, h in kinds if any(f"{p}evidence.{n}.{h}" in m for _, p in judged)]
    rows = [("parent", m.get("parent.id"), m.get("parent.accuracy"), *[None] * (2 + len(kinds)))]
    rows += [_row(name, m, p, kinds) for name, p in judged]
    head = ("model", "id", "accuracy", "lineage?", "p", *(f"{n} {h}" for n, h in kinds))
    lines = [text_table(head, rows)]
    cautions = [
        f"caution ({name}): {printable(m[p + 'verdict.caveat'])}"
        for name, p in judged
        if m.get(p + "verdict.caveat")
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


def verdict_word(m: dict[str, Any], prefix: str) -> str | None:
    """lineage / not lineage / undetermined, from a metrics row (None: no verdict recorded)."""
    if f"{prefix}verdict.is_lineage" not in m:
        return None
    return answer(m[f"{prefix}verdict.is_lineage"])


def _row(name: str, m: dict[str, Any], p: str, kinds: list[tuple[str, str]]) -> tuple[Any, ...]:
    pv = m.get(p + "verdict.p_value")
    return (
        name,
        m.get(p + "id"),
        m.get(p + "accuracy"),
        verdict_word(m, p),
        None if pv is None else f"{pv:.2g}",
        *(m.get(f"{p}evidence.{n}.{h}") for n, h in kinds),
    )

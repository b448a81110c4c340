"""The report's verdict section: for each job, the evidence behind its verdict (each kind's
p-value against the references, which one decided, the caveats) and the loss along the
interpolation path the barrier is measured on, drawn over the references' paths."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..evaluate.verdict import answer
from ..results import isna
from ..text import printable
from .explain import Explanation, kind_names
from .figures import Skip, loss_path_figure
from .ranges import range_figures

MAX_PATH_FIGURES = 24  # a larger sweep gets its first 24 paths drawn, and a note


def evidence_columns(t: pd.DataFrame) -> dict[str, str]:
    """metrics.json key -> column: the verdict, then each registered kind of evidence's
    p-value and headline value (and any other kind a job recorded)."""
    from ..evaluate import evidence

    cols = {
        "derived.verdict.is_lineage": "lineage?",
        "derived.verdict.decided_by": "decided by",
    }
    names = evidence.names()
    names += sorted(
        {str(k).split(".")[3] for k in t.columns if str(k).startswith("derived.verdict.p.")}
        - set(names)
    )
    for n in names:
        cols[f"derived.verdict.p.{n}"] = f"p {n}"
        headline = evidence.get(n).headline if n in evidence.names() else "score"
        cols[f"derived.evidence.{n}.{headline}"] = f"{n} {headline}"
    cols.update(
        {
            "derived.verdict.p_value": "p (Bonferroni)",
            "derived.verdict.alpha": "α",
            "derived.verdict.n_references": "references",
            "derived.verdict.caveat": "caveat",
        }
    )
    return cols


def _curve(v: Any) -> list[dict[str, float]]:
    """A curve as metrics.json holds it (a list, or its JSON text in the report's table)."""
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return []
    if not isinstance(v, list):
        return []
    ok = [c for c in v if isinstance(c, dict) and {"alpha", "loss"} <= set(c)]
    return [c for c in ok if all(isinstance(c[k], int | float) for k in ("alpha", "loss"))]


def _ref_curves(row: pd.Series) -> list[list[dict[str, float]]]:
    out = []
    for i in range(100):
        key = f"independent.{i}.evidence.basin.curve"
        if key not in row.index:
            break
        if c := _curve(row[key]):
            out.append(c)
    return out


def evidence_table(t: pd.DataFrame) -> pd.DataFrame:
    cols = evidence_columns(t)
    have = [k for k in cols if k in t.columns and t[k].notna().any()]
    table = t[["job", *have]].rename(columns=cols)
    for c in table.columns:
        if c.startswith("p "):
            table[c] = [("n/a" if isna(v) else f"{float(v):.3g}") for v in table[c]]
    if "lineage?" in table:  # undetermined is its own answer, never "False"
        table["lineage?"] = [answer(v) for v in table["lineage?"]]
    return table


def evidence_section(t: pd.DataFrame, out_dir: Path, section: Any, exps: list[Explanation]) -> None:
    """Fill `section` (a report Section) with the evidence table, caveats, each kind's
    reference ranges and the path figures."""
    if "derived.verdict.p_value" in t.columns and t["derived.verdict.p_value"].notna().any():
        section.tables.append(
            ("Evidence per job (p-values against the references)", evidence_table(t))
        )
    else:
        section.notes.append("skipped: no job recorded p-values (older metrics.json)")
    for _, row in t.iterrows():
        caveat = row.get("derived.verdict.caveat")
        if isinstance(caveat, str) and caveat:
            section.notes.append(printable(f"{row['job']}: caveat: {caveat}"))
    for name in kind_names(t.columns):
        try:
            for png in range_figures(exps, name, out_dir):
                section.figures.append(
                    (
                        png,
                        f"{name}: each suspect's value against its references' range; the "
                        "right panel is the verdict's scale, which the p-value is computed on",
                    )
                )
        except Skip:
            continue
    drawn = 0
    for _, row in t.iterrows():
        curve = _curve(row.get("derived.evidence.basin.curve"))
        if not curve:
            continue
        if drawn == MAX_PATH_FIGURES:
            section.notes.append(f"only the first {MAX_PATH_FIGURES} jobs' paths are drawn")
            break
        b = row.get("derived.evidence.basin.barrier")
        shown = "n/a" if isna(b) or not math.isfinite(float(b)) else f"{float(b):.3g}"
        title = f"{row['job']}: barrier {shown}"
        path = loss_path_figure(title, curve, _ref_curves(row), out_dir, f"loss_path_{drawn}")
        section.figures.append((path, printable(f"Loss along the path parent -> {row['job']}")))
        drawn += 1
    if not drawn:
        section.notes.append(
            "no job recorded its interpolation path (derived.evidence.basin.curve)"
        )

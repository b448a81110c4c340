"""The report's verdict section: for each job, the evidence behind its verdict (each kind's
p-value against the references, which one decided, the caveats) and the loss along the
interpolation path the barrier is measured on, drawn over the references' paths."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..results import isna
from ..text import printable
from .figures import loss_path_figure

MAX_PATH_FIGURES = 24  # a larger sweep gets its first 24 paths drawn, and a note
EVIDENCE = {  # metrics.json key under derived.determination. -> column
    "is_lineage": "lineage?",
    "decided_by": "decided by",
    "p_basin": "p basin",
    "p_closeness": "p closeness",
    "p_inherited": "p inherited",
    "p_value": "p (Bonferroni)",
    "alpha": "α",
    "n_references": "references",
    "caveat": "caveat",
}


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
        key = f"independent.{i}.determination.curve"
        if key not in row.index:
            break
        if c := _curve(row[key]):
            out.append(c)
    return out


def evidence_table(t: pd.DataFrame) -> pd.DataFrame:
    cols = {f"derived.determination.{k}": v for k, v in EVIDENCE.items()}
    have = [k for k in cols if k in t.columns and t[k].notna().any()]
    table = t[["job", *have]].rename(columns=cols)
    for c in ("p basin", "p closeness", "p inherited", "p (Bonferroni)"):
        if c in table:
            table[c] = [("n/a" if isna(v) else f"{float(v):.3g}") for v in table[c]]
    return table


def evidence_section(t: pd.DataFrame, out_dir: Path, section: Any) -> None:
    """Fill `section` (a report Section) with the evidence table, caveats and path figures."""
    if (
        "derived.determination.p_value" in t.columns
        and t["derived.determination.p_value"].notna().any()
    ):
        section.tables.append(
            ("Evidence per job (p-values against the references)", evidence_table(t))
        )
    else:
        section.notes.append("skipped: no job recorded p-values (older metrics.json)")
    for _, row in t.iterrows():
        caveat = row.get("derived.determination.caveat")
        if isinstance(caveat, str) and caveat:
            section.notes.append(printable(f"{row['job']}: caveat: {caveat}"))
    drawn = 0
    for _, row in t.iterrows():
        curve = _curve(row.get("derived.determination.curve"))
        if not curve:
            continue
        if drawn == MAX_PATH_FIGURES:
            section.notes.append(f"only the first {MAX_PATH_FIGURES} jobs' paths are drawn")
            break
        b = row.get("derived.determination.barrier")
        shown = "n/a" if isna(b) or not math.isfinite(float(b)) else f"{float(b):.3g}"
        title = f"{row['job']}: barrier {shown}"
        path = loss_path_figure(title, curve, _ref_curves(row), out_dir, f"loss_path_{drawn}")
        section.figures.append((path, printable(f"Loss along the path parent -> {row['job']}")))
        drawn += 1
    if not drawn:
        section.notes.append("no job recorded its interpolation path (derived.determination.curve)")

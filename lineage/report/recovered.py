"""A `lineage tree --out` folder in the report: its picture, its edges and, where the files
recorded their parents, how well the tree recovered them.

A folder under a report's PATHs that holds edges.json and tree.png is one (`lineage tree
DIR --out SWEEP/tree`, then `lineage report SWEEP`; or both folders given to `lineage
report`). Its files are read as data only: JSON parsed, the PNG copied into the report.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from ..text import printable
from ..utils import loads_json
from .figures import Skip

COLUMNS = ["parent", "child", "modification", "score", "p_value", "decided_by", "closeness"]


def folders(roots: list[Path]) -> list[Path]:
    """Every tree output folder under `roots`, in order."""
    found = {p.parent for r in roots for p in r.rglob("edges.json")}
    return sorted(d for d in found if (d / "tree.png").is_file())


def _json(path: Path) -> Any:
    try:
        return loads_json(path.read_text())
    except (OSError, ValueError) as e:
        raise Skip(f"{printable(path)} is not readable JSON ({printable(e)})") from None


def parts(folder: Path, out_dir: Path, i: int) -> tuple[str, Path, pd.DataFrame]:
    """(text, the picture copied into `out_dir`, the edges table) of one tree folder."""
    edges = _json(folder / "edges.json")
    if not isinstance(edges, list) or not all(isinstance(e, dict) for e in edges):
        raise Skip(f"{printable(folder / 'edges.json')} is not a list of edges")
    table = pd.DataFrame([{k: e.get(k) for k in COLUMNS} for e in edges], columns=COLUMNS)
    png = shutil.copyfile(folder / "tree.png", out_dir / f"recovered_tree_{i}.png")
    text = f"{len(table)} recovered edge(s), from {printable(folder)}."
    rec = folder / "recovery.json"
    if rec.is_file():
        r = _json(rec)
        if isinstance(r, dict):
            text += (
                " Against the files' lineage records: parent recovery "
                f"{_share(r.get('parent_recovery'))}, root recovery "
                f"{_share(r.get('root_recovery'))}, direction accuracy "
                f"{_share(r.get('direction_accuracy'))}."
            )
    return text, Path(png), table


def _share(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, int | float) else "n/a"

"""The report's figures (PNG, matplotlib Agg) and the tables they draw from; a figure that
the sweep's metrics cannot support raises `Skip` with the reason (lineage.report.sections
turns that into a note).

Figures are drawn on `matplotlib.figure.Figure` objects (no pyplot state), at DPI 100 and
without tight bounding boxes, so each PNG has exactly the pixel size in FIGURE_SIZES.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..results import Unavailable, need
from ..text import printable

log = logging.getLogger("lineage")

DPI = 100
# name -> (width, height) in pixels of the PNG written as <name>.png.
FIGURE_SIZES: dict[str, tuple[int, int]] = {
    "closeness_vs_ratio": (720, 450),
    "barrier_vs_ratio": (720, 450),
    "determination_accuracy": (720, 450),
    "confusion_matrix": (480, 420),
    "roc": (600, 500),
    "accuracy_vs_ratio": (720, 450),
}
# One more per judged pair, loss_path_<n>.png (lineage.report.evidence): its size.
LOSS_PATH_SIZE = (600, 400)
TIME_STAGES = ["parent", "derive", "basin", "closeness", "inherited", "total"]


# A figure the sweep's metrics cannot support: the same as a table that cannot be made.
Skip = Unavailable
_need = need


def _numeric(t: pd.DataFrame, col: str) -> pd.Series:
    if col not in t.columns:
        return pd.Series(np.nan, index=t.index)
    return pd.to_numeric(t[col], errors="coerce")


def _new_figure(name: str) -> Figure:
    w, h = FIGURE_SIZES.get(name, LOSS_PATH_SIZE)
    return Figure(figsize=(w / DPI, h / DPI), dpi=DPI, layout="constrained")


def _save(fig: Figure, out_dir: Path, name: str) -> Path:
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=DPI, format="png")
    return path


def by_ratio(t: pd.DataFrame, col: str) -> dict[str, pd.DataFrame]:
    """modification -> rows (ratio, mean, std, n) of `col` over seeds, ratio ascending."""
    d = pd.DataFrame(
        {
            "modification": t["modification"].astype(object).fillna("?"),
            "ratio": _numeric(t, "ratio"),
            "v": _numeric(t, col),
        }
    ).dropna()
    out = {}
    for mod, g in d.groupby("modification", sort=True):
        agg = g.groupby("ratio")["v"].agg(["mean", "std", "count"]).reset_index()
        out[printable(mod)] = agg.fillna({"std": 0.0}).rename(columns={"count": "n"})
    return out


def _ratio_axes(fig: Figure, ylabel: str) -> Any:
    ax = fig.add_subplot()
    ax.set_xlabel("ratio (modification strength)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return ax


def _lines(ax: Any, t: pd.DataFrame, col: str, band: tuple[str, str] | None = None) -> None:
    lo_hi = (by_ratio(t, band[0]), by_ratio(t, band[1])) if band else None
    for mod, g in by_ratio(t, col).items():
        line = ax.errorbar(g["ratio"], g["mean"], yerr=g["std"], marker="o", capsize=3, label=mod)
        if lo_hi and mod in lo_hi[0] and mod in lo_hi[1]:
            lo, hi = lo_hi[0][mod], lo_hi[1][mod]
            m = lo.merge(hi, on="ratio", suffixes=("_lo", "_hi"))
            ax.fill_between(
                m["ratio"],
                m["mean_lo"],
                m["mean_hi"],
                alpha=0.2,
                color=line[0].get_color(),
                linewidth=0,
            )


def closeness_figure(t: pd.DataFrame, out_dir: Path) -> Path:
    _need(t, "modification", "ratio", "derived.evidence.closeness.score")
    fig = _new_figure("closeness_vs_ratio")
    ax = _ratio_axes(fig, "closeness score (derived vs parent)")
    _lines(
        ax,
        t,
        "derived.evidence.closeness.score",
        ("derived.evidence.closeness.ci_low", "derived.evidence.closeness.ci_high"),
    )
    ref = _numeric(t, "independent.evidence.closeness.max").mean()
    if not math.isnan(ref):
        ax.axhline(ref, color="0.4", ls="--", label="independent refs (max, mean over jobs)")
    thr = _numeric(t, "derived.evidence.closeness.threshold").median()
    if not math.isnan(thr):
        ax.axhline(thr, color="k", ls=":", label="closeness threshold (median)")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title("Lineage closeness vs ratio (mean ± std over seeds; band: 95% CI)")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "closeness_vs_ratio")


def barrier_figure(t: pd.DataFrame, out_dir: Path) -> Path:
    _need(t, "modification", "ratio", "derived.evidence.basin.barrier")
    fig = _new_figure("barrier_vs_ratio")
    ax = _ratio_axes(fig, "loss barrier (derived vs parent)")
    _lines(ax, t, "derived.evidence.basin.barrier")
    thr = _numeric(t, "derived.evidence.basin.threshold").dropna()
    if len(thr):
        ax.axhline(thr.median(), color="k", ls="--", label="threshold τ (median over jobs)")
        if thr.max() > thr.min():
            ax.axhspan(thr.min(), thr.max(), color="k", alpha=0.08, label="τ range")
    ref = _numeric(t, "independent.evidence.basin.min").mean()
    if not math.isnan(ref):
        ax.axhline(ref, color="0.4", ls=":", label="independent refs (min barrier, mean)")
    ax.set_title("Loss barrier vs ratio (τ: the paper's rule, recorded; the p-value decides)")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "barrier_vs_ratio")


def accuracy_bar_figure(table: pd.DataFrame, out_dir: Path) -> Path:
    if table.empty:
        raise Skip("no determination verdicts")
    fig = _new_figure("determination_accuracy")
    ax = fig.add_subplot()
    colors = [
        "0.55" if m == "independent references" else f"C{i}" for i, m in enumerate(table["models"])
    ]
    bars = ax.bar(table["models"], table["accuracy"], color=colors)
    for b, (ok, n) in zip(bars, zip(table["correct"], table["n"])):
        ax.annotate(
            f"{ok}/{n}",
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("fraction judged correctly")
    ax.set_title("Determination accuracy per modification (and on independent references)")
    ax.tick_params(axis="x", labelsize=8, rotation=15)
    return _save(fig, out_dir, "determination_accuracy")


def confusion_figure(cm: pd.DataFrame, out_dir: Path) -> Path:
    fig = _new_figure("confusion_matrix")
    ax = fig.add_subplot()
    ax.imshow(cm.to_numpy(), cmap="Blues", vmin=0)
    for (i, j), n in np.ndenumerate(cm.to_numpy()):
        dark = n > cm.to_numpy().max() / 2
        ax.text(
            j, i, str(n), ha="center", va="center", fontsize=14, color="white" if dark else "black"
        )
    ax.set_xticks([0, 1], list(cm.columns))
    ax.set_yticks([0, 1], list(cm.index))
    ax.set_title("Lineage vs independent: verdicts")
    return _save(fig, out_dir, "confusion_matrix")


def roc_figure(aucs: pd.DataFrame, curves: dict[str, tuple[Any, Any]], out_dir: Path) -> Path:
    if not curves:
        raise Skip("ROC needs both derived models and independent references with a score")
    fig = _new_figure("roc")
    ax = fig.add_subplot()
    for name, (fpr, tpr) in curves.items():
        auc = float(aucs.set_index("detector").loc[name, "auc"])
        ax.plot(fpr, tpr, drawstyle="steps-post", lw=2, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate (independent judged lineage)")
    ax.set_ylabel("true positive rate (derived judged lineage)")
    ax.set_title("ROC over every pair in the sweep")
    ax.legend(loc="lower right", fontsize=9)
    return _save(fig, out_dir, "roc")


def accuracy_figure(t: pd.DataFrame, out_dir: Path) -> Path:
    _need(t, "modification", "ratio", "derived.accuracy")
    fig = _new_figure("accuracy_vs_ratio")
    ax = _ratio_axes(fig, "test accuracy of the derived model")
    _lines(ax, t, "derived.accuracy")
    for col, style, label in (
        ("parent.accuracy", "--", "parent (mean)"),
        ("independent.accuracy", ":", "independent refs (mean)"),
    ):
        v = _numeric(t, col).mean()
        if not math.isnan(v):
            ax.axhline(v, color="0.3", ls=style, label=label)
    ax.set_title("Derived accuracy vs ratio (mean ± std over seeds)")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "accuracy_vs_ratio")


def timing_table(t: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in t.columns if c.startswith("time.") and _numeric(t, c).notna().any()]
    if not cols:
        raise Skip("no job recorded time.*_s")
    order = {s: i for i, s in enumerate(TIME_STAGES)}
    rows = []
    for c in cols:
        v = _numeric(t, c).dropna()
        stage = c[len("time.") :].removesuffix("_s")
        rows.append(
            {
                "stage": stage,
                "jobs": len(v),
                "mean_s": v.mean(),
                "std_s": v.std(),
                "max_s": v.max(),
                "sum_s": v.sum(),
            }
        )
    rows.sort(key=lambda r: (order.get(r["stage"], len(order)), r["stage"]))
    return pd.DataFrame(rows)


def timing_by_modification(t: pd.DataFrame, stages: list[str]) -> pd.DataFrame:
    """Mean seconds per stage for each modification (rows) and stage (columns)."""
    d = pd.DataFrame({s: _numeric(t, f"time.{s}_s") for s in stages})
    d.insert(0, "modification", t["modification"].astype(object).fillna("?"))
    return d.groupby("modification", sort=True).mean().reset_index()


def loss_path_figure(
    title: str,
    suspect: list[dict[str, float]],
    references: list[list[dict[str, float]]],
    out_dir: Path,
    name: str,
) -> Path:
    """The loss along the linear path parent (alpha 0) -> suspect (1), drawn over the same
    path to each independent reference: what the barrier is measured on."""
    fig = _new_figure(name)
    ax = fig.add_subplot()
    for i, ref in enumerate(references):
        ax.plot(
            [c["alpha"] for c in ref],
            [c["loss"] for c in ref],
            color="0.65",
            lw=1,
            label="independent references" if i == 0 else None,
        )
    ax.plot(
        [c["alpha"] for c in suspect],
        [c["loss"] for c in suspect],
        "o-",
        lw=2,
        ms=3,
        color="tab:red",
        label="suspect",
    )
    ax.set_xlabel("alpha (0 = parent, 1 = the other model)")
    ax.set_ylabel("test loss (BatchNorm re-estimated)")
    ax.set_title(printable(title), fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, name)

"""Experiment 1: lineage determination accuracy over the zoo.

    python experiments/zoo.py --preset mnist_lenet            # first: the zoo and its pairs
    python experiments/determination.py --preset mnist_lenet

Reads outputs/experiments/<preset>/pairs.csv; writes to outputs/experiments/<preset>/
determination/:
    summary.{csv,md}            accuracy, TPR, FPR, balanced accuracy, ROC AUC of the verdict
                                score, of -barrier and of closeness, TPR at 1% FPR; over all
                                pairs and over the pairs without fresh-weight students
    confusion.{csv,md,png}      the verdict's confusion matrix
    by_modification.{csv,md}    TPR per (modification, ratio) over the lineage pairs
    by_kind.{csv,md}            accuracy per kind of pair (derived, other parent, independent ...)
    misjudged.{csv,md}          every pair the verdict gets wrong, with the evidence and why
    barrier.png                 each pair's barrier relative to its threshold, by kind

Students trained from fresh weights (distill, extraction) are lineage by their records but
share no basin with the parent; only the function evidence (closeness) can find them, so the
summary reports them apart as well.
"""
# ruff: noqa: E402  (the repository root goes on sys.path first: this file runs as a script)

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import math
from typing import Any

import numpy as np
import pandas as pd

from experiments.common import (
    PROJECT_SCORES,
    new_figure,
    save_figure,
    table_main,
    write_table,
)
from lineage.evaluate.verdict import LIFT
from lineage.results import breakdown, rates, roc_auc, tpr_at_fpr

FRESH_WEIGHTS = ("distill", "extraction")  # modifications whose model starts from a fresh init


def is_fresh(modification: Any) -> bool:
    return isinstance(modification, str) and modification.split(">")[0] in FRESH_WEIGHTS


def summary(pairs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    subsets = {
        "all pairs": pairs,
        "without fresh-weight students": pairs[~pairs["modification"].map(is_fresh)],
    }
    for name, p in subsets.items():
        r = rates(p["truth"], p["is_lineage"])
        row: dict[str, Any] = {
            "pairs": name,
            "n": r.n,
            "lineage": r.tp + r.fn,
            "not_lineage": r.fp + r.tn,
            "accuracy": r.accuracy,
            "tpr": r.tpr,
            "fpr": r.fpr,
            "balanced_accuracy": r.balanced_accuracy,
        }
        for label, col in PROJECT_SCORES.items():
            row[f"auc {label}"] = roc_auc(p["truth"], p[col])
        row["tpr@1%fpr verdict"] = tpr_at_fpr(p["truth"], p["verdict_score"])
        rows.append(row)
    return pd.DataFrame(rows)


def confusion(pairs: pd.DataFrame) -> pd.DataFrame:
    r = rates(pairs["truth"], pairs["is_lineage"])
    return pd.DataFrame(
        [
            {"truth": "lineage", "judged lineage": r.tp, "judged not": r.fn},
            {"truth": "not lineage", "judged lineage": r.fp, "judged not": r.tn},
        ]
    )


def by_modification(pairs: pd.DataFrame) -> pd.DataFrame:
    pos = pairs[pairs["truth"] == 1]
    t = breakdown(pos, ["modification", "ratio"])
    return t[["modification", "ratio", "n", "tp", "fn", "tpr"]]


def by_kind(pairs: pd.DataFrame) -> pd.DataFrame:
    t = breakdown(pairs, ["kind"])
    return t[["kind", "n", "tp", "fp", "tn", "fn", "accuracy"]]


def reason(row: pd.Series) -> str:
    """Why the verdict went wrong, from the pair's own evidence."""
    parts = []
    b, tau = row.get("barrier"), row.get("threshold")
    if isinstance(b, float) and math.isfinite(b):
        op = ">" if b > tau else "<="
        parts.append(f"barrier {b:.3g} {op} threshold {tau:.3g}")
        l0, l1 = row.get("loss_parent"), row.get("loss_suspect")
        if isinstance(l1, float) and math.isfinite(l1):
            parts.append(f"path endpoints L(0) {l0:.3g}, L(1) {l1:.3g}")
        if str(row.get("route", "")).startswith("trunk"):
            parts.append("trunk route: the suspect's trunk under the parent's head")
    else:
        parts.append("no weight-space route (another architecture)")
    c, ct = row.get("closeness"), row.get("closeness_threshold")
    if isinstance(ct, float) and math.isfinite(ct):
        parts.append(f"closeness {c:.3g} {'<' if c < ct else '>='} threshold {ct:.3g}")
    l0, l1 = row.get("loss_parent"), row.get("loss_suspect")
    # the case verdict.caveat_of warns about, when it did mislead
    basin_fp = row["truth"] == 0 and str(row.get("basin_is_lineage")) == "True"
    if basin_fp and isinstance(l1, float) and isinstance(l0, float) and l1 > LIFT * l0:
        parts.append(
            f"the suspect's loss on the parent's task is over {LIFT:g}x the parent's: it lifts "
            "the chord L(0)..L(1), and the path stays under it though the basins differ"
        )
    if row["truth"] == 1:
        if is_fresh(row["modification"]):
            parts.append(
                "a student trained from fresh weights: outside the parent's basin, and its "
                "closeness does not clear the function threshold set by the references"
            )
        acc = row.get("model_accuracy")
        if isinstance(acc, float) and acc < 0.5:
            parts.append(f"the modification left {acc:.1%} test accuracy")
    return "; ".join(parts)


def misjudged(pairs: pd.DataFrame) -> pd.DataFrame:
    cols = [
        "parent_id",
        "model_id",
        "kind",
        "modification",
        "ratio",
        "truth",
        "is_lineage",
        "model_accuracy",
        "barrier",
        "threshold",
        "closeness",
        "closeness_threshold",
    ]
    cols = [c for c in cols if c in pairs.columns]
    wrong = pairs[pairs["truth"].astype(bool) != pairs["is_lineage"].astype(bool)]
    t = wrong[cols].copy()
    t["reason"] = [reason(r) for _, r in wrong.iterrows()]
    return t.reset_index(drop=True)


def confusion_figure(cm: pd.DataFrame, out: Path) -> Path:
    fig = new_figure(4.2, 3.6)
    ax = fig.add_subplot()
    m = cm[["judged lineage", "judged not"]].to_numpy(int)
    ax.imshow(m, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(
                j,
                i,
                str(m[i, j]),
                ha="center",
                va="center",
                fontsize=14,
                color="white" if m[i, j] > m.max() / 2 else "black",
            )
    ax.set_xticks([0, 1], ["judged lineage", "judged not"])
    ax.set_yticks([0, 1], ["lineage", "not lineage"])
    ax.set_title("determination verdict over the zoo")
    return save_figure(fig, out, "confusion")


def barrier_figure(pairs: pd.DataFrame, out: Path) -> Path:
    """barrier / threshold per pair (1 = the threshold), one column per kind of pair."""
    fig = new_figure(7.5, 4.2)
    ax = fig.add_subplot()
    p = pairs[np.isfinite(pairs["barrier"].astype(float))]
    kinds = sorted(p["kind"].unique())
    for i, k in enumerate(kinds):
        g = p[p["kind"] == k]
        rel = g["barrier"] / g["threshold"]
        jitter = np.linspace(-0.25, 0.25, len(g)) if len(g) > 1 else np.zeros(1)
        ax.scatter(
            i + jitter,
            rel.clip(lower=1e-3),
            s=14,
            c=np.where(g["is_lineage"].astype(bool), "tab:red", "tab:blue"),
        )
    ax.axhline(1.0, color="0.3", ls="--", lw=1, label="threshold")
    ax.set_yscale("log")
    ax.set_xticks(range(len(kinds)), kinds, rotation=20, ha="right")
    ax.set_ylabel("barrier / threshold (0 drawn at 1e-3; red: judged lineage)")
    ax.set_title("same-basin barrier by kind of pair")
    ax.legend(loc="upper left")
    return save_figure(fig, out, "barrier")


def run(pairs: pd.DataFrame, out: Path) -> dict[str, pd.DataFrame]:
    tables = {
        "summary": summary(pairs),
        "confusion": confusion(pairs),
        "by_modification": by_modification(pairs),
        "by_kind": by_kind(pairs),
        "misjudged": misjudged(pairs),
    }
    titles = {
        "summary": "Determination over the zoo",
        "confusion": "Confusion matrix of the verdict",
        "by_modification": "TPR per modification and ratio (lineage pairs)",
        "by_kind": "Accuracy per kind of pair",
        "misjudged": "Every misjudged pair",
    }
    md = [write_table(t, out, name, titles[name]) for name, t in tables.items()]
    (out / "determination.md").write_text("\n".join(md))
    confusion_figure(tables["confusion"], out)
    barrier_figure(pairs, out)
    return tables


def main(argv: list[str] | None = None) -> None:
    table_main(__doc__, "determination", run, argv)


if __name__ == "__main__":
    main()

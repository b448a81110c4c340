"""Experiment 1: lineage determination accuracy over the zoo.

    python -m experiments.zoo --preset mnist_lenet            # first: the zoo and its pairs
    python -m experiments.determination --preset mnist_lenet

Reads outputs/experiments/<preset>/pairs.csv; writes to outputs/experiments/<preset>/
determination/:
    summary.{csv,md}            accuracy, TPR, FPR, balanced accuracy, ROC AUC of the verdict
                                score (-log10 p) and of each evidence alone, TPR at 1% FPR;
                                over all pairs and over the pairs without fresh-weight students
    confusion.{csv,md,png}      the verdict's confusion matrix
    by_modification.{csv,md}    TPR per (modification, ratio) over the lineage pairs
    by_kind.{csv,md}            accuracy per kind of pair (derived, other parent, independent ...)
    misjudged.{csv,md}          every pair the verdict gets wrong, with its p-values and why
    false_positives.{csv,md}    the overall p-values of the non-lineage pairs, per parent/kind
    barrier.png                 each pair's barrier relative to its threshold, by kind
    p_values.png                histogram of the overall p-values, lineage and not

Students trained from fresh weights (distill, extraction) are lineage by their records but
share no basin with the parent; only the function evidence (closeness, inherited errors) can
find them, so the summary reports them apart as well.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.common import (
    PROJECT_SCORES,
    new_figure,
    project_score,
    save_figure,
    table_main,
    write_table,
)
from lineage.evaluate import evidence
from lineage.modifications.registry import fresh_weight_modifications
from lineage.results import breakdown, rates, roc_auc, tpr_at_fpr

FRESH_WEIGHTS = fresh_weight_modifications()  # students that start from fresh weights


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
        for label in PROJECT_SCORES:
            row[f"auc {label}"] = roc_auc(p["truth"], project_score(p, label))
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


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def reason(row: pd.Series) -> str:
    """Why the verdict went wrong, from the pair's own evidence."""
    ps = {k: row.get(f"p_{k}") for k in evidence.names() if _finite(row.get(f"p_{k}"))}
    parts = [", ".join(f"p_{k} {v:.2g}" for k, v in ps.items()) or "no evidence applied"]
    alpha = row.get("alpha") if _finite(row.get("alpha")) else None
    if row["truth"] == 1:
        if ps and alpha:
            parts.append(f"none reached alpha/{len(ps)} = {alpha / len(ps):.2g} (Bonferroni)")
        if not _finite(row.get("barrier")):
            parts.append("no weight-space route (another architecture)")
        if is_fresh(row["modification"]):
            parts.append(
                "a student trained from fresh weights: outside the parent's basin, and it "
                "reproduces too few of the parent's errors to stand out from the references"
            )
        acc = row.get("model_accuracy")
        if _finite(acc) and acc < 0.5:
            parts.append(f"the modification left {acc:.1%} test accuracy")
    else:
        parts.append(f"decided by {row.get('decided_by')}")
        if isinstance(row.get("caveat"), str) and row["caveat"]:
            parts.append(row["caveat"])
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
        "closeness",
        *(f"p_{k}" for k in evidence.names()),
        "p_value",
    ]
    cols = [c for c in cols if c in pairs.columns]
    wrong = pairs[pairs["truth"].astype(bool) != pairs["is_lineage"].astype(bool)]
    t = wrong[cols].copy()
    t["reason"] = [reason(r) for _, r in wrong.iterrows()]
    return t.reset_index(drop=True)


def false_positives(pairs: pd.DataFrame) -> pd.DataFrame:
    """The overall p-values of every non-lineage pair, per parent and kind: how close the
    independent models came to being called lineage (the verdict says so at p <= alpha)."""
    neg = pairs[pairs["truth"] == 0]
    rows = []
    for (parent, kind), g in neg.groupby(["parent_id", "kind"], sort=True):
        p = g["p_value"].astype(float)
        rows.append(
            {
                "parent_id": parent,
                "kind": kind,
                "n": len(g),
                "judged lineage": int(g["is_lineage"].astype(bool).sum()),
                "min p": p.min(),
                "median p": p.median(),
                "p <= 0.05": int((p <= 0.05).sum()),
            }
        )
    return pd.DataFrame(rows)


def p_value_figure(pairs: pd.DataFrame, out: Path) -> Path:
    """Histogram of the overall p-value (log10) of lineage and non-lineage pairs."""
    fig = new_figure(6.4, 3.8)
    ax = fig.add_subplot()
    logp = np.log10(pairs["p_value"].astype(float).clip(lower=1e-12))
    bins = np.linspace(-12, 0, 25)
    ax.hist(logp[pairs["truth"] == 0], bins=bins, alpha=0.7, label="not lineage")
    ax.hist(logp[pairs["truth"] == 1], bins=bins, alpha=0.7, label="lineage")
    alpha = pairs["alpha"].dropna()
    if len(alpha):
        ax.axvline(math.log10(float(alpha.iloc[0])), color="0.2", ls="--", lw=1, label="alpha")
    ax.set_xlabel("log10 overall p-value (clipped at 1e-12)")
    ax.set_ylabel("pairs")
    ax.set_title("verdict p-values over the zoo")
    ax.legend()
    return save_figure(fig, out, "p_values")


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
        rel = g["barrier"] / g["basin.threshold"]
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
        "false_positives": false_positives(pairs),
    }
    titles = {
        "summary": "Determination over the zoo",
        "confusion": "Confusion matrix of the verdict",
        "by_modification": "TPR per modification and ratio (lineage pairs)",
        "by_kind": "Accuracy per kind of pair",
        "misjudged": "Every misjudged pair",
        "false_positives": "Overall p-values of the non-lineage pairs",
    }
    md = [write_table(t, out, name, titles[name]) for name, t in tables.items()]
    (out / "determination.md").write_text("\n".join(md))
    confusion_figure(tables["confusion"], out)
    barrier_figure(pairs, out)
    p_value_figure(pairs, out)
    return tables


def main(argv: list[str] | None = None) -> None:
    table_main(__doc__, "determination", run, argv)


if __name__ == "__main__":
    main()

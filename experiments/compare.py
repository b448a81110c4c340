"""Experiment 4: this project's lineage verdict beside the peer baselines, on the same pairs.

    python -m experiments.zoo --preset mnist_lenet            # first: the zoo and its pairs
    python -m experiments.compare --preset mnist_lenet

Reads outputs/experiments/<preset>/pairs.csv; writes to outputs/experiments/<preset>/compare/:
    methods.{csv,md}         per method: ROC AUC, TPR at 1% FPR, pairs it can score, mean
                             seconds per pair; over all pairs and without fresh-weight
                             students (those whose modification declares fresh weights:
                             distill, extraction)
    verdict_vs.{csv,md}      whether the project's verdict beats each baseline on AUC and on
                             TPR at 1% FPR (the issue's acceptance)
    baseline_wins.{csv,md}   every pair some baseline gets right and the verdict gets wrong;
                             a baseline's rule is `score >= t` with t its lowest threshold at
                             <= 1% FPR on these pairs (an oracle threshold: it favours it)
    roc.png                  ROC curves of every method

Methods: `verdict` (-log10 of the verdict's p-value: its three kinds of evidence, each
measured against the parent's references, combined by Bonferroni), `-barrier` (the
same-basin barrier alone; NaN across architectures), `closeness`, `inherited` (the
inherited-error statistic alone), and every baseline registered in lineage.baselines
(agreement, akh, ipguard, modeldiff, sacw, weights), in the order of their names. A method
that cannot score a pair (NaN: another architecture for weights, another label set for the
output baselines) ranks it below every scored pair.
Seconds: all three stages for the verdict, each stage alone for the others (the parent's
references are judged once per parent and not counted), the whole call for a baseline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.common import (
    BASELINE_NAMES,
    PROJECT_SCORES,
    new_figure,
    project_score,
    save_figure,
    table_main,
    write_table,
)
from experiments.determination import is_fresh
from lineage.evaluate import evidence
from lineage.results import roc_auc, roc_curve, threshold_at_fpr, tpr_at_fpr


def methods(pairs: pd.DataFrame) -> dict[str, tuple[pd.Series, pd.Series]]:
    """method -> (score per pair, seconds per pair)."""
    each = {k: pairs[f"{k}_s"] for k in evidence.names() if f"{k}_s" in pairs}
    secs = {"verdict": sum(each.values()), "-barrier": each["basin"], **each}
    out = {label: (project_score(pairs, label), secs[label]) for label in PROJECT_SCORES}
    for b in BASELINE_NAMES:
        out[b] = (pairs[b], pairs[f"{b}_s"])
    return out


def method_table(pairs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    subsets = {
        "all pairs": pairs,
        "without fresh-weight students": pairs[~pairs["modification"].map(is_fresh)],
    }
    for subset, p in subsets.items():
        for name, (score, secs) in methods(p).items():
            rows.append(
                {
                    "pairs": subset,
                    "method": name,
                    "auc": roc_auc(p["truth"], score),
                    "tpr@1%fpr": tpr_at_fpr(p["truth"], score, 0.01),
                    "scored": int(score.notna().sum()),
                    "n": len(p),
                    "seconds/pair": float(secs.mean()),
                }
            )
    return pd.DataFrame(rows)


def verdict_vs(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for subset, t in table.groupby("pairs", sort=False):
        v = t.set_index("method").loc["verdict"]
        for b in BASELINE_NAMES:
            r = t.set_index("method").loc[b]
            rows.append(
                {
                    "pairs": subset,
                    "baseline": b,
                    "auc verdict": v["auc"],
                    "auc baseline": r["auc"],
                    "verdict higher auc": bool(v["auc"] > r["auc"]),
                    "tpr@1% verdict": v["tpr@1%fpr"],
                    "tpr@1% baseline": r["tpr@1%fpr"],
                    "verdict higher tpr@1%": bool(v["tpr@1%fpr"] > r["tpr@1%fpr"]),
                }
            )
    return pd.DataFrame(rows)


def baseline_wins(pairs: pd.DataFrame) -> pd.DataFrame:
    right = pairs["is_lineage"].astype(bool) == pairs["truth"].astype(bool)
    rows = []
    for b in BASELINE_NAMES:
        t = threshold_at_fpr(pairs["truth"], pairs[b], 0.01)
        said = pairs[b].fillna(-np.inf) >= t
        wins = pairs[(said == pairs["truth"].astype(bool)) & ~right]
        for _, r in wins.iterrows():
            rows.append(
                {
                    "baseline": b,
                    "threshold": t,
                    "score": r[b],
                    "parent_id": r["parent_id"],
                    "model_id": r["model_id"],
                    "kind": r["kind"],
                    "modification": r["modification"],
                    "ratio": r["ratio"],
                    "truth": r["truth"],
                    "verdict": bool(r["is_lineage"]),
                }
            )
    cols = [
        "baseline",
        "threshold",
        "score",
        "parent_id",
        "model_id",
        "kind",
        "modification",
        "ratio",
        "truth",
        "verdict",
    ]
    return pd.DataFrame(rows, columns=cols)


def roc_figure(pairs: pd.DataFrame, table: pd.DataFrame, out: Path) -> Path:
    fig = new_figure(6.4, 5.2)
    ax = fig.add_subplot()
    auc = table[table["pairs"] == "all pairs"].set_index("method")["auc"]
    for name, (score, _) in methods(pairs).items():
        fpr, tpr = roc_curve(pairs["truth"], score)
        lw = 2.5 if name == "verdict" else 1.2
        ax.plot(fpr, tpr, drawstyle="steps-post", lw=lw, label=f"{name} ({auc[name]:.3f})")
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC over the zoo's pairs (AUC)")
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, out, "roc")


def run(pairs: pd.DataFrame, out: Path) -> dict[str, pd.DataFrame]:
    table = method_table(pairs)
    tables = {
        "methods": table,
        "verdict_vs": verdict_vs(table),
        "baseline_wins": baseline_wins(pairs),
    }
    titles = {
        "methods": "Methods on the same pairs",
        "verdict_vs": "The project's verdict against each baseline",
        "baseline_wins": "Pairs a baseline gets right and the verdict gets wrong",
    }
    md = [write_table(t, out, name, titles[name]) for name, t in tables.items()]
    (out / "compare.md").write_text("\n".join(md))
    roc_figure(pairs, table, out)
    return tables


def main(argv: list[str] | None = None) -> None:
    table_main(__doc__, "compare", run, argv)


if __name__ == "__main__":
    main()

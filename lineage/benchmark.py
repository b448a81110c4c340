"""Benchmark metrics over labelled (parent, model) pairs: is a detector's verdict right, and
how well does its score separate lineage from independent models?

Pairs carry `truth` (1 = lineage, 0 = not). A verdict is a bool per pair; a score is a float
per pair, higher = more likely lineage. A score that is NaN (the method does not apply to the
pair) ranks below every real score: a method that cannot score a pair cannot claim it.
Everything is plain numpy/pandas, so the experiments and the tests share one definition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from .errors import LineageError


@dataclass
class Rates:
    n: int
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float
    tpr: float  # lineage pairs judged lineage
    fpr: float  # non-lineage pairs judged lineage
    balanced_accuracy: float  # (TPR + TNR) / 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _labels(truth: Sequence[Any] | np.ndarray | pd.Series) -> np.ndarray:
    t = np.asarray(truth)
    if t.ndim != 1:
        raise LineageError(f"truth must be one label per pair, got shape {t.shape}")
    if not np.isin(t, (0, 1)).all():
        raise LineageError("truth must hold only 0 (not lineage) and 1 (lineage)")
    return t.astype(int)


def _scores(score: Sequence[Any] | np.ndarray | pd.Series, n: int) -> np.ndarray:
    s = np.asarray(score, dtype=float)
    if s.shape != (n,):
        raise LineageError(f"{n} labels but scores shaped {s.shape}")
    if np.isposinf(s).any():
        raise LineageError("scores must be finite or NaN (not applicable)")
    return np.where(np.isnan(s), -np.inf, s)


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


def rates(truth: Sequence[Any], verdict: Sequence[Any]) -> Rates:
    """Confusion counts and the rates derived from them."""
    t = _labels(truth)
    v = np.asarray(verdict)
    if v.shape != t.shape:
        raise LineageError(f"{len(t)} labels but {v.shape} verdicts")
    v = v.astype(bool)
    tp, fn = int((v & (t == 1)).sum()), int((~v & (t == 1)).sum())
    fp, tn = int((v & (t == 0)).sum()), int((~v & (t == 0)).sum())
    tpr, fpr = _ratio(tp, tp + fn), _ratio(fp, fp + tn)
    parts = [r for r in (tpr, 1 - fpr) if not math.isnan(r)]
    return Rates(
        n=len(t),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        accuracy=_ratio(tp + tn, len(t)),
        tpr=tpr,
        fpr=fpr,
        balanced_accuracy=sum(parts) / len(parts) if parts else math.nan,
    )


def roc_auc(truth: Sequence[Any], score: Sequence[Any]) -> float:
    """P(score of a random lineage pair > score of a random non-lineage pair), ties counted
    half (the Mann-Whitney form of the ROC AUC). NaN when one class is absent."""
    t = _labels(truth)
    s = _scores(score, len(t))
    pos, neg = s[t == 1], s[t == 0]
    if not len(pos) or not len(neg):
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def tpr_at_fpr(truth: Sequence[Any], score: Sequence[Any], max_fpr: float = 0.01) -> float:
    """The highest TPR of any threshold rule `score >= t` whose FPR is <= max_fpr.

    With fewer than 1/max_fpr negatives this is the TPR above the highest negative score:
    no false positive at all is allowed."""
    t = _labels(truth)
    s = _scores(score, len(t))
    pos, neg = s[t == 1], s[t == 0]
    if not len(pos) or not len(neg):
        return math.nan
    best = 0.0
    for thr in np.unique(np.concatenate([pos, neg, [np.inf]])):
        if thr == -np.inf:
            continue  # "not applicable" is never called lineage
        if (neg >= thr).mean() <= max_fpr:
            best = max(best, float((pos >= thr).mean()))
    return best


def threshold_at_fpr(truth: Sequence[Any], score: Sequence[Any], max_fpr: float = 0.01) -> float:
    """The lowest threshold t with FPR(score >= t) <= max_fpr (inf when none exists)."""
    t = _labels(truth)
    s = _scores(score, len(t))
    neg = s[t == 0]
    for thr in np.unique(s[np.isfinite(s)]):
        if (neg >= thr).mean() <= max_fpr:
            return float(thr)
    return math.inf


def spearman(x: Sequence[Any], y: Sequence[Any]) -> float:
    """Spearman rank correlation; NaN when fewer than 3 points or either side is constant."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(spearmanr(a, b).statistic)


def breakdown(
    pairs: pd.DataFrame,
    by: Sequence[str],
    verdict: str = "is_lineage",
    scores: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per group of `by`: its rates for the `verdict` column, and the ROC AUC of each
    score column (NaN inside a group that holds only one class)."""
    rows = []
    for key, g in pairs.groupby(list(by), dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        r = rates(g["truth"], g[verdict]).to_dict()
        rows.append(
            {**dict(zip(by, key)), **r, **{f"auc_{s}": roc_auc(g["truth"], g[s]) for s in scores}}
        )
    return pd.DataFrame(rows)

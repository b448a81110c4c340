"""Results of judging (parent, model) pairs: the one pairs schema, and the metrics over
labelled pairs that the report and the experiments share: is a verdict right, and how well
does a score separate lineage from independent models?

Pairs carry `truth` (1 = lineage, 0 = not). A verdict is a bool per pair; a score is a float
per pair, higher = more likely lineage. A score that is NaN (the method does not apply to the
pair) ranks below every real score: a method that cannot score a pair cannot claim it.
Everything is plain numpy/pandas, so the experiments and the tests share one definition.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from .errors import LineageError
from .text import printable


class Unavailable(Exception):
    """A table or figure cannot be made from these results; the message says why."""


_REF_KEY = re.compile(r"^independent\.(\d+)\.(.+)$")  # a job's reference columns


def isna(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def need(t: pd.DataFrame, *cols: str) -> None:
    """Every column present with some value, or Unavailable naming the absent ones."""
    absent = [c for c in cols if c not in t.columns or not t[c].notna().any()]
    if absent:
        raise Unavailable(f"no job recorded {', '.join(absent)}")


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


def roc_curve(truth: Sequence[Any], score: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of the rules `score >= t`, t from above every score down to below all of
    them; NaN scores (not applicable) are never called lineage, as in `roc_auc`."""
    t = _labels(truth)
    s = _scores(score, len(t))
    pos, neg = max(int((t == 1).sum()), 1), max(int((t == 0).sum()), 1)
    fpr, tpr = [0.0], [0.0]
    for thr in np.unique(s[np.isfinite(s)])[::-1]:
        hit = s >= thr
        fpr.append(float((hit & (t == 0)).sum() / neg))
        tpr.append(float((hit & (t == 1)).sum() / pos))
    return np.array(fpr + [1.0]), np.array(tpr + [1.0])


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


# ---- pairs: every (parent, model) comparison, one schema ----

# The columns every pairs table shares: a sweep's (this function) and a zoo's
# (experiments/zoo.py, which adds its evidence and the baselines' scores). `kind` says what
# the model is to the parent (derived, independent, other_parent, ...), `truth` is 1 for
# lineage, `is_lineage` the verdict.
PAIR_COLUMNS = [
    "job",
    "parent_id",
    "model_id",
    "kind",
    "truth",
    "is_lineage",
    "closeness",
    "barrier",
    "p_value",  # the verdict's overall p-value (lineage.evaluate.verdict)
    "verdict_score",  # -log10 p_value: ranks pairs for ROC curves
]


# The paper's two measures, columns of every pairs table: column -> (evidence, its field).
PAPER_MEASURES = {"closeness": ("closeness", "score"), "barrier": ("basin", "barrier")}


def verdict_columns(v: Any) -> dict[str, Any]:
    """PAIR_COLUMNS' values from a lineage.engine.Verdict (from `is_lineage` on)."""
    d = v.decision
    out: dict[str, Any] = {"is_lineage": d.is_lineage}
    for col, (kind, field) in PAPER_MEASURES.items():
        out[col] = _num(getattr(v.evidence.get(kind), field, None))
    return {**out, "p_value": d.p_value, "verdict_score": d.verdict_score}


def evidence_columns(v: Any) -> dict[str, Any]:
    """The rest of a Verdict for a pairs row: the decision's details, each evidence's p-value
    (`p_<kind>`) and say (`says_<kind>`), every scalar of each result (`<kind>.<field>`)
    and the seconds each evidence took (`<kind>_s`)."""
    d = v.decision
    out: dict[str, Any] = {
        "decided_by": d.decided_by,
        "caveat": d.caveat,
        "reason": d.reason,
        "n_references": d.n_references,
        "alpha": d.alpha,
    }
    out.update({f"p_{k}": _num(p) for k, p in d.p.items()})
    out.update({f"says_{k}": s for k, s in d.says.items()})
    for kind, r in v.evidence.items():
        if r is not None:
            fields = r.to_dict().items()
            out.update({f"{kind}.{f}": x for f, x in fields if not isinstance(x, list | dict)})
    return {**out, **v.seconds}


def pairs(table: pd.DataFrame) -> pd.DataFrame:
    """One row per compared pair: each job's derived model (truth 1, it is lineage) and each
    independent reference (truth 0). A reference compared with the same parent by several
    jobs is one pair, counted once (first job wins), so references do not outweigh the
    derived models just because every job re-checks them."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[Any, Any]] = set()
    for _, row in table.iterrows():
        parent = row.get("parent.id")
        if not isna(row.get("derived.id")) or not isna(row.get("derived.verdict.p_value")):
            out.append(_pair(row, parent, row.get("derived.id"), "derived", 1, "derived."))
        for i in _ref_indices(row):
            p = f"independent.{i}."
            rid = row.get(p + "id")
            key = (parent, rid if not isna(rid) else f"{row['job']}#{i}")
            if key in seen:
                continue
            seen.add(key)
            out.append(_pair(row, parent, rid, "independent", 0, p))
    return pd.DataFrame(out, columns=PAIR_COLUMNS)


def _ref_indices(row: pd.Series) -> list[int]:
    idx = {int(m.group(1)) for k in row.index if (m := _REF_KEY.match(str(k))) and not isna(row[k])}
    return sorted(idx)


def _pair(row: pd.Series, parent: Any, sid: Any, role: str, truth: int, p: str) -> dict[str, Any]:
    return {
        "job": row["job"],
        "parent_id": parent,
        "model_id": sid,
        "kind": role,
        "truth": truth,
        "is_lineage": _bool(row.get(p + "verdict.is_lineage")),
        **{
            col: _num(row.get(f"{p}evidence.{kind}.{field}"))
            for col, (kind, field) in PAPER_MEASURES.items()
        },
        "p_value": _num(row.get(p + "verdict.p_value")),
        "verdict_score": _num(row.get(p + "verdict.verdict_score")),
    }


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _bool(v: Any) -> bool | None:
    if isna(v):
        return None
    if isinstance(v, str):
        return {"true": True, "false": False}.get(v.strip().lower())
    return bool(v)


# ---- the report's tables of a sweep's pairs ----


def determination_table(t: pd.DataFrame, p: pd.DataFrame) -> pd.DataFrame:
    """Per modification: how many derived models were judged lineage (all truly are); and
    how many independent references were judged not lineage (none truly is)."""
    need(t, "modification", "derived.verdict.is_lineage")
    rows = []
    d = p[(p["kind"] == "derived") & p["is_lineage"].notna()]
    mods = t.set_index("job")["modification"].astype(object).fillna("?")
    for mod, g in d.groupby(d["job"].map(mods), sort=True):
        ok = int(sum(bool(v) for v in g["is_lineage"]))
        rows.append(
            {
                "models": printable(mod),
                "truth": "lineage",
                "n": len(g),
                "correct": ok,
                "accuracy": ok / len(g),
            }
        )
    r = p[(p["kind"] == "independent") & p["is_lineage"].notna()]
    if len(r):
        ok = int(sum(not bool(v) for v in r["is_lineage"]))
        rows.append(
            {
                "models": "independent references",
                "truth": "not lineage",
                "n": len(r),
                "correct": ok,
                "accuracy": ok / len(r),
            }
        )
    return pd.DataFrame(rows, columns=["models", "truth", "n", "correct", "accuracy"])


def confusion(p: pd.DataFrame) -> pd.DataFrame:
    """2x2 counts, rows = truth, columns = verdict, over every pair with a verdict."""
    d = p[p["is_lineage"].notna()]
    if d.empty:
        raise Unavailable(
            "no pair has a determination verdict (derived./independent.<i>.verdict.is_lineage)"
        )
    v = d["is_lineage"].map(bool)
    m = [[int(((d["truth"] == t) & (v == j)).sum()) for j in (True, False)] for t in (1, 0)]
    return pd.DataFrame(
        m,
        index=["truly lineage", "truly independent"],
        columns=["judged lineage", "judged not lineage"],
    )


# Detector name -> (column of pairs(), sign): higher signed score must mean "lineage".
DETECTORS: dict[str, tuple[str, float]] = {
    "closeness": ("closeness", 1.0),
    "barrier": ("barrier", -1.0),
}


def detection_auc(p: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple[Any, Any]]]:
    """ROC AUC of each score as a lineage detector over all pairs; also the ROC curves."""
    rows, curves = [], {}
    for name, (col, sign) in DETECTORS.items():
        d = p[np.isfinite(p[col].astype(float))] if len(p) else p
        n_pos, n_neg = int((d["truth"] == 1).sum()), int((d["truth"] == 0).sum())
        auc = math.nan
        if n_pos and n_neg:
            y, s = d["truth"].to_numpy(int), sign * d[col].to_numpy(float)
            auc = roc_auc(y, s)
            curves[name] = roc_curve(y, s)
        score = "closeness score" if sign > 0 else f"-{col}"
        rows.append(
            {"detector": name, "score": score, "auc": auc, "positives": n_pos, "negatives": n_neg}
        )
    return pd.DataFrame(rows), curves

"""Benchmark metrics: known answers computed by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lineage.errors import LineageError
from lineage.results import (
    breakdown,
    rates,
    roc_auc,
    spearman,
    threshold_at_fpr,
    tpr_at_fpr,
)


def test_rates_known_counts():
    # truth:   1 1 1 1 0 0 0   verdict: 1 1 1 0 1 0 0 -> tp 3, fn 1, fp 1, tn 2
    r = rates([1, 1, 1, 1, 0, 0, 0], [True, True, True, False, True, False, False])
    assert (r.tp, r.fn, r.fp, r.tn) == (3, 1, 1, 2)
    assert r.accuracy == pytest.approx(5 / 7)
    assert r.tpr == pytest.approx(0.75)
    assert r.fpr == pytest.approx(1 / 3)
    assert r.balanced_accuracy == pytest.approx((0.75 + 2 / 3) / 2)


def test_rates_one_class_only():
    r = rates([1, 1], [1, 0])
    assert r.tpr == 0.5 and math.isnan(r.fpr)
    assert r.balanced_accuracy == 0.5  # only the defined rate counts


def test_auc_known_answers():
    assert roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.9, 0.8]) == 0.0
    # pos {0.9, 0.3}, neg {0.5, 0.1}: pairs won 0.9>0.5, 0.9>0.1, 0.3>0.1 -> 3 of 4
    assert roc_auc([1, 1, 0, 0], [0.9, 0.3, 0.5, 0.1]) == 0.75
    # a tie counts half: pos {0.5}, neg {0.5, 0.1} -> (0.5 + 1) / 2
    assert roc_auc([1, 0, 0], [0.5, 0.5, 0.1]) == 0.75
    assert math.isnan(roc_auc([1, 1], [0.1, 0.2]))


def test_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    truth = [1, 0, 1, 1, 0, 0, 1, 0, 1, 0]
    score = [0.3, 0.2, 0.9, 0.3, 0.3, 0.6, 0.8, 0.1, 0.5, 0.4]
    assert roc_auc(truth, score) == pytest.approx(roc_auc_score(truth, score))


def test_nan_score_ranks_last():
    # A method that cannot score a lineage pair loses it; one that cannot score a negative
    # pair ranks it below every lineage pair.
    assert roc_auc([1, 1, 0], [0.9, math.nan, 0.5]) == 0.5
    assert roc_auc([1, 0, 0], [0.2, math.nan, 0.1]) == 1.0
    assert tpr_at_fpr([1, 1, 0], [0.9, math.nan, 0.5]) == 0.5


def test_tpr_at_fpr_known_answers():
    truth = [1, 1, 1, 1, 0, 0, 0, 0]
    score = [0.9, 0.8, 0.4, 0.2, 0.5, 0.3, 0.1, 0.0]
    # no false positive allowed (4 negatives): threshold above 0.5 keeps 0.9, 0.8
    assert tpr_at_fpr(truth, score, 0.01) == 0.5
    # one negative of four allowed (25%): threshold 0.4 > 0.3 keeps 3 of 4
    assert tpr_at_fpr(truth, score, 0.25) == 0.75
    assert threshold_at_fpr(truth, score, 0.01) == 0.8
    assert threshold_at_fpr(truth, score, 0.25) == 0.4
    assert tpr_at_fpr([1, 0], [0.1, 0.9]) == 0.0


def test_spearman():
    assert spearman([0.1, 0.5, 0.9], [0.9, 0.5, 0.2]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert math.isnan(spearman([0.1, 0.5], [1.0, 0.0]))  # too few points
    assert math.isnan(spearman([0.1, 0.5, 0.9], [1.0, 1.0, 1.0]))  # constant


def test_breakdown_groups():
    p = pd.DataFrame(
        {
            "modification": ["a", "a", "b", "b"],
            "truth": [1, 1, 1, 0],
            "is_lineage": [True, False, True, False],
            "s": [0.9, 0.1, 0.8, 0.2],
        }
    )
    t = breakdown(p, ["modification"], scores=["s"]).set_index("modification")
    assert t.loc["a", "tpr"] == 0.5 and t.loc["b", "accuracy"] == 1.0
    assert math.isnan(t.loc["a", "auc_s"]) and t.loc["b", "auc_s"] == 1.0


def test_bad_input():
    with pytest.raises(LineageError, match="only 0"):
        rates([2, 1], [1, 1])
    with pytest.raises(LineageError, match="scores shaped"):
        roc_auc([1, 0], [0.1])
    with pytest.raises(LineageError, match="verdicts"):
        rates([1, 0], [1])

"""The significance verdict (lineage.evaluate.verdict) on cases with known answers, with
each built-in kind's statistic (lineage.evaluate.evidence)."""

import math

import pytest
from scipy.stats import t as student

from lineage.evaluate import evidence
from lineage.evaluate.basin import BasinResult
from lineage.evaluate.basin.settings import DeterminationConf
from lineage.evaluate.verdict import VerdictConf, decide, logit, prediction_p

CFG = VerdictConf()
BASIN = evidence.get("basin")


def basin(barrier=0.0, loss_suspect=0.03, abstains=False):
    return BasinResult(
        barrier=barrier,
        barrier_rel=0.0,
        error_barrier=0.0,
        threshold=0.05,
        margin=0.05,
        route="basin+aligned",
        aligned=True,
        threshold_calibrated=True,
        abstains=abstains,
        loss_parent=0.03,
        loss_suspect=loss_suspect,
    )


def stats(barrier, close, inherited, **kw):
    """A model's statistics on the verdict's scales (None: the evidence does not apply)."""
    b = None if barrier is None else BASIN.statistic(basin(barrier, **kw), DeterminationConf())
    return {
        "basin": b,
        "closeness": logit(close),
        "inherited": None if inherited is None else logit(inherited),
    }


def refs(n=6, barrier=0.3, close=0.2, inherited=0.5, spread=0.05):
    return [
        stats(barrier * (1 + spread * (i - n / 2)), close + spread * (i - n / 2) / 10,
              inherited + spread * (i - n / 2) / 10)
        for i in range(n)
    ]  # fmt: skip


def test_prediction_p_is_the_t_tail_of_a_new_draw():
    r = [0.0, 1.0, 2.0, 3.0, 4.0]  # mean 2, sd sqrt(2.5)
    assert prediction_p(2.0, r) == pytest.approx(0.5)
    t = (5.0 - 2.0) / (math.sqrt(2.5) * math.sqrt(1 + 1 / 5))
    assert prediction_p(5.0, r) == pytest.approx(student.sf(t, 4))
    assert prediction_p(-100.0, r) > 0.999
    assert prediction_p(1.0, [1.0]) is None  # one reference has no spread
    # references that agree exactly: a suspect at their value is no outlier (the sd floor)
    assert prediction_p(3.0, [3.0] * 6) == pytest.approx(0.5)


def test_scales_floor_the_barrier_and_clip_the_scores():
    conf = DeterminationConf()
    r = BasinResult(0.0, 0.0, 0.0, None, None, "basin", False, False, loss_parent=0.05)
    assert BASIN.statistic(r, conf) == pytest.approx(-math.log(0.001))  # 2% of L(0)
    assert logit(1.0) == pytest.approx(math.log(0.999 / 0.001))
    assert logit(0.0) == pytest.approx(math.log(0.001 / 0.999))
    assert logit(math.nan) is None
    none = BasinResult(None, None, None, None, None, "function", False, False)
    assert BASIN.statistic(none, conf) is None
    assert BASIN.statistic(basin(abstains=True), conf) is None  # an abstention is no evidence


def test_a_derived_model_is_lineage_and_an_independent_one_is_not():
    derived = decide(stats(0.0, 0.95, 0.9), refs(), CFG)
    assert derived.is_lineage is True and derived.p_value <= CFG.alpha and derived.calibrated
    assert derived.verdict_score == pytest.approx(-math.log10(derived.p_value))
    other = decide(refs()[0], refs()[1:], CFG)
    assert other.is_lineage is False and other.p_value > CFG.alpha


def test_bonferroni_counts_only_the_evidence_that_applies():
    close_only = decide(stats(None, 0.9, None), refs(), CFG)
    assert close_only.p["basin"] is None and close_only.p["inherited"] is None
    assert close_only.p_value == pytest.approx(close_only.p["closeness"])  # m = 1
    assert close_only.decided_by == "closeness"
    two = decide(stats(0.0, 0.9, None), refs(), CFG)
    assert two.p_value == pytest.approx(min(1.0, 2 * min(two.p["basin"], two.p["closeness"])))
    dead = decide(stats(None, 0.1, 0.1), refs(), CFG)
    assert dead.says["basin"] is None and dead.is_lineage is False


def test_inherited_errors_alone_can_decide():
    student_like = decide(stats(0.35, 0.2, 0.95), refs(), CFG)
    assert student_like.is_lineage and student_like.decided_by == "inherited"
    assert student_like.says["inherited"] and not student_like.says["basin"]


def test_too_few_references_is_undetermined_never_false():
    v = decide(stats(0.0, 0.99, 0.99), refs(3), CFG)
    assert v.is_lineage is None and not v.calibrated and v.n_references == 3
    assert v.answer == "undetermined"
    assert "undetermined: 3 references, and p-values need at least 4" in v.reason
    nothing = decide({"basin": None, "closeness": None}, refs(), CFG)
    assert nothing.is_lineage is None and "no evidence applies" in nothing.reason


def test_a_caveat_when_only_a_weak_evidence_says_lineage():
    weak = {"basin": "the basin is weak here"}
    v = decide(stats(0.0, 0.2, 0.5), refs(), CFG, weak)
    assert v.says["basin"] and v.caveat == "the basin is weak here"
    assert decide(stats(0.0, 0.99, 0.99), refs(), CFG, weak).caveat == ""  # others agree
    conf = DeterminationConf()
    assert "50x" in BASIN.caveat(basin(loss_suspect=1.5), conf)  # L(1) 50x L(0)
    assert BASIN.caveat(basin(loss_suspect=0.04), conf) == ""

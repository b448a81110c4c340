"""The significance verdict (lineage.evaluate.verdict) on cases with known answers."""

import dataclasses
import math

import pytest
from scipy.stats import t as student

from lineage.evaluate.basin import DeterminationResult
from lineage.evaluate.basin.settings import DeterminationConf
from lineage.evaluate.verdict import Evidence, decide, prediction_p, transformed

CFG = DeterminationConf()


def basin(lineage=True, **kw):
    base = dict(
        is_lineage=lineage,
        basin_is_lineage=lineage,
        function_is_lineage=None,
        barrier=0.0,
        barrier_rel=0.0,
        error_barrier=0.0,
        threshold=0.05,
        margin=0.05,
        method="basin+aligned",
        route="basin+aligned",
        aligned=True,
        calibrated=True,
        loss_parent=0.03,
        loss_suspect=0.03,
    )
    return DeterminationResult(**{**base, **kw})


def refs(n=6, barrier=0.3, close=0.2, inherited=0.5, spread=0.05):
    return [
        Evidence(barrier * (1 + spread * (i - n / 2)), 0.03, close + spread * (i - n / 2) / 10,
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
    e = transformed(Evidence(0.0, 0.05, 1.0, 0.0), eps_rel=0.02)
    assert e["basin"] == pytest.approx(-math.log(0.001))  # 2% of L(0)
    assert e["closeness"] == pytest.approx(math.log(0.999 / 0.001))
    assert e["inherited"] == pytest.approx(math.log(0.001 / 0.999))
    assert transformed(Evidence(None, 0.05, 0.5, None), 0.02)["basin"] is None


def test_a_derived_model_is_lineage_and_an_independent_one_is_not():
    derived = decide(basin(), Evidence(0.0, 0.03, 0.95, 0.9), refs(), CFG)
    assert derived.is_lineage and derived.p_value <= CFG.alpha and derived.calibrated
    assert derived.verdict_score == pytest.approx(-math.log10(derived.p_value))
    indep = refs()[0]
    other = decide(basin(False, barrier=indep.barrier), indep, refs()[1:], CFG)
    assert not other.is_lineage and other.p_value > CFG.alpha


def test_bonferroni_counts_only_the_evidence_that_applies():
    close_only = decide(
        basin(barrier=None, basin_is_lineage=None), Evidence(None, 0.03, 0.9, None), refs(), CFG
    )
    assert close_only.p_basin is None and close_only.p_inherited is None
    assert close_only.p_value == pytest.approx(close_only.p_closeness)  # m = 1
    assert close_only.decided_by == "closeness" and close_only.method == "function"
    two = decide(basin(), Evidence(0.0, 0.03, 0.9, None), refs(), CFG)
    assert two.p_value == pytest.approx(min(1.0, 2 * min(two.p_basin, two.p_closeness)))
    # an abstaining basin test (a suspect that learnt nothing) counts as no evidence
    dead = decide(basin(None, basin_is_lineage=None), Evidence(None, 0.03, 0.1, 0.1), refs(), CFG)
    assert dead.basin_is_lineage is None and not dead.is_lineage


def test_inherited_errors_alone_can_decide():
    student_like = decide(
        basin(False, barrier=0.35, basin_is_lineage=False),
        Evidence(0.35, 0.03, 0.2, 0.95),
        refs(),
        CFG,
    )
    assert student_like.is_lineage and student_like.decided_by == "inherited"
    assert student_like.inherited_is_lineage and not student_like.basin_is_lineage


def test_too_few_references_is_undetermined_never_a_verdict():
    v = decide(basin(), Evidence(0.0, 0.03, 0.99, 0.99), refs(3), CFG)
    assert not v.is_lineage and not v.calibrated and v.n_references == 3
    assert "undetermined: 3 references, and p-values need at least 4" in v.reason


def test_a_caveat_when_only_a_damaged_suspects_basin_says_lineage():
    damaged = basin(loss_parent=0.03, loss_suspect=1.5)
    v = decide(damaged, Evidence(0.0, 0.03, 0.2, 0.5), refs(), CFG)
    assert v.basin_is_lineage and "50x" in v.caveat
    assert decide(damaged, Evidence(0.0, 0.03, 0.99, 0.99), refs(), CFG).caveat == ""
    mild = dataclasses.replace(damaged, loss_suspect=0.04)
    assert decide(mild, Evidence(0.0, 0.03, 0.2, 0.5), refs(), CFG).caveat == ""

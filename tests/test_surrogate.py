"""Surrogate evidence (lineage.evaluate.surrogate): known answers on digits with MLPs that
only this test defines. A student distilled from the parent with fresh weights agrees with
it on the conferrable points far more than any independent model; each reference is
scored on its leave-one-out points (on its own it would score 0 by construction)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lineage
from lineage.engine import settings
from lineage.errors import LineageError
from lineage.evaluate import evidence
from lineage.evaluate.surrogate import (
    SurrogateConf,
    agreement,
    conferrable_points,
    train_surrogate,
)

FAST = SurrogateConf(enabled=True, epochs=60, train_points=400, n_points=300, min_points=5)


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))


def _fit(seed: int, x: torch.Tensor, y: torch.Tensor, epochs: int = 40) -> nn.Module:
    m = _mlp(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for k in range(0, len(x), 64):
            b = order[k : k + 64]
            opt.zero_grad()
            F.cross_entropy(m(x[b]), y[b]).backward()
            opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def zoo():
    from lineage.data import build_datamodule

    dm = build_datamodule("digits", limit=600, batch_size=64)
    xt, yt = dm.train.x, dm.train.y
    parent = _fit(0, xt, yt)
    refs = tuple(_fit(s, xt, yt) for s in range(1, 6))
    # a thief's student: the parent's own architecture from fresh weights, distilled on
    # the thief's inputs (the training split, which calibration never sees)
    student = train_surrogate(parent, xt, SurrogateConf(epochs=60), seed=777)
    independent = _fit(50, xt, yt)
    return dm, parent, refs, student, independent


def test_a_student_agrees_where_only_students_do(zoo):
    dm, parent, refs, student, independent = zoo
    pts = conferrable_points(parent, refs, dm.test.x, dm.test.y, FAST)
    assert len(pts.mine) >= FAST.min_points
    # on the chosen points no reference gives the parent's answer: that is the choice
    for r in refs:
        with torch.no_grad():
            assert (r(pts.x[pts.mine]).argmax(1) != pts.answer[pts.mine]).all()
    own = [agreement(r, pts, FAST) for r in refs]
    assert all(r is not None and r.leave_one_out for r in own)
    assert [r.n_points for r in own] == [len(w) for w in pts.without]
    ref_max = max(r.score for r in own)
    s, i = agreement(student, pts, FAST), agreement(independent, pts, FAST)
    assert s is not None and i is not None and not s.leave_one_out
    assert s.score > ref_max + 0.2 and s.score > i.score + 0.3


def test_the_verdict_catches_the_student_and_not_the_independent(zoo, monkeypatch):
    dm, parent, refs, student, independent = zoo
    evidence.kinds()
    kind = evidence.get("surrogate")
    monkeypatch.setattr(evidence, "_KINDS", {"surrogate": kind})  # this evidence alone
    x, y = dm.test.x, dm.test.y
    verdict = {"suspect_centred": [], "spread_floor": [], "alpha": 0.05}  # 5 refs: t, 4 dof
    cal = lineage.calibrate(parent, refs, x, y, surrogate=FAST, verdict=verdict)
    caught = lineage.judge(parent, student, x, y, calibration=cal)
    free = lineage.judge(parent, independent, x, y, calibration=cal)
    assert caught.is_lineage is True and caught.decision.decided_by == "surrogate"
    assert caught.decision.p_value < 0.02
    assert free.is_lineage is False and free.decision.p["surrogate"] > 0.2
    # a label-only black box gets the same agreement as the model it wraps
    labels = lambda t: student(t).argmax(1)  # noqa: E731
    box = lineage.judge(parent, labels, x, y, calibration=cal)
    assert box.evidence["surrogate"].score == caught.evidence["surrogate"].score
    assert "surrogate" in caught.to_dict()["evidence"]


def test_too_few_conferrable_points_give_no_evidence(zoo):
    dm, parent, refs, *_ = zoo
    c = SurrogateConf(epochs=1, train_points=50, pool=10, min_points=50)
    pts = conferrable_points(parent, refs, dm.test.x, dm.test.y, c)
    assert agreement(parent, pts, c) is None


@pytest.mark.parametrize(
    "opts, words",
    [
        ({"surrogate": {"surrogates": 0}}, "surrogates"),
        ({"surrogate": {"lam_low": 0.8, "lam_high": 0.2}}, "lam_low"),
        ({"verdict": {"suspect_centred": ["surrogate"]}}, "parent-centred only"),
    ],
)
def test_bad_options_name_their_key(opts, words):
    with pytest.raises(LineageError, match=words):
        settings(**opts)

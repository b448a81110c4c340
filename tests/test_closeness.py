import copy
import math
from dataclasses import asdict

import pytest
import torch
from torch import nn

from lineage import models
from lineage.errors import LineageError
from lineage.evaluate import boundary, refine
from lineage.evaluate.closeness import (
    LabelOnly,
    Points,
    closeness,
    closeness_threshold,
    contributions,
    measure,
    measure_points,
    score_terms,
    settings,
)
from lineage.training import train_classifier

TOL = 1e-5
FAST = {"min_points": 60, "batch_points": 60, "max_points": 240, "n_boot": 300, "progress": False}


@pytest.fixture(scope="module")
def digits_mlps(digits_dm, fast_train):
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = models.build("mlp", 10, 1, 8, hidden=[32])
        out.append(train_classifier(m, digits_dm, fast_train, seed)[0])
    return out


def linear_model(d=16, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, c)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(c, d, generator=g))
        lin.bias.copy_(torch.randn(c, generator=g))
    return nn.Sequential(nn.Flatten(), lin).eval()


def source_direction(lin: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """s = sign(grad_x CE) of a linear model: sign(W^T (softmax - onehot_y))."""
    W = lin.weight.double()
    p = torch.softmax(x.flatten(1).double() @ W.T + lin.bias.double(), 1)
    return torch.sign((p - torch.nn.functional.one_hot(y, W.shape[0]).double()) @ W)


def linear_first_flip(
    lin: nn.Linear, x: torch.Tensor, y: torch.Tensor, s: torch.Tensor, d_max: float
):
    """Exact first flip of a linear model along x + t s.

    Margin of y over class k on the ray: m_k(t) = m_k(0) - t (w_k - w_y).s, so class k
    overtakes y at t_k = m_k(0) / ((w_k - w_y).s) when that slope is positive; every m_k is
    linear, so their minimum crosses zero once, at min_k t_k, into class argmin_k t_k."""
    W, b = lin.weight.double(), lin.bias.double()
    z = x.flatten(1).double() @ W.T + b
    slope = s @ W.T - (s * W[y]).sum(1, keepdim=True)  # (w_k - w_y).s
    m0 = z.gather(1, y[:, None]) - z
    t = torch.where(slope > 0, m0 / slope.clamp(min=1e-300), torch.full_like(m0, math.inf))
    t.scatter_(1, y[:, None], math.inf)
    d, cls = t.min(1)
    return torch.where(d <= d_max, d, math.inf), torch.where(d <= d_max, cls, -1)


def test_linear_classifier_distance_matches_closed_form():
    model = linear_model(d=4, c=4)
    x = 3 * torch.randn(400, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)  # the source is right everywhere
    s = source_direction(model[1], x, y)
    d, cls = linear_first_flip(model[1], x, y, s, d_max=2.0)
    finite = torch.isfinite(d)
    assert 300 < finite.sum() < 400  # flips within d_max, and beyond it
    # a nearby linear suspect, searched along the source's direction (its search starts
    # from the source's flip), and a far one
    near, far = copy.deepcopy(model), linear_model(d=4, c=4, seed=5)
    with torch.no_grad():
        near[1].weight.add_(0.05 * torch.randn(4, 4, generator=torch.Generator().manual_seed(2)))
    evals = {}
    for search in ("brent", "bisection"):
        cfg = {"search": search, "tol": TOL, "d_max": 2.0}
        pts, evals[search] = measure_points(model, model, x, y, cfg)
        assert torch.equal(torch.isfinite(pts.d_source), finite)
        err = pts.d_source[finite] - d[finite]
        # d is within tol of the boundary, on its flipped side
        assert err.min() >= -1e-6 and err.max() <= TOL + 1e-6
        assert torch.equal(pts.adv_source[finite], cls[finite])
        assert torch.equal(pts.matched, finite)
        for suspect, least in ((near, 250), (far, 10)):
            pts, _ = measure_points(model, suspect, x, y, cfg)
            d_sus, cls_sus = linear_first_flip(suspect[1], x, y, s, d_max=2.0)
            ok = pts.valid & pts.suspect_correct & torch.isfinite(d_sus)
            assert ok.sum() > least
            assert torch.equal(torch.isfinite(pts.d_suspect), ok)
            assert (pts.d_suspect[ok] - d_sus[ok]).abs().max() <= TOL + 1e-6
            assert torch.equal(pts.adv_suspect[ok], cls_sus[ok])
    # a linear margin is hit by the first secant step, so the root search is much cheaper
    assert evals["brent"] < 0.6 * evals["bisection"]


def test_first_crossing_follows_every_class_margin():
    # y = class 0; at both probes class 2 is the rival (smallest margin), but class 1's
    # margin falls faster and reaches 0 first: at t = 1 + 2/2 = 2, class 2 only at t = 4
    inf, nan = math.inf, math.nan
    t1, t2 = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    K1 = torch.tensor([[inf, 4.0, 2.0], [inf, 1.0, 3.0], [nan, nan, nan]], dtype=torch.float64)
    K2 = torch.tensor([[inf, 2.0, 1.5], [inf, -0.5, 3.5], [inf, 1.0, 2.0]], dtype=torch.float64)
    root, cls = refine._first_crossing(t1, K1, t2, K2)
    assert root[0].item() == 2.0 and cls[0].item() == 1
    assert root[1].item() == pytest.approx(2 / 3) and cls[1].item() == 1  # crossed between
    assert math.isnan(root[2].item())  # nothing known at t1
    # a margin below 0 that is not falling: no consistent first crossing
    K2[0, 2] = -1.0
    K1[0, 2] = -2.0
    assert refine._first_crossing(t1, K1, t2, K2)[0][0].item() == -inf


class ViewLeNet(nn.Module):
    """LeNet's layers with a .view after the convolutions: its code needs NCHW strides."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        h = self.net.features[:6](x)
        return self.net.head(self.net.features[7:](h.view(len(h), -1)))


def test_conv_nets_run_channels_last_with_the_nchw_answer(digits_dm, fast_train):
    torch.manual_seed(0)
    net = train_classifier(models.build("lenet", 10, 1, 8), digits_dm, fast_train, 0)[0].eval()
    view = ViewLeNet(net).eval()
    x, y = digits_dm.test.x[:120], digits_dm.test.y[:120]
    fast, _ = measure_points(net, net, x, y)
    slow, _ = measure_points(view, view, x, y)  # refuses channels-last: fed NCHW
    assert view in boundary._NCHW_ONLY and net not in boundary._NCHW_ONLY
    assert boundary._channels_last(net, x) and not boundary._channels_last(view, x)
    assert fast.valid.sum() > 60
    for k in ("valid", "matched", "adv_source", "adv_suspect"):
        assert torch.equal(getattr(fast, k), getattr(slow, k)), k
    f = fast.valid
    assert (fast.d_source[f] - slow.d_source[f]).abs().max() <= TOL
    assert (fast.d_suspect[f] - slow.d_suspect[f]).abs().max() <= TOL


def test_identical_models_score_exactly_one(digits_mlps, digits_dm):
    m = digits_mlps[0]
    x, y = digits_dm.test.x, digits_dm.test.y
    for suspect in (m, copy.deepcopy(m)):
        r = closeness(m, suspect, x, y, FAST)
        assert r.score == 1.0 and r.match_rate == 1.0 and r.mean_distance == 0.0
        assert r.ci_low == r.ci_high == 1.0 and r.stopped == "ci"
        assert r.n_points == int(r.points.valid.sum()) >= FAST["min_points"]


class Constant(nn.Module):
    def __init__(self, num_classes: int, cls: int):
        super().__init__()
        self.logits = nn.Parameter(
            torch.nn.functional.one_hot(torch.tensor(cls), num_classes).float()
        )

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def test_suspect_predicting_one_class_never_matches(digits_mlps, digits_dm):
    x, y = digits_dm.test.x, digits_dm.test.y
    r = closeness(digits_mlps[0], Constant(10, 3), x, y, FAST)
    assert r.match_rate == 0.0 and r.score == 0.0
    p = r.points
    # it is right on the 3s, but never flips
    assert p.suspect_correct.sum() == (p.label == 3).sum() > 0
    assert not torch.isfinite(p.d_suspect).any()


def test_label_only_suspect_gives_the_white_box_result(digits_mlps, digits_dm):
    src, sus = digits_mlps
    x, y = digits_dm.test.x[:300], digits_dm.test.y[:300]
    white, ev_white = measure_points(src, sus, x, y)
    black, ev_black = measure_points(src, LabelOnly(sus), x, y)
    assert torch.equal(white.matched, black.matched)
    assert torch.equal(white.adv_suspect, black.adv_suspect)
    both = torch.isfinite(white.d_suspect)
    assert torch.equal(both, torch.isfinite(black.d_suspect)) and both.sum() > 100
    assert (white.d_suspect[both] - black.d_suspect[both]).abs().max() <= TOL
    assert ev_black > ev_white  # bisection needs more passes than the margin search
    w = closeness(src, sus, x, y, FAST)
    b = closeness(src, LabelOnly(sus), x, y, FAST)
    assert b.suspect_output == "labels" and w.suspect_output == "logits"
    assert w.match_rate == b.match_rate and abs(w.score - b.score) < 1e-3


def test_ci_shrinks_as_points_grow(digits_mlps, digits_dm):
    src, sus = digits_mlps
    x, y = digits_dm.test.x, digits_dm.test.y
    widths = []
    for n in (40, 160):
        r = closeness(
            src,
            sus,
            x,
            y,
            {**FAST, "ci_tol": 1e-9, "min_points": n, "max_points": n, "batch_points": 40},
        )
        assert r.n_points == n and r.stopped == "max_points"
        assert r.ci_low <= r.score <= r.ci_high
        widths.append(r.ci_high - r.ci_low)
    assert 0 < widths[1] < 0.75 * widths[0]  # ~ 1/sqrt(4) = 0.5 of the width


def test_score_formula_known_answer():
    p = Points(
        index=torch.arange(4),
        label=torch.zeros(4, dtype=torch.long),
        valid=torch.ones(4, dtype=torch.bool),
        d_source=torch.tensor([1.0, 2.0, 1.0, 1.0], dtype=torch.float64),
        d_suspect=torch.tensor([1.5, 2.0, math.inf, 3.0], dtype=torch.float64),
        adv_source=torch.tensor([1, 2, 3, 4]),
        adv_suspect=torch.tensor([1, 2, -1, 5]),
        suspect_correct=torch.ones(4, dtype=torch.bool),
        matched=torch.tensor([True, True, False, False]),
    )
    t = score_terms(p, torch.ones(1, 4), tol=0.0)
    assert t["match_rate"].item() == 0.5
    assert t["mean_distance"].item() == pytest.approx(0.5 / 3)
    assert t["signed_mean_distance"].item() == pytest.approx(0.5 / 3)
    # matched points keep 1 - 0.5/1 and 1 - 0/2 of their boundary; the others add 0
    assert t["score"].item() == pytest.approx((0.5 + 1.0) / 4)
    assert contributions(p, 0.0).tolist() == [0.5, 1.0, 0.0, 0.0]
    # shifts within tol are no shift; a shift beyond d_src counts as a full one
    assert score_terms(p, torch.ones(1, 4), tol=0.5)["score"].item() == 0.5
    p.d_suspect[0] = 100.0
    assert score_terms(p, torch.ones(1, 4), tol=0.0)["score"].item() == 0.25
    # bootstrap weights: a resample holding point 1 twice and point 0 twice
    w = torch.tensor([[2.0, 2.0, 0.0, 0.0]])
    assert score_terms(p, w, tol=0.0)["score"].item() == 0.5


def test_closeness_threshold_is_calibrated_on_references():
    assert closeness_threshold([0.2, 0.1]) == pytest.approx(0.2 + 0.25 * 0.8)
    assert closeness_threshold([]) == 0.5
    assert closeness_threshold([1.0]) == 1.0
    with pytest.raises(LineageError, match="reference scores"):
        closeness_threshold([0.1, float("nan")])


def test_bad_input_raises_clear_errors(digits_mlps, digits_dm):
    src = digits_mlps[0]
    x, y = digits_dm.test.x[:50], digits_dm.test.y[:50]
    five = models.build("mlp", 5, 1, 8, hidden=[8])
    with pytest.raises(LineageError, match="suspect has 5 classes, the source 10"):
        closeness(src, five, x, y, FAST)
    r = closeness(src, five, x, y, {**FAST, "allow_class_mismatch": True})
    assert r.n_points > 0  # the transfer route compares labels
    bad = x.clone()
    bad[3, 0, 2, 2] = math.nan
    with pytest.raises(LineageError, match="NaN or Inf"):
        closeness(src, src, bad, y, FAST)
    with pytest.raises(LineageError, match="empty"):
        closeness(src, src, x[:0], y[:0], FAST)
    wrong = (src(x).argmax(1) + 1) % 10  # labels the source always gets wrong
    with pytest.raises(LineageError, match="no valid point left"):
        closeness(src, src, x, wrong, FAST)
    with pytest.raises(LineageError, match="unknown key"):
        closeness(src, src, x, y, {"d_mx": 3})
    with pytest.raises(LineageError, match="white-box"):
        closeness(LabelOnly(src), src, x, y, FAST)
    nan_model = copy.deepcopy(src)
    with torch.no_grad():
        nan_model.head.bias[0] = math.nan
    with pytest.raises(LineageError, match="suspect: produced NaN"):
        closeness(src, nan_model, x, y, FAST)
    with pytest.raises(LineageError, match="labels must lie in 0..9"):
        closeness(src, src, x, y + 10, FAST)


def test_progress_bar_only_on_a_terminal(monkeypatch):
    from lineage.evaluate.closeness import progress as mod

    monkeypatch.setattr(mod.sys.stderr, "isatty", lambda: False, raising=False)
    assert mod.progress_bar(True, 10, "closeness") is None
    monkeypatch.setattr(mod.sys.stderr, "isatty", lambda: True, raising=False)
    bar = mod.progress_bar(True, 10, "closeness")
    assert bar is not None and bar.total == 10
    bar.close()
    assert mod.progress_bar(False, 10, "closeness") is None


def test_the_trunk_route_leaves_the_suspect_as_it_was(digits_mlps, digits_dm):
    """A suspect of another task is read through the parent's head only inside the view;
    judging it must not change what the suspect itself answers (a second judge, or the
    baselines after it, would otherwise see the parent's classes)."""
    import copy

    from lineage.engine import suspect_view

    parent = digits_mlps[0]
    suspect = copy.deepcopy(parent)
    suspect.head = torch.nn.Linear(suspect.head.in_features, 5)
    x = digits_dm.test.x[:8]
    s = suspect_view(parent, suspect, x, "head")
    assert s.route == "trunk" and s.view(x).shape == (8, 10)
    assert suspect(x).shape == (8, 5)  # still its own 5 classes
    assert suspect_view(parent, suspect, x, "head").route == "trunk"  # and again


def test_a_trunk_too_wide_for_the_parents_head_is_refused_in_one_line(digits_mlps, digits_dm):
    """A suspect of another task whose features do not fit the parent's head (a narrow
    student as the would-be parent of a full-width transfer, as in a tree) cannot be read
    under the parent's task: a LineageError saying why, not a shape error from inside."""
    from lineage.engine import suspect_view

    parent = models.build("mlp", 10, 1, 8, hidden=[8])
    suspect = copy.deepcopy(digits_mlps[0])
    suspect.head = torch.nn.Linear(suspect.head.in_features, 5)
    wide = r"features \(32 wide\) do not fit the parent's head \(8 inputs\)"
    with pytest.raises(LineageError, match=wide):
        suspect_view(parent, suspect, digits_dm.test.x[:8], "head")


def test_a_linear_margin_costs_its_grid_points_and_two_probes():
    # two classes: the margin along s = -sign(grad margin) falls linearly, at |w_y - w_k|_1,
    # so the grid walk (sized by the margin's trend) evaluates exactly the grid points up to
    # the first flipped one (all K without a flip by d_max), and the secant through the
    # bracket lands on the root: one probe there, one ~tol beside it to close the bracket
    # (an estimate on the bracket's end, where the first probe left it, still counts)
    model = linear_model(d=6, c=2, seed=3)
    x = 2 * torch.randn(300, 1, 2, 3, generator=torch.Generator().manual_seed(4))
    y = model(x).argmax(1)
    s = source_direction(model[1], x, y)
    h, d_max = 0.1, 2.0
    d, _ = linear_first_flip(model[1], x, y, s, d_max=math.inf)
    K = round(d_max / h)
    grid = torch.clamp(torch.floor(d / h) + 1, max=K)  # evaluated grid points per ray
    c = asdict(settings({"tol": TOL, "d_max": d_max, "step": h, "batch_size": 64}))
    probe = measure.source_probe(model, x, y, c)
    side = measure.source_side(model, probe, x, y, torch.arange(len(x)), c)
    flips = d <= d_max
    assert 100 < flips.sum() < 300  # rays that flip, and rays that walk the whole grid
    assert probe.grid_evals == int(grid.sum())
    root_search = probe.evals - len(x) - probe.grid_evals  # less the gradient pass
    assert root_search == 2 * int(flips.sum())
    err = side.boundary.distance[flips] - d[flips]
    assert err.min() >= -1e-6 and err.max() <= TOL + 1e-6

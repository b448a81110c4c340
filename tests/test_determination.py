import copy
import dataclasses
import math

import pytest
import torch

from lineage import models
from lineage.errors import LineageError
from lineage.evaluate.basin import (
    barrier_of,
    determine,
    evaluate,
    kept_channels,
    reestimate_bn,
    settings,
)
from lineage.evaluate.basin.path import Path, Start
from lineage.evaluate.calibration import calibrate
from lineage.modifications import derive
from lineage.modifications.pruning import shrink
from lineage.training import train_classifier
from lineage.utils import seed_all

CFG: dict = {}  # conf/determination defaults: 6 alphas, BN re-estimation, alignment


def trained(dm, train_cfg, arch, seed, **kw):
    seed_all(seed)
    model, _ = train_classifier(models.build(arch, 10, 1, 8, **kw), dm, train_cfg, seed)
    return model.eval()


@pytest.fixture(scope="module")
def mlps(digits_dm, fast_train):
    """A parent and two independent references (other seeds)."""
    return [trained(digits_dm, fast_train, "mlp", s) for s in (0, 1, 2)]


@pytest.fixture(scope="module")
def resnets(digits_dm, fast_train):
    return [trained(digits_dm, fast_train, "resnet18", s, width=0.125) for s in (0, 1)]


@pytest.fixture(scope="module")
def probe(digits_dm):
    return digits_dm.test.x, digits_dm.test.y


def noisy(model, std, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return out


def rescaled(model, c):
    """Each conv feeding a BatchNorm scaled by c, the BN statistics with it: BN makes this
    the same function (up to BN's eps), but the running statistics no longer interpolate
    linearly along the path."""
    out = copy.deepcopy(model)
    mods = dict(out.named_modules())
    with torch.no_grad():
        for name, m in mods.items():
            if isinstance(m, torch.nn.BatchNorm2d):
                base, last = name.rsplit(".", 1)
                conv = (
                    {"bn1": f"{base}.conv1", "bn2": f"{base}.conv2", "1": f"{base}.0"}.get(last)
                    if not base == "features"
                    else f"features.{int(last) - 1}"
                )
                mods[conv].weight.mul_(c)
                m.running_mean.mul_(c)
                m.running_var.mul_(c * c)
    return out


def test_identical_models_have_no_barrier(mlps, probe):
    p, r1, r2 = mlps
    refs = [barrier_of(p, r1, *probe, CFG)]
    res = determine(p, copy.deepcopy(p), *probe, CFG, refs)
    assert abs(res.barrier) < 1e-6 and res.below_threshold
    assert res.threshold_calibrated and res.threshold == pytest.approx(0.25 * refs[0])
    assert [c["alpha"] for c in res.curve] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(c["loss"] == pytest.approx(res.loss_parent, abs=1e-6) for c in res.curve)
    assert res.route == "basin+aligned" and res.aligned and res.margin > 0


def test_tiny_weight_noise_is_lineage(mlps, probe):
    p, r1, _ = mlps
    refs = [barrier_of(p, r1, *probe, CFG)]
    assert determine(p, noisy(p, 1e-4), *probe, CFG, refs).below_threshold
    assert determine(p, noisy(p, 1e-4), *probe, CFG).below_threshold  # uncalibrated fallback


def test_independent_models_are_not_lineage(mlps, probe):
    p, r1, r2 = mlps
    refs = [barrier_of(p, r2, *probe, CFG)]  # calibrated on a third independent model
    res = determine(p, r1, *probe, CFG, refs)
    assert not res.below_threshold and res.threshold_calibrated and res.barrier > res.threshold > 0
    fallback = determine(p, r1, *probe, CFG)
    assert not fallback.below_threshold and not fallback.threshold_calibrated
    assert fallback.threshold == pytest.approx(
        0.02 * (fallback.loss_parent + fallback.loss_suspect) / 2
    )


@pytest.mark.parametrize("arch", ["mlp", "resnet18"])
def test_permuted_copy_is_lineage_only_with_alignment(mlps, resnets, probe, digits_dm, arch):
    p, r1 = (mlps if arch == "mlp" else resnets)[:2]
    perm = derive(p, digits_dm, {"name": "permute"}, 1.0, seed=0).model
    refs = [barrier_of(p, r1, *probe, CFG)]
    aligned = determine(p, perm, *probe, CFG, refs)
    assert aligned.below_threshold and aligned.aligned and aligned.barrier < 1e-4
    raw = determine(p, perm, *probe, {"align": False}, refs)
    assert not raw.below_threshold and not raw.aligned and raw.route == "basin"
    assert raw.barrier > raw.threshold and raw.barrier > 1000 * max(aligned.barrier, 1e-6)


def test_bn_reestimation_is_what_makes_a_bn_child_lineage(resnets, probe):
    p, r1 = resnets
    child = rescaled(p, 4.0)
    x = probe[0][:64]
    assert (child(x) - p(x)).abs().max() < 0.05  # the same function, up to BN's eps
    res = determine(p, child, *probe, CFG, [barrier_of(p, r1, *probe, CFG)])
    assert res.below_threshold and res.barrier < 1e-3
    off = {"bn_reestimate": False}
    stale = determine(p, child, *probe, off, [barrier_of(p, r1, *probe, off)])
    assert not stale.below_threshold and stale.barrier > 100 * max(res.barrier, 1e-5)


def test_reestimate_bn_is_a_cumulative_average_over_the_batches():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.BatchNorm1d(3)).eval()
    m[0].running_mean.fill_(5.0)
    x = torch.randn(40, 3) * 2 + 1
    reestimate_bn(m, x, batches=4, batch_size=10)
    assert torch.allclose(m[0].running_mean, x.mean(0), atol=1e-6)
    batch_vars = torch.stack([x[i : i + 10].var(0) for i in range(0, 40, 10)])
    assert torch.allclose(m[0].running_var, batch_vars.mean(0), atol=1e-5)
    assert m[0].momentum == 0.1 and not m.training


def with_new_head(model, classes=5, seed=0):
    """`model`'s trunk under a random head for another task: a transfer model's layout."""
    g = torch.Generator().manual_seed(seed)
    child = models.build("mlp", classes, 1, 8)
    child.load_state_dict(
        {
            **model.state_dict(),
            "head.weight": torch.randn(classes, 128, generator=g),
            "head.bias": torch.zeros(classes),
        }
    )
    return child


def test_transfer_head_uses_the_trunk_route(mlps, probe):
    p, r1, r2 = mlps
    refs = [barrier_of(p, r2, *probe, CFG)]
    own = determine(p, with_new_head(p), *probe, CFG, refs)
    assert own.route.startswith("trunk") and own.below_threshold
    # The same trunk under a refitted head: the loss is convex in the head, so no ridge;
    # the probe head reads the parent's features at least as well as the parent's head.
    assert own.barrier == pytest.approx(0, abs=1e-3)
    assert own.loss_suspect <= own.loss_parent + 1e-6
    same = determine(p, copy.deepcopy(p), *probe, CFG, suspect_record={"task": {"x": 1}})
    assert same.route.startswith("trunk")


def test_foreign_trunk_under_a_new_head_is_not_lineage(mlps, probe):
    """Under the parent's head a foreign trunk has a huge L(1) that lifts the chord over
    the ridge (barrier 0, a false positive); the refitted head removes that cover."""
    p, r1, r2 = mlps
    refs = [barrier_of(p, r2, *probe, CFG)]
    res = determine(p, with_new_head(r1), *probe, CFG, refs)
    assert res.route.startswith("trunk") and not res.below_threshold
    assert res.barrier > res.threshold
    assert res.loss_suspect < 2 * res.loss_parent + 0.1  # the probe head solves the task


@pytest.mark.parametrize("arch", ["mlp", "resnet18"])
def test_structured_pruned_suspect_maps_back(mlps, resnets, probe, arch):
    p, r1 = (mlps if arch == "mlp" else resnets)[:2]
    refs = [barrier_of(p, r1, *probe, CFG)]
    small, kept = shrink(p, 0.5)
    own_loss, _ = evaluate(small, *probe, 500)
    for record, route in (
        ({"kept_channels": kept}, "basin+pruned-map+aligned"),
        (None, "basin+pruned-match+aligned"),
    ):
        res = determine(p, small, *probe, CFG, refs, suspect_record=record)
        assert res.route == route and res.below_threshold and res.barrier < 1e-4
        stale = determine(p, small, *probe, {"bn_reestimate": False}, suspect_record=record)
        assert stale.loss_suspect == pytest.approx(own_loss, abs=1e-4)  # the pruned function
    no_align = determine(p, small, *probe, {"align": False}, suspect_record={"kept_channels": kept})
    assert no_align.route == "basin+pruned-map" and not no_align.aligned


def test_independent_smaller_model_is_not_lineage(mlps, probe, digits_dm, fast_train):
    p, r1, _ = mlps
    small = trained(digits_dm, fast_train, "mlp", 3, hidden=[64, 64])
    res = determine(p, small, *probe, CFG, [barrier_of(p, r1, *probe, CFG)])
    assert res.route == "basin+pruned-match+aligned" and not res.below_threshold
    assert not determine(p, small, *probe, CFG).below_threshold


def test_kept_channels_compose_along_a_chain():
    rec = {
        "chain": [
            {"name": "pruning", "record": {"kept_channels": {"a": [1, 3, 5, 7]}}},
            {"name": "finetune"},
            {"name": "pruning", "record": {"kept_channels": {"a": [0, 2]}}},
        ]
    }
    assert kept_channels(rec) == {"a": [1, 5]}
    assert kept_channels({"kept_channels": {"b": [2]}}) == {"b": [2]}
    assert kept_channels(None) is None


def test_other_architecture_falls_back_to_function(mlps, probe):
    p = mlps[0]
    student = models.build("lenet", 10, 1, 8)
    res = determine(p, student, *probe, CFG)
    assert res.route == "function" and res.below_threshold is None
    assert res.barrier is None and not res.below_threshold and "lenet" in res.reason
    # a wider MLP has no weight-space route either (more units than the parent)
    wide = models.build("mlp", 10, 1, 8, hidden=[256, 128])
    assert determine(p, wide, *probe, CFG).route == "function"


def test_calibrate():
    s = settings({})
    assert calibrate([0.4, 0.2, None, math.nan], (1.0, 1.0), s) == (pytest.approx(0.05), True)
    assert calibrate([], (0.2, 0.4), s) == (pytest.approx(0.02 * 0.3), False)
    half = dataclasses.replace(s, fallback_rel=0.5)
    assert calibrate(None, (0.2, 0.4), half) == (pytest.approx(0.15), False)


def test_refinement_bisects_around_the_maximum(mlps, probe):
    p, r1, _ = mlps
    grid = determine(p, r1, *probe, CFG)
    fine = determine(p, r1, *probe, {"refine": 2})
    alphas = [c["alpha"] for c in fine.curve]
    assert alphas == sorted(alphas) and 6 < len(alphas) <= 10
    assert fine.barrier >= grid.barrier - 1e-9
    assert len(fine.to_dict()["curve"]) == len(alphas)


def test_bn_data_must_have_a_batch_variance(resnets, probe):
    p, r1 = resnets
    with pytest.raises(LineageError, match="at least 2 samples"):
        determine(p, r1, *probe, CFG, bn_x=probe[0][:1])


def test_parent_and_suspect_are_not_modified(resnets, probe):
    p, r1 = resnets
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (p, r1)]
    determine(p, r1, *probe, CFG)
    for m, b in zip((p, r1), before):
        assert all(torch.equal(m.state_dict()[k], v) for k, v in b.items())


def test_bad_inputs(mlps, probe):
    p = mlps[0]
    x, y = probe
    for bad in (math.nan, math.inf):
        s = copy.deepcopy(p)
        with torch.no_grad():
            s.features[1].weight[0, 0] = bad
        with pytest.raises(LineageError, match=r"suspect.*features\.1\.weight.*NaN or Inf"):
            determine(p, s, x, y, CFG)
        with pytest.raises(LineageError, match="parent"):
            determine(s, p, x, y, CFG)
    with pytest.raises(LineageError, match="empty"):
        determine(p, p, x[:0], y[:0], CFG)
    with pytest.raises(LineageError, match="labels"):
        determine(p, p, x[:10], y[:9], CFG)
    with pytest.raises(LineageError, match="class indices"):
        determine(p, p, x[:10], y[:10] + 10, CFG)
    with pytest.raises(LineageError, match="do not fit"):
        determine(p, p, torch.rand(10, 1, 5, 5), y[:10], CFG)
    shallow = models.build("mlp", 10, 1, 8, hidden=[128])  # same name "mlp", fewer layers
    other = determine(p, shallow, x, y, CFG)  # another architecture: the function decides
    assert other.route == "function" and other.barrier is None
    assert "missing ['features.3.bias', 'features.3.weight']" in other.reason
    with pytest.raises(LineageError, match="determination.alphas"):
        determine(p, p, x, y, {"alphas": 1})
    with pytest.raises(LineageError, match="determination.gamma"):
        determine(p, p, x, y, {"gamma": -1})
    with pytest.raises(LineageError, match="determination.align"):
        determine(p, p, x, y, {"align": "yes"})


def test_a_suspect_no_better_than_a_uniform_guess_gives_no_basin_evidence(mlps, probe):
    parent, other = mlps[0], mlps[1]
    dead = copy.deepcopy(other)
    with torch.no_grad():  # constant logits: cross-entropy ln 10 on every point
        dead.head.weight.zero_()
        dead.head.bias.zero_()
    res = determine(parent, dead, *probe, CFG)
    assert res.loss_suspect == pytest.approx(math.log(10), abs=1e-4)
    assert res.barrier == pytest.approx(0.0, abs=1e-6)  # the lifted chord hides everything
    assert res.below_threshold is None and res.abstains
    assert "no better than a uniform guess (ln 10 = 2.3)" in res.reason
    # a working suspect keeps its basin evidence
    assert determine(parent, noisy(parent, 1e-3), *probe, CFG).below_threshold is True


def test_an_abstention_survives_leave_one_out_recalibration(mlps, probe):
    from lineage.engine import calibrate as calibrate_parent

    parent, other, third = mlps
    dead = copy.deepcopy(other)
    with torch.no_grad():
        dead.head.weight.zero_()
        dead.head.bias.zero_()
    close = {"max_points": 60, "min_points": 30}
    refs = calibrate_parent(
        parent, [dead, third], *probe, determination=CFG, closeness=close
    ).references
    assert refs[0].decision.says["basin"] is None  # still no basin evidence
    assert refs[0].evidence["basin"].threshold == pytest.approx(
        0.25 * refs[1].evidence["basin"].barrier
    )
    # judged leave-one-out, the live reference has only the dead one to calibrate on: that is
    # no barrier at all, so it is uncalibrated and abstains rather than passing or failing
    assert refs[1].decision.calibrated is False
    assert refs[1].decision.says["basin"] is None and not refs[1].is_lineage


def _same(a, b):
    """Two results alike in every field but their timing."""
    return dataclasses.replace(a, seconds=0.0) == dataclasses.replace(b, seconds=0.0)


@pytest.mark.parametrize("arch", ["mlp", "resnet18"])
def test_the_shared_route_and_start_give_the_separate_results(
    mlps, resnets, probe, arch, monkeypatch
):
    """The basin test and the weight distance of one pair align once (the pair's memo),
    and every path from one source measures theta(0) once (path.Start): each result is
    the one measured without them, field for field (barriers, curves, distances)."""
    from lineage.evaluate.basin import route
    from lineage.evaluate.distance import DistanceConf, weight_distance

    p, r1 = (mlps if arch == "mlp" else resnets)[:2]
    small, kept = shrink(p, 0.5)
    pairs = [(r1, None), (noisy(p, 1e-2), None), (small, {"kept_channels": kept})]
    if arch == "mlp":
        pairs += [(with_new_head(r1), None)]  # the trunk route refits the head in its target
    alone = [
        (
            determine(p, s, *probe, CFG, suspect_record=rec, head="head"),
            weight_distance(p, s, rec, "head", None, DistanceConf()),
        )
        for s, rec in pairs
    ]
    plans, points = [], []
    real_plan, real_point = route.plan, Path.point
    monkeypatch.setattr(route, "plan", lambda *a: plans.append(1) or real_plan(*a))
    monkeypatch.setattr(Path, "point", lambda self, a: points.append(a) or real_point(self, a))
    start = Start()
    for (s, rec), (basin, dist) in zip(pairs, alone):
        memo: dict = {}
        shared = determine(p, s, *probe, CFG, suspect_record=rec, head="head", start=start,
                           memo=memo)  # fmt: skip
        assert _same(shared, basin) and shared.curve == basin.curve
        assert _same(weight_distance(p, s, rec, "head", None, DistanceConf(), memo=memo), dist)
    assert len(plans) == len(pairs)  # one alignment per pair, for both kinds
    assert points.count(0.0) == 1  # theta(0) once for every suspect of this source
    assert start.value == alone[0][0].curve[0]


def test_the_paths_max_pool_is_max_pool2d():
    """The path's 2x2 max pool (channels-last batches) gives F.max_pool2d's values and
    layout, NaN included; other layouts and odd sides are F.max_pool2d's own."""
    from lineage.evaluate.basin.path import max_pool_2x2

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 8, 10, generator=g).relu()
    x[0, 1, 2, 3] = math.nan
    x[1, 2, 4, 4] = -math.inf
    for t in (x.contiguous(memory_format=torch.channels_last), x, x[:, :, :7, :9]):
        want, got = torch.nn.functional.max_pool2d(t, 2), max_pool_2x2(t)
        assert torch.equal(want.nan_to_num(7.0), got.nan_to_num(7.0))
        assert got.stride() == want.stride() and got.isnan().sum() == 1

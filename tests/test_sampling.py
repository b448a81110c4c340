import math

import pytest
import torch

from lineage import models
from lineage.errors import LineageError
from lineage.evaluate.closeness import (
    Points,
    References,
    closeness,
    filter_points,
    measure_points,
)
from lineage.evaluate.sampling import (
    bootstrap,
    confidence_interval,
    consistent_points,
    sequential,
    stratified_order,
)
from lineage.training import train_classifier

CFG = {"batch_points": 50, "min_points": 100, "max_points": 1000, "n_boot": 400, "ci_tol": 0.02}


def fake_points(
    matched: torch.Tensor, label: torch.Tensor | None = None, valid: torch.Tensor | None = None
) -> Points:
    n = len(matched)
    ones = torch.ones(n, dtype=torch.float64)
    return Points(
        index=torch.arange(n),
        label=label if label is not None else torch.zeros(n, dtype=torch.long),
        valid=valid if valid is not None else torch.ones(n, dtype=torch.bool),
        d_source=ones,
        d_suspect=ones,
        adv_source=torch.zeros(n, dtype=torch.long),
        adv_suspect=torch.zeros(n, dtype=torch.long),
        suspect_correct=torch.ones(n, dtype=torch.bool),
        matched=matched,
    )


def match_rate(p: Points, w: torch.Tensor) -> torch.Tensor:
    return (w * p.matched.double()).sum(1) / w.sum(1)


def test_stratified_order_deals_classes_round_robin():
    y = torch.tensor([0] * 30 + [1] * 20 + [2] * 10)
    order = stratified_order(y, seed=3)
    assert sorted(order.tolist()) == list(range(60))  # a permutation of every point
    for k in range(1, 11):  # every prefix of 3k points holds k of each class
        assert torch.bincount(y[order[: 3 * k]], minlength=3).tolist() == [k, k, k]
    assert torch.equal(order, stratified_order(y, seed=3))
    assert not torch.equal(order, stratified_order(y, seed=4))


def test_consistent_points_keeps_lineage_matches_that_independents_miss():
    lineage = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1]], dtype=torch.bool)
    independent = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert consistent_points(lineage, independent).tolist() == [True, False, False, True]


def test_stratified_bootstrap_keeps_class_counts():
    label = torch.tensor([0] * 7 + [1] * 3)
    p = fake_points(torch.ones(10, dtype=torch.bool), label)
    per_class = bootstrap(lambda p, w: (w * (p.label == 1)).sum(1), p, label, 50, 0)
    assert torch.all(per_class == 3)
    plain = bootstrap(lambda p, w: (w * (p.label == 1)).sum(1), p, None, 200, 0)
    assert plain.min() < 3 < plain.max()


def test_bootstrap_ci_of_a_rate_matches_the_normal_approximation():
    g = torch.Generator().manual_seed(0)
    p = fake_points(torch.rand(2000, generator=g) < 0.3)
    low, high = confidence_interval(match_rate, p, None, 2000, 0)
    rate = p.matched.double().mean().item()
    half = 1.96 * math.sqrt(rate * (1 - rate) / 2000)
    assert low < rate < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)


def measure_from(points: Points):
    return lambda ids: points.take(ids)


def test_sequential_stops_when_the_ci_is_tight_enough():
    g = torch.Generator().manual_seed(0)
    pool = fake_points(torch.rand(5000, generator=g) < 0.9)
    run = sequential(torch.arange(5000), measure_from(pool), match_rate, CFG, 0)
    assert run.stopped == "ci" and (run.ci_high - run.ci_low) / 2 <= CFG["ci_tol"]
    n = len(run.points.index)
    # one batch fewer would not have been enough: 0.9 needs ~ (1.96*0.3/0.02)^2 = 864 points
    assert 500 <= n <= 1000 and n % CFG["batch_points"] == 0
    constant = fake_points(torch.ones(5000, dtype=torch.bool))
    run = sequential(torch.arange(5000), measure_from(constant), match_rate, CFG, 0)
    assert run.stopped == "ci" and len(run.points.index) == CFG["min_points"]
    coin = fake_points(torch.rand(5000, generator=g) < 0.5)
    run = sequential(torch.arange(5000), measure_from(coin), match_rate, CFG, 0)
    assert run.stopped == "max_points" and len(run.points.index) == CFG["max_points"]


def test_sequential_drops_invalid_points_only_when_asked():
    valid = torch.arange(400) % 4 != 0
    pool = fake_points(valid & (torch.arange(400) % 3 == 0), valid=valid)
    cfg = {**CFG, "max_points": 150, "ci_tol": 1e-9}
    kept = sequential(torch.arange(400), measure_from(pool), match_rate, cfg, 0)
    assert kept.points.valid.all() and len(kept.points.index) == 150
    assert kept.n_drawn == 200  # a quarter of the drawn points were invalid
    plain = sequential(
        torch.arange(400), measure_from(pool), match_rate, cfg, 0, drop_invalid=False
    )
    assert len(plain.points.index) == plain.n_drawn == 150
    assert not plain.points.valid.all()


def test_ci_half_width_shrinks_with_points():
    g = torch.Generator().manual_seed(1)
    pool = fake_points(torch.rand(4000, generator=g) < 0.6)
    widths = [
        confidence_interval(match_rate, pool.take(torch.arange(n)), None, 1000, 0)
        for n in (100, 400, 1600)
    ]
    half = [(h - lo) / 2 for lo, h in widths]
    assert half[0] > half[1] > half[2]
    assert half[2] == pytest.approx(half[0] / 4, rel=0.3)  # 1/sqrt(n)


@pytest.fixture(scope="module")
def family(digits_dm, fast_train):
    """A source, two of its copies with small weight noise (lineage) and an independent."""
    torch.manual_seed(0)
    src = train_classifier(models.build("mlp", 10, 1, 8, hidden=[32]), digits_dm, fast_train, 0)[0]
    torch.manual_seed(1)
    ind = train_classifier(models.build("mlp", 10, 1, 8, hidden=[32]), digits_dm, fast_train, 1)[0]
    kin = []
    for seed in (2, 3):
        torch.manual_seed(seed)
        m = models.build("mlp", 10, 1, 8, hidden=[32])
        m.load_state_dict(src.state_dict())
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.02 * p.std() * torch.randn_like(p))
        kin.append(m.eval())
    return src, kin, ind


def test_aaai_filter_keeps_only_discriminating_points(family, digits_dm):
    src, (kin_a, kin_b), ind = family
    x, y = digits_dm.test.x, digits_dm.test.y
    cfg = {"batch_points": 100, "min_points": 100, "max_points": 300, "progress": False}
    r = closeness(src, kin_b, x, y, cfg, references=References([kin_a], [ind]))
    assert r.filtered and r.n_points > 0
    idx = r.points.index
    on_kin, _ = measure_points(src, kin_a, x[idx], y[idx])
    on_ind, _ = measure_points(src, ind, x[idx], y[idx])
    assert on_kin.matched.all() and not on_ind.matched.any()
    # on those points the independent model now scores 0, the filter's whole point
    assert closeness(src, ind, x, y, cfg, references=References([kin_a], [ind])).score == 0.0
    unfiltered = closeness(src, ind, x, y, cfg)
    assert not unfiltered.filtered and unfiltered.match_rate > 0
    # the filter's answer, computed once, serves any suspect
    kept = filter_points(src, x, y, References([kin_a], [ind]), cfg)
    again = closeness(src, kin_b, x, y, cfg, candidates=kept)
    assert again.filtered and torch.equal(again.points.index, r.points.index)
    assert again.score == r.score
    with pytest.raises(LineageError, match="candidate indices"):
        closeness(src, kin_b, x, y, cfg, candidates=torch.tensor([0, len(x)]))


def test_filter_that_keeps_nothing_is_a_clear_error(family, digits_dm):
    src, (kin_a, _), _ = family
    x, y = digits_dm.test.x[:200], digits_dm.test.y[:200]
    with pytest.raises(LineageError, match="no valid point left after filtering"):
        # the source itself as the "independent" reference matches every point
        closeness(src, kin_a, x, y, {"progress": False}, references=References([kin_a], [src]))


def test_uniform_strategy_counts_invalid_points(family, digits_dm):
    src, (kin_a, _), _ = family
    x, y = digits_dm.test.x[:300], digits_dm.test.y[:300]
    wrong = src(x).argmax(1) != y
    assert wrong.any()
    cfg = {"min_points": 300, "max_points": 300, "batch_points": 300, "progress": False}
    uni = closeness(src, kin_a, x, y, {**cfg, "strategy": "uniform"})
    strat = closeness(src, kin_a, x, y, cfg)
    assert uni.n_points == 300 and strat.n_points == 300 - int(wrong.sum())
    assert uni.match_rate < strat.match_rate


def test_sampling_uses_a_plain_callable_suspect(family, digits_dm):
    src, (kin_a, _), _ = family

    class Remote:  # a service wrapper: no nn.Module, answers labels on CPU
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return kin_a(x).argmax(1)

    x, y = digits_dm.test.x[:200], digits_dm.test.y[:200]
    cfg = {"min_points": 150, "max_points": 150, "batch_points": 150, "progress": False}
    a = closeness(src, Remote(), x, y, cfg)
    b = closeness(src, kin_a, x, y, cfg)
    assert a.suspect_output == "labels" and torch.equal(a.points.matched, b.points.matched)

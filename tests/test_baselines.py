"""Peer baselines: the registry, known answers, lineage ordering, determinism, bad input."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from torch import nn

from lineage import models
from lineage.baselines import ACCESS, BASELINES, config
from lineage.baselines.modeldiff import ddv
from lineage.baselines.registry import source_errors, translate
from lineage.data import build_datamodule
from lineage.errors import LineageError
from lineage.training import predict, train_classifier
from lineage.utils import seed_all

NAMES = ["agreement", "akh", "ipguard", "modeldiff", "sacw", "weights"]
# The source against itself: the best score each method can give.
SELF_SCORE = {
    "agreement": 1.0,
    "akh": 1.0,
    "ipguard": 1.0,
    "modeldiff": 1.0,
    "sacw": 0.0,
    "weights": 1.0,
}
TRAIN = {
    "epochs": 4,
    "lr": 3e-3,
    "optimizer": "adam",
    "scheduler": "none",
    "accelerator": "cpu",
    "progress": False,
}


@pytest.fixture(scope="module")
def cfg() -> dict[str, Any]:
    return config()  # every method's defaults (conf/baselines/default.yaml only selects them)


@pytest.fixture(scope="module")
def dm():
    return build_datamodule("digits", batch_size=64)


def _trained(dm, seed: int) -> nn.Module:
    seed_all(seed)
    model = models.build("mlp", dm.num_classes, 1, 8, hidden=[32])
    return train_classifier(model, dm, TRAIN, seed)[0]


@pytest.fixture(scope="module")
def source(dm) -> nn.Module:
    return _trained(dm, 0)


@pytest.fixture(scope="module")
def independent(dm) -> nn.Module:
    return _trained(dm, 1)


@pytest.fixture(scope="module")
def noised(source) -> nn.Module:
    """A light modification: Gaussian noise of 5% of each tensor's spread."""
    copy_ = copy.deepcopy(source)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in copy_.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05 * p.std())
    return copy_


def run(name, source, suspect, dm, cfg, seed=0, **over):
    return BASELINES.get(name)(source, suspect, dm.test.x, dm.test.y, {**cfg[name], **over}, seed)


def test_registry_lists_the_six_methods_and_the_config_covers_them(cfg):
    assert BASELINES.names() == NAMES
    assert sorted(ACCESS) == NAMES and sorted(cfg) == NAMES
    assert ACCESS["weights"] == "weights" and ACCESS["akh"] == "labels"
    assert all(BASELINES.get(n).__name__ == n and BASELINES.get(n).__doc__ for n in NAMES)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(LineageError, match="unknown baseline 'modeldif'") as e:
        BASELINES.get("modeldif")
    assert all(n in str(e.value) for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_source_against_itself_scores_the_maximum(name, source, dm, cfg):
    r = run(name, source, source, dm, cfg)
    assert r.score == pytest.approx(SELF_SCORE[name], abs=1e-6)
    assert r.seconds > 0
    assert r.details.get("probe_seconds", 0.0) <= r.seconds


@pytest.mark.parametrize("name", NAMES)
def test_noised_copy_scores_above_an_independent_model(name, source, noised, independent, dm, cfg):
    assert run(name, source, noised, dm, cfg).score > run(name, source, independent, dm, cfg).score


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result(name, source, independent, dm, cfg):
    a, b = (run(name, source, independent, dm, cfg, seed=3) for _ in range(2))
    assert a.score == b.score or (math.isnan(a.score) and math.isnan(b.score))
    strip = {"probe_seconds"}
    assert {k: v for k, v in a.details.items() if k not in strip} == {
        k: v for k, v in b.details.items() if k not in strip
    }


@pytest.mark.parametrize("name", ["modeldiff", "sacw"])
def test_another_seed_draws_other_probes(name, source, independent, dm, cfg):
    assert (
        run(name, source, independent, dm, cfg, seed=0).score
        != run(name, source, independent, dm, cfg, seed=1).score
    )


def test_weights_needs_the_same_architecture_but_outputs_do_not(source, dm, cfg):
    other = models.build("mlp", dm.num_classes, 1, 8, hidden=[16, 16])
    wider = models.build("mlp", dm.num_classes, 1, 8, hidden=[48])
    for suspect in (other, wider):
        r = run("weights", source, suspect, dm, cfg)
        assert math.isnan(r.score) and r.details["applicable"] is False
    assert 0.0 <= run("agreement", source, other, dm, cfg).score <= 1.0  # black box: fine
    assert math.isnan(run("weights", nn.Flatten(), nn.Flatten(), dm, cfg).score)


def test_sacw_on_softmax_outputs_keeps_the_order(source, noised, independent, dm, cfg):
    self_, near, far = (
        run("sacw", source, m, dm, cfg, output="softmax") for m in (source, noised, independent)
    )
    assert self_.score == 0.0 and near.score > far.score


def test_weights_cosine_known_answers(source, dm, cfg):
    scaled, flipped = copy.deepcopy(source), copy.deepcopy(source)
    with torch.no_grad():
        for p, q in zip(scaled.parameters(), flipped.parameters()):
            p.mul_(3.0)
            q.neg_()
    assert run("weights", source, scaled, dm, cfg).score == pytest.approx(1.0, abs=1e-9)
    assert run("weights", source, flipped, dm, cfg).score == pytest.approx(-1.0, abs=1e-9)


@pytest.mark.parametrize("name", ["modeldiff", "ipguard"])
def test_gradient_probes_leave_the_models_as_they_were(name, source, independent, dm, cfg):
    src = copy.deepcopy(source).train()
    before = [p.clone() for p in src.parameters()]
    run(name, src, independent, dm, cfg)
    assert src.training and not independent.training
    assert all(torch.equal(a, p) and p.grad is None for a, p in zip(before, src.parameters()))


def test_ipguard_points_sit_just_across_the_source_boundary(source, dm, cfg):
    d = run("ipguard", source, source, dm, cfg).details
    k = cfg["ipguard"]["k"]
    assert d["converged"] > 0.9 and d["n_points"] == cfg["ipguard"]["n_points"]
    assert k <= d["source_margin_median"] < 2 * k


def test_source_errors_are_misclassified_and_natural_ones_come_first(source, dm):
    x, y = dm.test.x, dm.test.y
    n_wrong = int((predict(source, x).argmax(1) != y).sum())
    assert 0 < n_wrong < 100
    xe, ye, natural = source_errors(
        source, x, y, 100, torch.Generator().manual_seed(0), 0.1, 2, 20, 256
    )
    assert len(xe) == 100 and natural == n_wrong
    assert bool((predict(source, xe).argmax(1) != ye).all())
    xn, _, natural = source_errors(source, x, y, 100, torch.Generator(), 0.1, 2, 0, 256)
    assert len(xn) == natural == n_wrong


@pytest.mark.parametrize("name", ["sacw", "akh"])
def test_no_source_errors_means_not_applicable(name, source, dm, cfg):
    right = predict(source, dm.test.x).argmax(1) == dm.test.y
    r = BASELINES.get(name)(
        source, source, dm.test.x[right], dm.test.y[right], {**cfg[name], "max_rounds": 0}, 0
    )
    assert math.isnan(r.score) and r.details["applicable"] is False


def test_translate_moves_pixels_and_fills_with_zero():
    x = torch.zeros(2, 1, 8, 8)
    x[:, 0, 2, 3] = 1.0
    out = translate(x, torch.tensor([1, -3]), torch.tensor([-2, 0]))
    assert out.shape == x.shape
    assert out[0, 0, 3, 1] == 1.0 and out[0].sum() == 1.0
    assert out[1].sum() == 0.0  # moved off the top edge


def test_ddv_is_zero_for_unchanged_outputs_and_one_for_a_flipped_decision():
    z = torch.tensor([[50.0, 0.0], [0.0, 50.0]])
    assert torch.allclose(ddv(z, z), torch.zeros(2), atol=1e-6)
    assert torch.allclose(ddv(z, z.flip(1)), torch.ones(2), atol=1e-6)


def test_n_points_bounds_the_probes(source, independent, dm, cfg):
    assert run("agreement", source, independent, dm, cfg, n_points=17).details["n_points"] == 17
    assert run("modeldiff", source, independent, dm, cfg, n_points=9).details["n_points"] == 9
    r = run("sacw", source, independent, dm, cfg, n_points=5)
    assert r.details["n_points"] == 5


class _Const(nn.Module):
    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(out.clone())

    def forward(self, x):
        return self.w.expand(len(x), -1)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long), "empty"),
        (torch.full((4, 1, 8, 8), float("nan")), torch.zeros(4, dtype=torch.long), "NaN"),
        (torch.full((4, 1, 8, 8), 2.0), torch.zeros(4, dtype=torch.long), r"\[0, 1\]"),
        (torch.zeros(4, 1, 8, 8), torch.zeros(3, dtype=torch.long), "4 inputs but 3 labels"),
        (torch.zeros(4, 64), torch.zeros(4, dtype=torch.long), r"\(N, C, H, W\)"),
        (torch.zeros(4, 1, 8, 8), torch.zeros(4), "integer labels"),
        (torch.zeros(4, 1, 8, 8), torch.full((4,), -1), "negative"),
        (torch.zeros(4, 1, 8, 8), torch.full((4,), 10), "out of range"),
    ],
)
def test_bad_data_is_a_lineage_error(x, y, match, source, cfg):
    with pytest.raises(LineageError, match=match):
        BASELINES.get("akh")(source, source, x, y, cfg["akh"], 0)


@pytest.mark.parametrize(
    ("name", "over", "match"),
    [
        ("sacw", {"n_points": 0}, r"baselines.sacw.n_points=0 is outside its range \[1, inf\)"),
        ("sacw", {"output": "probs"}, "baselines.sacw.output='probs': valid are logits, softmax"),
        ("sacw", {"noise_std": float("inf")}, r"noise_std=inf is outside its range \[0, inf\)"),
        ("sacw", {"colour": 1}, r"baselines.sacw: unknown key\(s\) \['colour'\]"),
        ("akh", {"max_shift": -1}, r"baselines.akh.max_shift=-1 is outside its range \[0, inf\)"),
        ("akh", {"noise_std": -0.1}, r"outside its range \[0, inf\)"),
        ("modeldiff", {"eps": 0}, r"baselines.modeldiff.eps=0.0 is outside its range \(0, inf\)"),
        ("ipguard", {"steps": True}, "baselines.ipguard.steps=True is not an integer"),
        ("ipguard", {"lr": "fast"}, "baselines.ipguard.lr='fast' is not a number"),
    ],
)
def test_bad_options_name_the_key(name, over, match, source, dm, cfg):
    with pytest.raises(LineageError, match=match):
        run(name, source, source, dm, cfg, **over)


def test_a_missing_option_takes_its_default_and_a_non_mapping_config_fails(source, dm, cfg):
    opts = {k: v for k, v in cfg["modeldiff"].items() if k != "eps"}
    run_ = BASELINES.get("modeldiff")
    assert run_(source, source, dm.test.x, dm.test.y, opts, 0).score == pytest.approx(
        run_(source, source, dm.test.x, dm.test.y, cfg["modeldiff"], 0).score
    )
    with pytest.raises(LineageError, match="must be a mapping"):
        BASELINES.get("agreement")(source, source, dm.test.x, dm.test.y, [1], 0)
    with pytest.raises(LineageError, match="must be tensors"):
        BASELINES.get("agreement")(
            source, source, dm.test.x.numpy(), dm.test.y, cfg["agreement"], 0
        )


def test_broken_suspects_are_lineage_errors(source, dm, cfg):
    three_classes = _Const(torch.zeros(3))
    with pytest.raises(LineageError, match="over 10 classes but the suspect over 3"):
        run("agreement", source, three_classes, dm, cfg)
    with pytest.raises(LineageError, match="suspect model returned NaN"):
        run("modeldiff", source, _Const(torch.full((10,), float("nan"))), dm, cfg)
    nan_copy = copy.deepcopy(source)
    with torch.no_grad():
        next(nan_copy.parameters()).fill_(float("inf"))
    with pytest.raises(LineageError, match="NaN or infinite parameters"):
        run("weights", source, nan_copy, dm, cfg)


def test_config_is_each_methods_defaults_then_the_overrides():
    c = config({"modeldiff": {"eps": 0.2}, "sacw": {"output": "softmax"}})
    assert c["modeldiff"] == {"n_points": 100, "eps": 0.2, "steps": 10, "batch_size": 256}
    assert c["sacw"] == {
        "n_points": 50,
        "noise_std": 0.1,
        "max_shift": 2,
        "max_rounds": 10,
        "batch_size": 512,
        "output": "softmax",
    }
    assert c["akh"]["max_rounds"] == 20 and c["weights"] == {}
    with pytest.raises(LineageError, match="unknown baseline 'modeldif'"):
        config({"modeldif": {"eps": 0.2}})
    with pytest.raises(LineageError, match=r"baselines.agreement.n_points=-1 is outside"):
        config({"agreement": {"n_points": -1}})


def test_a_sources_probes_are_made_once_and_again_when_what_they_depend_on_changes(source, dm):
    from lineage.baselines.registry import _generator, source_probes

    src, x, y = copy.deepcopy(source), dm.test.x, dm.test.y
    made: list[int] = []

    def probes(cfg="a", seed=0, x=x, y=y, what="t"):
        return source_probes(
            src, what, x, y, cfg, _generator(seed), lambda: len(made.append(1) or made)
        )

    assert probes() == 1 and probes() == 1  # made once, then reused
    assert probes(cfg="b") == 2 and probes(seed=1) == 3 and probes(what="u") == 4
    assert probes(x=x.clone()) == 5 and probes(y=y.clone()) == 6  # other data
    with torch.no_grad():
        next(src.parameters()).add_(1e-3)  # the source's weights changed in place
    assert probes() == 7 and probes() == 7


@pytest.mark.parametrize("name", ["akh", "ipguard", "modeldiff", "sacw"])
def test_reused_probes_give_a_fresh_calls_answer(name, source, noised, independent, dm, cfg):
    src = copy.deepcopy(source)  # a source whose probes no other test made
    run(name, src, independent, dm, cfg, seed=5)
    reused = run(name, src, noised, dm, cfg, seed=5)
    fresh = run(name, copy.deepcopy(source), noised, dm, cfg, seed=5)
    assert reused.score == fresh.score
    strip = {"probe_seconds"}
    assert {k: v for k, v in reused.details.items() if k not in strip} == {
        k: v for k, v in fresh.details.items() if k not in strip
    }

"""Each modification's effect, asserted on the derived model itself (digits, tiny models)."""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lineage import models
from lineage.data import DataModule, Split
from lineage.errors import LineageError
from lineage.modifications import MODIFICATIONS, derive, validate
from lineage.modifications import common as mod_common
from lineage.modifications.adversarial import pgd
from lineage.modifications.distill import init_student
from lineage.modifications.registry import OPTIONS
from lineage.training import predict, train_classifier
from lineage.utils import seed_all

MINE = [
    "adversarial",
    "chain",
    "distill",
    "extraction",
    "finetune",
    "noise",
    "pruning",
    "quantize",
    "transfer",
]
CONF = Path(__file__).resolve().parents[1] / "lineage" / "conf" / "modification"


def build(arch: str, **kw) -> torch.nn.Module:
    return models.build(arch, 10, 1, (8, 8), **kw)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Models this small gain nothing from intra-op threads, and on a shared 2-core machine
    # their spin-waiting costs several times the work itself.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def parent(digits_dm, fast_train):
    seed_all(0)  # as the pipeline does: the parent's init is defined by seed 0
    cfg = {**fast_train, "epochs": 12, "lr": 1e-2}
    model, acc = train_classifier(build("mlp", hidden=[32, 32]), digits_dm, cfg, 0)
    assert acc > 0.85  # the effect checks below lean on a parent that has learnt the task
    return model


def snapshot(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def zero_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight == 0 for n, m in mod_common.param_layers(model)}


# ---- configs and bad input (all raised by validate(), before any training) ----


@pytest.mark.parametrize("name", MINE)
def test_yaml_says_what_ratio_means_and_selects_its_options(name):
    text = (CONF / f"{name}.yaml").read_text()
    assert text.startswith("# ratio")
    raw = OmegaConf.to_container(OmegaConf.create(text))
    assert raw == {"defaults": [f"/hydra/schema/modification/{name}@_here_", "_self_"]}


def test_unknown_modification_lists_valid_ones():
    with pytest.raises(LineageError, match="unknown modification 'prune'.*finetune.*pruning"):
        validate({"name": "prune"}, 0.5)


@pytest.mark.parametrize("ratio", [1.5, -0.1, "half"])
def test_ratio_outside_range_names_it(ratio):
    with pytest.raises(LineageError, match=r"\[0, 1\]"):
        validate({"name": "finetune"}, ratio)


def test_unknown_option_is_named():
    with pytest.raises(LineageError, match="'epoch'.*valid"):
        validate({"name": "finetune", "epoch": 3}, 0.5)


@pytest.mark.parametrize("name", ["distill", "extraction"])
def test_unknown_student_architecture_named(name):
    with pytest.raises(LineageError, match="'resnet99' is not a registered architecture"):
        validate({"name": name, "student": "resnet99"}, 0.5)


def test_chain_step_errors_name_the_step():
    steps = [{"name": "pruning", "ratio": 0.5}, {"name": "finetune", "ratio": 2}]
    with pytest.raises(LineageError, match=r"chain step 1 \(finetune\): ratio=2.0 .*\[0, 1\]"):
        validate({"name": "chain", "steps": steps}, 0.5)
    with pytest.raises(LineageError, match="chain step 0 .*unknown modification 'prunin'"):
        validate({"name": "chain", "steps": [{"name": "prunin"}]}, 0.5)


def test_bad_input_fails_before_any_training(parent, digits_dm, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(mod_common, "fit", no_training)
    bad = [
        (
            {
                "name": "chain",
                "steps": [{"name": "pruning", "ratio": 0.5}, {"name": "finetune", "ratio": 1.2}],
            },
            0.5,
        ),
        ({"name": "distill", "student": "nope"}, 0.5),
        ({"name": "distill", "mixup": "yes"}, 0.5),
        ({"name": "finetune"}, 7),
    ]
    for cfg, r in bad:
        with pytest.raises(LineageError):
            derive(parent, digits_dm, cfg, r, 0)


# ---- pruning ----


def test_unstructured_sparsity_exact_and_kept_through_recovery(parent, digits_dm):
    before = snapshot(parent)
    cfg = {"name": "pruning", "method": "global_unstructured"}
    pruned = derive(parent, digits_dm, {**cfg, "finetune_epochs": 0}, 0.3, 0)
    healed = derive(parent, digits_dm, {**cfg, "finetune_epochs": 2}, 0.3, 0)
    for d in (pruned, healed):
        zeros = sum(int(z.sum()) for z in zero_weights(d.model).values())
        total = sum(m.weight.numel() for _, m in mod_common.param_layers(d.model))
        assert abs(zeros / total - 0.3) < 0.01
        assert abs(d.effect["sparsity"] - 0.3) < 0.01
    mask = zero_weights(pruned.model)
    for name, m in mod_common.param_layers(healed.model):
        assert (m.weight[mask[name]] == 0).all()  # pruned weights stayed zero
    assert changed(before, healed.model)  # and recovery did train the rest
    assert same(before, parent.state_dict())
    assert not any(k.endswith(("_orig", "_mask")) for k in healed.model.state_dict())


def test_structured_removes_dead_units_exactly(parent, digits_dm):
    """Half the hidden units are dead (all-zero filter and bias): l1_structured at 0.5
    must remove exactly those and leave the function unchanged."""
    model = mod_common.copy_parent(parent)
    dead = {"features.1": torch.arange(0, 32, 2), "features.3": torch.arange(1, 32, 2)}
    with torch.no_grad():
        for name, idx in dead.items():
            layer = dict(model.named_modules())[name]
            layer.weight[idx] = 0
            layer.bias[idx] = 0
    d = derive(model, digits_dm, {"name": "pruning", "method": "l1_structured"}, 0.5, 0)
    assert d.model.arch["narrow"] == {"features.1": 16, "features.3": 16}
    for name, idx in dead.items():
        assert set(d.record["kept_channels"][name]).isdisjoint(idx.tolist())
    x = digits_dm.test.x
    assert torch.allclose(predict(d.model, x), predict(model, x), atol=1e-5)
    assert d.effect["channels_removed"] == 32 and d.effect["channels_total"] == 64


@pytest.mark.parametrize(
    "arch,kw", [("lenet", {}), ("resnet18", {"width": 0.125}), ("vgg11", {"width": 0.125})]
)
def test_structured_model_is_smaller_and_round_trips(arch, kw, digits_dm, tmp_path):
    seed_all(0)
    model = build(arch, **kw).eval()
    d = derive(model, digits_dm, {"name": "pruning", "method": "l1_structured"}, 0.5, 0)
    kept = d.record["kept_channels"]
    big, small = dict(model.named_modules()), dict(d.model.named_modules())
    whole = 0
    for name, idx in kept.items():
        s, b = small[name].weight, big[name].weight
        assert s.shape[0] == len(idx) < b.shape[0]
        if s.shape[1:] == b.shape[1:]:  # input side unpruned: exactly the parent's filters
            assert torch.equal(s, b[idx])
            whole += 1
    assert whole >= 1
    assert 0.4 < d.effect["sparsity"] < 0.9
    path = models.save(d.model, tmp_path / "small.safetensors", {"lineage": [d.record]})
    loaded, meta = models.load(path)
    assert meta["lineage"][0]["kept_channels"] == kept
    x = digits_dm.test.x[:32]
    assert torch.equal(predict(loaded, x), predict(d.model, x))


# ---- finetune / transfer ----


def test_finetune_ratio_zero_changes_only_the_head(parent, digits_dm):
    before = snapshot(parent)
    d = derive(parent, digits_dm, {"name": "finetune", "epochs": 2}, 0.0, 0)
    assert changed(before, d.model) == {"head.weight", "head.bias"}
    assert d.effect["trainable_layers"] == 1
    full = derive(parent, digits_dm, {"name": "finetune", "epochs": 1}, 1.0, 0)
    assert changed(before, full.model) == set(before)
    assert same(before, parent.state_dict())


def test_finetune_freezes_batchnorm_statistics(digits_dm):
    seed_all(0)
    model = build("vgg11", width=0.125).eval()
    before = snapshot(model)
    d = derive(model, digits_dm, {"name": "finetune", "epochs": 1}, 0.0, 0)
    assert changed(before, d.model) == {"head.weight", "head.bias"}
    bns = [m for m in d.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.track_running_stats for m in bns)  # an ordinary model again
    assert all(p.requires_grad for p in d.model.parameters())


def test_finetune_reinit_head_draws_a_fresh_head(parent, digits_dm):
    before = snapshot(parent)
    d = derive(parent, digits_dm, {"name": "finetune", "epochs": 0, "reinit_head": True}, 0, 0)
    assert changed(before, d.model) == {"head.weight", "head.bias"}


def test_transfer_gets_a_new_head_and_task(parent, digits_dm, tmp_path):
    before = snapshot(parent)
    d = derive(parent, digits_dm, {"name": "transfer", "epochs": 3, "lr": 1e-2}, 0.0, 0)
    assert d.model.head.out_features == 5 == d.effect["new_num_classes"]
    assert d.record["task"]["classes"] == [5, 6, 7, 8, 9]
    assert d.effect["accuracy"] > 0.5  # a linear probe on the parent's features
    trunk = {k for k in before if not k.startswith("head.")}
    assert not (changed(before, d.model) & trunk)  # ratio 0: the trunk is frozen
    loaded, _ = models.load(models.save(d.model, tmp_path / "t.safetensors"))
    assert loaded.arch["num_classes"] == 5


def test_other_data_must_fit_the_model(parent, digits_dm):
    other = {"name": "digits", "classes": [0, 1, 2], "limit": 200}
    before = snapshot(parent)
    d = derive(parent, digits_dm, {"name": "finetune", "epochs": 1, "data": other}, 0.0, 0)
    assert changed(before, d.model) == {"head.weight", "head.bias"}
    five = derive(parent, digits_dm, {"name": "transfer", "epochs": 0}, 0.0, 0).model
    with pytest.raises(LineageError, match="10 classes but the model has 5 outputs"):
        derive(five, digits_dm, {"name": "finetune"}, 0.5, 0)


# ---- quantize ----


@pytest.mark.parametrize("ratio,bits,opt", [(0.5, 5, None), (0.0, 3, 3), (1.0, 2, None)])
def test_quantized_weights_lie_on_their_grid(parent, digits_dm, ratio, bits, opt):
    d = derive(parent, digits_dm, {"name": "quantize", "bits": opt}, ratio, 0)
    assert d.effect["bits"] == bits
    qmax = 2 ** (bits - 1) - 1
    for _, m in mod_common.param_layers(d.model):
        w = m.weight.detach().flatten(1)
        scale = w.abs().amax(1, keepdim=True) / qmax
        q = w / scale
        assert torch.allclose(q, q.round(), atol=1e-4)
        assert max(len(torch.unique(r)) for r in w) <= 2**bits
    assert d.effect["levels_max"] <= 2**bits - 1


def test_dynamic_int8_black_box_uses_the_same_integers(parent, digits_dm):
    d = derive(parent, digits_dm, {"name": "quantize", "backend": "dynamic_int8"}, 0.5, 0)
    assert d.blackbox is not None and d.effect["blackbox_layers"] == 3
    twin = dict(d.model.named_modules())
    for name, m in d.blackbox.named_modules():
        if name in twin and isinstance(twin[name], torch.nn.Linear):
            assert torch.equal(m.weight().dequantize(), twin[name].weight)
    assert d.effect["blackbox_agreement"] > 0.95


def test_dynamic_int8_refuses_more_than_8_bits():
    with pytest.raises(LineageError, match="bits must be <= 8"):
        validate({"name": "quantize", "backend": "dynamic_int8", "bits": 12}, 0.5)


# ---- distill / extraction ----


def test_distilled_student_starts_from_its_own_random_init(parent, digits_dm):
    cfg = {"name": "distill", "epochs": 0}
    d = derive(parent, digits_dm, cfg, 0.0, 0)
    init = init_student(parent, asdict(OPTIONS["distill"]()), 0)
    assert same(snapshot(d.model), init.state_dict())  # training starts at the seeded init
    seed_all(0)
    parents_init = build("mlp", hidden=[32, 32])  # the parent's own initial weights
    for ref in (parent, parents_init):
        assert not any(torch.equal(a, b) for a, b in zip(d.model.parameters(), ref.parameters()))
    trained = derive(parent, digits_dm, {"name": "distill", "epochs": 4, "lr": 1e-2}, 0.0, 0)
    assert trained.effect["teacher_agreement"] > 0.6


def test_mixup_distillation_also_matches_the_teacher_between_points(parent, digits_dm):
    from lineage.modifications.common import train_cfg
    from lineage.modifications.distill import Distiller

    student = init_student(parent, asdict(OPTIONS["distill"]()), 0)
    teacher = copy.deepcopy(parent)  # Distiller freezes its teacher; keep the fixture's grads
    tc = train_cfg(asdict(OPTIONS["distill"]()))
    x, y = digits_dm.train.x[:64], digits_dm.train.y[:64]
    on = Distiller(student, teacher, tc, 10, 4.0, 0.25, mixup=True)
    off = Distiller(student, teacher, tc, 10, 4.0, 0.25, mixup=False)
    torch.manual_seed(0)
    got = on.loss(student(x), x, y)
    torch.manual_seed(0)
    lam = torch.rand(len(x), 1, 1, 1)
    mixed = lam * x + (1 - lam) * x[torch.randperm(len(x))]
    kd = off.kd(student(x), x) + off.kd(student(mixed), mixed)
    want = 0.25 * torch.nn.functional.cross_entropy(student(x), y) + 0.75 * kd
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, off.loss(student(x), x, y), atol=1e-3)  # the term counts
    pure = Distiller(student, teacher, tc, 10, 4.0, 1.0, mixup=True)  # teacher ignored
    assert torch.allclose(
        pure.loss(student(x), x, y), torch.nn.functional.cross_entropy(student(x), y)
    )


def test_distill_cross_architecture(parent, digits_dm):
    d = derive(parent, digits_dm, {"name": "distill", "student": "lenet", "epochs": 1}, 0.5, 0)
    assert d.model.arch["name"] == "lenet" == d.effect["student"]
    # lenet's default widths, halved by the compression ratio
    assert d.model.arch["kwargs"] == {"channels": [3, 8], "hidden": [60, 42]}
    assert predict(d.model, digits_dm.test.x[:4]).shape == (4, 10)


def test_distill_ratio_compresses_the_student(parent, digits_dm):
    cfg = {"name": "distill", "epochs": 0}
    same = derive(parent, digits_dm, cfg, 0.0, 0)
    assert same.model.arch["kwargs"] == parent.arch["kwargs"]  # ratio 0: the teacher's size
    assert same.effect["param_ratio"] == 1.0 and same.effect["width_factor"] == 1.0
    small = derive(parent, digits_dm, cfg, 0.75, 0)
    assert small.model.arch["kwargs"] == {"hidden": [8, 8]}  # the parent's [32, 32] / 4
    n = [sum(p.numel() for p in m.parameters()) for m in (small.model, parent)]
    assert small.effect["param_ratio"] == pytest.approx(n[0] / n[1]) and n[0] < n[1] / 4
    assert small.effect["ce_weight"] == 0.0  # pure distillation unless asked
    with pytest.raises(LineageError, match="ratio 1 would leave the student no width"):
        derive(parent, digits_dm, cfg, 1.0, 0)
    with pytest.raises(LineageError, match=r"distill.ce_weight=1.5 is outside its range \[0, 1\]"):
        derive(parent, digits_dm, {**cfg, "ce_weight": 1.5}, 0.5, 0)


def test_scale_widths_of_every_architecture():
    assert models.scale_widths("lenet", {}, 0.1) == {"channels": [1, 2], "hidden": [12, 8]}
    assert models.scale_widths("mlp", {"hidden": [128, 64]}, 0.5) == {"hidden": [64, 32]}
    assert models.scale_widths("resnet18", {"width": 0.5}, 0.5) == {"width": 0.25, "mid": None}
    assert models.scale_widths("vgg11", {}, 0.5) == {"width": 0.125, "channels": None}
    for name in ("lenet", "mlp", "resnet18", "vgg11"):  # the scaled kwargs build
        models.build(name, 10, 1, 28, **models.scale_widths(name, {}, 0.3))


def garbage_labels(dm: DataModule, how: str) -> DataModule:
    def spoil(s: Split) -> Split:
        y = torch.full_like(s.y, -1) if how == "minus_one" else s.y[torch.randperm(len(s.y))]
        return Split(s.x, y)

    return DataModule(
        dm.name,
        spoil(dm.train),
        spoil(dm.val),
        spoil(dm.test),
        dm.num_classes,
        dm.classes,
        dm.batch_size,
    )


@pytest.mark.parametrize("query,how", [("train", "minus_one"), ("augmented", "shuffled")])
def test_extraction_never_reads_ground_truth_labels(parent, digits_dm, query, how):
    cfg = {"name": "extraction", "query": query, "epochs": 4, "lr": 1e-2}
    ref = derive(parent, digits_dm, cfg, 0.5, 0)
    assert ref.effect["query_count"] == round(0.5 * len(digits_dm.train))
    d = derive(parent, garbage_labels(digits_dm, how), cfg, 0.5, 0)
    assert same(snapshot(d.model), ref.model.state_dict())  # bit-identical
    assert d.effect == ref.effect
    assert ref.effect["query_agreement"] > 0.3  # learnt the parent's answers (chance: 0.1)


def test_extraction_budget_is_at_least_one_batch(parent, digits_dm):
    d = derive(parent, digits_dm, {"name": "extraction", "epochs": 1}, 0.0, 0)
    assert d.effect["query_count"] == digits_dm.batch_size


# ---- noise / adversarial / chain ----


def test_noise_relative_change_tracks_ratio(parent, digits_dm):
    before = snapshot(parent)
    for ratio in (0.1, 0.5):
        d = derive(parent, digits_dm, {"name": "noise"}, ratio, 0)
        assert d.effect["relative_change"] == pytest.approx(ratio, rel=0.15)
    assert same(snapshot(derive(parent, digits_dm, {"name": "noise"}, 0.0, 0).model), before)


def test_noise_leaves_batchnorm_statistics_alone(digits_dm):
    seed_all(0)
    model = build("vgg11", width=0.125).eval()
    before = snapshot(model)
    d = derive(model, digits_dm, {"name": "noise"}, 0.5, 0)
    stats = {k for k in before if "running" in k or "num_batches" in k}
    assert stats and not (changed(before, d.model) & stats)
    assert "features.0.weight" in changed(before, d.model)


def test_pgd_stays_in_the_eps_ball_and_raises_the_loss(parent, digits_dm):
    x, y = digits_dm.test.x[:128], digits_dm.test.y[:128]
    adv = pgd(parent, x, y, 0.1, 5, 0.05)
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert ce(parent(adv), y) > ce(parent(x), y)


def test_adversarial_fraction_matches_ratio(parent, digits_dm):
    d = derive(parent, digits_dm, {"name": "adversarial", "epochs": 1, "steps": 2}, 0.5, 0)
    assert d.effect["adv_fraction"] == pytest.approx(0.5, abs=0.02)
    assert d.effect["robust_accuracy"] >= d.effect["parent_robust_accuracy"] - 0.05


def test_chain_records_every_step(parent, digits_dm):
    steps = [
        {"name": "pruning", "ratio": 0.5},
        {"name": "finetune", "epochs": 1},
        {"name": "quantize", "bits": 4},
    ]
    d = derive(parent, digits_dm, {"name": "chain", "steps": steps}, 0.2, 0)
    chain = d.record["chain"]
    assert [s["name"] for s in chain] == ["pruning", "finetune", "quantize"]
    assert [s["ratio"] for s in chain] == [0.5, 0.2, 0.2]  # top-level ratio fills the gaps
    options = {k: v for k, v in asdict(OPTIONS["finetune"]()).items() if k != "name"}
    assert chain[1]["options"] == {**options, "epochs": 1}
    assert chain[0]["effect"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert chain[2]["effect"]["bits"] == 4 and d.effect["steps"] == 3
    assert d.effect["names"] == "pruning>finetune>quantize"
    # the final model carries every step: still half zeros (0 quantizes to 0), on a 4-bit grid
    zeros = sum(int(z.sum()) for z in zero_weights(d.model).values())
    total = sum(m.weight.numel() for _, m in mod_common.param_layers(d.model))
    assert zeros / total >= 0.49
    assert d.effect["step2"]["levels_max"] <= 15


def test_every_modification_leaves_the_parent_alone(parent, digits_dm):
    before = snapshot(parent)
    assert set(MINE) <= set(MODIFICATIONS.names())
    for name in ("noise", "quantize", "pruning"):
        derive(parent, digits_dm, {"name": name}, 0.9, 0)
    assert same(before, parent.state_dict()) and not parent.training

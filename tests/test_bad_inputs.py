"""Bad inputs: each one must fail with a LineageError whose message names the problem.

Every case is the smallest input that reaches one `raise LineageError(...)` site in
lineage/ (see the comments for file:line); models are tiny and untrained, nothing trains.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import lineage_here
from omegaconf import OmegaConf
from torch import nn

from lineage import models
from lineage.errors import LineageError

ROOT = Path(__file__).resolve().parents[1]


def raises(fragment: str):
    return pytest.raises(LineageError, match=re.escape(fragment))


def mlp(num_classes: int = 10, size: int = 8, hidden=(8,), seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", num_classes, 1, size, hidden=list(hidden)).eval()


@pytest.fixture(scope="module")
def src():
    return mlp()


@pytest.fixture(scope="module")
def xy():
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 1, 8, 8, generator=g), torch.tensor([0, 1, 2, 3, 4, 5])


@pytest.fixture(scope="module")
def dm():
    from lineage.data import build_datamodule

    return build_datamodule("digits", limit=50, batch_size=16)


def write_idx(path: Path, arr: np.ndarray) -> None:
    """An IDX file as MNIST ships it: 0, 0, 0x08 (uint8), ndim, then big-endian dims."""
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(head + arr.astype(np.uint8).tobytes())


def write_mnist(root: Path, train_y, test_y, train_n=None, size: int = 28) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    n = len(train_y) if train_n is None else train_n
    write_idx(raw / "train-images-idx3-ubyte", np.zeros((n, size, size)))
    write_idx(raw / "train-labels-idx1-ubyte", np.array(train_y))
    write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((len(test_y), size, size)))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.array(test_y))
    return root


# ---------------------------------------------------------------- closeness


CLOSENESS_CFG = [  # lineage/evaluate/closeness.py config(), reached by closeness() directly
    ("d_max_zero", {"d_max": 0}, "closeness.d_max=0.0 is outside its range (0, inf)"),  # :151
    ("tol_negative", {"tol": -1e-3}, "closeness.tol=-0.001 is outside its range (0, inf)"),
    ("step_nan", {"step": float("nan")}, "closeness.step=nan is outside its range (0, inf)"),
    ("ci_tol_zero", {"ci_tol": 0.0}, "closeness.ci_tol=0.0 is outside its range (0, 1)"),
    ("tol_ge_step", {"tol": 0.5, "step": 0.1}, "closeness: need tol < step <= d_max"),  # :153
    ("step_gt_dmax", {"step": 2.0, "d_max": 1.0}, "closeness: need tol < step <= d_max"),
    ("max_points_0", {"max_points": 0}, "closeness.max_points=0 is outside its range [1, inf)"),
    ("n_boot_float", {"n_boot": 2.5}, "closeness.n_boot=2.5 is not an integer"),
    (
        "batch_size_0",
        {"batch_size": 0},
        "closeness.batch_size=0 is outside its range [1, inf)",  # :162
    ),
    (
        "filter_pool_0",
        {"filter_pool": 0},
        "closeness.filter_pool=0 is outside its range [1, inf)",
    ),
    (
        "min_gt_max",
        {"min_points": 50, "max_points": 10},
        "closeness: min_points=50 exceeds max_points=10",  # :164
    ),
    ("search", {"search": "newton"}, "closeness.search='newton': valid are brent, bisection"),
    (
        "strategy",
        {"strategy": "random"},
        "closeness.strategy='random': valid are stratified, uniform",  # :170
    ),
]


@pytest.mark.parametrize(
    "cfg,fragment", [c[1:] for c in CLOSENESS_CFG], ids=[c[0] for c in CLOSENESS_CFG]
)
def test_closeness_bad_config(src, xy, cfg, fragment):
    from lineage.evaluate.closeness import closeness

    with raises(fragment):
        closeness(src, src, *xy, cfg=cfg)


def _bad_data(case, x, y):
    return {
        "x_list": (x.tolist(), y),  # :176
        "y_numpy": (x, y.numpy()),
        "x_int": (x.long(), y),  # :180
        "x_1d": (x.flatten()[:6], y),
        "y_float": (x, y.float()),  # :184
        "y_short": (x, y[:3]),
        "y_2d": (x, y[:, None]),
    }[case]


CLOSENESS_DATA = [
    ("x_list", "closeness: x and y must be tensors"),
    ("y_numpy", "closeness: x and y must be tensors"),
    ("x_int", "closeness: x holds torch.int64 values (token ids?)"),
    ("x_1d", "closeness: x must be a batch (N, ...), got shape (6,)"),
    ("y_float", "closeness: y must hold one integer label per point"),
    ("y_short", "closeness: y must hold one integer label per point, got torch.int64 (3,)"),
    ("y_2d", "closeness: y must hold one integer label per point"),
]


@pytest.mark.parametrize("case,fragment", CLOSENESS_DATA, ids=[c[0] for c in CLOSENESS_DATA])
def test_closeness_bad_data(src, xy, case, fragment):
    from lineage.evaluate.closeness import closeness

    x, y = _bad_data(case, *xy)
    with raises(fragment):
        closeness(src, src, x, y)


SUSPECTS = [  # lineage/evaluate/boundary.py Probe.forward and closeness.py _suspect_probe
    (
        "extra_row",  # boundary.py:141
        lambda x: torch.zeros(len(x) + 1, 10),
        "suspect: must return one output per input row",
    ),
    (
        "not_a_tensor",
        lambda x: [0] * len(x),
        "suspect: must return one output per input row",
    ),
    (
        "float_labels",  # boundary.py:150
        lambda x: torch.zeros(len(x)),
        "suspect: returned torch.float32 (1,); expected logits (N, classes) or integer labels",
    ),
    (
        "3d_logits",
        lambda x: torch.zeros(len(x), 10, 2),
        "suspect: returned torch.float32 (1, 10, 2); expected logits (N, classes)",
    ),
    (
        "label_out_of_range",  # closeness.py:308
        lambda x: torch.full((len(x),), 10, dtype=torch.long),
        "suspect answered label 10, outside the source's 10 classes",
    ),
    (
        "negative_label",
        lambda x: torch.full((len(x),), -1, dtype=torch.long),
        "suspect answered label -1, outside the source's 10 classes",
    ),
]


@pytest.mark.parametrize(
    "suspect,fragment", [s[1:] for s in SUSPECTS], ids=[s[0] for s in SUSPECTS]
)
def test_closeness_bad_suspect(src, xy, suspect, fragment):
    from lineage.evaluate.closeness import closeness

    with raises(fragment):
        closeness(src, suspect, *xy, cfg={"progress": False})


@pytest.mark.parametrize(
    "candidates",
    [torch.empty(0, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), torch.tensor([0.5])],
    ids=["empty", "2d", "float"],
)
def test_closeness_bad_candidates(src, xy, candidates):  # closeness.py:493
    from lineage.evaluate.closeness import closeness

    with raises("closeness: candidates must be a non-empty 1-D tensor of indices"):
        closeness(src, src, *xy, candidates=candidates)


@pytest.mark.parametrize(
    "lineage_refs,independent_refs", [(0, 0), (1, 0), (0, 1)], ids=["none", "no_indep", "no_lin"]
)
def test_filter_points_needs_both_kinds(src, xy, lineage_refs, independent_refs):  # :514
    from lineage.evaluate.closeness import References, filter_points

    refs = References([src] * lineage_refs, [mlp(seed=1)] * independent_refs)
    with raises("filter_points: needs at least one known lineage and one known independent"):
        filter_points(src, *xy, refs)


@pytest.mark.parametrize("gamma", [1, 1.5, -0.1], ids=["one", "above", "negative"])
def test_closeness_threshold_gamma(gamma):  # closeness.py:388
    from lineage.evaluate.closeness import closeness_threshold

    with raises(f"closeness_threshold: gamma={gamma} must lie in [0, 1)"):
        closeness_threshold([0.2, 0.3], gamma=gamma)


def test_sequential_sampling_of_nothing():  # sampling.py:165
    from lineage.evaluate.sampling import sequential

    cfg = {"batch_points": 10, "max_points": 10, "min_points": 1, "ci_tol": 0.1, "n_boot": 10}

    def measure(ids):
        raise AssertionError("nothing to measure")

    with raises("closeness: no points to sample from"):
        sequential(torch.empty(0, dtype=torch.long), measure, lambda p, w: w, cfg, 0)


# ---------------------------------------------------------------- determination


PROBES = [  # lineage/evaluate/basin.py check_probe
    ("x_list", lambda x, y: (x.tolist(), y), "probe data must be tensors (x, y)"),  # :150
    ("y_list", lambda x, y: (x, y.tolist()), "probe data must be tensors (x, y)"),
    (
        "x_nan",  # :156
        lambda x, y: (x.clone().index_fill_(0, torch.tensor([2]), float("nan")), y),
        "probe inputs hold NaN or Inf values",
    ),
    (
        "x_inf",
        lambda x, y: (x.clone().index_fill_(0, torch.tensor([0]), float("inf")), y),
        "probe inputs hold NaN or Inf values",
    ),
]


@pytest.mark.parametrize("make,fragment", [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_bad_probe_data(src, xy, make, fragment):
    from lineage.evaluate.basin import check_probe

    with raises(fragment):
        check_probe(*make(*xy), src)


# ---------------------------------------------------------------- alignment


class Custom(nn.Module):
    def __init__(self, *features: nn.Module, head_in: int):
        super().__init__()
        self.features = nn.Sequential(*features)
        self.head = nn.Linear(head_in, 2)

    def forward(self, x):
        return self.head(self.features(x))


class Branchy(nn.Module):
    """Control flow on values: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.a, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.head(h if h.sum() > 0 else -h)


SPECS = [  # lineage/adapters.py permutation_spec: never raises, says what it left out
    (
        "flatten_split",
        lambda: Custom(nn.Conv2d(1, 3, 1), nn.Flatten(), nn.Linear(10, 4), head_in=4),
        "features.0: features.2: 10 inputs do not split into units",
    ),
    (
        "grouped_conv",
        lambda: Custom(nn.Conv2d(2, 4, 1), nn.Conv2d(4, 4, 1, groups=2), head_in=4),
        "features.0: features.1: grouped convolution",
    ),
    ("untraceable", Branchy, "the forward pass could not be traced with torch.fx"),
]


@pytest.mark.parametrize("make,fragment", [s[1:] for s in SPECS], ids=[s[0] for s in SPECS])
def test_alignment_spec_leaves_out_what_it_cannot_follow(make, fragment):
    from lineage.adapters import permutation_spec

    spec = permutation_spec(make())
    assert fragment in spec.reason
    assert "features.0" not in {g.name for g in spec.groups}  # what it could not follow


EMBEDS = [  # lineage/evaluate/alignment.py embed
    ("more_layers", {"hidden": (8, 8)}, "suspect's layers are arranged differently"),  # :316
    (
        "other_input_size",  # :355
        {"size": 7},
        "features.1.weight: dimension 1 is 49 in the suspect, 64 in the parent, "
        "and is not a hidden unit",
    ),
]


@pytest.mark.parametrize("kw,fragment", [e[1:] for e in EMBEDS], ids=[e[0] for e in EMBEDS])
def test_alignment_embed_refuses(src, kw, fragment):
    from lineage.evaluate.alignment import embed, spec_of

    sus = mlp(**kw)
    with raises(fragment):
        embed(spec_of(src), spec_of(sus), src.state_dict(), sus.state_dict())


# ---------------------------------------------------------------- plots


def _points(case):
    a, b, c = torch.zeros(1, 4, 4), torch.ones(1, 4, 4), torch.eye(4)[None]
    if case == "shapes":
        return a, b, torch.zeros(1, 4, 5)
    if case == "nan":
        return a, b.clone().fill_(float("nan")), c
    if case == "inf":
        return a, b, c.clone().fill_(float("-inf"))
    return a, b, c


PLANES = [  # lineage/plots.py
    (
        "shapes",
        {},
        "decision_plane: the three points differ in shape (1, 4, 4), (1, 4, 4), (1, 4, 5)",
    ),
    ("nan", {}, "decision_plane: the points hold NaN or Inf values"),  # :37
    ("inf", {}, "decision_plane: the points hold NaN or Inf values"),
    ("ok", {"resolution": 1}, "decision_plane: resolution=1 must be at least 2"),  # :73
    ("ok", {"resolution": 0}, "decision_plane: resolution=0 must be at least 2"),
]


@pytest.mark.parametrize(
    "case,kw,fragment", PLANES, ids=["shapes", "nan", "inf", "resolution_1", "resolution_0"]
)
def test_decision_plane_refuses(tmp_path, case, kw, fragment):
    from lineage.plots import decision_plane

    model = mlp(size=4)
    with raises(fragment):
        decision_plane([model], *_points(case), tmp_path / "plane.png", **kw)
    assert not (tmp_path / "plane.png").exists()


# ---------------------------------------------------------------- benchmark metrics


BENCH = [  # lineage/results.py
    (
        "truth_2d",
        [[0, 1], [1, 0]],
        [0.1, 0.2],
        "truth must be one label per pair, got shape (2, 2)",
    ),
    ("score_posinf", [0, 1], [0.1, float("inf")], "scores must be finite or NaN (not applicable)"),
]


@pytest.mark.parametrize("metric", ["roc_auc", "tpr_at_fpr", "threshold_at_fpr"])
@pytest.mark.parametrize("truth,score,fragment", [b[1:] for b in BENCH], ids=[b[0] for b in BENCH])
def test_benchmark_metrics_refuse(metric, truth, score, fragment):
    from lineage import results

    with raises(fragment):
        getattr(results, metric)(truth, score)


# ---------------------------------------------------------------- baselines


class Scalar(nn.Module):
    """One number per input: outputs shaped (N,), not (N, K)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 1)

    def forward(self, x):
        return self.lin(x.flatten(1))[:, 0]


def test_baseline_logits_must_be_2d(xy):  # baselines/registry.py:207
    from lineage.baselines.registry import logits

    with raises("suspect model returned outputs shaped (6,), not (N, K)"):
        logits(Scalar(), xy[0], 4, "suspect")


def test_baseline_source_needs_two_classes(xy):  # baselines/registry.py:231
    from lineage.baselines.registry import num_classes

    with raises("source has 1 output; baselines need at least 2 classes"):
        num_classes(mlp(num_classes=1), *xy)


# ---------------------------------------------------------------- models and model files


def test_build_refuses_non_positive_sizes():  # models/registry.py:29
    with raises("mlp: num_classes and in_channels must be positive"):
        models.build("mlp", 0)
    with raises("lenet: num_classes and in_channels must be positive"):
        models.build("lenet", 10, in_channels=0)


def test_arch_of_and_head_of_refuse_foreign_models():  # models/registry.py, common.py
    from lineage.modifications.common import head_of

    with raises("model was not built by lineage.models.build (no .arch record)"):
        models.arch_of(nn.Linear(2, 2))
    with raises("Sequential has no Linear layer to serve as its head"):
        head_of(nn.Sequential(nn.Conv2d(1, 2, 1)))


def _raw_file(header: bytes, body: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + body


def _save_with_arch(path: Path, **arch_changes) -> Path:
    m = mlp()
    m.arch = {**m.arch, **arch_changes}
    return models.save(m, path, {"id": "x"})


MODEL_FILES = [  # lineage/models/io.py
    ("too_short", lambda p: p.write_bytes(b"\x01\x02\x03"), "too short (3 bytes)"),  # :89
    ("not_json", lambda p: p.write_bytes(_raw_file(b"{nope")), "header is not JSON"),  # :96
    ("json_list", lambda p: p.write_bytes(_raw_file(b"[1]")), "header is not a JSON object"),
    (
        "json_string",
        lambda p: p.write_bytes(_raw_file(b'"x"')),
        "header is not a JSON object",  # :98
    ),
    (
        "malformed_entry",  # :114
        lambda p: p.write_bytes(_raw_file(json.dumps({"w": {"dtype": "F32"}}).encode())),
        "malformed entry for tensor 'w'",
    ),
    (
        "bad_arch_kwargs",  # :175
        lambda p: _save_with_arch(p, kwargs={"hidden": [8], "bogus": 1}),
        "cannot build recorded architecture (architecture 'mlp' has no option 'bogus')",
    ),
    (
        "tensors_mismatch",  # :180
        lambda p: _save_with_arch(p, kwargs={"hidden": [8, 8]}),
        "tensors do not match mlp: missing ['features.3.bias', 'features.3.weight']",
    ),
]


@pytest.mark.parametrize(
    "write,fragment", [m[1:] for m in MODEL_FILES], ids=[m[0] for m in MODEL_FILES]
)
def test_model_file_refused(tmp_path, write, fragment):
    path = tmp_path / "m.safetensors"
    write(path)
    with raises(f"m.safetensors: not a valid lineage model file: {fragment}"):
        models.load(path)


# ---------------------------------------------------------------- data loaders


def test_idx_file_under_8_bytes(tmp_path):  # data/mnist.py:33
    from lineage.data.mnist import read_idx

    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(b"\x00\x00\x08\x03\x00")
    with raises(f"{p}: corrupt IDX file (only 5 bytes)"):
        read_idx(p)


def test_mnist_images_and_labels_differ(tmp_path):  # data/mnist.py:75
    from lineage.data import build_datamodule

    root = write_mnist(tmp_path, [0, 1], [0, 1], train_n=3)
    with raises("MNIST train: 3 images but 2 labels"):
        build_datamodule("mnist", root=root)


def test_class_selection_leaves_split_empty(tmp_path):  # data/base.py:120
    from lineage.data import build_datamodule

    root = write_mnist(tmp_path, [0, 1, 2, 0, 1, 2], [0, 0])  # no 1 or 2 in the test split
    with raises("dataset 'mnist' is empty after selecting classes=[1, 2]"):
        build_datamodule("mnist", root=root, classes=[1, 2])


@pytest.mark.parametrize(
    "content",
    [{b"labels": [0]}, {b"data": b"\x00" * 3072}, [1, 2], {"data": b"", "labels": []}],
    ids=["no_data", "no_labels", "list", "str_keys"],
)
def test_cifar_batch_without_data_or_labels(tmp_path, content):  # data/cifar10.py:50
    from lineage.data.cifar10 import read_batch

    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps(content))
    with raises(f"{p}: corrupt CIFAR-10 batch (missing b'data'/b'labels')"):
        read_batch(p)


# ---------------------------------------------------------------- training, tracking, config


def test_accuracy_on_empty_data(src):  # training.py:150
    from lineage.training import accuracy

    with raises("cannot measure accuracy on empty data"):
        accuracy(src, torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long))


def test_unknown_optimizer_past_check_ranges(src):  # training.py:85
    from lineage.training import Classifier

    module = Classifier(src, {"optimizer": "rmsprop", "lr": 1e-3, "epochs": 1}, 10)
    with raises("train.optimizer='rmsprop': valid are adam, sgd"):
        module.configure_optimizers()


def test_unknown_logger_kind(tmp_path):  # tracking.py:123
    from lineage.tracking import make_tracker

    with raises("logger='x': valid are wandb, csv, none"):
        make_tracker({"logger": {"name": "x"}}, tmp_path, "run", None)


def test_config_not_a_mapping():  # pipeline.py:240
    from lineage.pipeline import to_container

    with raises("config did not resolve to a mapping"):
        to_container(OmegaConf.create([1, 2]))


RANGES = [  # lineage/config.py check_ranges
    ({"n_independent": 500}, "n_independent=500 is outside its range [0, 100]"),  # :353
    ({"data": {"batch_size": 0}}, "data.batch_size=0 is outside its range [1, 1048576]"),
    ({"data": {"epochs": -1}}, "data.epochs=-1 is outside its range [0, 1000000]"),
    ({"train": {"epochs": -1}}, "train.epochs=-1 is outside its range [0, 1000000]"),
    ({"train": {"lr": 20}}, "train.lr=20.0 is outside its range (0, 10]"),
    ({"train": {"weight_decay": 2}}, "train.weight_decay=2.0 is outside its range [0, 1]"),
    ({"determination": {"seed": -1}}, "determination.seed=-1 is outside its range [0, 2147483647]"),
    ({"train": {"scheduler": "step"}}, "train.scheduler='step': valid are none, cosine"),  # :357
    ({"train": {"accelerator": "tpu"}}, "train.accelerator='tpu': valid are auto, cpu, gpu"),
]


@pytest.mark.parametrize(
    "cfg,fragment",
    RANGES,
    ids=[
        "n_independent",
        "data.batch_size",
        "data.epochs",
        "train.epochs",
        "train.lr",
        "train.weight_decay",
        "determination.seed",
        "train.scheduler",
        "train.accelerator",
    ],
)
def test_check_ranges_refuses(cfg, fragment):
    from lineage.config import check_ranges

    with raises(fragment):
        check_ranges(cfg)


def test_collect_without_paths():  # report/collect.py:95
    from lineage.report.collect import collect

    with raises("no PATH given: pass a sweep or run directory"):
        collect([])


# ---------------------------------------------------------------- modifications


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    """A tiny MNIST (28x28) beside the digits (8x8) the parents are built for."""
    return write_mnist(tmp_path_factory.mktemp("mnist"), [0, 1, 2, 3] * 3, [0, 1, 2, 3])


MODS = [  # (cfg, ratio, fragment); options are checked before anything trains
    (
        "negative_epochs",  # modifications/common.py:171
        {"name": "finetune", "epochs": -1},
        0.5,
        "finetune.epochs=-1 is outside its range [0, inf)",
    ),
    (
        "negative_finetune_epochs",
        {"name": "pruning", "finetune_epochs": -3},
        0.5,
        "pruning.finetune_epochs=-3 is outside its range [0, inf)",
    ),
    (
        "data_not_mapping",  # common.py:198
        {"name": "finetune", "data": 5},
        0.5,
        "finetune.data: must be null or a mapping like conf/data/digits.yaml",
    ),
    (
        "transfer_data_string",
        {"name": "transfer", "data": "mnist"},
        0.5,
        "transfer.data: must be null or a mapping like conf/data/digits.yaml",
    ),
    (
        "l1_structured_ratio_1",  # pruning.py:65
        {"name": "pruning", "method": "l1_structured"},
        1.0,
        "pruning: l1_structured needs ratio < 1 (every layer keeps a channel)",
    ),
    (
        "extraction_query_data_without_data",  # extraction.py:72
        {"name": "extraction", "query": "data"},
        0.5,
        "extraction: query=data needs `data` (the query set's config)",
    ),
    (
        "chain_no_steps",  # chain.py:47
        {"name": "chain", "steps": []},
        0.5,
        "chain.steps must be a non-empty list of {name, ratio, ...options}; got []",
    ),
    (
        "chain_steps_string",
        {"name": "chain", "steps": "pruning"},
        0.5,
        "chain.steps='pruning' must be list",
    ),
    (
        "chain_step_not_mapping",  # chain.py:53
        {"name": "chain", "steps": [{"name": "noise"}, 5]},
        0.5,
        "chain step 1: must be a mapping with a 'name'; got 5",
    ),
    (
        "chain_step_no_name",
        {"name": "chain", "steps": [{"ratio": 0.5}]},
        0.5,
        "chain step 0: must be a mapping with a 'name'",
    ),
    (
        "chain_in_chain",  # chain.py:55
        {"name": "chain", "steps": [{"name": "noise"}, {"name": "chain", "steps": []}]},
        0.5,
        "chain step 1: chains do not nest; list its steps instead",
    ),
    ("no_name", {"ratio": 0.5}, 0.5, "a modification config needs a 'name'"),  # registry.py:66
    ("not_a_mapping", ["pruning"], 0.5, "a modification config needs a 'name'; got ['pruning']"),
]


@pytest.mark.parametrize("cfg,ratio,fragment", [m[1:] for m in MODS], ids=[m[0] for m in MODS])
def test_derive_refuses_options(src, dm, cfg, ratio, fragment):
    from lineage.modifications import derive

    with raises(fragment):
        derive(src, dm, cfg, ratio, 0)


@pytest.mark.parametrize("name", ["finetune", "transfer"])
def test_derive_refuses_data_of_other_input_shape(src, dm, mnist_root, name):  # common.py:140
    from lineage.modifications import derive

    cfg = {"name": name, "epochs": 0, "data": {"name": "mnist", "root": str(mnist_root)}}
    with raises(f"{name}: the data has inputs (1, 28, 28) but the model expects (1, 8, 8)"):
        derive(src, dm, cfg, 0.5, 0)


def test_derive_refuses_model_without_head(dm):  # modifications/common.py:52
    from lineage.modifications import derive

    headless = nn.Sequential(nn.Conv2d(1, 10, 8), nn.Flatten())
    with raises("Sequential: cannot tell how many classes it answers"):
        derive(headless, dm, {"name": "pruning"}, 0.5, 0)


# ---------------------------------------------------------------- `lineage compare` CLI


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    digits = {"id": "p", "data": {"name": "digits"}}
    return {
        "parent": str(models.save(mlp(), d / "parent.safetensors", digits)),
        "nodata": str(models.save(mlp(), d / "nodata.safetensors", {"id": "n"})),
        "three": str(models.save(mlp(num_classes=3), d / "three.safetensors", digits)),
    }


COMPARE = [  # (arguments, regex for stderr); every one fails before any training
    ("{parent} {parent} --bogus", "unrecognized arguments: --bogus"),  # cli.py:118
    ("{parent} {parent} --references -1", "error: --references must be >= 0"),  # cli.py:124
    ("{parent} {parent} closeness.d_max=abc", "error: bad option: .*closeness.d_max=abc"),  # :34
    ("{nodata} {parent}", r"nodata\.safetensors: the file names no dataset; pass --data"),  # :59
    (
        "{three} {parent} --data digits",  # cli.py:82
        r"three\.safetensors has 3 outputs but data 'digits' has 10 classes",
    ),
]


@pytest.mark.parametrize(
    "args,fragment",
    COMPARE,
    ids=["unknown_flag", "negative_references", "override_type", "no_dataset", "class_count"],
)
def test_compare_cli_refuses(model_files, args, fragment):
    # in this process: what it says (tests/test_hardening.py refuses in real processes)
    r = lineage_here("compare", *(a.format(**model_files) for a in args.split()))
    assert r.returncode == 2, r.stderr[-2000:]
    assert re.search(fragment, r.stderr), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert r.stdout == ""

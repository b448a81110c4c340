"""Helpers shared by the modifications: copying the parent, choosing the trainable tail,
building a modification's own data, a Lightning fit for a derived model, and option checks.

"Parameterised layers" are the Linear and Conv layers (the head included), in the order
their modules are registered, which for every lineage architecture is input -> output.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from ..adapters import find_head
from ..data import DATASETS, DataModule, datamodule_from_config
from ..errors import LineageError
from ..models.registry import input_shape_of
from ..training import Classifier, fit
from ..utils import stable_hash

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
Layer = nn.Linear | _ConvNd
# Frozen teachers and frozen BatchNorm run in eval mode on purpose during a fit.
warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode at the start of training.*")


def copy_parent(parent: nn.Module) -> nn.Module:
    """A deep copy on the CPU: the parent (and its .arch record) is never touched."""
    return copy.deepcopy(parent).cpu()


def fresh_seed(seed: int, tag: str) -> int:
    # The pipeline trains the parent from seed_all(seed); a student built from that same
    # seed would start at the parent's initial weights (a shared init is lineage), so
    # fresh models draw their init from a seed derived from (tag, seed) instead.
    return int(stable_hash([tag, seed], 8), 16)


def param_layers(model: nn.Module) -> list[tuple[str, Layer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]


def head_of(model: nn.Module) -> tuple[str, nn.Linear]:
    """The head's name and module (lineage.adapters.find_head)."""
    name = find_head(model)
    if name is None:
        raise LineageError(f"{type(model).__name__} has no Linear layer to serve as its head")
    head = model.get_submodule(name)
    assert isinstance(head, nn.Linear)
    return name, head


def n_outputs(model: nn.Module) -> int:
    """Classes the model answers: its head's outputs (else its record's class count)."""
    name = find_head(model)
    if name is not None:
        return int(model.get_submodule(name).out_features)  # type: ignore[arg-type]
    arch = getattr(model, "arch", None)
    if isinstance(arch, dict) and isinstance(arch.get("num_classes"), int):
        return int(arch["num_classes"])
    raise LineageError(f"{type(model).__name__}: cannot tell how many classes it answers")


def tail_count(ratio: float, n: int) -> int:
    """Layers that train for a `ratio` of `n`: at least the last one, all of them at 1."""
    return max(1, min(n, int(ratio * n + 0.5)))


class TrainTail(BaseFinetuning):
    """Lightning's BaseFinetuning: everything before the `k` parameterised layers nearest
    the output is frozen, BatchNorm included (frozen BN runs in eval mode, so it keeps
    the parent's running statistics and computes exactly the parent's function)."""

    def __init__(self, model: nn.Module, k: int):
        super().__init__()
        layers = param_layers(model)
        first = layers[len(layers) - k][1]
        leaves = [m for m in model.modules() if m._parameters and not list(m.children())]
        cut = next(i for i, m in enumerate(leaves) if m is first)
        self.frozen = leaves[:cut]

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        self.freeze(self.frozen, train_bn=False)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, opt: Any) -> None:
        return None  # nothing unfreezes later: the split is fixed by `ratio`

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        for m in self.frozen:
            if isinstance(m, _BatchNorm):
                m.eval()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The derived model is an ordinary model again: all trainable, BN tracking stats.
        self.make_trainable(self.frozen)


def train_cfg(
    opts: Mapping[str, Any], epochs_key: str = "epochs", train: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """How a modification trains: the run's `train` group (optimizer, its momentum and
    weight decay, the schedule, the accelerator: lineage.training.TrainConf's defaults
    without one) with the modification's own epochs and lr."""
    from ..training import TrainConf

    base = {**asdict(TrainConf()), **dict(train or {})}
    return {**base, "epochs": int(opts[epochs_key]), "lr": float(opts["lr"])}


def fit_model(
    module: Classifier,
    dm: DataModule,
    cfg: Mapping[str, Any],
    seed: int,
    logger: Any = None,
    callbacks: Iterable[pl.Callback] = (),
) -> nn.Module:
    """Lightning fit of `module.model`; returns it on the CPU in eval mode.

    Lightning 2.6 keeps each submodule's train/eval flag as it finds it, and the parent
    copy arrives in eval mode, so the model is put in train mode first."""
    module.model.train()
    fit(module, dm, cfg, seed, logger, callbacks)  # trains module.model in place
    return module.model.eval()


def task_data(dm: DataModule, spec: Mapping[str, Any] | None) -> DataModule:
    """The modification's own data: `spec` (keys of conf/data/*.yaml) over the parent's
    dataset name, batch size and data root (`dm.root` when the datamodule records it,
    else $LINEAGE_DATA, else ./data). None means the parent's datamodule itself."""
    if spec is None:
        return dm
    root = getattr(dm, "root", None) or os.environ.get("LINEAGE_DATA", "data")
    return datamodule_from_config(
        {"name": dm.name, "batch_size": dm.batch_size, "root": str(root), **dict(spec)}
    )


def check_input_shape(shape: Sequence[int], model: nn.Module, where: str) -> None:
    """Inputs of `shape` (one sample's) must be what the model was built for (when its
    record says; a model without one is checked by its first forward pass)."""
    arch = getattr(model, "arch", None)
    if not isinstance(arch, dict):
        return
    want = input_shape_of(arch)
    if tuple(shape) != tuple(want):
        raise LineageError(
            f"{where}: the data has inputs {tuple(shape)} but the model expects {want}"
        )


def check_labels_fit(dm: DataModule, model: nn.Module, where: str) -> None:
    """Training on `dm` with cross-entropy needs every label to be one of the outputs."""
    check_input_shape(dm.input_shape, model, where)
    if dm.num_classes > n_outputs(model):
        raise LineageError(
            f"{where}: data {dm.name!r} has {dm.num_classes} classes but the "
            f"model has {n_outputs(model)} outputs (use modification=transfer)"
        )


def relative_change(before: nn.Module, after: nn.Module) -> float:
    """||theta_after - theta_before|| / ||theta_before|| over the floating parameters."""
    num = den = 0.0
    for (_, a), (_, b) in zip(before.named_parameters(), after.named_parameters()):
        num += float((b.detach().cpu() - a.detach().cpu()).double().pow(2).sum())
        den += float(a.detach().double().pow(2).sum())
    return (num / den) ** 0.5 if den else 0.0


# ---- checks the options dataclasses share (they run before any training) ----


def check_data_option(d: Any, where: str, key: str = "data") -> None:
    """A modification's `data`: null (the parent's data) or a mapping in the shape of
    conf/data/*.yaml naming a known dataset."""
    if d is None:
        return
    if not isinstance(d, Mapping):
        raise LineageError(
            f"{where}.{key}: must be null or a mapping like conf/data/"
            f"digits.yaml (name, root, classes, limit, ...); got {d!r}"
        )
    if "name" in d and not d.get("_target_"):
        DATASETS.get(d["name"])


def check_student(name: Any, where: str) -> None:
    from ..models import MODELS

    if name is not None and name not in MODELS:
        raise LineageError(
            f"{where}.student={name!r} is not a registered architecture; "
            f"valid: {', '.join(MODELS.names())}"
        )

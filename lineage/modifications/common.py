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
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from ..data import DATASETS, DataModule, datamodule_from_config
from ..errors import LineageError
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


def head_of(model: nn.Module) -> nn.Linear:
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise LineageError("model has no Linear .head (was it built by lineage.models.build?)")
    return head


def n_outputs(model: nn.Module) -> int:
    return head_of(model).out_features


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


def train_cfg(opts: Mapping[str, Any], epochs_key: str = "epochs") -> dict[str, Any]:
    """The training config (lineage.training keys) that a modification's options define."""
    return {
        "epochs": int(opts[epochs_key]),
        "lr": float(opts["lr"]),
        "optimizer": "adam",
        "scheduler": "none",
        "accelerator": "auto",  # Lightning picks CUDA when present, like the parent's training
    }


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
    """Inputs of `shape` (C, H, W) must be what the model was built for."""
    arch = getattr(model, "arch", {})
    want = (arch.get("in_channels"), *arch.get("input_size", ()))
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


# ---- option checks, used by the validators (they run before any training) ----


def need_int(opts: Mapping[str, Any], key: str, lo: int, hi: int | None = None) -> None:
    v = opts.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise LineageError(f"{opts['name']}.{key}={v!r}: must be an integer {rng}")


def need_float(
    opts: Mapping[str, Any], key: str, lo: float, hi: float | None = None, open_lo: bool = False
) -> None:
    v = opts.get(key)
    ok = False
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        ok = (v > lo if open_lo else v >= lo) and (hi is None or v <= hi)
    if not ok:
        rng = ("(" if open_lo else "[") + f"{lo}, " + (f"{hi}]" if hi is not None else "inf)")
        raise LineageError(f"{opts['name']}.{key}={v!r}: must be a number in {rng}")


def need_lr(opts: Mapping[str, Any], key: str = "lr") -> None:
    """A learning rate in (0, LR_MAX]: beyond it a step diverges to NaN weights, and the
    job would fail only after training (see config.LR_MAX, which train.lr shares)."""
    from ..config import LR_MAX

    need_float(opts, key, 0.0, LR_MAX, open_lo=True)


def need_choice(opts: Mapping[str, Any], key: str, choices: Iterable[str]) -> None:
    valid = list(choices)
    if opts.get(key) not in valid:
        raise LineageError(f"{opts['name']}.{key}={opts.get(key)!r}: valid are {valid}")


def need_data(opts: Mapping[str, Any], key: str = "data") -> None:
    """`data` is null (the parent's data) or a mapping in the shape of conf/data/*.yaml."""
    d = opts.get(key)
    if d is None:
        return
    if not isinstance(d, Mapping):
        raise LineageError(
            f"{opts['name']}.{key}: must be null or a mapping like conf/data/"
            f"digits.yaml (name, root, classes, limit, ...); got {d!r}"
        )
    if "name" in d:
        DATASETS.get(d["name"])


def need_arch(opts: Mapping[str, Any], key: str = "student") -> None:
    from ..models import MODELS

    name = opts.get(key)
    if name is not None and name not in MODELS:
        raise LineageError(
            f"{opts['name']}.{key}={name!r} is not a registered architecture; "
            f"valid: {', '.join(MODELS.names())}"
        )

"""pruning: remove weights by magnitude, then optionally recover by fine-tuning.

Counted tensors: the weights of the Linear/Conv layers, head included (not biases, not
BatchNorm).

- `global_unstructured` (default): `ratio` = fraction of those weights set to zero, by
  global L1 magnitude, through Lightning's ModelPruning callback. The masks stay on
  during the `finetune_epochs` of recovery (pruned weights get no update and stay zero)
  and are made permanent at the end.
- `l1_structured`: `ratio` = fraction of the channels / hidden units removed from every
  prunable layer (Torch-Pruning's channel sparsity), lowest filter L1 norm first. The
  model is rebuilt physically smaller through its architecture kwargs (mlp `hidden`,
  lenet `channels`/`hidden`, vgg11 `channels`, resnet18 `mid`: inner block widths, so the
  residual stream is untouched), so its model file rebuilds it. The kept indices of
  every pruned layer go into the lineage record as `kept_channels`
  {producer layer name: [indices into the parent's channels]}.

Effect keys (metrics.json derived.<key>):

| key              | meaning                                                          |
|------------------|------------------------------------------------------------------|
| sparsity         | measured fraction of counted weights that are zero (unstructured)|
|                  | or gone (structured), against the parent's count                 |
| channels_removed | channels / hidden units removed (structured only)                |
| channels_total   | prunable channels / hidden units of the parent (structured only) |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelPruning
from torch import nn

from ..adapters import permutation_spec
from ..data import DataModule
from ..errors import LineageError
from ..models.narrow import narrow, prunable
from ..settings import LR_MAX, knob
from ..training import Classifier, TrainCfg
from .common import (
    check_labels_fit,
    copy_parent,
    fit_model,
    n_outputs,
    param_layers,
    train_cfg,
)
from .registry import Derived, register


@dataclass
class PruningConf:
    name: str = "pruning"
    # global_unstructured (magnitude, permanent) | l1_structured (a physically smaller model)
    method: str = knob("global_unstructured", choices=("global_unstructured", "l1_structured"))
    finetune_epochs: int = knob(0, lo=0)  # recovery training; pruned weights stay zero
    lr: float = knob(1.0e-3, lo=0, hi=LR_MAX, ends="(]")  # recovery learning rate

    def check_ratio(self, ratio: float) -> None:
        if self.method == "l1_structured" and ratio >= 1.0:
            raise LineageError(
                "pruning: l1_structured needs ratio < 1 (every layer keeps a channel)"
            )


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros among the Linear/Conv weights."""
    zeros = total = 0
    for _, m in param_layers(model):
        zeros += int((m.weight == 0).sum())
        total += m.weight.numel()
    return zeros / total


def n_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for _, m in param_layers(model))


class PruneFirst(ModelPruning):
    """Lightning's ModelPruning, pruning once before the first step instead of at epoch
    ends, so the whole fit is recovery under fixed masks; permanent at the end."""

    def __init__(self, model: nn.Module, amount: float):
        super().__init__(
            "l1_unstructured",
            amount=amount,
            use_global_unstructured=True,
            parameters_to_prune=[(m, "weight") for _, m in param_layers(model)],
            apply_pruning=False,
            make_pruning_permanent=True,
        )
        self.fraction = amount

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.apply_pruning(self.fraction)


# The recovery fit of a pruned model: fit_model bound to the run's data, seed and logger.
Recover = Callable[..., nn.Module]


def _unstructured(model: nn.Module, ratio: float, tc: TrainCfg, recover: Recover | None) -> Derived:
    module = Classifier(model, tc, n_outputs(model))
    pruner = PruneFirst(model, ratio)
    if recover is not None:
        model = recover(module, callbacks=[pruner])
    else:  # no training: the same callback prunes and makes it permanent, without a Trainer
        pruner.setup(None, module, "fit")  # type: ignore[arg-type]
        pruner.apply_pruning(ratio)
        pruner.make_pruning_permanent(module)
    return Derived(model.eval(), {"sparsity": weight_sparsity(model)})


# ---- structured: whole units of the graph's permutation groups ----


def _kept(weight: torch.Tensor, ratio: float) -> torch.Tensor:
    """Indices (ascending) of the channels with the largest filter L1 norms."""
    n = weight.shape[0]
    keep = max(1, n - int(ratio * n + 0.5))
    norms = weight.detach().abs().flatten(1).sum(1)
    return torch.sort(torch.topk(norms, keep).indices).values


def shrink(model: nn.Module, ratio: float) -> tuple[nn.Module, dict[str, list[int]]]:
    """The physically smaller model and {producer layer: kept channel indices}: every
    prunable group of the fx graph (lineage.models.narrow.prunable) loses `ratio` of its
    units, lowest filter L1 norm first."""
    spec = permutation_spec(model)
    groups = prunable(spec, model)
    if not groups:
        why = f" ({spec.reason})" if spec.reason else ""
        raise LineageError(
            f"pruning: l1_structured found no prunable units in {type(model).__name__}{why}"
        )
    mods = dict(model.named_modules())
    kept = {g.name: _kept(mods[g.name].weight, ratio).tolist() for g in groups}
    small = narrow(model, kept, spec)
    arch = getattr(model, "arch", None)
    if isinstance(arch, dict):  # the file rebuilds the full architecture, then narrows it
        widths = {**arch.get("narrow", {}), **{g: len(k) for g, k in kept.items()}}
        small.arch = {**arch, "narrow": widths}  # type: ignore[assignment]
    return small.eval(), kept


def _structured(model: nn.Module, ratio: float, tc: TrainCfg, recover: Recover | None) -> Derived:
    before = n_weights(model)
    small, kept = shrink(model, ratio)
    if recover is not None:
        small = recover(Classifier(small, tc, n_outputs(small)))
    mods = dict(model.named_modules())
    total = sum(mods[name].weight.shape[0] for name in kept)
    removed = total - sum(len(v) for v in kept.values())
    effect = {
        "sparsity": 1 - n_weights(small) / before,
        "channels_removed": removed,
        "channels_total": total,
    }
    return Derived(small, effect, {"kept_channels": kept})


@register("pruning", PruningConf)
def pruning(
    parent: nn.Module,
    dm: DataModule,
    cfg: Mapping[str, Any],
    ratio: float,
    seed: int,
    logger: Any = None,
    train: Mapping[str, Any] | None = None,
) -> Derived:
    model = copy_parent(parent)
    tc = train_cfg(cfg, "finetune_epochs", train)
    recover: Recover | None = None  # finetune_epochs=0: no recovery
    if cfg["finetune_epochs"] > 0:
        check_labels_fit(dm, model, "pruning")
        recover = partial(fit_model, dm=dm, cfg=tc, seed=seed, logger=logger)
    prune = _structured if cfg["method"] == "l1_structured" else _unstructured
    return prune(model, ratio, tc, recover)

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
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelPruning
from torch import nn

from .. import models
from ..data import DataModule
from ..errors import LineageError
from ..training import Classifier
from .common import (
    check_labels_fit,
    copy_parent,
    fit_model,
    n_outputs,
    need_choice,
    need_int,
    need_lr,
    param_layers,
    train_cfg,
)
from .registry import Derived, register

DEFAULTS = {"method": "global_unstructured", "finetune_epochs": 0, "lr": 1.0e-3}
METHODS = ("global_unstructured", "l1_structured")


def _validate(opts: Mapping[str, Any], ratio: float) -> None:
    need_choice(opts, "method", METHODS)
    need_int(opts, "finetune_epochs", 0)
    need_lr(opts)
    if opts["method"] == "l1_structured" and ratio >= 1.0:
        raise LineageError("pruning: l1_structured needs ratio < 1 (every layer keeps a channel)")


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


def _unstructured(
    model: nn.Module, dm: DataModule, cfg: Mapping[str, Any], ratio: float, seed: int, logger: Any
) -> Derived:
    module = Classifier(model, train_cfg(cfg, "finetune_epochs"), n_outputs(model))
    pruner = PruneFirst(model, ratio)
    if cfg["finetune_epochs"] > 0:
        model = fit_model(module, dm, train_cfg(cfg, "finetune_epochs"), seed, logger, [pruner])
    else:  # no training: the same callback prunes and makes it permanent, without a Trainer
        pruner.setup(None, module, "fit")  # type: ignore[arg-type]
        pruner.apply_pruning(ratio)
        pruner.make_pruning_permanent(module)
    return Derived(model.eval(), {"sparsity": weight_sparsity(model)})


# ---- structured: channel groups per architecture ----


LAYERS = (nn.Linear, nn.Conv2d)  # the layer kinds the lineage architectures chain


@dataclass
class Group:
    """One prunable width: `producer`'s output channels, mirrored in `bn` (if any) and
    in `consumer`'s input (each channel feeding `spread` inputs, e.g. H*W after Flatten)."""

    kwarg: str
    producer: str
    consumer: str
    bn: str | None = None
    spread: int = 1


def _seq_groups(model: nn.Module, kwarg: str, spreads: dict[int, int]) -> list[Group]:
    """Consecutive Linear/Conv layers of `.features` then the head: every layer's output
    width but the head's is prunable; BN directly after a producer is mirrored."""
    mods = list(model.get_submodule("features").named_children())
    layers = [(i, f"features.{n}") for i, (n, m) in enumerate(mods) if isinstance(m, LAYERS)]
    names = [n for _, n in layers] + ["head"]
    out = []
    for j, (i, name) in enumerate(layers):
        nxt = mods[i + 1][1] if i + 1 < len(mods) else None
        bn = f"features.{mods[i + 1][0]}" if isinstance(nxt, nn.BatchNorm2d) else None
        out.append(Group(kwarg, name, names[j + 1], bn, spreads.get(j, 1)))
    return out


def _mlp(model: nn.Module) -> list[Group]:
    return _seq_groups(model, "hidden", {})


def _lenet(model: nn.Module) -> list[Group]:
    h, w = models.arch_of(model)["input_size"]
    groups = _seq_groups(model, "", {1: (h // 4) * (w // 4)})
    for g, kw in zip(groups, ("channels", "channels", "hidden", "hidden")):
        g.kwarg = kw
    return groups


def _vgg11(model: nn.Module) -> list[Group]:
    return _seq_groups(model, "channels", {})


def _resnet18(model: nn.Module) -> list[Group]:
    blocks = [n for n, m in model.get_submodule("features").named_children() if hasattr(m, "conv1")]
    return [
        Group("mid", f"features.{b}.conv1", f"features.{b}.conv2", f"features.{b}.bn1")
        for b in blocks
    ]


STRUCTURED: dict[str, Callable[[nn.Module], list[Group]]] = {
    "mlp": _mlp,
    "lenet": _lenet,
    "vgg11": _vgg11,
    "resnet18": _resnet18,
}


def _kept(weight: torch.Tensor, ratio: float) -> torch.Tensor:
    """Indices (ascending) of the channels with the largest filter L1 norms."""
    n = weight.shape[0]
    keep = max(1, n - int(ratio * n + 0.5))
    norms = weight.detach().abs().flatten(1).sum(1)
    return torch.sort(torch.topk(norms, keep).indices).values


def shrink(model: nn.Module, ratio: float) -> tuple[nn.Module, dict[str, list[int]]]:
    """The physically smaller model and {producer layer: kept channel indices}."""
    arch = models.arch_of(model)
    if arch["name"] not in STRUCTURED:
        raise LineageError(
            f"pruning: l1_structured supports {sorted(STRUCTURED)}, not {arch['name']!r}"
        )
    groups = STRUCTURED[arch["name"]](model)
    mods = dict(model.named_modules())
    slices: dict[str, list[tuple[int, torch.Tensor]]] = {}  # tensor -> [(dim, index)]
    kept: dict[str, list[int]] = {}
    kwargs = dict(arch["kwargs"])
    widths: dict[str, list[int]] = {}
    for g in groups:
        idx = _kept(mods[g.producer].weight, ratio)
        kept[g.producer] = idx.tolist()
        widths.setdefault(g.kwarg, []).append(len(idx))
        for t in ("weight", "bias"):
            slices.setdefault(f"{g.producer}.{t}", []).append((0, idx))
        if g.bn:
            for t in ("weight", "bias", "running_mean", "running_var"):
                slices.setdefault(f"{g.bn}.{t}", []).append((0, idx))
        cols = (idx[:, None] * g.spread + torch.arange(g.spread)).flatten()
        slices.setdefault(f"{g.consumer}.weight", []).append((1, cols))
    kwargs.update(widths)
    small = models.build(
        arch["name"], arch["num_classes"], arch["in_channels"], arch["input_size"], **kwargs
    )
    state = model.state_dict()
    new = {}
    for k in small.state_dict():
        t = state[k]
        for dim, idx in slices.get(k, []):
            t = t.index_select(dim, idx)
        new[k] = t.clone()
    small.load_state_dict(new)
    return small.eval(), kept


def _structured(
    model: nn.Module, dm: DataModule, cfg: Mapping[str, Any], ratio: float, seed: int, logger: Any
) -> Derived:
    before = n_weights(model)
    small, kept = shrink(model, ratio)
    if cfg["finetune_epochs"] > 0:
        tc = train_cfg(cfg, "finetune_epochs")
        small = fit_model(Classifier(small, tc, n_outputs(small)), dm, tc, seed, logger)
    mods = dict(model.named_modules())
    total = sum(mods[name].weight.shape[0] for name in kept)
    removed = total - sum(len(v) for v in kept.values())
    effect = {
        "sparsity": 1 - n_weights(small) / before,
        "channels_removed": removed,
        "channels_total": total,
    }
    return Derived(small, effect, {"kept_channels": kept})


@register("pruning", validate=_validate, defaults=DEFAULTS)
def pruning(
    parent: nn.Module,
    dm: DataModule,
    cfg: Mapping[str, Any],
    ratio: float,
    seed: int,
    logger: Any = None,
) -> Derived:
    model = copy_parent(parent)
    if cfg["finetune_epochs"] > 0:
        check_labels_fit(dm, model, "pruning")
    if cfg["method"] == "l1_structured":
        return _structured(model, dm, cfg, ratio, seed, logger)
    return _unstructured(model, dm, cfg, ratio, seed, logger)

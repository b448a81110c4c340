"""finetune: keep training the parent on its task (or on other data with the same labels).

`ratio` = fraction of the parameterised layers (Linear/Conv, head included), counted from
the output end, that train; the rest (BatchNorm included) is frozen through Lightning's
BaseFinetuning. ratio=0 trains only the head.

Effect keys (metrics.json derived.<key>):

| key                 | meaning                                                       |
|---------------------|---------------------------------------------------------------|
| trainable_fraction  | trainable parameterised layers / all of them                  |
| trainable_layers    | number of parameterised layers that trained                   |
| relative_change     | parameter change ||theta' - theta|| / ||theta||               |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data import DataModule
from ..settings import LR_MAX, knob
from ..training import Classifier
from ..utils import seed_all
from .common import (
    TrainTail,
    check_data_option,
    check_labels_fit,
    copy_parent,
    fit_model,
    fresh_seed,
    head_of,
    n_outputs,
    param_layers,
    relative_change,
    tail_count,
    task_data,
    train_cfg,
)
from .registry import Derived, register


@dataclass
class FinetuneConf:
    name: str = "finetune"
    epochs: int = knob(5, lo=0)
    lr: float = knob(1.0e-3, lo=0, hi=LR_MAX, ends="(]")
    reinit_head: bool = knob(False)  # start the head from fresh weights
    data: Any = knob(None)  # null: the parent's data; else a data config (other data, same labels)

    def check(self, where: str) -> None:
        check_data_option(self.data, where)


@register("finetune", FinetuneConf)
def finetune(
    parent: nn.Module,
    dm: DataModule,
    cfg: Mapping[str, Any],
    ratio: float,
    seed: int,
    logger: Any = None,
    train: Mapping[str, Any] | None = None,
) -> Derived:
    data = task_data(dm, cfg["data"])
    model = copy_parent(parent)
    check_labels_fit(data, model, "finetune")
    if cfg["reinit_head"]:
        # A fresh draw, not the parent's own initial head (that would be a shared init).
        with torch.random.fork_rng():
            seed_all(fresh_seed(seed, "finetune.head"))
            head_of(model)[1].reset_parameters()
    n = len(param_layers(model))
    k = tail_count(ratio, n)
    model = fit_model(
        Classifier(model, train_cfg(cfg, train=train), n_outputs(model)),
        data,
        train_cfg(cfg, train=train),
        seed,
        logger,
        [TrainTail(model, k)],
    )
    effect = {
        "trainable_fraction": k / n,
        "trainable_layers": k,
        "relative_change": relative_change(parent, model),
    }
    return Derived(model, effect)

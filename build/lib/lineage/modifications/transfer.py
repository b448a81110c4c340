"""transfer: move the parent to a new task (another class subset or another dataset with
the same input shape) under a fresh head with the new number of classes.

`ratio` = fraction of the parameterised layers (Linear/Conv, head included), counted
from the output end, that are tuned, as in the 10% / 50% / 100% settings of the AAAI 2025
benchmark; the new head always trains (ratio=0: a linear probe). The target task is
`data` (keys of conf/data/*.yaml over the parent's dataset; default classes [5..9]) and
goes into the lineage record as `task`.

Effect keys (metrics.json derived.<key>):

| key                | meaning                                                      |
|--------------------|--------------------------------------------------------------|
| new_num_classes    | outputs of the new head                                      |
| trainable_fraction | tuned parameterised layers / all of them                     |
| trainable_layers   | number of tuned parameterised layers                         |
| accuracy           | accuracy on the target task's test split (replaces the      |
|                    | parent-task accuracy, meaningless for a new label space)     |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..adapters import replace_submodule
from ..data import DataModule
from ..errors import LineageError
from ..models import arch_of
from ..settings import LR_MAX, knob
from ..training import Classifier, accuracy
from ..utils import seed_all
from .common import (
    TrainTail,
    check_data_option,
    check_input_shape,
    copy_parent,
    fit_model,
    fresh_seed,
    head_of,
    param_layers,
    tail_count,
    task_data,
    train_cfg,
)
from .registry import Derived, register


@dataclass
class TransferConf:
    name: str = "transfer"
    data: Any = knob({"classes": [5, 6, 7, 8, 9]})  # the target task (a data config)
    epochs: int = knob(5, lo=0)
    lr: float = knob(1.0e-3, lo=0, hi=LR_MAX, ends="(]")

    def check(self, where: str) -> None:
        if self.data is None:
            raise LineageError(
                "transfer.data: the target task is required (e.g. {classes: [5, 6, 7, "
                "8, 9]} or {name: mnist, root: ...})"
            )
        check_data_option(self.data, where)


@register("transfer", TransferConf)
def transfer(
    parent: nn.Module,
    dm: DataModule,
    cfg: Mapping[str, Any],
    ratio: float,
    seed: int,
    logger: Any = None,
    train: Mapping[str, Any] | None = None,
) -> Derived:
    target = task_data(dm, cfg["data"])
    model = copy_parent(parent)
    check_input_shape(target.input_shape, model, "transfer")
    with torch.random.fork_rng():
        seed_all(fresh_seed(seed, "transfer.head"))
        name, head = head_of(model)
        replace_submodule(model, name, nn.Linear(head.in_features, target.num_classes))
    if isinstance(getattr(model, "arch", None), dict):  # its file rebuilds the new head
        model.arch = {**arch_of(model), "num_classes": target.num_classes}  # type: ignore[assignment]
    n = len(param_layers(model))
    k = tail_count(ratio, n)
    tc = train_cfg(cfg, train=train)
    model = fit_model(
        Classifier(model, tc, target.num_classes), target, tc, seed, logger, [TrainTail(model, k)]
    )
    effect = {
        "new_num_classes": target.num_classes,
        "trainable_fraction": k / n,
        "trainable_layers": k,
        "accuracy": accuracy(model, target.test.x, target.test.y),
    }
    task = {
        "data": target.name,
        "classes": target.classes,
        "num_classes": target.num_classes,
        "spec": dict(cfg["data"]),
    }
    return Derived(model, effect, {"task": task})

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
from typing import Any

import torch
from torch import nn

from ..data import DataModule
from ..errors import LineageError
from ..models import arch_of
from ..training import Classifier, accuracy
from ..utils import seed_all
from .common import (
    TrainTail,
    check_input_shape,
    copy_parent,
    fit_model,
    fresh_seed,
    head_of,
    need_data,
    need_int,
    need_lr,
    param_layers,
    tail_count,
    task_data,
    train_cfg,
)
from .registry import Derived, register

DEFAULTS = {"data": {"classes": [5, 6, 7, 8, 9]}, "epochs": 5, "lr": 1.0e-3}


def _validate(opts: Mapping[str, Any], ratio: float) -> None:
    if opts.get("data") is None:
        raise LineageError(
            "transfer.data: the target task is required (e.g. {classes: [5, 6, 7, "
            "8, 9]} or {name: mnist, root: ...})"
        )
    need_data(opts)
    need_int(opts, "epochs", 0)
    need_lr(opts)


@register("transfer", validate=_validate, defaults=DEFAULTS)
def transfer(
    parent: nn.Module,
    dm: DataModule,
    cfg: Mapping[str, Any],
    ratio: float,
    seed: int,
    logger: Any = None,
) -> Derived:
    target = task_data(dm, cfg["data"])
    model = copy_parent(parent)
    check_input_shape(target.input_shape, model, "transfer")
    with torch.random.fork_rng():
        seed_all(fresh_seed(seed, "transfer.head"))
        model.head = nn.Linear(head_of(model).in_features, target.num_classes)
    model.arch = {**arch_of(model), "num_classes": target.num_classes}  # type: ignore[assignment]
    n = len(param_layers(model))
    k = tail_count(ratio, n)
    tc = train_cfg(cfg)
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

"""permute: a function-preserving random reordering of hidden units and channels.

An evasion attack on weight-space lineage tests: the network computes exactly what the
parent computes, yet its weights sit elsewhere. Units are reordered consistently through
BatchNorm, flattening and residual connections, with the permutation groups that
the fx graph gives (lineage.adapters.permutation_spec: the groups alignment undoes), for
any model the graph walk can follow.

`ratio` = fraction of the permutation groups (hidden layers; in resnet18 a stage's
residual stream is one group and each block's inner width another) that are permuted:
ceil(ratio * groups), a random subset. Each permuted group gets a random non-identity
order.

Effect keys (metrics.json derived.<key>):

| key              | meaning                                                          |
|------------------|------------------------------------------------------------------|
| max_output_diff  | max |logits(derived) - logits(parent)| on the test split         |
| permuted_groups  | number of groups permuted                                        |
| groups_total     | number of permutation groups of the architecture                 |
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..adapters import permutation_spec
from ..data import DataModule
from ..errors import LineageError
from ..evaluate.alignment import apply_permutation, random_permutations
from ..training import predict
from .common import copy_parent
from .registry import Derived, register


@dataclass
class PermuteConf:
    name: str = "permute"


@register("permute", PermuteConf)
def permute(
    parent: nn.Module,
    dm: DataModule,
    cfg: Mapping[str, Any],
    ratio: float,
    seed: int,
    logger: Any = None,
    train: Mapping[str, Any] | None = None,
) -> Derived:
    model = copy_parent(parent).eval()
    found = permutation_spec(model)
    spec = found.groups
    if not spec:
        raise LineageError(
            f"permute: {type(model).__name__} has no permutation groups to reorder "
            f"({found.reason or 'no hidden layers'})"
        )
    gen = torch.Generator().manual_seed(seed)
    k = math.ceil(ratio * len(spec) - 1e-9)
    chosen = sorted(torch.randperm(len(spec), generator=gen)[:k].tolist())
    names = [spec[i].name for i in chosen]
    perms = random_permutations(spec, names, gen)
    model.load_state_dict(apply_permutation(spec, model.state_dict(), perms))
    x = dm.test.x
    diff = float((predict(model, x) - predict(parent, x)).abs().max()) if len(x) else 0.0
    effect = {"max_output_diff": diff, "permuted_groups": k, "groups_total": len(spec)}
    return Derived(model, effect, {"permuted": names})

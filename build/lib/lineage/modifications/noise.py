"""noise: Gaussian weight noise, no training.

Every floating-point parameter tensor t (weights, biases, BatchNorm affine) gets
t + N(0, (ratio * std(t))^2), drawn from a generator seeded by `seed`. Buffers are left
alone: BatchNorm running statistics are data statistics, not learnt weights, and
integer buffers (num_batches_tracked) cannot take noise. One-element tensors have no
std and are skipped.

Effect keys (metrics.json derived.<key>):

| key             | meaning                                                         |
|-----------------|-----------------------------------------------------------------|
| relative_change | ||theta' - theta|| / ||theta|| over the parameters (about ratio |
|                 | when the tensors are centred)                                   |
| tensors_noised  | number of parameter tensors that received noise                 |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data import DataModule
from .common import copy_parent, relative_change
from .registry import Derived, register


@dataclass
class NoiseConf:
    name: str = "noise"


@register("noise", NoiseConf)
def noise(
    parent: nn.Module,
    dm: DataModule,
    cfg: Mapping[str, Any],
    ratio: float,
    seed: int,
    logger: Any = None,
    train: Mapping[str, Any] | None = None,
) -> Derived:
    model = copy_parent(parent).eval()
    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (ratio * p.std()))
                n += 1
    return Derived(model, {"relative_change": relative_change(parent, model), "tensors_noised": n})

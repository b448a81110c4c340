"""Weight-space cosine similarity: the cosine of the angle between the two models' flattened
float parameters. White-box and same-architecture only: when the parameter names or shapes
differ the score is NaN with details {'applicable': False}, never an exception."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import LineageError
from ..runtime import device_of
from .registry import baseline, not_applicable


@dataclass
class WeightsConf:
    """`baselines.weights`: no options (every float parameter is compared)."""


@baseline("weights", access="weights", options=WeightsConf)
def weights(
    source: nn.Module,
    suspect: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: WeightsConf,
    gen: torch.Generator,
) -> tuple[float, dict[str, Any]]:
    a = {k: p for k, p in source.named_parameters() if p.is_floating_point()}
    b = {k: p for k, p in suspect.named_parameters() if p.is_floating_point()}
    if a.keys() != b.keys():
        return not_applicable("different parameter names (architectures differ)")
    bad = [k for k in a if a[k].shape != b[k].shape]
    if bad:
        return not_applicable(f"different shapes for {bad[0]} and {len(bad) - 1} more")
    if not a:
        return not_applicable("the models have no float parameters")
    # Sums per tensor in float64: no flattened copy of a large model, no float32 round-off.
    dot = sq_a = sq_b = torch.zeros((), dtype=torch.float64, device=device_of(source))
    with torch.no_grad():
        for k, pa in a.items():
            va = pa.detach().to(dot.device, torch.float64).flatten()
            vb = b[k].detach().to(dot.device, torch.float64).flatten()
            dot, sq_a, sq_b = dot + va @ vb, sq_a + va @ va, sq_b + vb @ vb
    if not bool(torch.isfinite(torch.stack([dot, sq_a, sq_b])).all()):
        raise LineageError("weights: a model holds NaN or infinite parameters")
    norm = float(sq_a.sqrt() * sq_b.sqrt())
    cos = float(dot) / norm if norm > 0 else 0.0
    return cos, {"applicable": True, "n_params": sum(p.numel() for p in a.values())}

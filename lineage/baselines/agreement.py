"""Prediction agreement: the share of test points on which both models give the same top-1
label. The simplest black-box baseline; it needs only the suspect's labels."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .registry import baseline, label_agreement, paired_logits, positive_int, subset


@baseline(
    "agreement", access="labels", options={"n_points": positive_int, "batch_size": positive_int}
)
def agreement(
    source: nn.Module,
    suspect: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: dict[str, Any],
    gen: torch.Generator,
) -> tuple[float, dict[str, Any]]:
    xs, _ = subset(x, y, cfg["n_points"], gen)
    a, b = paired_logits(source, suspect, xs, cfg["batch_size"])
    return label_agreement(a, b), {"n_points": len(xs)}

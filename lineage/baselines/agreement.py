"""Prediction agreement: the share of test points on which both models give the same top-1
label. The simplest black-box baseline; it needs only the suspect's labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..settings import knob
from .registry import baseline, label_agreement, paired_logits, subset


@dataclass
class AgreementConf:
    """`baselines.agreement`: its options (defaults and ranges, lineage.settings)."""

    n_points: int = knob(1000, lo=1)  # random test points asked
    batch_size: int = knob(512, lo=1)


@baseline("agreement", access="labels", options=AgreementConf)
def agreement(
    source: nn.Module,
    suspect: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AgreementConf,
    gen: torch.Generator,
) -> tuple[float, dict[str, Any]]:
    xs, _ = subset(x, y, cfg.n_points, gen)
    a, b = paired_logits(source, suspect, xs, cfg.batch_size)
    return label_agreement(a, b), {"n_points": len(xs)}

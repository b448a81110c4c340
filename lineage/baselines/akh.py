"""AKH, the "Anna Karenina heuristic" (AAAI 2025, Model Lineage Closeness Analysis): all
good models are right in the same way, each is wrong in its own way. So the source's
errors fingerprint it: on inputs the SOURCE misclassifies (its natural test errors, then
augmented test images, shifted and noised, that it gets wrong) the score is the rate at
which the suspect gives the same wrong label. Labels only; 1 for the source itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..settings import knob
from .registry import (
    ErrorProbes,
    baseline,
    error_probes,
    label_agreement,
    not_applicable,
    paired_logits,
)


@dataclass
class AKHConf(ErrorProbes):
    """`baselines.akh`: its options (defaults and ranges, lineage.settings)."""

    max_rounds: int = knob(20, lo=0)


@baseline("akh", access="labels", options=AKHConf)
def akh(
    source: nn.Module,
    suspect: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AKHConf,
    gen: torch.Generator,
) -> tuple[float, dict[str, Any]]:
    xe, found = error_probes(source, x, y, cfg, gen)
    if len(xe) == 0:
        return not_applicable("the source misclassifies none of the probes", **found)
    a, b = paired_logits(source, suspect, xe, cfg.batch_size)
    return label_agreement(a, b), {"applicable": True, **found}

"""SAC-w (Guan et al., NeurIPS 2022, "Are You Stealing My Model? Sample Correlation for
Fingerprinting Deep Neural Networks"), the variant on wrongly classified samples.

Probes are inputs the SOURCE misclassifies: its natural test errors, topped up with
augmented test images it gets wrong when the test set holds fewer than n_points (a good
source makes few errors). Each model's sample-correlation matrix holds the cosine
similarity between its outputs on every pair of probes; the distance is the mean absolute
difference between the two matrices, and score = -distance (0 for the source itself).
Errors are where models differ most, so a derived model keeps the source's pattern of
correlations there and an independent one does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..settings import knob
from .registry import (
    ErrorProbes,
    baseline,
    error_probes,
    not_applicable,
    paired_logits,
)


def correlation_matrix(out: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between the outputs on every pair of samples (N x N)."""
    unit = F.normalize(out, dim=1)
    return unit @ unit.T


@dataclass
class SACwConf(ErrorProbes):
    """`baselines.sacw`: its options (defaults and ranges, lineage.settings)."""

    n_points: int = knob(50, lo=1)  # the paper's 50 wrongly classified samples
    output: str = knob("logits", choices=["logits", "softmax"])  # the outputs correlated


@baseline("sacw", access="outputs", options=SACwConf)
def sacw(
    source: nn.Module,
    suspect: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: SACwConf,
    gen: torch.Generator,
) -> tuple[float, dict[str, Any]]:
    xe, found = error_probes(source, x, y, cfg, gen)
    if len(xe) < 2:
        return not_applicable(
            "the source misclassifies fewer than 2 probes; a correlation matrix needs at least 2",
            **found,
        )
    a, b = paired_logits(source, suspect, xe, cfg.batch_size)
    if cfg.output == "softmax":
        a, b = a.softmax(1), b.softmax(1)
    distance = float((correlation_matrix(a) - correlation_matrix(b)).abs().mean())
    # 0.0 - d rather than -d: the source itself scores a plain 0.0, not -0.0.
    return 0.0 - distance, {"applicable": True, "distance": distance, **found}

"""The evidence functions on their own, with keyword options (defaults as documented in
lineage.evaluate.basin.settings and lineage.evaluate.closeness.settings)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .evaluate.basin import DeterminationResult
from .evaluate.basin import determine as _determine
from .evaluate.closeness import ClosenessResult
from .evaluate.closeness import closeness as _closeness
from .models.files import load_model

__all__ = ["closeness", "determine", "load_model"]


def determine(
    parent: nn.Module,
    suspect: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    reference_barriers: Sequence[float | None] | None = None,
    record: Mapping[str, Any] | None = None,
    head: str | None = None,
    **options: Any,
) -> DeterminationResult:
    """The same-basin test of `suspect` against `parent` on probe points (x, y). Options:
    alphas, bn_reestimate, align, gamma, ... (DeterminationConf)."""
    return _determine(parent, suspect, x, y, options, reference_barriers, None, record, head)


def closeness(
    source: nn.Module, suspect: Any, x: torch.Tensor, y: torch.Tensor, **options: Any
) -> ClosenessResult:
    """Lineage closeness of `suspect` (a module or a black box) to `source` on (x, y).
    Options: d_max, step, tol, max_points, ci_tol, seed, ... (ClosenessConf)."""
    return _closeness(source, suspect, x, y, options)

"""The evidence functions on their own, with keyword options (defaults as documented in
lineage.evaluate.basin.settings and lineage.evaluate.closeness.settings)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .errors import LineageError
from .evaluate.basin import BasinResult
from .evaluate.basin import determine as _determine
from .evaluate.closeness import ClosenessResult
from .evaluate.closeness import closeness as _closeness
from .models.files import load_model
from .modifications import Derived
from .modifications import derive as _derive

__all__ = ["closeness", "derive", "determine", "load_model"]


def determine(
    parent: nn.Module,
    suspect: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    reference_barriers: Sequence[float | None] | None = None,
    record: Mapping[str, Any] | None = None,
    head: str | None = None,
    **options: Any,
) -> BasinResult:
    """The same-basin test of `suspect` against `parent` on probe points (x, y). Options:
    alphas, bn_reestimate, align, gamma, ... (DeterminationConf)."""
    return _determine(parent, suspect, x, y, options, reference_barriers, None, record, head)


def closeness(
    source: nn.Module, suspect: Any, x: torch.Tensor, y: torch.Tensor, **options: Any
) -> ClosenessResult:
    """Lineage closeness of `suspect` (a module or a black box) to `source` on (x, y).
    Options: d_max, step, tol, max_points, ci_tol, seed, ... (ClosenessConf)."""
    return _closeness(source, suspect, x, y, options)


def derive(
    model: nn.Module,
    modification: str,
    ratio: float = 0.5,
    data: Any = None,
    seed: int = 0,
    **options: Any,
) -> Derived:
    """A model derived from `model` by a registered modification (finetune, pruning,
    distill, quantize, permute, noise, ...; `options` are its own, e.g. method=
    "l1_structured"). `data` is a DataModule or tensors (x, y[, x_test, y_test]) for the
    modifications that train; `model` itself is never changed."""
    from .data import DataModule, from_tensors

    if data is not None and not isinstance(data, DataModule):
        data = from_tensors(*data)
    if data is None:
        raise LineageError("derive: pass data=(x, y) (or a DataModule) for the modification")
    return _derive(model, data, {"name": modification, **options}, ratio, seed)

"""Architecture registry. Every model has `.features` (the trunk) and `.head` (the last
Linear), and remembers how it was built in `.arch`, so model files can rebuild it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..errors import LineageError
from ..registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("architecture")
register = MODELS.register


def build(
    name: str,
    num_classes: int,
    in_channels: int = 1,
    input_size: int | Sequence[int] = 28,
    **kw: Any,
) -> nn.Module:
    """Build a registered architecture. `input_size` is H (square) or (H, W)."""
    fn = MODELS.get(name)
    size = (int(input_size), int(input_size)) if isinstance(input_size, int) else tuple(input_size)
    if num_classes < 1 or in_channels < 1:
        raise LineageError(f"{name}: num_classes and in_channels must be positive")
    try:
        model = fn(num_classes=num_classes, in_channels=in_channels, input_size=size, **kw)
    except TypeError as e:
        raise LineageError(f"architecture {name!r}: bad arguments {sorted(kw)} ({e})") from None
    model.arch = {  # type: ignore[assignment]
        "name": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "input_size": list(size),
        "kwargs": dict(kw),
    }
    return model


def arch_of(model: nn.Module) -> dict[str, Any]:
    arch = getattr(model, "arch", None)
    if not isinstance(arch, dict):
        raise LineageError("model was not built by lineage.models.build (no .arch record)")
    return arch


def head_of(model: nn.Module) -> nn.Linear:
    """The last Linear of a lineage model (every architecture here has one as `.head`)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise LineageError("model has no Linear .head (was it built by lineage.models.build?)")
    return head


def scale_widths(name: str, kwargs: dict[str, Any], factor: float) -> dict[str, Any]:
    """`name`'s kwargs (its defaults under `kwargs`) with every width times `factor`.

    Widths are the integer sequences (channels, hidden sizes) and the float `width`
    multiplier; each scaled integer is rounded and kept >= 1, so a layer never vanishes."""
    params = inspect.signature(MODELS.get(name)).parameters
    full = {
        k: p.default
        for k, p in params.items()
        if k not in ("num_classes", "in_channels", "input_size")
        and p.default is not inspect.Parameter.empty
    }
    full.update(kwargs)
    out: dict[str, Any] = {}
    for k, v in full.items():
        if k == "width" and isinstance(v, int | float):
            out[k] = float(v) * factor
        elif isinstance(v, list | tuple) and all(isinstance(i, int) for i in v):
            out[k] = [max(1, round(i * factor)) for i in v]
        else:
            out[k] = v
    return out

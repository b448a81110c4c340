"""Modification registry: each modification is one file and one decorated function.

A modification takes the parent (never mutated: work on a copy), the parent's
datamodule, its own config group (a dict), the top-level `ratio` in [0, 1] and a seed,
and returns a `Derived`: the model plus the measured effect (logged as derived.*).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from ..data import DataModule
from ..errors import LineageError
from ..registry import Registry


@dataclass
class Derived:
    model: nn.Module
    effect: dict[str, Any] = field(default_factory=dict)  # -> metrics.json derived.<key>
    record: dict[str, Any] = field(default_factory=dict)  # extra lineage-record fields


class Modification(Protocol):
    def __call__(self, parent: nn.Module, dm: DataModule, cfg: Mapping[str, Any], ratio: float,
                 seed: int, logger: Any = None) -> Derived: ...


MODIFICATIONS: Registry[Modification] = Registry("modification")
# Optional cheap checks run before any training, so bad input fails fast.
VALIDATORS: dict[str, Callable[[Mapping[str, Any], float], None]] = {}


def register(name: str, validate: Callable[[Mapping[str, Any], float], None] | None = None
             ) -> Callable[[Modification], Modification]:
    if validate is not None:
        VALIDATORS[name] = validate
    return MODIFICATIONS.register(name)


def check_ratio(ratio: Any, where: str = "ratio") -> float:
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise LineageError(f"{where}={ratio!r} is not a number; it must lie in [0, 1]") from None
    if not 0.0 <= r <= 1.0:
        raise LineageError(f"{where}={r} is outside its range [0, 1]")
    return r


def validate(cfg: Mapping[str, Any], ratio: Any) -> float:
    """Fail before training: unknown modification, ratio out of range, bad options."""
    MODIFICATIONS.get(cfg["name"])
    r = check_ratio(ratio)
    if cfg["name"] in VALIDATORS:
        VALIDATORS[cfg["name"]](cfg, r)
    return r


def derive(parent: nn.Module, dm: DataModule, cfg: Mapping[str, Any], ratio: float, seed: int,
           logger: Any = None) -> Derived:
    r = validate(cfg, ratio)
    return MODIFICATIONS.get(cfg["name"])(parent, dm, cfg, r, seed, logger)

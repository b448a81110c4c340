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
    # A real deployed artefact (e.g. torch's int8 dynamic-quantized model) that is only
    # queried, as a black-box suspect; `model` stays the float twin for weight-space tests.
    blackbox: nn.Module | None = None


class Modification(Protocol):
    def __call__(
        self,
        parent: nn.Module,
        dm: DataModule,
        cfg: Mapping[str, Any],
        ratio: float,
        seed: int,
        logger: Any = None,
    ) -> Derived: ...


MODIFICATIONS: Registry[Modification] = Registry("modification")
# Optional cheap checks run before any training, so bad input fails fast.
VALIDATORS: dict[str, Callable[[Mapping[str, Any], float], None]] = {}
# Optional defaults: a modification that registers them gets every option filled in, and
# a misspelt option fails (chain steps and tests pass only the options they change).
DEFAULTS: dict[str, dict[str, Any]] = {}


def register(
    name: str,
    validate: Callable[[Mapping[str, Any], float], None] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Callable[[Modification], Modification]:
    if validate is not None:
        VALIDATORS[name] = validate
    if defaults is not None:
        DEFAULTS[name] = dict(defaults)
    return MODIFICATIONS.register(name)


def options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """`cfg` over the modification's registered defaults; unknown option names fail."""
    if not isinstance(cfg, Mapping) or "name" not in cfg:
        raise LineageError(f"a modification config needs a 'name'; got {cfg!r}")
    MODIFICATIONS.get(cfg["name"])
    known = DEFAULTS.get(cfg["name"])
    if known is None:
        return dict(cfg)
    extra = sorted(set(cfg) - set(known) - {"name"})
    if extra:
        raise LineageError(
            f"modification {cfg['name']!r}: unknown option(s) {extra}; valid: {sorted(known)}"
        )
    return {**known, **cfg}


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
    opts = options(cfg)
    r = check_ratio(ratio)
    if opts["name"] in VALIDATORS:
        VALIDATORS[opts["name"]](opts, r)
    return r


def derive(
    parent: nn.Module,
    dm: DataModule,
    cfg: Mapping[str, Any],
    ratio: float,
    seed: int,
    logger: Any = None,
) -> Derived:
    r = validate(cfg, ratio)
    return MODIFICATIONS.get(cfg["name"])(parent, dm, options(cfg), r, seed, logger)

"""Modification registry: each modification is one file and one decorated function.

A modification takes the parent (never mutated: work on a copy), the parent's
datamodule, its own config group (a dict), the top-level `ratio` in [0, 1] and a seed,
and returns a `Derived`: the model plus the measured effect (logged as derived.*).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from torch import nn

from ..data import DataModule
from ..errors import LineageError
from ..registry import Registry
from ..settings import from_mapping


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
        train: Mapping[str, Any] | None = None,
    ) -> Derived: ...


MODIFICATIONS: Registry[Modification] = Registry("modification")
# Each modification's options: a dataclass that is their one home (defaults and checks);
# conf/modification/<name>.yaml registers it as the group's schema and only selects it.
OPTIONS: dict[str, type] = {}
# Modifications whose model starts from fresh weights (a student trained from scratch): no
# weight-space evidence can link it to the parent, only the function's.
FRESH_WEIGHTS: set[str] = set()


def register(
    name: str, options: type, fresh_weights: bool = False
) -> Callable[[Modification], Modification]:
    OPTIONS[name] = options
    if fresh_weights:
        FRESH_WEIGHTS.add(name)
    return MODIFICATIONS.register(name)


def fresh_weight_modifications() -> tuple[str, ...]:
    """The registered modifications whose model starts from fresh weights."""
    return tuple(sorted(FRESH_WEIGHTS))


def options_of(cfg: Mapping[str, Any]) -> Any:
    """The modification's options dataclass from `cfg` over its defaults: unknown names,
    wrong types and out-of-range values fail, naming the option."""
    if not isinstance(cfg, Mapping) or "name" not in cfg:
        raise LineageError(f"a modification config needs a 'name'; got {cfg!r}")
    MODIFICATIONS.get(cfg["name"])
    return from_mapping(OPTIONS[cfg["name"]], cfg, str(cfg["name"]))


def options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of the modification, checked (see options_of)."""
    return asdict(options_of(cfg))


def check_ratio(ratio: Any, where: str = "ratio") -> float:
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise LineageError(f"{where}={ratio!r} is not a number; it must lie in [0, 1]") from None
    if not 0.0 <= r <= 1.0:
        raise LineageError(f"{where}={r} is outside its range [0, 1]")
    return r


def validate(cfg: Mapping[str, Any], ratio: Any) -> float:
    """Fail before training: unknown modification, ratio out of range, bad options (the
    options' own checks, and `check_ratio` where the ratio constrains them)."""
    opts = options_of(cfg)
    r = check_ratio(ratio)
    with_ratio = getattr(opts, "check_ratio", None)
    if with_ratio is not None:
        with_ratio(r)
    return r


def derive(
    parent: nn.Module,
    dm: DataModule,
    cfg: Mapping[str, Any],
    ratio: float,
    seed: int,
    logger: Any = None,
    train: Mapping[str, Any] | None = None,
) -> Derived:
    r = validate(cfg, ratio)
    return MODIFICATIONS.get(cfg["name"])(parent, dm, options(cfg), r, seed, logger, train)

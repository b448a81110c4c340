"""Structured-config schemas, registered in Hydra's ConfigStore.

Each YAML in conf/<group>/ starts from its schema (`defaults: [/schema/<group>@_here_, ...]`), so a
wrong type fails while Hydra composes the config, naming the key. Ranges, which types
cannot express, are checked by `check_ranges` right after composition, before any data is
loaded or model trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from .errors import LineageError


@dataclass
class DataConf:
    name: str = MISSING
    root: str = "data"
    classes: list[int] | None = None
    limit: int | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    batch_size: int = 128
    download: bool = False
    epochs: int = 10


@dataclass
class MLPConf:
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [128, 128])


@dataclass
class LeNetConf:
    name: str = "lenet"
    channels: list[int] = field(default_factory=lambda: [6, 16])
    hidden: list[int] = field(default_factory=lambda: [120, 84])


@dataclass
class ResNetConf:
    name: str = "resnet18"
    width: float = 1.0
    mid: list[int] | None = None


@dataclass
class VGGConf:
    name: str = "vgg11"
    width: float = 0.25
    channels: list[int] | None = None


@dataclass
class TrainConf:
    epochs: int = 10
    lr: float = 3e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    accelerator: str = "auto"


@dataclass
class RootConf:
    """Top-level keys; the groups are typed by their own schemas."""

    name: str = "default"
    seed: int = 0
    ratio: float = 0.5
    n_independent: int = 2
    force: bool = False
    progress: bool = True
    data: Any = MISSING
    model: Any = MISSING
    train: Any = MISSING
    modification: Any = MISSING
    determination: Any = MISSING
    closeness: Any = MISSING
    logger: Any = MISSING
    paths: Any = MISSING


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="root_schema", node=RootConf)
    cs.store(group="schema", name="data", node=DataConf)
    cs.store(group="schema", name="train", node=TrainConf)
    for name, node in (
        ("mlp", MLPConf),
        ("lenet", LeNetConf),
        ("resnet18", ResNetConf),
        ("vgg11", VGGConf),
    ):
        cs.store(group="schema/model", name=name, node=node)


# key -> (low, high, inclusive-low) for numbers that types alone cannot police.
RANGES: dict[str, tuple[float, float]] = {
    "data.val_fraction": (0.0, 0.9),
    "data.batch_size": (1, 2**20),
    "data.epochs": (0, 10**6),
    "train.epochs": (0, 10**6),
    "train.lr": (0.0, 10.0),
    "train.weight_decay": (0.0, 1.0),
    "n_independent": (0, 100),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "train.optimizer": ("adam", "sgd"),
    "train.scheduler": ("none", "cosine"),
    "train.accelerator": ("auto", "cpu", "gpu", "cuda"),
}


def _get(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def check_ranges(cfg: Mapping[str, Any]) -> None:
    """Raise LineageError naming the first key whose value is out of range."""
    for key, (lo, hi) in RANGES.items():
        v = _get(cfg, key)
        if v is not None and not lo <= v <= hi:
            raise LineageError(f"{key}={v} is outside its range [{lo}, {hi}]")
    for key, options in CHOICES.items():
        v = _get(cfg, key)
        if v is not None and v not in options:
            raise LineageError(f"{key}={v!r}: valid are {', '.join(options)}")
    limit = _get(cfg, "data.limit")
    if limit is not None and limit < 1:
        raise LineageError(f"data.limit={limit} must be a positive number of samples")

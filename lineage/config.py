"""Structured-config schemas, registered in Hydra's ConfigStore.

Each YAML in conf/<group>/ starts from its schema (`defaults: [/schema/<group>@_here_, ...]`;
model and modification have one schema per name, `/schema/<group>/<name>`), so a wrong type
fails while Hydra composes the config, naming the key. Ranges, which types cannot express,
are checked by `check_ranges` right after composition, before any data is loaded or model
trained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from .errors import LineageError
from .evaluate.basin.settings import DeterminationConf
from .evaluate.closeness.settings import ClosenessConf
from .settings import LR_MAX, SEED_MAX, from_mapping


@dataclass
class DataConf:
    name: str = MISSING
    _target_: str | None = None  # a dataset factory (see lineage.data.base) instead of `name`
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
    _target_: str | None = None  # an importable factory replaces the registered `name`
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [128, 128])


@dataclass
class LeNetConf:
    _target_: str | None = None  # an importable factory replaces the registered `name`
    name: str = "lenet"
    channels: list[int] = field(default_factory=lambda: [6, 16])
    hidden: list[int] = field(default_factory=lambda: [120, 84])


@dataclass
class ResNetConf:
    _target_: str | None = None  # an importable factory replaces the registered `name`
    name: str = "resnet18"
    width: float = 1.0
    mid: list[int] | None = None


@dataclass
class VGGConf:
    _target_: str | None = None  # an importable factory replaces the registered `name`
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
    n_independent: int = 3
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
    register_resolvers()
    cs = ConfigStore.instance()
    cs.store(name="root_schema", node=RootConf)
    cs.store(group="hydra/schema", name="data", node=DataConf)
    cs.store(group="hydra/schema", name="train", node=TrainConf)
    for name, node in (
        ("mlp", MLPConf),
        ("lenet", LeNetConf),
        ("resnet18", ResNetConf),
        ("vgg11", VGGConf),
    ):
        cs.store(group="hydra/schema/model", name=name, node=node)
    from .modifications import registry  # importing the package registers every one

    for name, options in registry.OPTIONS.items():
        cs.store(group="hydra/schema/modification", name=name, node=options)
    cs.store(group="hydra/schema", name="determination", node=DeterminationConf)
    cs.store(group="hydra/schema", name="closeness", node=ClosenessConf)


INF = math.inf

# key -> (low, high, ends) for numbers that types alone cannot police. `ends` reads as
# interval notation: "[]" closed; "(" excludes the low end (a scale or tolerance that must
# be strictly positive), ")" the high end.
RANGES: dict[str, tuple[float, float, str]] = {
    "seed": (0, SEED_MAX, "[]"),
    "ratio": (0, 1, "[]"),
    "n_independent": (0, 100, "[]"),
    "data.val_fraction": (0.0, 0.9, "[]"),
    "data.batch_size": (1, 2**20, "[]"),
    "data.epochs": (0, 10**6, "[]"),
    "train.epochs": (0, 10**6, "[]"),
    "train.lr": (0.0, LR_MAX, "[]"),
    "train.weight_decay": (0.0, 1.0, "[]"),
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


def _inside(v: float, lo: float, hi: float, ends: str) -> bool:
    above = lo < v if ends[0] == "(" else lo <= v
    below = v < hi if ends[1] == ")" else v <= hi
    return above and below


def check_ranges(cfg: Mapping[str, Any]) -> None:
    """Raise LineageError naming the first key whose value is out of range.

    Absent and null values are skipped: a null means "derive it" wherever a schema allows it.
    Keys added with Hydra's `+` bypass the schema, so unknown keys of the evaluator groups
    are refused here too (the modification's own are refused by its `validate`).
    """
    # The evaluators' groups are checked by their own dataclasses (types, ranges, unknown
    # keys, which Hydra's `+` could add past the schema).
    for group, schema in (("determination", DeterminationConf), ("closeness", ClosenessConf)):
        given = _get(cfg, group)
        if isinstance(given, Mapping):
            from_mapping(schema, given, group)
    for key, (lo, hi, ends) in RANGES.items():
        v = _get(cfg, key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise LineageError(f"{key}={v!r} is not a number")
        if not _inside(v, lo, hi, ends):
            raise LineageError(f"{key}={v} is outside its range {ends[0]}{lo}, {hi}{ends[1]}")
    for key, options in CHOICES.items():
        v = _get(cfg, key)
        if v is not None and v not in options:
            raise LineageError(f"{key}={v!r}: valid are {', '.join(options)}")
    check_classes(_get(cfg, "data.classes"), "data.classes")
    limit = _get(cfg, "data.limit")
    if limit is not None and limit < 1:
        raise LineageError(f"data.limit={limit} must be a positive number of samples")


def check_classes(classes: Any, where: str) -> None:
    """null (every class), or at least two distinct non-negative class labels: a
    classifier of one class has nothing to learn, and its metrics are undefined."""
    if classes is None:
        return
    ok = isinstance(classes, list | tuple) and all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 2**16 for c in classes
    )
    if not ok:
        raise LineageError(f"{where}={classes!r}: must be a list of class labels (integers)")
    if len(set(classes)) < 2 or len(set(classes)) != len(classes):
        raise LineageError(f"{where}={list(classes)}: must list at least two distinct classes")


def register_resolvers() -> None:
    """`${safe_dirname:...}` in conf/config.yaml: run and sweep folders named from long
    overrides stay under the file system's 255-byte name limit (utils.safe_dirname)."""
    from omegaconf import OmegaConf

    from .utils import safe_dirname

    if not OmegaConf.has_resolver("safe_dirname"):
        OmegaConf.register_new_resolver("safe_dirname", safe_dirname)

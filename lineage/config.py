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
from dataclasses import dataclass, field, fields
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
class ModificationConf:
    """What every modification has. Each one's own schema below holds exactly its options
    (its Python DEFAULTS, which its YAML mirrors), so a misspelt option fails at composition;
    ranges are checked by the modification's validator before any training. Nested options
    (`data`, `student_kwargs`) are `Any`: OmegaConf cannot merge a mapping into a typed
    Optional[dict] that holds null, and their keys are checked by the modification."""

    name: str = MISSING


@dataclass
class AdversarialConf(ModificationConf):
    name: str = "adversarial"
    eps: float = 0.1
    steps: int = 5
    step_size: float | None = None
    epochs: int = 5
    lr: float = 1.0e-3
    eval_samples: int = 256


@dataclass
class ChainConf(ModificationConf):
    name: str = "chain"
    # Steps are {name, ratio, ...options} of differing modifications: checked by chain.plan.
    steps: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"name": "pruning", "ratio": 0.5},
            {"name": "finetune", "ratio": 0.3},
            {"name": "quantize", "ratio": 0.5},
        ]
    )


@dataclass
class DistillConf(ModificationConf):
    name: str = "distill"
    student: str | None = None
    student_kwargs: Any = None
    temperature: float = 4.0
    ce_weight: float = 0.0
    epochs: int = 10
    lr: float = 3.0e-3
    data: Any = None
    mixup: bool = True


@dataclass
class ExtractionConf(ModificationConf):
    name: str = "extraction"
    student: str | None = None
    student_kwargs: Any = None
    query: str = "train"
    data: Any = None
    noise_std: float = 0.1
    shift: int = 1
    epochs: int = 10
    lr: float = 3.0e-3


@dataclass
class FinetuneConf(ModificationConf):
    name: str = "finetune"
    epochs: int = 5
    lr: float = 1.0e-3
    reinit_head: bool = False
    data: Any = None


@dataclass
class NoiseConf(ModificationConf):
    name: str = "noise"


@dataclass
class PermuteConf(ModificationConf):
    name: str = "permute"


@dataclass
class PruningConf(ModificationConf):
    name: str = "pruning"
    method: str = "global_unstructured"
    finetune_epochs: int = 0
    lr: float = 1.0e-3


@dataclass
class QuantizeConf(ModificationConf):
    name: str = "quantize"
    bits: int | None = None
    backend: str = "none"


@dataclass
class TransferConf(ModificationConf):
    name: str = "transfer"
    data: Any = field(default_factory=lambda: {"classes": [5, 6, 7, 8, 9]})
    epochs: int = 5
    lr: float = 1.0e-3


MODIFICATION_SCHEMAS: dict[str, type[ModificationConf]] = {
    "adversarial": AdversarialConf,
    "chain": ChainConf,
    "distill": DistillConf,
    "extraction": ExtractionConf,
    "finetune": FinetuneConf,
    "noise": NoiseConf,
    "permute": PermuteConf,
    "pruning": PruningConf,
    "quantize": QuantizeConf,
    "transfer": TransferConf,
}


@dataclass
class DeterminationConf:
    alphas: int = 11
    refine: int = 0
    probe_points: int = 2000
    batch_size: int = 500
    bn_reestimate: bool = True
    bn_batches: int = 8
    align: bool = True
    align_rounds: int = 20
    seed: int = 0
    gamma: float = 0.25
    fallback_rel: float = 0.02
    head_steps: int = 50


@dataclass
class ClosenessConf:
    d_max: float = 10.0
    step: float = 0.1
    tol: float = 1.0e-5
    search: str = "brent"
    max_chunk: int = 8
    batch_size: int | None = None
    allow_class_mismatch: bool = False
    strategy: str = "stratified"
    ci_tol: float = 0.02
    batch_points: int = 100
    min_points: int = 100
    max_points: int = 2000
    n_boot: int = 1000
    filter: bool = True
    filter_pool: int | None = None
    seed: int = 0
    progress: bool = True


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
    cs.store(group="schema", name="data", node=DataConf)
    cs.store(group="schema", name="train", node=TrainConf)
    for name, node in (
        ("mlp", MLPConf),
        ("lenet", LeNetConf),
        ("resnet18", ResNetConf),
        ("vgg11", VGGConf),
    ):
        cs.store(group="schema/model", name=name, node=node)
    for name, mod in MODIFICATION_SCHEMAS.items():
        cs.store(group="schema/modification", name=name, node=mod)
    cs.store(group="schema", name="determination", node=DeterminationConf)
    cs.store(group="schema", name="closeness", node=ClosenessConf)


INF = math.inf
SEED_MAX = 2**31 - 1  # references add 1000 * (i + 1); Lightning and NumPy take < 2**32
LR_MAX = 10.0  # every learning rate, the training's and each modification's

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
    # the path needs both endpoints; every count of points or batches is positive
    "determination.alphas": (2, INF, "[)"),
    "determination.refine": (0, INF, "[)"),
    "determination.probe_points": (1, INF, "[)"),
    "determination.batch_size": (1, INF, "[)"),
    "determination.bn_batches": (1, INF, "[)"),
    "determination.align_rounds": (1, INF, "[)"),
    "determination.head_steps": (1, INF, "[)"),
    "determination.seed": (0, SEED_MAX, "[]"),
    "determination.gamma": (0, INF, "()"),
    "determination.fallback_rel": (0, INF, "()"),
    "closeness.d_max": (0, INF, "()"),
    "closeness.step": (0, INF, "()"),
    "closeness.tol": (0, INF, "()"),
    # a CI half-width on a score in [0, 1]: 0 never stops, 1 stops at once
    "closeness.ci_tol": (0, 1, "()"),
    "closeness.max_chunk": (1, INF, "[)"),
    "closeness.batch_size": (1, INF, "[)"),
    "closeness.batch_points": (1, INF, "[)"),
    "closeness.min_points": (1, INF, "[)"),
    "closeness.max_points": (1, INF, "[)"),
    "closeness.n_boot": (1, INF, "[)"),
    "closeness.filter_pool": (1, INF, "[)"),
    "closeness.seed": (0, SEED_MAX, "[]"),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "train.optimizer": ("adam", "sgd"),
    "train.scheduler": ("none", "cosine"),
    "train.accelerator": ("auto", "cpu", "gpu", "cuda"),
    "closeness.search": ("brent", "bisection"),
    "closeness.strategy": ("stratified", "uniform"),
}
# (smaller, larger, strictly): pairs of keys whose values must stay in this order.
ORDERED: tuple[tuple[str, str, bool], ...] = (
    ("closeness.tol", "closeness.step", True),  # the final bracket is finer than the grid
    ("closeness.step", "closeness.d_max", False),  # ... which has a point within d_max
    ("closeness.min_points", "closeness.max_points", False),
)


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
    for group, schema in (("determination", DeterminationConf), ("closeness", ClosenessConf)):
        given = _get(cfg, group)
        known = [f.name for f in fields(schema)]
        extra = sorted(set(given) - set(known)) if isinstance(given, Mapping) else []
        if extra:
            raise LineageError(f"{group}: unknown key(s) {extra}; valid: {', '.join(known)}")
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
    for small, large, strictly in ORDERED:
        a, b = _get(cfg, small), _get(cfg, large)
        if a is not None and b is not None and (a >= b if strictly else a > b):
            need = "be below" if strictly else "not exceed"
            raise LineageError(f"{small}={a} must {need} {large}={b}")


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

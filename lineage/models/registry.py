"""Building models: a registry of the built-in architectures (a convenience), and any
importable factory given as a Hydra `_target_` (the general case).

Every model built here remembers how in `.arch`, so its file can rebuild it:

    {name, num_classes, in_channels, input_size, input_shape, kwargs}   (+ target)

`input_shape` is one sample's shape, e.g. (1, 28, 28) or (30,) for a tabular task;
`in_channels` and `input_size` are its image reading (C and (H, W); 1 and the shape for
other inputs), which the built-in factories take. A `_target_` factory receives whichever
of num_classes, in_channels, input_size, input_shape and in_features (the product of the
shape) its signature names, plus its own keyword arguments.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import LineageError
from ..registry import Registry
from ..settings import knob

MODELS: Registry[Callable[..., nn.Module]] = Registry("architecture")
# Each registered architecture's options dataclass: the schema of its conf/model YAML.
OPTIONS: dict[str, type] = {}


def register(name: str, options: type | None = None) -> Callable[[Any], Any]:
    if options is not None:
        OPTIONS[name] = options
    return MODELS.register(name)


class FeaturesHead(nn.Module):
    """The layout every built-in architecture shares: `features`, ending in a flat vector
    of `width` numbers, then the Linear `head` (lineage.adapters.find_head finds it by
    name). `features` is built before the head, so a seed draws the same weights."""

    def __init__(self, features: nn.Sequential, width: int, num_classes: int):
        super().__init__()
        self.features = features
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


@dataclass
class ModelConf:
    """What every built-in `model` group has besides its name and its own options."""

    _target_: str | None = knob(None)  # an importable factory replaces the registered name


DATA_ARGS = ("num_classes", "in_channels", "input_size", "input_shape", "in_features")


def image_reading(shape: Sequence[int]) -> tuple[int, list[int]]:
    """(in_channels, input_size) of a sample shape: (C, H, W) images, else 1 and the shape."""
    shape = [int(s) for s in shape]
    return (shape[0], shape[1:]) if len(shape) == 3 else (1, shape)


def input_shape_of(arch: Mapping[str, Any]) -> tuple[int, ...]:
    """The sample shape an arch record was built for (older records: (C, *input_size))."""
    if isinstance(arch.get("input_shape"), list):
        return tuple(int(s) for s in arch["input_shape"])
    return (int(arch["in_channels"]), *(int(s) for s in arch["input_size"]))


def import_factory(target: str) -> Callable[..., Any]:
    """`pkg.module.name` or `pkg.module:name` -> the object (an importable factory)."""
    mod, sep, attr = target.partition(":")
    if not sep:
        mod, _, attr = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise LineageError(f"cannot import {target!r} ({e})") from None
    if not callable(obj):
        raise LineageError(f"{target!r} is not callable")
    return obj


def _accepts(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return set(), True
    kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    return set(sig.parameters), kw


def call_factory(
    fn: Callable[..., Any],
    label: str,
    num_classes: int,
    input_shape: Sequence[int],
    kwargs: Mapping[str, Any],
) -> nn.Module:
    names, _ = _accepts(fn)
    c, size = image_reading(input_shape)
    data = {
        "num_classes": num_classes,
        "in_channels": c,
        "input_size": tuple(size),
        "input_shape": tuple(int(s) for s in input_shape),
        "in_features": math.prod(int(s) for s in input_shape),
    }
    args = {k: v for k, v in data.items() if k in names and k not in kwargs}
    try:
        model = fn(**args, **kwargs)
    except TypeError as e:
        raise LineageError(f"{label}: bad arguments {sorted(kwargs)} ({e})") from None
    if not isinstance(model, nn.Module):
        raise LineageError(f"{label} returned {type(model).__name__}, not an nn.Module")
    return model


def build(
    name: str,
    num_classes: int,
    in_channels: int = 1,
    input_size: int | Sequence[int] = 28,
    **kw: Any,
) -> nn.Module:
    """Build a registered architecture. `input_size` is H (square) or (H, W), or the whole
    sample shape of a non-image input with in_channels=1."""
    fn = MODELS.get(name)
    size = [int(input_size)] * 2 if isinstance(input_size, int) else [int(s) for s in input_size]
    if num_classes < 1 or in_channels < 1:
        raise LineageError(f"{name}: num_classes and in_channels must be positive")
    names, var_kw = _accepts(fn)
    unknown = sorted(set(kw) - (names - set(DATA_ARGS)))
    if unknown and not var_kw:  # a file's record reaches here: only the factory's own options
        raise LineageError(f"architecture {name!r} has no option {unknown[0]!r}")
    try:
        model = fn(num_classes=num_classes, in_channels=in_channels, input_size=tuple(size), **kw)
    except TypeError as e:
        raise LineageError(f"architecture {name!r}: bad arguments {sorted(kw)} ({e})") from None
    shape = [in_channels, *size] if len(size) == 2 else size
    model.arch = {  # type: ignore[assignment]
        "name": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "input_size": size,
        "input_shape": shape,
        "kwargs": dict(kw),
    }
    return model


def build_target(target: str, num_classes: int, input_shape: Sequence[int], **kw: Any) -> nn.Module:
    """Build `target` (an importable factory or nn.Module class) for a task."""
    fn = import_factory(target)
    model = call_factory(fn, target, num_classes, input_shape, kw)
    c, size = image_reading(input_shape)
    # A registered factory is recorded by its name, so its file loads with no --arch; any
    # other keeps its target, which only the user can supply again (`rebuild`).
    name = next((n for n in MODELS.names() if MODELS.get(n) is fn), None)
    model.arch = {  # type: ignore[assignment]
        "name": name or target.replace(":", ".").rsplit(".", 1)[-1],
        **({} if name else {"target": target}),
        "num_classes": num_classes,
        "in_channels": c,
        "input_size": size,
        "input_shape": [int(s) for s in input_shape],
        "kwargs": dict(kw),
    }
    return model


def from_config(model_cfg: Mapping[str, Any], num_classes: int, shape: Sequence[int]) -> nn.Module:
    """A model from a `model` config group: a registered `name`, or a `_target_` with its
    keyword arguments (the registered group's own keys are dropped when `_target_` replaces
    it on the command line, e.g. `model._target_=my_pkg.Net` over the default `model=mlp`)."""
    target = model_cfg.get("_target_")
    if target:
        kw = target_kwargs(model_cfg)
        return build_target(str(target), num_classes, shape, **kw)
    c, size = image_reading(shape)
    kw = {k: v for k, v in model_cfg.items() if k not in ("name", "_target_")}
    return build(str(model_cfg["name"]), num_classes, c, size, **kw)


def target_kwargs(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A `_target_` model's keyword arguments: the config's keys, less `_target_`, `name`,
    and the keys of the registered group named by `name`: left over from the default group
    that a command-line `model._target_=...` replaced, they are that group's options, not
    the factory's. (A factory's own arguments come from its YAML, or `+model.key=value`.)"""
    name = str(model_cfg.get("name"))
    target = str(model_cfg.get("_target_"))
    own = name in MODELS and MODELS.get(name) is _imported_or_none(target)
    leftover = set() if own or name not in MODELS else set(_accepts(MODELS.get(name))[0])
    leftover -= set(DATA_ARGS)
    return {k: v for k, v in model_cfg.items() if k not in ("_target_", "name", *leftover)}


def _imported_or_none(target: str) -> Any:
    try:
        return import_factory(target)
    except LineageError:
        return None


def rebuild(arch: Mapping[str, Any]) -> nn.Module:
    """The model an arch record describes, before its weights are loaded: a *registered*
    architecture, looked up by name. Nothing the record says is imported or called: a
    record naming a factory (`target`) is refused, since importing a module a file names
    runs a stranger's code (and a function of this package, called with the file's
    arguments, does what the file wants); the user builds it with --arch (a builder).
    A structurally pruned model's record holds its kept widths (`narrow`): the full model
    is built, then narrowed to them."""
    model = _rebuild(arch)
    widths = arch.get("narrow")
    if widths:
        from .narrow import to_widths

        arch_record = getattr(model, "arch", None)
        model = to_widths(model, widths)
        model.arch = {**(arch_record or {}), "narrow": dict(widths)}  # type: ignore[assignment]
    return model


def _rebuild(arch: Mapping[str, Any]) -> nn.Module:
    kw = dict(arch.get("kwargs") or {})
    if arch.get("target") is not None:
        raise LineageError(refuse_target(arch["target"]))
    c, size = int(arch["in_channels"]), arch["input_size"]
    return build(str(arch["name"]), int(arch["num_classes"]), c, size, **kw)


def refuse_target(target: Any) -> str:
    from ..text import shorten

    return (
        f"the file says it was built by {shorten(repr(target), 80)}; lineage builds only "
        f"registered architectures ({', '.join(MODELS.names())}) from a file's word, and "
        "never imports or calls what a file names: pass --arch with your own factory"
    )


def arch_of(model: nn.Module) -> dict[str, Any]:
    arch = getattr(model, "arch", None)
    if not isinstance(arch, dict):
        raise LineageError("model was not built by lineage.models.build (no .arch record)")
    return arch


def scale_widths(name: str, kwargs: dict[str, Any], factor: float) -> dict[str, Any]:
    """`name`'s kwargs (its defaults under `kwargs`) with every width times `factor`.

    Widths are the integer sequences (channels, hidden sizes) and the float `width`
    multiplier; each scaled integer is rounded and kept >= 1, so a layer never vanishes.
    `name` is a registered architecture or an importable factory."""
    fn = MODELS.get(name) if name in MODELS else import_factory(name)
    params = inspect.signature(fn).parameters
    full = {
        k: p.default
        for k, p in params.items()
        if k not in DATA_ARGS and p.default is not inspect.Parameter.empty
    }
    full.update(kwargs)
    out: dict[str, Any] = {}
    for k, v in full.items():
        if k == "width" and isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = float(v) * factor
        elif isinstance(v, list | tuple) and v and all(isinstance(i, int) for i in v):
            out[k] = [max(1, round(i * factor)) for i in v]
        else:
            out[k] = v
    return out

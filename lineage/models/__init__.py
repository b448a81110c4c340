"""Importing this package registers every architecture module in it, so adding one is a
file here (its factory decorated with `@register(name, Options)`) plus its YAML in
conf/model/ (as the modifications are)."""

import importlib
import pkgutil

from .io import load, save
from .registry import (
    MODELS,
    arch_of,
    build,
    build_target,
    from_config,
    input_shape_of,
    rebuild,
    register,
    scale_widths,
)

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")

__all__ = [
    "MODELS",
    "arch_of",
    "build",
    "build_target",
    "from_config",
    "input_shape_of",
    "load",
    "rebuild",
    "register",
    "save",
    "scale_widths",
]

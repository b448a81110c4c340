"""Importing this package registers every baseline module in it."""

import importlib
import pkgutil

from .registry import (
    ACCESS,
    BASELINES,
    OPTIONS,
    Baseline,
    BaselineResult,
    baseline,
    config,
    options_of,
    schema,
)

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "registry":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = [
    "ACCESS",
    "BASELINES",
    "OPTIONS",
    "Baseline",
    "BaselineResult",
    "baseline",
    "config",
    "options_of",
    "schema",
]

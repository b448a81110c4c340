"""Importing this package registers every modification module in it."""

import importlib
import pkgutil

from .registry import MODIFICATIONS, Derived, derive, register, validate

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "registry":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["MODIFICATIONS", "Derived", "derive", "register", "validate"]

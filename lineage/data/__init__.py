"""Importing this package registers every dataset module in it, so adding one is a file
here (its loader decorated with `@DATASETS.register(name)`) plus its YAML in conf/data/
(as the modifications are)."""

import importlib
import pkgutil

from .base import (
    DATASETS,
    DataModule,
    Split,
    build_datamodule,
    datamodule_from_config,
    from_tensors,
)

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")

__all__ = [
    "DATASETS",
    "DataModule",
    "Split",
    "build_datamodule",
    "datamodule_from_config",
    "from_tensors",
]

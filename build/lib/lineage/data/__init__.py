from . import cifar10, digits, mnist, tabular  # noqa: F401  (registers the datasets)
from .base import (
    DATASETS,
    DataModule,
    Split,
    build_datamodule,
    datamodule_from_config,
    from_tensors,
)

__all__ = [
    "DATASETS",
    "DataModule",
    "Split",
    "build_datamodule",
    "datamodule_from_config",
    "from_tensors",
]

"""Datasets as in-memory tensors wrapped in a LightningDataModule.

All inputs are float32 in [0, 1], shape (N, C, H, W), so adversarial distances are in
the same pixel units for every dataset. Splits are fixed by `split_seed`, never by the
training seed, so parents with different seeds see the same train/val/test split.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..errors import LineageError
from ..registry import Registry


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


# A loader returns (train, test) as tensors, raising LineageError on missing/corrupt files.
Loader = Callable[..., tuple[Split, Split]]
DATASETS: Registry[Loader] = Registry("dataset")


class DataModule(pl.LightningDataModule):
    def __init__(
        self,
        name: str,
        train: Split,
        val: Split,
        test: Split,
        num_classes: int,
        classes: list[int] | None,
        batch_size: int = 128,
        root: str = "data",
    ):
        super().__init__()
        self.name = name
        self.root = root  # a modification's own data (transfer, distill) reads beside it
        self.train, self.val, self.test = train, val, test
        self.num_classes = num_classes
        self.classes = classes
        self.batch_size = batch_size

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)

    def _loader(self, s: Split, shuffle: bool) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        return DataLoader(
            TensorDataset(s.x, s.y),
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=g if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test, False)


def _subset_classes(s: Split, classes: Sequence[int]) -> Split:
    """Keep `classes` and relabel them 0..k-1 in the order given."""
    keep = torch.zeros(len(s), dtype=torch.bool)
    y = torch.full_like(s.y, -1)
    for new, old in enumerate(classes):
        m = s.y == old
        keep |= m
        y[m] = new
    return Split(s.x[keep], y[keep])


def _take(s: Split, n: int | None, seed: int) -> Split:
    if n is None or n >= len(s):
        return s
    idx = torch.randperm(len(s), generator=torch.Generator().manual_seed(seed))[:n]
    return Split(s.x[idx], s.y[idx])


def build_datamodule(
    name: str,
    root: str | Path = "data",
    classes: Sequence[int] | None = None,
    limit: int | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    batch_size: int = 128,
    download: bool = False,
) -> DataModule:
    """Load a registered dataset, subset classes, split off validation, apply `limit`."""
    train, test = DATASETS.get(name)(root=Path(root), download=download)
    n_all = int(train.y.max().item()) + 1 if len(train) else 0
    if isinstance(classes, Sequence) and not isinstance(classes, str) and not len(classes):
        classes = None  # an empty selection has always meant every class
    if classes is not None:
        from ..config import check_classes

        check_classes(
            list(classes)
            if isinstance(classes, Sequence) and not isinstance(classes, str)
            else classes,
            "data.classes",
        )
        classes = [int(c) for c in classes]
        bad = [c for c in classes if not 0 <= c < n_all]
        if bad:
            raise LineageError(f"data.classes={classes}: must be distinct labels in 0..{n_all - 1}")
        train, test = _subset_classes(train, classes), _subset_classes(test, classes)
    num_classes = len(classes) if classes else n_all
    if num_classes < 2:
        raise LineageError(
            f"dataset {name!r} has {num_classes} class(es): a classifier needs at least two"
        )
    if len(train) == 0 or len(test) == 0:
        raise LineageError(f"dataset {name!r} is empty after selecting classes={classes}")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(split_seed))
    n_val = max(1, int(round(val_fraction * len(train))))
    val = Split(train.x[perm[:n_val]], train.y[perm[:n_val]])
    train = Split(train.x[perm[n_val:]], train.y[perm[n_val:]])
    if limit is not None:
        if limit <= 0:
            raise LineageError(f"data.limit={limit}: must be a positive number of samples")
        train, val, test = (
            _take(s, limit, split_seed + i) for i, s in enumerate((train, val, test))
        )
    return DataModule(
        name,
        train,
        val,
        test,
        num_classes,
        list(classes) if classes else None,
        batch_size,
        str(root),
    )


def datamodule_from_config(d: Mapping[str, Any]) -> DataModule:
    """Build from a `data` config group (also used for a modification's own `data`)."""
    return build_datamodule(
        d["name"],
        d.get("root", "data"),
        d.get("classes"),
        d.get("limit"),
        d.get("val_fraction", 0.1),
        d.get("split_seed", 0),
        d.get("batch_size", 128),
        bool(d.get("download", False)),
    )

"""Datasets as in-memory tensors wrapped in a LightningDataModule.

Image inputs are float32 in [0, 1], shape (N, C, H, W), so adversarial distances are in
pixel units; tabular inputs are standardised features (N, F), distances in standard
deviations. Splits are fixed by `split_seed`, never by the training seed, so parents with
different seeds see the same train/val/test split; the order of the training batches
follows the seed of the model being trained (training.fit sets `shuffle_seed`).

A dataset is a registered name (DATASETS) or any `_target_`: a LightningDataModule, or a
function returning (x_train, y_train, x_test, y_test) tensors (or ((x, y), (x, y)), or a
dict with "train" and "test" pairs); see `target_splits`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..errors import LineageError
from ..registry import Registry
from .settings import DataConf


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
        shuffle_seed: int = 0,
        workers: int = 0,
        split_seed: int = 0,
    ):
        super().__init__()
        self.name = name
        self.shuffle_seed = shuffle_seed  # set by training.fit: it orders the batches
        self.split_seed = split_seed
        self.workers = workers
        self.root = root  # a modification's own data (transfer, distill) reads beside it
        self.train, self.val, self.test = train, val, test
        self.num_classes = num_classes
        self.classes = classes
        self.batch_size = batch_size

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape: (C, H, W) for images, (F,) for tabular data."""
        return tuple(int(d) for d in self.train.x.shape[1:])

    def _loader(self, s: Split, shuffle: bool) -> DataLoader:
        g = torch.Generator().manual_seed(self.shuffle_seed)
        return DataLoader(
            TensorDataset(s.x, s.y),
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=g if shuffle else None,
            num_workers=self.workers,
            # a worker process would start with every core's worth of torch threads
            worker_init_fn=_one_thread if self.workers else None,
        )

    def half(self, half: int) -> DataModule:
        """This data with one half of the training split only (a fixed random halving by
        the split seed): independent models that never saw the parent's other half."""
        if half not in (0, 1):
            raise LineageError(f"half={half}: the training set has halves 0 and 1")
        perm = torch.randperm(
            len(self.train), generator=torch.Generator().manual_seed(self.split_seed)
        )
        idx = perm[: len(perm) // 2] if half == 0 else perm[len(perm) // 2 :]
        out = copy.copy(self)
        out.train = Split(self.train.x[idx], self.train.y[idx])
        return out

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test, False)


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)


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
    splits: tuple[Split, Split] | None = None,
) -> DataModule:
    """Load a registered dataset (or take `splits`, the (train, test) of a `_target_`),
    subset classes, split off validation, apply `limit`."""
    train, test = splits or DATASETS.get(name)(root=Path(root), download=download)
    check_splits(name, train, test)
    n_all = int(train.y.max().item()) + 1 if len(train) else 0
    if isinstance(classes, Sequence) and not isinstance(classes, str) and not len(classes):
        classes = None  # an empty selection has always meant every class
    if classes is not None:
        from .settings import check_classes

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
    if num_classes < 2:
        raise LineageError(
            f"dataset {name!r} has {num_classes} class after selecting classes={classes}: "
            "a classifier needs at least 2"
        )
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
        split_seed=split_seed,
    )


def check_splits(name: str, train: Split, test: Split) -> None:
    """What every dataset must be: float inputs (or integer token ids), integer labels, one
    label per input, at least two classes."""
    for split, s in (("train", train), ("test", test)):
        if not (isinstance(s.x, torch.Tensor) and isinstance(s.y, torch.Tensor)):
            raise LineageError(f"dataset {name!r}: the {split} split is not tensors")
        if len(s.x) != len(s.y) or s.y.dim() != 1 or s.y.is_floating_point():
            raise LineageError(
                f"dataset {name!r}: the {split} split needs one integer label per input "
                f"(x {tuple(s.x.shape)}, y {s.y.dtype} {tuple(s.y.shape)})"
            )
        if len(s) and s.x.is_floating_point() and not torch.isfinite(s.x).all():
            raise LineageError(f"dataset {name!r}: the {split} inputs hold NaN or Inf")
    if len(train) and int(train.y.min()) < 0:
        raise LineageError(f"dataset {name!r}: labels must be class indices >= 0")


def _tensors(a: Any) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(a)


def _split(pair: Any, name: str, what: str) -> Split:
    if not (isinstance(pair, Sequence) and len(pair) == 2):
        raise LineageError(f"data target {name!r}: its {what} split must be a pair (x, y)")
    x, y = (_tensors(a) for a in pair)
    return Split(x.float() if x.dtype == torch.float64 else x, y.long())


def _from_loader(loader: Any) -> Split:
    xs, ys = [], []
    for batch in loader:
        xs.append(_tensors(batch[0]))
        ys.append(_tensors(batch[1]))
    if not xs:
        return Split(torch.zeros(0), torch.zeros(0, dtype=torch.long))
    return Split(torch.cat(xs), torch.cat(ys).long())


def target_splits(target: str, kwargs: Mapping[str, Any]) -> tuple[Split, Split]:
    """(train, test) of a `_target_` dataset. A LightningDataModule is set up and read
    through its train and test (else val) loaders into memory."""
    from ..models.registry import import_factory

    fn = import_factory(target)
    try:
        out = fn(**kwargs)
    except TypeError as e:
        raise LineageError(
            f"data target {target!r}: bad arguments {sorted(kwargs)} ({e})"
        ) from None
    if isinstance(out, pl.LightningDataModule):
        out.prepare_data()
        out.setup("fit")
        train = _from_loader(out.train_dataloader())
        try:
            out.setup("test")
            test = _from_loader(out.test_dataloader())
        except (NotImplementedError, AttributeError):
            test = _from_loader(out.val_dataloader())
        return train, test
    if isinstance(out, Mapping) and {"train", "test"} <= set(out):
        return _split(out["train"], target, "train"), _split(out["test"], target, "test")
    if isinstance(out, Sequence) and len(out) == 4:
        return _split(out[:2], target, "train"), _split(out[2:], target, "test")
    if isinstance(out, Sequence) and len(out) == 2:
        return _split(out[0], target, "train"), _split(out[1], target, "test")
    raise LineageError(
        f"data target {target!r} returned {type(out).__name__}; expected a "
        "LightningDataModule or (x_train, y_train, x_test, y_test)"
    )


def from_tensors(
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    name: str = "tensors",
    batch_size: int = 64,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> DataModule:
    """A DataModule from tensors (a researcher's own data): `x_test, y_test` default to a
    fixed fifth of (x, y), split off by `seed`."""
    if x_test is None or y_test is None:
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        k = len(y) // 5
        x, y, x_test, y_test = x[perm[k:]], y[perm[k:]], x[perm[:k]], y[perm[:k]]
    train, test = _split((x, y), name, "train"), _split((x_test, y_test), name, "test")
    return build_datamodule(
        name,
        val_fraction=val_fraction,
        split_seed=seed,
        batch_size=batch_size,
        splits=(train, test),
    )


# The data group's own keys (its dataclass); a `_target_` dataset's others are its
# factory's arguments.
OWN_KEYS = tuple(f.name for f in fields(DataConf))


def datamodule_from_config(d: Mapping[str, Any]) -> DataModule:
    """Build from a `data` config group (also used for a modification's own `data`)."""
    target = d.get("_target_")
    splits = None
    name = str(d.get("name") or "")
    if target:
        splits = target_splits(str(target), {k: v for k, v in d.items() if k not in OWN_KEYS})
        registered = name in DATASETS
        name = str(target).replace(":", ".").rsplit(".", 1)[-1] if registered or not name else name
    dm = build_datamodule(
        name,
        d.get("root", "data"),
        d.get("classes"),
        d.get("limit"),
        d.get("val_fraction", 0.1),
        d.get("split_seed", 0),
        d.get("batch_size", 128),
        bool(d.get("download", False)),
        splits,
    )
    dm.workers = int(d.get("workers") or 0)
    return dm

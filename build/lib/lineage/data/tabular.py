"""scikit-learn's bundled tabular data sets: embedded, no files needed.

Features are standardised with the training split's mean and standard deviation (a
constant feature keeps scale 1), so closeness distances are in standard deviations of each
feature, and d_max = 10, step = 0.1 keep their meaning from the image tasks' unit scale.
A fixed 80/20 train/test split per data set, as for digits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .base import DATASETS, Split


def _standardised(load: Callable[[], Any]) -> tuple[Split, Split]:
    d = load()
    x = torch.tensor(d.data, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    n_test = len(y) // 5
    te, tr = perm[:n_test], perm[n_test:]
    mean, std = x[tr].mean(0), x[tr].std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    x = (x - mean) / std
    return Split(x[tr], y[tr]), Split(x[te], y[te])


@DATASETS.register("breast_cancer")
def breast_cancer(root: Path, download: bool = False) -> tuple[Split, Split]:
    """569 tumours, 30 features, 2 classes (malignant, benign)."""
    from sklearn.datasets import load_breast_cancer

    return _standardised(load_breast_cancer)


@DATASETS.register("wine")
def wine(root: Path, download: bool = False) -> tuple[Split, Split]:
    """178 wines, 13 features, 3 cultivars."""
    from sklearn.datasets import load_wine

    return _standardised(load_wine)

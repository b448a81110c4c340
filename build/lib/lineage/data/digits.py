"""scikit-learn's bundled 8x8 digits: the embedded default, no files needed."""

from pathlib import Path

import torch

from .base import DATASETS, Split


@DATASETS.register("digits")
def digits(root: Path, download: bool = False) -> tuple[Split, Split]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    # A fixed 80/20 train/test split; validation is carved from train by build_datamodule.
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    n_test = len(y) // 5
    te, tr = perm[:n_test], perm[n_test:]
    return Split(x[tr], y[tr]), Split(x[te], y[te])

"""CIFAR-10 from the canonical cifar-10-batches-py/ layout.

The official batches are Python pickles. We never call pickle.load on them: a restricted
unpickler admits only the builtin containers and the few numpy globals that rebuild a
uint8 array, so a tampered batch file cannot run code.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from ..errors import LineageError
from .base import DATASETS, Split
from .download import fetch

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
TEST = ["test_batch"]


# What numpy's array pickling needs, and nothing that can call arbitrary functions.
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = _DataOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as e:  # any unpickling failure means a corrupt or hostile file
        raise LineageError(f"{path}: corrupt CIFAR-10 batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise LineageError(f"{path}: corrupt CIFAR-10 batch (missing b'data'/b'labels')")
    data, labels = d[b"data"], d[b"labels"]
    if isinstance(data, (bytes, bytearray)):
        data = np.frombuffer(data, dtype=np.uint8)
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.size != len(labels) * 3072:
        raise LineageError(
            f"{path}: corrupt CIFAR-10 batch: {data.size} values for {len(labels)} labels"
        )
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


@DATASETS.register("cifar10")
def cifar10(root: Path, download: bool = False) -> tuple[Split, Split]:
    d = Path(root) / "cifar-10-batches-py"
    if not d.is_dir() and download:
        archive = Path(root) / "cifar-10-python.tar.gz"
        fetch([URL], archive)
        with tarfile.open(archive) as t:
            t.extractall(root, filter="data")
    missing = [n for n in TRAIN + TEST if not (d / n).exists()]
    if missing:
        raise LineageError(
            f"CIFAR-10 batches {missing} not found in {d.resolve()}; set data.root to the folder "
            "holding cifar-10-batches-py/ (python ../shared/data/make_cifar10.py DIR makes it), "
            "or data.download=true"
        )
    out = []
    for names in (TRAIN, TEST):
        xs, ys = zip(*(read_batch(d / n) for n in names))
        x = torch.from_numpy(np.concatenate(xs)).float().div_(255)
        out.append(Split(x, torch.from_numpy(np.concatenate(ys))))
    return out[0], out[1]

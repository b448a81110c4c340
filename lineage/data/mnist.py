"""MNIST from the official IDX files in <root>/MNIST/raw/ (.gz or plain), torchvision's layout."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..errors import LineageError
from .base import DATASETS, Split
from .download import fetch

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
MIRRORS = ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]
# IDX magic: two zero bytes, a dtype code (0x08 = uint8), then the number of dimensions.
MAGIC = {1: 2049, 3: 2051}


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file, checking its magic number and that its length fits its header."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise LineageError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 8:
        raise LineageError(f"{path}: corrupt IDX file (only {len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    ndim = raw[3]
    if raw[:3] != b"\x00\x00\x08" or MAGIC.get(ndim) != magic:
        raise LineageError(f"{path}: bad IDX magic number {magic:#010x}")
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise LineageError(
            f"{path}: corrupt IDX file: header says {dims} ({expected} bytes), file has {len(raw)}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(raw_dir: Path, stem: str) -> Path | None:
    for p in (raw_dir / stem, raw_dir / f"{stem}.gz"):
        if p.exists():
            return p
    return None


@DATASETS.register("mnist")
def mnist(root: Path, download: bool = False) -> tuple[Split, Split]:
    raw_dir = Path(root) / "MNIST" / "raw"
    paths = {}
    for key, stem in FILES.items():
        p = _find(raw_dir, stem)
        if p is None and download:
            p = raw_dir / f"{stem}.gz"
            fetch([m + p.name for m in MIRRORS], p)
        if p is None:
            raise LineageError(
                f"MNIST file {stem}[.gz] not found in {raw_dir.resolve()}; "
                "set data.root to the folder holding MNIST/raw/, or data.download=true"
            )
        paths[key] = p
    arrays = {k: read_idx(p) for k, p in paths.items()}
    out = []
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if len(x) != len(y):
            raise LineageError(f"MNIST {split}: {len(x)} images but {len(y)} labels")
        out.append(
            Split(
                torch.from_numpy(x.copy()).float().div_(255).unsqueeze(1),
                torch.from_numpy(y.astype(np.int64)),
            )
        )
    return out[0], out[1]

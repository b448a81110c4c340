"""MNIST from the official IDX files in <root>/MNIST/raw/ (.gz or plain), torchvision's layout."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import IO, Any

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


# MNIST's real shapes: each of its files is refused before it is read (or decompressed)
# when its header declares more than these, so a small .gz cannot make us inflate more
# than the genuine file holds (47 MB for the training images).
SHAPES = {
    "train_x": (60000, 28, 28),
    "train_y": (60000,),
    "test_x": (10000, 28, 28),
    "test_y": (10000,),
}
# Any other IDX file (read_idx without `shape`): at most 64 MiB, MNIST's largest rounded up.
MAX_IDX_BYTES = 2**26


def read_idx(path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Parse an IDX file, checking its magic number and that its length fits its header.

    `shape` is the largest the file may declare (a known dataset's real shape), else
    MAX_IDX_BYTES bounds it. Reads at most what the header declares (plus one byte, to
    see that nothing follows), so a small .gz that inflates to gigabytes costs no more
    than a genuine file would."""
    try:
        f: Any = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
        with f:
            return _read_idx(path, f, shape)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise LineageError(f"{path}: cannot read IDX file ({e})") from None


def _read_exactly(f: IO[bytes], n: int) -> bytes:
    """Up to `n` bytes (fewer only at the end of the stream), read in bounded chunks."""
    parts, got = [], 0
    while got < n:
        chunk = f.read(min(n - got, 2**24))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _read_idx(path: Path, f: IO[bytes], shape: tuple[int, ...] | None) -> np.ndarray:
    head = _read_exactly(f, 4)
    if len(head) < 4:
        raise LineageError(f"{path}: corrupt IDX file (only {len(head)} bytes)")
    magic = int.from_bytes(head, "big")
    ndim = head[3]
    if head[:3] != b"\x00\x00\x08" or MAGIC.get(ndim) != magic:
        raise LineageError(f"{path}: bad IDX magic number {magic:#010x}")
    raw_dims = _read_exactly(f, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise LineageError(f"{path}: corrupt IDX file (only {4 + len(raw_dims)} bytes)")
    dims = [int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(ndim)]
    header = 4 + 4 * ndim
    size = math.prod(dims)
    if shape is not None and (len(dims) != len(shape) or any(map(int.__gt__, dims, shape))):
        raise LineageError(
            f"{path}: not an MNIST file: header declares {dims}, more than MNIST's {list(shape)}"
        )
    if size > MAX_IDX_BYTES:
        raise LineageError(
            f"{path}: corrupt IDX file: header declares {dims} ({size} bytes), more than "
            f"an IDX file may hold here (at most {MAX_IDX_BYTES})"
        )
    body = _read_exactly(f, size + 1)
    if len(body) != size:
        found = f"{header + len(body)}" if len(body) <= size else f"more than {header + size}"
        raise LineageError(
            f"{path}: corrupt IDX file: header says {dims} ({header + size} bytes), "
            f"file has {found}"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


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
    arrays = {k: read_idx(p, SHAPES[k]) for k, p in paths.items()}
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

"""Safetensors files read without trusting them: the bounded header, tensors streamed from
the file into their own memory, and a checksum computed on the way. Nothing here depends
on lineage's metadata, so every loader of safetensors files (lineage.models.io for the
project's own, lineage.models.files for plain state dicts) uses it.

1. `read_header` reads only the header (a bounded length, JSON of bounded depth, at most
   `max_tensors` entries, every tensor inside the file, no gaps or overlaps).
2. `read_state` streams the tensors straight from the file into their own tensors (one
   copy, no byte buffers), hashing each on the way (`StreamingChecksum` gives the same
   digest as `checksum`). Peak memory is the tensors themselves, about 1x the file size
   (benchmarks/bench_load_memory.py).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import LineageError
from ..text import shorten
from ..utils import loads_json

MAX_HEADER = 16 * 2**20  # a real header is a few KB; a huge declared length is an attack
MAX_FILE = 4 * 2**30
MAX_TENSORS = 10_000  # ResNet-18 has 122; a header listing more is not a lineage model
MAX_DEPTH = 64  # JSON nesting in the header and in the lineage metadata
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_SIZE = {k: torch.empty(0, dtype=v).element_size() for k, v in DTYPES.items()}
# ---- checksums --------------------------------------------------------------------------


class StreamingChecksum:
    """The tensors' checksum, fed one tensor at a time, in sorted name order. Equal to
    `checksum(state)` for the same tensors; hashes each tensor's bytes in place."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._last: str | None = None

    def update(self, name: str, t: torch.Tensor) -> None:
        if self._last is not None and name <= self._last:
            raise ValueError("StreamingChecksum: tensors must come in sorted name order")
        self._last = name
        t = t.detach()
        self._h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            if t.device.type != "cpu" or not t.is_contiguous():
                t = t.cpu().contiguous()
            self._h.update(_bytes_of(t))

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _bytes_of(t: torch.Tensor) -> memoryview:
    """The bytes of contiguous CPU tensor `t`, in place (no copy), writable."""
    arr: Any = t.reshape(-1).view(torch.uint8).numpy()
    return memoryview(arr).cast("B")


def all_finite(t: torch.Tensor, chunk: int = 2**16) -> bool:
    """No NaN or Inf in `t` (True for non-float tensors). Chunked: torch.isfinite on a
    whole tensor makes temporaries as large as the tensor itself."""
    if not t.is_floating_point():
        return True
    flat = t.detach().reshape(-1)
    return all(bool(torch.isfinite(flat[i : i + chunk]).all()) for i in range(0, len(flat), chunk))


def checksum(state: Mapping[str, torch.Tensor]) -> str:
    h = StreamingChecksum()
    for k in sorted(state):
        h.update(k, state[k])
    return h.hexdigest()


# ---- the bounded low-level pieces ---------------------------------------------------------


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header declares it; `start`/`end` are absolute file offsets."""

    name: str
    dtype: str  # the safetensors code, a key of DTYPES
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Header:
    path: Path
    tensors: dict[str, TensorEntry]
    metadata: dict[str, Any]  # the header's __metadata__ ({} when absent)
    file_size: int

    @property
    def numel(self) -> int:
        """How many values the file holds, all tensors together."""
        return sum(e.numel for e in self.tensors.values())


def _failure(what: str) -> Any:
    def fail(path: Path, why: str) -> LineageError:
        return LineageError(f"{shorten(path.name)}: not a valid {what}: {why}")

    return fail


_fail = _failure("lineage model file")


def read_header(
    path: str | Path,
    *,
    what: str = "lineage model file",
    max_header: int = MAX_HEADER,
    max_tensors: int = MAX_TENSORS,
    max_file: int = MAX_FILE,
) -> Header:
    """Read and validate a safetensors header without reading the tensor data.

    Bounded: the declared header length (<= `max_header`), the file size, the JSON depth
    (MAX_DEPTH), the number of tensors; each entry has a known dtype, a shape of
    non-negative ints and offsets whose length is exactly the shape's bytes; together
    the tensors tile the data section with no gap or overlap (as safetensors requires).
    Every failure is a LineageError naming the file (`what` says what it should be)."""
    path = Path(path)
    fail = _failure(what)
    try:
        if not path.is_file():
            raise LineageError(f"model file not found: {shorten(path)}")
        size = path.stat().st_size
        if size > max_file:
            raise fail(path, f"larger than {max_file} bytes")
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise fail(path, f"too short ({len(prefix)} bytes)")
            (n,) = struct.unpack("<Q", prefix)
            if n > max_header or 8 + n > size:
                raise fail(path, f"declared header of {n} bytes does not fit (file {size} bytes)")
            blob = f.read(n)
    except OSError as e:
        raise LineageError(f"cannot read model file {shorten(path)}: {e.strerror or e}") from None
    # Counted before the JSON is parsed and walked, which for 100k entries took seconds:
    # every tensor entry has this key, and inside a JSON string its quotes are escaped.
    declared = blob.count(b'"data_offsets"')
    if declared > max_tensors:
        raise fail(path, f"declares {declared} tensors (at most {max_tensors})")
    try:
        header = loads_json(blob, MAX_DEPTH)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, too deep
        raise fail(path, "header is not JSON (truncated, or not a safetensors file)") from None
    if not isinstance(header, dict):
        raise fail(path, "header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if meta is not None and not isinstance(meta, dict):
        raise fail(path, "__metadata__ is not a JSON object")
    if len(header) > max_tensors:
        raise fail(path, f"declares {len(header)} tensors (at most {max_tensors})")
    body = size - 8 - n
    tensors: dict[str, TensorEntry] = {}
    for name, spec in header.items():
        ok = (
            isinstance(spec, dict)
            and isinstance(spec.get("dtype"), str)
            and spec["dtype"] in DTYPES
            and isinstance(spec.get("shape"), list)
            and len(spec["shape"]) <= 8
            and all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40
                for d in spec["shape"]
            )
            and isinstance(spec.get("data_offsets"), list)
            and len(spec["data_offsets"]) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in spec["data_offsets"])
        )
        if not ok:
            raise fail(path, f"malformed entry for tensor {shorten(repr(name), 80)}")
        a, b = spec["data_offsets"]
        shape = tuple(spec["shape"])
        nbytes = DTYPE_SIZE[spec["dtype"]] * math.prod(shape)
        if not 0 <= a <= b <= body or b - a != nbytes:
            raise fail(
                path,
                f"tensor {shorten(repr(name), 80)} lies outside the file or has the wrong length",
            )
        tensors[name] = TensorEntry(name, spec["dtype"], shape, 8 + n + a, 8 + n + b)
    pos = 8 + n
    for entry in sorted(tensors.values(), key=lambda t: (t.start, t.end)):
        if entry.start != pos:
            raise fail(path, "tensor data has gaps or overlapping tensors")
        pos = entry.end
    if pos != size:
        raise fail(path, f"{size - pos} bytes after the last tensor")
    return Header(path, tensors, meta or {}, size)


def _read_into(f: Any, t: torch.Tensor) -> None:
    """Fill contiguous `t` with the next t.nbytes bytes of `f` (raw file: no buffers)."""
    if not t.numel():
        return
    view = _bytes_of(t)
    while view:
        got = f.readinto(view)
        if not got:
            raise EOFError
        view = view[got:]


def stream_tensors(
    header: Header, names: Iterable[str] | None = None
) -> Iterator[tuple[TensorEntry, torch.Tensor]]:
    """Yield (entry, tensor) for `names` (default: all, sorted), each read from the file
    straight into a fresh CPU tensor of exactly its size."""
    wanted = sorted(header.tensors) if names is None else list(names)
    try:
        with open(header.path, "rb", buffering=0) as f:
            for name in wanted:
                entry = header.tensors[name]
                t = torch.empty(entry.shape, dtype=entry.torch_dtype)
                f.seek(entry.start)
                _read_into(f, t)
                yield entry, t
    except (OSError, EOFError) as err:
        why = "the file changed while it was read" if isinstance(err, EOFError) else err
        raise LineageError(f"cannot read model file {shorten(header.path)}: {why}") from None


def read_state(header: Header) -> tuple[dict[str, torch.Tensor], str]:
    """Every tensor of the file, and their checksum (the digest `checksum` would give),
    computed while streaming: peak memory is the tensors, once."""
    h = StreamingChecksum()
    state: dict[str, torch.Tensor] = {}
    for e, t in stream_tensors(header):
        h.update(e.name, t)
        state[e.name] = t
    return state, h.hexdigest()

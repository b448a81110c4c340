"""Model files: one .safetensors file whose metadata says how to rebuild and audit it.

Suspect models come from strangers, so loading never unpickles anything, and nothing in
the file is trusted before it is bounded:

1. `read_header` reads only the header (a bounded length, JSON of bounded depth, at most
   `max_tensors` entries, every tensor inside the file, no gaps or overlaps).
2. The recorded architecture is built on the meta device (shapes only, no memory), after
   every number in `arch.kwargs` is bounded by the number of values the file holds, and
   its tensors must match the header's names, dtypes and shapes. So the real model can
   never be larger than the file: a 100 KB file cannot make us allocate gigabytes.
3. `read_state` streams the tensors straight from the file into their own tensors
   (one copy, no byte buffers), hashing each on the way (`StreamingChecksum` gives the
   same digest as `checksum`), and the model adopts them without a copy
   (`load_state_dict(assign=True)`). Peak memory is the tensors themselves, about 1x the
   file size (benchmarks/bench_load_memory.py).

`read_header`, `read_state` and `StreamingChecksum` do not depend on lineage metadata,
so loaders of other safetensors files can reuse them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save
from torch import nn

from ..errors import LineageError
from ..text import shorten
from ..utils import atomic_write, git_sha, loads_json
from .registry import MODELS, arch_of, rebuild

Builder = Callable[[], nn.Module]

FORMAT = "lineage-model/1"
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
# Metadata keys with the types they must have when present.
META_TYPES: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "parent_id": (str, type(None)),
    "modification": (str, type(None)),
    "ratio": (int, float, type(None)),
    "seed": (int, type(None)),
    "accuracy": (int, float, type(None)),
    "data": (dict, type(None)),
    "lineage": (list, type(None)),
    "record": (dict, type(None)),
    "spec": (dict, type(None)),
    "created": str,
    "git_sha": str,
}


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


# ---- saving -----------------------------------------------------------------------------


def save(
    model: nn.Module,
    path: str | Path,
    meta: dict[str, Any] | None = None,
    *,
    allow_nonfinite: bool = False,
) -> Path:
    """Write `model` and its metadata atomically. `meta` adds id, parent_id, data, etc.

    A model holding NaN or Inf (a diverged training) is refused: nothing downstream can
    judge it, and a file in the zoo would look like a finished model."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    if not allow_nonfinite:
        for k, t in state.items():
            if not all_finite(t):
                raise LineageError(
                    f"refusing to save {shorten(Path(path).name)}: tensor {k!r} holds NaN or "
                    "Inf values (did the training diverge? try a smaller lr)"
                )
    info = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_sha": git_sha(),
        **(meta or {}),
        "arch": arch_of(model),
        "format": FORMAT,
    }
    blob = st_save(
        state, metadata={"lineage": json.dumps(info, default=str), "checksum": checksum(state)}
    )
    return atomic_write(path, blob)


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


# ---- lineage metadata ---------------------------------------------------------------------


def _parse_meta(path: Path, raw_meta: dict[str, Any]) -> dict[str, Any]:
    if "lineage" not in raw_meta:
        raise _fail(path, "no lineage metadata (was it written by lineage.models.save?)")
    try:
        meta = loads_json(raw_meta["lineage"], MAX_DEPTH)
    except (TypeError, ValueError):
        raise _fail(path, "lineage metadata is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _fail(path, f"metadata format is not {FORMAT!r}")
    arch = meta.get("arch")
    if not (
        isinstance(arch, dict)
        and isinstance(arch.get("name"), str)
        and _is_int(arch.get("num_classes"))
        and _is_int(arch.get("in_channels"))
        and isinstance(arch.get("input_size"), list)
        and 1 <= len(arch["input_size"]) <= 3
        and all(_is_int(v) for v in arch["input_size"])
        and isinstance(arch.get("kwargs", {}), dict)
    ):
        raise _fail(path, "metadata 'arch' is missing or has wrong types")
    target = arch.get("target")
    if target is not None and not (isinstance(target, str) and len(target) <= 256):
        raise _fail(path, "metadata 'arch.target' is not a short string")
    if target is None and arch["name"] not in MODELS:
        raise _fail(
            path, f"unknown architecture {shorten(repr(arch['name']), 80)}; known: {MODELS.names()}"
        )
    widths = arch.get("narrow")
    if widths is not None and not (
        isinstance(widths, dict)
        and len(widths) <= MAX_TENSORS
        and all(isinstance(k, str) and _is_int(v) and 0 < v < 2**31 for k, v in widths.items())
    ):
        raise _fail(path, "metadata 'arch.narrow' must map layer names to positive widths")
    for key, typ in META_TYPES.items():
        if key in meta and not isinstance(meta[key], typ):
            raise _fail(path, f"metadata {key!r} has type {type(meta[key]).__name__}")
    return meta


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_arch_bounds(path: Path, arch: Mapping[str, Any], header: Header) -> None:
    """Every number that sizes the architecture is bounded by what the file holds.

    Each width (a hidden size, a channel count, a `width` multiplier's channels) makes a
    tensor with at least that many values, and each list entry at least one tensor; so a
    number above the file's value count, or more list entries than the file has tensors,
    cannot describe these tensors, and building from it would only cost time and memory."""
    values, n_tensors = max(header.numel, 1), len(header.tensors)
    leaves = 0
    stack: list[tuple[Any, int]] = [(arch.get("kwargs", {}), 0)]
    numbers = [arch["num_classes"], arch["in_channels"], *arch["input_size"]]
    while stack:
        v, depth = stack.pop()
        if depth > 4:
            raise _fail(path, "metadata 'arch.kwargs' is nested too deeply")
        if isinstance(v, dict):
            stack.extend((c, depth + 1) for c in v.values())
        elif isinstance(v, list):
            stack.extend((c, depth + 1) for c in v)
        else:
            leaves += 1
            if isinstance(v, int | float) and not isinstance(v, bool):
                numbers.append(v)
            elif isinstance(v, str) and len(v) > 256:
                raise _fail(path, "metadata 'arch.kwargs' holds an overlong string")
    if leaves > n_tensors + 16:
        raise _fail(
            path, f"metadata 'arch.kwargs' has {leaves} values for a file of {n_tensors} tensors"
        )
    for x in numbers:
        if not (math.isfinite(x) and abs(x) <= values):
            raise _fail(
                path,
                f"recorded architecture asks for size {shorten(repr(x), 40)}, but the file "
                f"holds only {values} values",
            )


def _build(path: Path, arch: Mapping[str, Any], builder: Builder | None, meta: bool) -> nn.Module:
    """The architecture, from the caller's `builder` or the file's record (registry.rebuild),
    on the meta device: shapes without memory, checked against the file before any
    allocation."""
    try:
        with torch.device("meta") if meta else contextlib.nullcontext():
            return builder() if builder is not None else rebuild(arch)
    except Exception as e:  # hostile kwargs reach the constructors: any failure is a refusal
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _fail(path, f"cannot build recorded architecture ({why})") from None


def _check_shapes(path: Path, name: str, model: nn.Module, header: Header) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(header.tensors))
    extra = sorted(set(header.tensors) - set(expected))
    if missing or extra:
        raise _fail(
            path,
            shorten(
                f"tensors do not match {name}: missing {missing[:5]}, unexpected {extra[:5]}", 400
            ),
        )
    for k, v in expected.items():
        e = header.tensors[k]
        if v.shape != e.shape or v.dtype != e.torch_dtype:
            raise _fail(
                path,
                f"tensor {k!r} is {e.torch_dtype}{e.shape}, "
                f"architecture expects {v.dtype}{tuple(v.shape)}",
            )


def load(
    path: str | Path,
    device: str | torch.device = "cpu",
    allow_nonfinite: bool = False,
    builder: Builder | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from its file. Returns (model in eval mode, metadata). `builder`
    builds the architecture instead of the file's record (the caller's own config names
    it, e.g. a `_target_` model, which a file is never trusted to name)."""
    path = Path(path)
    header = read_header(path)
    meta = _parse_meta(path, header.metadata)
    arch = meta["arch"]
    _check_arch_bounds(path, arch, header)
    model = _build(path, arch, builder, meta=True)
    _check_shapes(path, arch["name"], model, header)
    state, digest = read_state(header)
    if header.metadata.get("checksum") != digest:
        raise _fail(path, "checksum mismatch: tensors were altered or corrupted")
    if not allow_nonfinite:
        for k, t in state.items():
            if not all_finite(t):
                raise _fail(path, f"tensor {k!r} holds NaN or Inf values")
    model.load_state_dict(state, assign=True)  # adopt the tensors: no second copy
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        # A buffer outside the state dict (none of ours has one) has no data in the file:
        # build for real, now that the shapes are known to be the file's, and copy.
        real = _build(path, arch, builder, meta=False)
        real.load_state_dict(state)
        model = real
    return model.to(device).eval(), meta


def fit_state(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    label: str,
    allow_nonfinite: bool = False,
) -> nn.Module:
    """Load a foreign state dict into `model`, refusing any mismatch of keys, shapes or
    dtypes, and NaN or Inf values, with one line naming `label` and the first offender."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise LineageError(
            shorten(
                f"{label}: tensors do not match the architecture: missing {missing[:5]}, "
                f"unexpected {extra[:5]}",
                400,
            )
        )
    for k, v in expected.items():
        if v.shape != state[k].shape or v.dtype != state[k].dtype:
            raise LineageError(
                f"{label}: tensor {k!r} is {state[k].dtype}{tuple(state[k].shape)}, "
                f"the architecture expects {v.dtype}{tuple(v.shape)}"
            )
        if not allow_nonfinite and v.is_floating_point() and not all_finite(state[k]):
            raise LineageError(f"{label}: tensor {k!r} holds NaN or Inf values")
    model.load_state_dict(dict(state))
    return model

"""Model files: one .safetensors file whose metadata says how to rebuild and audit it.

Suspect models come from strangers, so loading never unpickles anything. We parse and
bound the safetensors header ourselves before handing the bytes to the safetensors
reader, check every tensor against the recorded architecture, and verify a checksum.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ..errors import LineageError
from ..utils import atomic_write, git_sha
from .registry import MODELS, arch_of, rebuild

FORMAT = "lineage-model/1"
MAX_HEADER = 16 * 2**20  # a real header is a few KB; a huge declared length is an attack
MAX_FILE = 4 * 2**30
DTYPE_SIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
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
    "created": str,
    "git_sha": str,
}


def checksum(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save(model: nn.Module, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write `model` and its metadata atomically. `meta` adds id, parent_id, data, etc."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
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


def _fail(path: Path, why: str) -> LineageError:
    return LineageError(f"{path.name}: not a valid lineage model file: {why}")


def read_header(path: Path, raw: bytes) -> dict[str, Any]:
    """Validate the safetensors header: bounded size, JSON, tensors inside the file."""
    if len(raw) < 8:
        raise _fail(path, f"too short ({len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER or 8 + n > len(raw):
        raise _fail(path, f"declared header of {n} bytes does not fit (file {len(raw)} bytes)")
    try:
        header = json.loads(raw[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _fail(path, "header is not JSON (truncated, or not a safetensors file)") from None
    if not isinstance(header, dict):
        raise _fail(path, "header is not a JSON object")
    body = len(raw) - 8 - n
    for name, spec in header.items():
        if name != "__metadata__":
            _check_entry(path, name, spec, body)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or "lineage" not in meta:
        raise _fail(path, "no lineage metadata (was it written by lineage.models.save?)")
    return header


def peek_header(path: Path) -> dict[str, Any]:
    """The safetensors header of `path`, read alone (bounded) and checked like read_header,
    lineage metadata or not."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _fail(path, f"too short ({len(head)} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise _fail(path, f"declared header of {n} bytes does not fit (file {size} bytes)")
        blob = f.read(n)
    try:
        header = json.loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _fail(path, "header is not JSON (truncated, or not a safetensors file)") from None
    if not isinstance(header, dict):
        raise _fail(path, "header is not a JSON object")
    body = size - 8 - n
    for name, spec in header.items():
        if name != "__metadata__":
            _check_entry(path, name, spec, body)
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict):
        raise _fail(path, "__metadata__ is not a JSON object")
    return header


def _check_entry(path: Path, name: str, spec: Any, body: int) -> None:
    ok = (
        isinstance(spec, dict)
        and isinstance(spec.get("dtype"), str)
        and spec["dtype"] in DTYPE_SIZE
        and isinstance(spec.get("shape"), list)
        and all(isinstance(d, int) and 0 <= d < 2**40 for d in spec["shape"])
        and isinstance(spec.get("data_offsets"), list)
        and len(spec["data_offsets"]) == 2
        and all(isinstance(o, int) for o in spec["data_offsets"])
    )
    if not ok:
        raise _fail(path, f"malformed entry for tensor {name!r}")
    a, b = spec["data_offsets"]
    size = DTYPE_SIZE[spec["dtype"]] * math.prod(spec["shape"])
    if not 0 <= a <= b <= body or b - a != size:
        raise _fail(path, f"tensor {name!r} lies outside the file or has the wrong length")


def _parse_meta(path: Path, raw_meta: dict[str, Any]) -> dict[str, Any]:
    try:
        meta = json.loads(raw_meta["lineage"])
    except (TypeError, json.JSONDecodeError):
        raise _fail(path, "lineage metadata is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _fail(path, f"metadata format is not {FORMAT!r}")
    arch = meta.get("arch")
    if not (
        isinstance(arch, dict)
        and isinstance(arch.get("name"), str)
        and isinstance(arch.get("num_classes"), int)
        and isinstance(arch.get("in_channels"), int)
        and isinstance(arch.get("input_size"), list)
        and all(isinstance(v, int) for v in arch["input_size"])
        and isinstance(arch.get("kwargs", {}), dict)
    ):
        raise _fail(path, "metadata 'arch' is missing or has wrong types")
    target = arch.get("target")
    if target is not None and not isinstance(target, str):
        raise _fail(path, "metadata 'arch.target' is not a string")
    widths = arch.get("narrow")
    if widths is not None and not (
        isinstance(widths, dict)
        and all(isinstance(k, str) and type(v) is int and 0 < v < 2**31 for k, v in widths.items())
    ):
        raise _fail(path, "metadata 'arch.narrow' must map layer names to positive widths")
    if target is None and arch["name"] not in MODELS:
        raise _fail(path, f"unknown architecture {arch['name']!r}; known: {MODELS.names()}")
    for key, typ in META_TYPES.items():
        if key in meta and not isinstance(meta[key], typ):
            raise _fail(path, f"metadata {key!r} has type {type(meta[key]).__name__}")
    return meta


def read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and checked metadata of a project model file (checksum verified)."""
    path = Path(path)
    if not path.is_file():
        raise LineageError(f"model file not found: {path}")
    if path.stat().st_size > MAX_FILE:
        raise _fail(path, f"larger than {MAX_FILE} bytes")
    raw = path.read_bytes()
    header = read_header(path, raw)
    meta = _parse_meta(path, header["__metadata__"])
    try:
        state = st_load(raw)
    except Exception as e:  # the Rust reader's errors are not one class
        raise _fail(path, f"tensor data unreadable ({e})") from None
    if header["__metadata__"].get("checksum") != checksum(state):
        raise _fail(path, "checksum mismatch: tensors were altered or corrupted")
    return state, meta


def fit_state(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    label: str,
    allow_nonfinite: bool = False,
) -> nn.Module:
    """Load `state` into `model`, refusing any mismatch of keys, shapes or dtypes, and NaN
    or Inf values, with one line naming `label` and the first offending tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise LineageError(
            f"{label}: tensors do not match the architecture: missing {missing[:5]}, "
            f"unexpected {extra[:5]}"
        )
    for k, v in expected.items():
        if v.shape != state[k].shape or v.dtype != state[k].dtype:
            raise LineageError(
                f"{label}: tensor {k!r} is {state[k].dtype}{tuple(state[k].shape)}, "
                f"the architecture expects {v.dtype}{tuple(v.shape)}"
            )
        if not allow_nonfinite and v.is_floating_point() and not torch.isfinite(state[k]).all():
            raise LineageError(f"{label}: tensor {k!r} holds NaN or Inf values")
    model.load_state_dict(state)
    return model


def load(
    path: str | Path,
    device: str | torch.device = "cpu",
    allow_nonfinite: bool = False,
    builder: Callable[[], nn.Module] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from its file. Returns (model in eval mode, metadata). `builder`
    builds the architecture instead of the file's record (the caller's own config names
    it, e.g. a `_target_` model that the file cannot be trusted to name)."""
    path = Path(path)
    state, meta = read(path)
    a = meta["arch"]
    try:
        model = builder() if builder is not None else rebuild(a)
    except (LineageError, ValueError, RuntimeError) as e:
        raise _fail(path, f"cannot build recorded architecture ({e})") from None
    try:
        fit_state(model, state, f"{path.name}: not a valid lineage model file", allow_nonfinite)
    except LineageError as e:
        raise LineageError(str(e)) from None
    return model.to(device).eval(), meta

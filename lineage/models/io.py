"""Model files: one .safetensors file whose metadata says how to rebuild and audit it.

Suspect models come from strangers, so loading never unpickles anything, and nothing in
the file is trusted before it is bounded:

1. `read_header` (lineage.models.tensorfile) reads only the header, bounded.
2. The recorded architecture is built on the meta device (shapes only, no memory), after
   every number in `arch.kwargs` is bounded by the number of values the file holds, and
   its tensors must match the header's names, dtypes and shapes. So the real model can
   never be larger than the file: a 100 KB file cannot make us allocate gigabytes.
3. `read_state` streams the tensors from the file, checksummed on the way, and the model
   adopts them without a copy (`load_state_dict(assign=True)`): peak memory about 1x the
   file size (benchmarks/bench_load_memory.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save
from torch import nn

from ..errors import LineageError
from ..text import shorten
from ..utils import atomic_write, git_sha, loads_json
from .registry import MODELS, arch_of, rebuild, refuse_target
from .tensorfile import (
    MAX_DEPTH,
    MAX_TENSORS,
    Header,
    StreamingChecksum,
    TensorEntry,
    _failure,
    all_finite,
    checksum,
    read_header,
    read_state,
    stream_tensors,
)

_fail = _failure("lineage model file")

__all__ = [
    "FORMAT",
    "Header",
    "StreamingChecksum",
    "TensorEntry",
    "all_finite",
    "checksum",
    "fit_state",
    "load",
    "read_header",
    "read_state",
    "save",
    "stream_tensors",
]

Builder = Callable[[], nn.Module]

FORMAT = "lineage-model/1"
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
    if builder is None and arch.get("target") is not None:
        raise LineageError(f"{shorten(path.name)}: {refuse_target(arch['target'])}")
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


def read_meta(path: str | Path) -> dict[str, Any]:
    """A lineage file's checked metadata, its tensors unread."""
    path = Path(path)
    return _parse_meta(path, read_header(path).metadata)


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

"""Measuring points: the source's ray and boundary, then the suspect's along the same ray.

The source's half (its direction, its boundary distance and class) depends on the source,
the data and the search settings only, not on the suspect, so `SourceCache` keeps it per
batch of points: judging many suspects against one parent measures it once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from ...errors import LineageError
from ...runtime import device_of
from ..boundary import Boundary, Model, Probe, boundary_distance, direction, logit_margin
from ..sampling import Points


def check_data(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise LineageError("closeness: x and y must be tensors")
    if len(x) == 0:
        raise LineageError("closeness: no data points given (x is empty)")
    if x.dim() >= 2 and not x.is_floating_point():
        raise LineageError(
            f"closeness: x holds {x.dtype} values (token ids?), which have no gradient "
            "direction; pass float inputs instead: for a model that embeds ids, the "
            "embeddings and a model that reads them (e.g. a Hugging Face model's "
            "inputs_embeds), so distances are in embedding units"
        )
    if x.dim() < 2:
        raise LineageError(f"closeness: x must be a batch (N, ...), got shape {tuple(x.shape)}")
    if y.dim() != 1 or len(y) != len(x) or y.is_floating_point():
        raise LineageError(
            f"closeness: y must hold one integer label per point, got {y.dtype} "
            f"{tuple(y.shape)} for {len(x)} points"
        )
    if not torch.isfinite(x).all():
        raise LineageError("closeness: x holds NaN or Inf values")


@dataclass
class SourceSide:
    """The source's half of a measurement: rays (x, s) and its search along them."""

    index: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    s: torch.Tensor
    correct: torch.Tensor
    boundary: Boundary

    @property
    def valid(self) -> torch.Tensor:
        return self.correct & torch.isfinite(self.boundary.distance)

    def take(self, keep: torch.Tensor) -> SourceSide:
        b = self.boundary
        return SourceSide(
            self.index[keep],
            self.x[keep],
            self.y[keep],
            self.s[keep],
            self.correct[keep],
            Boundary(*(getattr(b, f.name)[keep] for f in fields(b))),
        )


SEARCH_KEYS = ("d_max", "step", "tol", "search", "max_chunk", "batch_size")


class SourceCache:
    """Source sides by batch of point indices, for one source, data and search settings.
    Sampling draws the same batches for every suspect (the order depends on the labels and
    the seed only), so each batch is measured once; anything else is measured anew."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.sides: dict[tuple[int, ...], SourceSide] = {}

    def get(
        self,
        source: Model,
        probe: Probe,
        x: torch.Tensor,
        y: torch.Tensor,
        index: torch.Tensor,
        cfg: Mapping[str, Any],
    ) -> SourceSide:
        data = (x.data_ptr(), tuple(x.shape), y.data_ptr())
        key = (id(source), *data, *(cfg[k] for k in SEARCH_KEYS))
        if key != self.key:
            self.key, self.sides = key, {}
        ids = tuple(index.tolist())
        if ids not in self.sides:
            self.sides[ids] = source_side(source, probe, x, y, index, cfg)
        return self.sides[ids]


def source_side(
    source: Model,
    probe: Probe,
    x: torch.Tensor,
    y: torch.Tensor,
    index: torch.Tensor,
    cfg: Mapping[str, Any],
) -> SourceSide:
    dev = probe.device
    xs, ys = x[index].to(dev), y[index].to(dev)
    s, z = direction(source, xs, ys, probe.batch_size)
    probe.evals += len(xs)
    correct = z.argmax(1) == ys
    found = boundary_distance(probe, xs, s, ys, correct, logit_margin(z, ys)[0], cfg)
    return SourceSide(index.to(dev), xs, ys, s, correct, found)


def suspect_side(probe: Probe, src: SourceSide, cfg: Mapping[str, Any]) -> Points:
    valid = src.valid
    idx = valid.nonzero().squeeze(1)
    pred0, marg0, _ = probe(
        src.x, src.s, idx, torch.zeros(len(idx), dtype=torch.float64, device=src.x.device), src.y
    )
    correct = torch.zeros_like(valid)
    correct[idx] = pred0 == src.y[idx]
    margin0 = None
    if marg0 is not None:
        margin0 = torch.zeros(len(valid), dtype=torch.float64, device=src.x.device)
        margin0[idx] = marg0
    found = boundary_distance(probe, src.x, src.s, src.y, correct, margin0, cfg, src.boundary)
    d, adv = found.distance, found.cls
    matched = correct & torch.isfinite(d) & (adv == src.boundary.cls)
    cpu = {
        "index": src.index,
        "label": src.y,
        "valid": valid,
        "d_source": src.boundary.distance,
        "d_suspect": d,
        "adv_source": src.boundary.cls,
        "adv_suspect": adv,
        "suspect_correct": correct,
        "matched": matched,
    }
    return Points(**{k: v.detach().cpu() for k, v in cpu.items()})


def batch_size(cfg: Mapping[str, Any], device: torch.device, row_numel: int) -> int:
    """Rows per forward pass. On CPU a chunk's inputs stay near 0.5 MB so its activations
    stay in cache (MNIST LeNet ran 1.7x slower per row at 512 rows than at 128-256); on
    CUDA near 256 MB, to fill the device without running out of memory."""
    if cfg["batch_size"]:
        return int(cfg["batch_size"])
    if device.type == "cuda":
        return max(64, min(8192, 2**26 // row_numel))
    return max(32, min(1024, 2**17 // row_numel))


def source_probe(source: Model, x: torch.Tensor, y: torch.Tensor, c: Mapping[str, Any]) -> Probe:
    """Probe the source on one point: it must answer logits, and y must be its classes."""
    src = Probe(source, "source", batch_size(c, device_of(source), x[0].numel()))
    _probe_once(src, x, y)
    if src.kind != "logits":
        raise LineageError("source: must be a white-box model returning logits")
    if int(y.min()) < 0 or int(y.max()) >= (src.num_classes or 0):
        raise LineageError(
            f"closeness: labels must lie in 0..{(src.num_classes or 0) - 1} "
            f"(the source's classes), got {int(y.min())}..{int(y.max())}"
        )
    src.evals = 0
    return src


def suspect_probe(
    src: Probe, model: Model, name: str, x: torch.Tensor, y: torch.Tensor, c: Mapping[str, Any]
) -> Probe:
    """Probe a suspect on one point: its classes must be the source's (unless allowed)."""
    # a remote suspect names its request size (lineage.remote.RemoteModel.batch_rows)
    sus = Probe(model, name, int(getattr(model, "batch_rows", None) or src.batch_size))
    pred = _probe_once(sus, x, y)
    if not c["allow_class_mismatch"]:
        if sus.num_classes is not None and sus.num_classes != src.num_classes:
            raise LineageError(
                f"{name} has {sus.num_classes} classes, the source "
                f"{src.num_classes}; set closeness.allow_class_mismatch=true "
                "to compare labels anyway (transfer route)"
            )
        if sus.num_classes is None and not 0 <= pred < (src.num_classes or 0):
            raise LineageError(
                f"{name} answered label {pred}, outside the source's {src.num_classes} classes"
            )
    sus.evals = 0
    return sus


def _probe_once(probe: Probe, x: torch.Tensor, y: torch.Tensor) -> int:
    zero = torch.zeros(1, dtype=torch.float64, device=x.device)
    pred, _, _ = probe(x[:1], torch.zeros_like(x[:1]), zero.long(), zero, y[:1])
    return int(pred[0])

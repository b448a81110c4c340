"""Lineage closeness: how far a suspect's decision boundaries moved from the source's.

**Direction.** For each sampled point x with label y that the source classifies correctly,
s = sign(grad_x CE(f_source(x), y)). Only the source's gradient is used, so the suspect may
be a black box: any callable returning logits (N, C) or labels (N,) (see `LabelOnly`).

**Adversarial distance.** d_m(x) is the smallest t >= 0 on the ray x + t*s at which
argmax f_m stops being y, to precision `tol`, up to `d_max` (input units). As in the
reference code the ray is NOT clamped to the input box [0, 1]: the distance measures the
decision boundary of the function, not of valid images. The reference steps the ray with
batch size 1 (0.1, then 0.01, ..., 1e-5) and stops at the first flip. Here all points run
at once: the first flip on the same 0.1 grid is bracketed (several grid points per point in
one pass, as many as a linear extrapolation of the logit margin says are needed), then the
bracket is refined by a Brent-style root search on the logit margin (inverse quadratic and
secant steps, bisection as the safeguard; for label-only models a split at equal prior
mass around the source's flip, lineage.evaluate.label_search) until the root is known to
`tol`: a bracket at most `tol` wide, or, a ReLU network's margin being piecewise linear
along the ray, two close probes whose secant puts the root within tol of the newest. d is
the bracket's flipped end (as in the reference), or the settled probe if it flipped, else
the secant's root. A suspect's search starts from the source's flip,
moved by the two models' margin difference across the grid step, which for a derived model
lands close to its own root. Passes, not precision, are what this saves: MNIST LeNet with
500 points takes ~11 model evaluations per point against ~35 for bracket-and-bisection.

**Matching.** A point matches when the suspect predicts y at x, both models flip within
d_max, and both flip into the same adversarial class.

**Score.** Over the n sampled valid points i (source correct and flipping within d_max),
with M the matched points and shift_i = max(0, |d_sus,i - d_src,i| - tol):

    match_rate    = |M| / n
    mean_distance = sum_M shift_i / sum_M d_src,i          (0 when M is empty: nan)
    score         = (1/n) sum_M (1 - min(1, shift_i / d_src,i))
                  = match_rate * (1 - mean_M min(1, shift_i / d_src,i))

Each matched point adds how much of its boundary stayed put: 1 for no shift, 0 for a shift
as large as the source's own distance (or larger). Relative shifts make scores compare
across datasets and input scales; capping each point at 1 keeps a few far flips (up to
d_max) from swamping the estimate, so the bootstrap CI of this mean of bounded per-point
contributions shrinks like 1/sqrt(n), which the ratio of sums behind mean_distance does not
(on MNIST LeNet pruned 90%, its CI stopped shrinking past 500 points). Each distance is
known to `tol`, so shifts within `tol` count as none: identical models give exactly score 1
and match_rate 1. mean_distance (the matched points' mean shift over the source's mean
distance) and the signed mean sum_M (d_sus - d_src) / sum_M d_src (> 0: the suspect's
boundary lies farther out) are reported beside the score.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from ..errors import LineageError
from . import sampling
from .boundary import (
    Boundary,
    Model,
    Probe,
    boundary_distance,
    device_of,
    direction,
    eval_mode,
    ieee_fp32,
    logit_margin,
)
from .sampling import Points

DEFAULTS: dict[str, Any] = {
    "d_max": 10.0,
    "step": 0.1,
    "tol": 1e-5,
    "search": "brent",
    "max_chunk": 8,
    "batch_size": None,
    "strategy": "stratified",
    "ci_tol": 0.02,
    "batch_points": 100,
    "min_points": 100,
    "max_points": 2000,
    "n_boot": 1000,
    "filter": True,
    "filter_pool": None,
    "allow_class_mismatch": False,
    "seed": 0,
    "progress": True,
}
SEARCHES = ("brent", "bisection")
STRATEGIES = ("stratified", "uniform")


class LabelOnly(nn.Module):
    """A black-box view of `model` that answers hard labels only (1-D int64)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).argmax(1)


@dataclass
class References:
    """Known relatives of the source, for the AAAI 2025 point filtering."""

    lineage: Sequence[Model] = ()
    independent: Sequence[Model] = ()


@dataclass
class ClosenessResult:
    score: float
    match_rate: float
    mean_distance: float  # normalised by the source's mean distance over matched points
    signed_mean_distance: float
    n_points: int  # valid points in the score
    ci_low: float  # bootstrap 95% CI of the score
    ci_high: float
    seconds: float
    n_passes: float  # model evaluations per drawn point (both models, gradient pass counted once)
    n_drawn: int  # points attacked, invalid ones included
    stopped: str  # "ci" | "max_points" | "exhausted" | "budget" (a remote query budget)
    suspect_output: str  # "logits" | "labels"
    filtered: bool  # AAAI 2025 filtering applied
    points: Points | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The scalar fields (for metrics.json); the per-point arrays stay out."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "points"}


# ---------------------------------------------------------------- configuration and input


def config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults filled in and every key checked, so a bad value fails before any attack."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise LineageError(f"closeness: unknown keys {unknown}; valid: {sorted(DEFAULTS)}")
    c = {**DEFAULTS, **cfg}
    for key in ("d_max", "step", "tol", "ci_tol"):
        if not (isinstance(c[key], (int, float)) and math.isfinite(c[key]) and c[key] > 0):
            raise LineageError(f"closeness.{key}={c[key]!r} must be a positive number")
    if not c["tol"] < c["step"] <= c["d_max"]:
        raise LineageError(
            f"closeness: need tol < step <= d_max, got tol={c['tol']}, "
            f"step={c['step']}, d_max={c['d_max']}"
        )
    for key in ("max_chunk", "batch_points", "min_points", "max_points", "n_boot"):
        if not isinstance(c[key], int) or c[key] < 1:
            raise LineageError(f"closeness.{key}={c[key]!r} must be a positive integer")
    for key in ("batch_size", "filter_pool"):
        if c[key] is not None and (not isinstance(c[key], int) or c[key] < 1):
            raise LineageError(f"closeness.{key}={c[key]!r} must be a positive integer or null")
    if c["min_points"] > c["max_points"]:
        raise LineageError(
            f"closeness: min_points={c['min_points']} exceeds max_points={c['max_points']}"
        )
    if c["search"] not in SEARCHES:
        raise LineageError(f"closeness.search={c['search']!r}; valid: {', '.join(SEARCHES)}")
    if c["strategy"] not in STRATEGIES:
        raise LineageError(f"closeness.strategy={c['strategy']!r}; valid: {', '.join(STRATEGIES)}")
    return c


def check_data(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise LineageError("closeness: x and y must be tensors")
    if len(x) == 0:
        raise LineageError("closeness: no data points given (x is empty)")
    if x.dim() < 2 or not x.is_floating_point():
        raise LineageError(
            f"closeness: x must be a float batch (N, ...), got {x.dtype} {tuple(x.shape)}"
        )
    if y.dim() != 1 or len(y) != len(x) or y.is_floating_point():
        raise LineageError(
            f"closeness: y must hold one integer label per point, got {y.dtype} "
            f"{tuple(y.shape)} for {len(x)} points"
        )
    if not torch.isfinite(x).all():
        raise LineageError("closeness: x holds NaN or Inf values")


# ---------------------------------------------------------------- measuring points


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


def _batch_size(cfg: Mapping[str, Any], device: torch.device, row_numel: int) -> int:
    """Rows per forward pass. On CPU a chunk's inputs stay near 0.5 MB so its activations
    stay in cache (MNIST LeNet ran 1.7x slower per row at 512 rows than at 128-256); on
    CUDA near 256 MB, to fill the device without running out of memory."""
    if cfg["batch_size"]:
        return int(cfg["batch_size"])
    if device.type == "cuda":
        return max(64, min(8192, 2**26 // row_numel))
    return max(32, min(1024, 2**17 // row_numel))


def _source_probe(source: Model, x: torch.Tensor, y: torch.Tensor, c: Mapping[str, Any]) -> Probe:
    """Probe the source on one point: it must answer logits, and y must be its classes."""
    src = Probe(source, "source", _batch_size(c, device_of(source), x[0].numel()))
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


def _suspect_probe(
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


def measure_points(
    source: Model,
    suspect: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: Mapping[str, Any] | None = None,
) -> tuple[Points, float]:
    """Attack every point once (no sampling): per-point measurements and evaluations/point."""
    c = config(cfg)
    check_data(x, y)
    with eval_mode(source, suspect), ieee_fp32(device_of(source)):
        src = _source_probe(source, x, y, c)
        sus = _suspect_probe(src, suspect, "suspect", x, y, c)
        side = source_side(source, src, x, y, torch.arange(len(x)), c)
        pts = suspect_side(sus, side, c)
    return pts, (src.evals + sus.evals) / len(x)


# ---------------------------------------------------------------- the score


def contributions(p: Points, tol: float) -> torch.Tensor:
    """Each point's share of the score: 1 - min(1, shift / d_src) if matched, else 0."""
    d_src = torch.where(p.matched, p.d_source, 1.0).double()
    shift = ((torch.where(p.matched, p.d_suspect, 1.0).double() - d_src).abs() - tol).clamp(min=0)
    return torch.where(p.matched, (1 - shift / d_src).clamp(min=0), 0.0)


def score_terms(p: Points, weights: torch.Tensor, tol: float) -> dict[str, torch.Tensor]:
    """The measures of the module docstring, for each row of point `weights` (B, n): a row
    of ones is the plain estimate, a row of bootstrap counts one resample."""
    w = weights.double()
    n = w.sum(1).clamp(min=1e-300)
    wm = w * p.matched.double()
    d_src = torch.where(p.matched, p.d_source, 0.0).double()
    d_sus = torch.where(p.matched, p.d_suspect, 0.0).double()
    src_sum = (wm * d_src).sum(1)
    some = src_sum > 0
    per_src = src_sum.clamp(min=1e-300)
    shift = ((d_sus - d_src).abs() - tol).clamp(min=0)
    return {
        "score": (w * contributions(p, tol)).sum(1) / n,
        "match_rate": wm.sum(1) / n,
        "mean_distance": torch.where(some, (wm * shift).sum(1) / per_src, math.nan),
        "signed_mean_distance": torch.where(
            some, (wm * (d_sus - d_src)).sum(1) / per_src, math.nan
        ),
    }


def closeness_threshold(reference_scores: Sequence[float], gamma: float = 0.25) -> float:
    """The function-route threshold: a suspect whose closeness score exceeds it is judged
    to copy the source's function.

    Calibrated on the closeness scores of independent references (same task, other seeds):
    tau = m + gamma * (1 - m), m = the highest reference score, i.e. a quarter of the way
    from the most source-like independent model to a perfect copy (score 1). The margin is a
    fraction of the room left above the references, not a constant of any dataset, and keeps
    a reference's sampling noise (its CI) from crossing the threshold. Without references it
    falls back to the uncalibrated midpoint 0.5; callers report calibrated = bool(scores).
    """
    scores = [float(v) for v in reference_scores]
    if not all(math.isfinite(v) and 0 <= v <= 1 for v in scores):
        raise LineageError(
            f"closeness_threshold: reference scores must lie in [0, 1], got {scores}"
        )
    if not 0 <= gamma < 1:
        raise LineageError(f"closeness_threshold: gamma={gamma} must lie in [0, 1)")
    if not scores:
        return 0.5
    m = max(scores)
    return m + gamma * (1 - m)


# ---------------------------------------------------------------- the measure


def _progress(enabled: bool, total: int, desc: str) -> Any:
    if not (enabled and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="pt", file=sys.stderr, leave=False)


def closeness(
    source: Model,
    suspect: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: Mapping[str, Any] | None = None,
    references: References | None = None,
    seed: int | None = None,
    candidates: torch.Tensor | None = None,
) -> ClosenessResult:
    """Lineage closeness of `suspect` to `source` on data (x, y); see the module docstring.

    Points are drawn by `lineage.evaluate.sampling` (cfg.strategy): stratified by class,
    invalid points dropped, in batches until the bootstrap 95% CI half-width of the score is
    <= ci_tol or max_points is reached. With `references` holding both known lineage and
    known independent models (and cfg.filter), only points from `filter_points` are drawn
    (AAAI 2025); `candidates` (indices into x, e.g. a saved `filter_points` answer reused
    for many suspects) fixes the points and their order instead.
    """
    t0 = time.perf_counter()
    c = config(cfg)
    check_data(x, y)
    seed = int(c["seed"] if seed is None else seed)
    tol = float(c["tol"])
    refs = references or References()
    filtered = candidates is not None or bool(c["filter"] and refs.lineage and refs.independent)
    ref_evals = 0
    if candidates is None and filtered:
        candidates, ref_evals = _filter_points(source, x, y, refs, c, seed)
    uniform = c["strategy"] == "uniform" and candidates is None
    if candidates is not None:
        order = _check_candidates(candidates, len(x))
    elif uniform:
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    else:
        order = sampling.stratified_order(y, seed)
    with eval_mode(source, suspect), ieee_fp32(device_of(source)):
        src = _source_probe(source, x, y, c)
        sus = _suspect_probe(src, suspect, "suspect", x, y, c)

        def measure(ids: torch.Tensor) -> Points:
            return suspect_side(sus, source_side(source, src, x, y, ids, c), c)

        bar = _progress(bool(c["progress"]), c["max_points"], "closeness")
        try:
            run = sampling.sequential(
                order,
                measure,
                lambda p, w: score_terms(p, w, tol)["score"],
                c,
                seed,
                drop_invalid=not uniform,
                on_step=bar.update if bar else None,
                cost=lambda: sus.evals,
            )
        finally:
            if bar:
                bar.close()
    pts: Points = run.points
    if pts.valid.sum() == 0:
        raise LineageError(
            f"closeness: no valid point left after filtering ({run.n_drawn} "
            "drawn): the source misclassifies them or does not flip within "
            f"d_max={c['d_max']}"
        )
    est = {k: float(v[0]) for k, v in score_terms(pts, torch.ones(1, len(pts.index)), tol).items()}
    evals = src.evals + sus.evals + ref_evals
    return ClosenessResult(
        score=est["score"],
        match_rate=est["match_rate"],
        mean_distance=est["mean_distance"],
        signed_mean_distance=est["signed_mean_distance"],
        n_points=len(pts.index),
        ci_low=run.ci_low,
        ci_high=run.ci_high,
        seconds=time.perf_counter() - t0,
        n_passes=evals / max(1, run.n_drawn),
        n_drawn=run.n_drawn,
        stopped=run.stopped,
        suspect_output=sus.kind or "logits",
        filtered=filtered,
        points=pts,
    )


def _check_candidates(candidates: torch.Tensor, n: int) -> torch.Tensor:
    idx = torch.as_tensor(candidates).cpu()
    if idx.dim() != 1 or idx.is_floating_point() or len(idx) == 0:
        raise LineageError("closeness: candidates must be a non-empty 1-D tensor of indices")
    if int(idx.min()) < 0 or int(idx.max()) >= n:
        raise LineageError(f"closeness: candidate indices must lie in 0..{n - 1}")
    return idx.long()


def filter_points(
    source: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    references: References,
    cfg: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """AAAI 2025 filtering: indices of valid points (class-stratified order) that every
    known lineage reference matches and no known independent reference matches, at most
    filter_pool of them. The answer depends on the source and references only, so it can be
    computed once and passed to `closeness(..., candidates=...)` for many suspects."""
    c = config(cfg)
    check_data(x, y)
    if not (references.lineage and references.independent):
        raise LineageError(
            "filter_points: needs at least one known lineage and one known independent reference"
        )
    return _filter_points(source, x, y, references, c, int(c["seed"] if seed is None else seed))[0]


def _filter_points(
    source: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    refs: References,
    c: Mapping[str, Any],
    seed: int,
) -> tuple[torch.Tensor, int]:
    want = int(c["filter_pool"] or c["max_points"])
    order = sampling.stratified_order(y, seed)
    block = max(int(c["batch_points"]), 512)  # a scan over the data: big blocks, few passes
    kept: list[torch.Tensor] = []
    n_kept = 0
    with eval_mode(source, *refs.lineage, *refs.independent), ieee_fp32(device_of(source)):
        src = _source_probe(source, x, y, c)
        groups = [
            [_suspect_probe(src, r, f"{kind} reference {i}", x, y, c) for i, r in enumerate(g)]
            for kind, g in (("lineage", refs.lineage), ("independent", refs.independent))
        ]
        bar = _progress(bool(c["progress"]), want, "filtering points")
        try:
            for a in range(0, len(order), block):
                side = source_side(source, src, x, y, order[a : a + block], c)
                side = side.take(side.valid)
                if len(side.index) == 0:
                    continue
                lin, ind = (
                    torch.stack([suspect_side(p, side, c).matched for p in g]) for g in groups
                )
                keep = sampling.consistent_points(lin, ind)
                kept.append(side.index[keep.to(side.index.device)].cpu())
                n_kept += int(keep.sum())
                if bar:
                    bar.update(int(keep.sum()))
                if n_kept >= want:
                    break
        finally:
            if bar:
                bar.close()
    pool = torch.cat(kept)[:want] if kept else torch.zeros(0, dtype=torch.long)
    if len(pool) == 0:
        raise LineageError(
            "closeness: no valid point left after filtering: no point is matched by "
            "every lineage reference and by no independent one"
        )
    return pool, src.evals + sum(p.evals for g in groups for p in g)

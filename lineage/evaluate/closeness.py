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
secant steps, bisection as the safeguard; bisection alone for label-only models) until the
root is known to `tol`: a bracket at most `tol` wide, or, a ReLU network's margin being
piecewise linear along the ray, two close probes whose secant puts the root within tol/4
of the newest. d is the flipped end of the bracket (or that root), as in the reference.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from itertools import chain
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LineageError
from . import sampling
from .sampling import Points

Model = Callable[[torch.Tensor], torch.Tensor]

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
    stopped: str  # "ci" | "max_points" | "exhausted"
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


def _device_of(model: Any) -> torch.device:
    dev = getattr(model, "device", None)
    if isinstance(dev, (str, torch.device)):
        return torch.device(dev)
    if isinstance(model, nn.Module):
        for t in chain(model.parameters(), model.buffers()):
            return t.device
    return torch.device("cpu")


@contextmanager
def _eval_mode(*models: Any) -> Iterator[None]:
    """Evaluate in eval mode, then give every module its own flag back."""
    flags = [
        (m, m.training) for model in models if isinstance(model, nn.Module) for m in model.modules()
    ]
    for m, _ in flags:
        m.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def _ieee_fp32(device: torch.device) -> Iterator[None]:
    """Full fp32 on CUDA while attacking: TF32 (cuDNN's default for convolutions) rounds
    logits to ~1e-3, far coarser than `tol`, and differently for each batch size."""
    if device.type != "cuda":
        yield
        return
    cudnn: Any = torch.backends.cudnn
    matmul: Any = torch.backends.cuda.matmul
    knobs: list[tuple[Any, str, Any]]
    if hasattr(getattr(cudnn, "conv", None), "fp32_precision"):  # torch >= 2.9
        knobs = [
            (cudnn.conv, "fp32_precision", "ieee"),
            (cudnn.rnn, "fp32_precision", "ieee"),
            (matmul, "fp32_precision", "ieee"),
        ]
    else:
        knobs = [(cudnn, "allow_tf32", False), (matmul, "allow_tf32", False)]
    saved = [getattr(obj, name) for obj, name, _ in knobs]
    for obj, name, value in knobs:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for (obj, name, _), value in zip(knobs, saved):
            setattr(obj, name, value)


def _margin(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logit margin z_y - max_{k != y} z_k (>= 0 while the prediction is y, <= 0 once it
    flipped) and that rival class k, the one that takes over where the margin crosses 0."""
    z = logits.double()
    yy = y.clamp(max=z.shape[1] - 1).unsqueeze(1)  # y >= C only with a class mismatch
    other, rival = z.scatter(1, yy, -math.inf).max(1)
    return z.gather(1, yy).squeeze(1) - other, rival


# ---------------------------------------------------------------- model evaluation


class Probe:
    """Evaluates one model on points of the rays x + t*s in memory-sized chunks, counting
    evaluations. Learns on first use whether the model answers logits or labels."""

    def __init__(self, model: Model, name: str, batch_size: int):
        self.model, self.name, self.batch_size = model, name, batch_size
        self.device = _device_of(model)
        self.kind: str | None = None
        self.num_classes: int | None = None
        self.evals = 0

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        out = self.model(rows.to(self.device))
        if not isinstance(out, torch.Tensor) or len(out) != len(rows):
            raise LineageError(f"{self.name}: must return one output per input row")
        kind = (
            "logits"
            if out.dim() == 2 and out.is_floating_point()
            else "labels"
            if out.dim() == 1 and not out.is_floating_point()
            else None
        )
        if kind is None:
            raise LineageError(
                f"{self.name}: returned {out.dtype} {tuple(out.shape)}; expected "
                "logits (N, classes) or integer labels (N,)"
            )
        if self.kind is None:
            self.kind = kind
            self.num_classes = int(out.shape[1]) if kind == "logits" else None
        if kind == "logits" and not torch.isfinite(out).all():
            raise LineageError(f"{self.name}: produced NaN or Inf logits")
        self.evals += len(rows)
        return out

    @torch.no_grad()
    def __call__(
        self, x: torch.Tensor, s: torch.Tensor, idx: torch.Tensor, t: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """At x[idx] + t * s[idx]: the prediction and, for a model answering logits, the
        margin w.r.t. y and its rival class (see `_margin`); None for labels."""
        preds, margins, rivals = [], [], []
        shape = (-1,) + (1,) * (x.dim() - 1)
        for a in range(0, len(idx), self.batch_size):
            i, tt = idx[a : a + self.batch_size], t[a : a + self.batch_size]
            out = self.forward(x[i] + tt.to(x.dtype).view(shape) * s[i]).to(x.device)
            if out.dim() == 2:
                preds.append(out.argmax(1))
                margin, rival = _margin(out, y[i])
                margins.append(margin)
                rivals.append(rival)
            else:
                preds.append(out.long())
        pred = torch.cat(preds) if preds else y[:0]
        if margins and len(margins) == len(preds):
            return pred, torch.cat(margins), torch.cat(rivals)
        return pred, None, None


def direction(
    source: Model, x: torch.Tensor, y: torch.Tensor, batch_size: int, name: str = "source"
) -> tuple[torch.Tensor, torch.Tensor]:
    """s = sign(grad_x CE(f_source(x), y)) and the source's logits at x."""
    dirs, logits = [], []
    for a in range(0, len(x), batch_size):
        xi = x[a : a + batch_size].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            z = source(xi)
            if not (isinstance(z, torch.Tensor) and z.dim() == 2 and z.is_floating_point()):
                raise LineageError(
                    f"{name}: must be a white-box model returning logits "
                    "(its gradient sets the attack direction)"
                )
            if not torch.isfinite(z).all():
                raise LineageError(f"{name}: produced NaN or Inf logits")
            # summed loss: each point's gradient is its own, whatever the chunk size
            loss = F.cross_entropy(z.float(), y[a : a + batch_size].to(z.device), reduction="sum")
            (g,) = torch.autograd.grad(loss, xi)
        dirs.append(g.sign())
        logits.append(z.detach())
    return torch.cat(dirs), torch.cat(logits)


# ---------------------------------------------------------------- the batched search


def boundary_distance(
    probe: Probe,
    x: torch.Tensor,
    s: torch.Tensor,
    y: torch.Tensor,
    active: torch.Tensor,
    margin0: torch.Tensor | None,
    cfg: Mapping[str, Any],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adversarial distance along x + t*s for the `active` points (the model predicts y at
    x; `margin0` is its logit margin there, or None). Returns (distance, class at the flip);
    inf and -1 where the model does not flip within d_max or the point is inactive."""
    n, dev = len(y), x.device
    h, tol = float(cfg["step"]), float(cfg["tol"])
    K = int(math.floor(cfg["d_max"] / h + 1e-9))  # grid points h, 2h, ..., K*h
    use_margin = margin0 is not None and cfg["search"] == "brent"
    lo_k = torch.zeros(n, dtype=torch.long, device=dev)  # last grid index seen unflipped
    hi_k = torch.zeros_like(lo_k)  # first grid index seen flipped (0: none yet)
    cls = torch.full_like(lo_k, -1)
    f_hi = torch.zeros(n, dtype=torch.float64, device=dev)
    f_lo = margin0.double().clone() if margin0 is not None and use_margin else f_hi.clone()
    chunk = torch.ones_like(lo_k)
    pending = active.clone()

    # 1. Bracket the first flip on the grid. Every grid point before the flip is checked,
    #    as the reference does: a flip that un-flips between grid points is missed by both.
    while True:
        idx = pending.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        c = torch.minimum(chunk[idx], K - lo_k[idx])
        width = int(c.max())
        off = torch.arange(1, width + 1, device=dev)
        mask = off.unsqueeze(0) <= c.unsqueeze(1)
        rows = idx.unsqueeze(1).expand(-1, width)[mask]
        grid = (lo_k[idx].unsqueeze(1) + off.unsqueeze(0))[mask]
        pred, marg, _ = probe(x, s, rows, grid.double() * h, y)
        flip = torch.zeros(mask.shape, dtype=torch.bool, device=dev)
        flip[mask] = pred != y[rows]
        P = torch.full(mask.shape, -1, dtype=torch.long, device=dev)
        P[mask] = pred
        has = flip.any(1)
        first = flip.int().argmax(1)
        M = torch.full(mask.shape, math.nan, dtype=torch.float64, device=dev)
        if marg is not None:
            M[mask] = marg
        # found: bracket [grid-1, grid]
        f, o = idx[has], first[has]
        hi_k[f] = lo_k[f] + o + 1
        cls[f] = P[has, o]
        if use_margin:
            f_hi[f] = M[has, o]
            f_lo[f] = torch.where(o > 0, M[has, (o - 1).clamp(min=0)], f_lo[f])
        lo_k[f] = hi_k[f] - 1
        pending[f] = False
        # not yet: move on, sized by the margin's trend (doubling when there is none)
        g, cg = idx[~has], c[~has]
        if g.numel():
            if use_margin:
                rowsel = (~has).nonzero().squeeze(1)
                last = M[rowsel, cg - 1]
                before = torch.where(cg >= 2, M[rowsel, (cg - 2).clamp(min=0)], f_lo[g])
                slope = last - before
                need = torch.where(
                    slope < 0, torch.ceil(last / -slope.clamp(max=-1e-300)), (2 * cg).double()
                )
                chunk[g] = need.clamp(1, cfg["max_chunk"]).long()
                f_lo[g] = last
            else:
                chunk[g] = (2 * cg).clamp(max=cfg["max_chunk"])
            lo_k[g] += cg
            pending[g[lo_k[g] >= K]] = False

    # 2. Refine each bracket to width <= tol.
    found = active & (hi_k > 0)
    lo = (hi_k - 1).double() * h
    hi = hi_k.double() * h
    dist = _refine(probe, x, s, y, found, lo, hi, f_lo, f_hi, cls, margin0, use_margin, tol)
    return dist, torch.where(found, cls, torch.full_like(cls, -1))


def _secant(t1: torch.Tensor, f1: torch.Tensor, t2: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    return t1 - f1 * (t1 - t2) / (f1 - f2)


def _inverse_quadratic(
    t1: torch.Tensor,
    f1: torch.Tensor,
    t2: torch.Tensor,
    f2: torch.Tensor,
    t3: torch.Tensor,
    f3: torch.Tensor,
) -> torch.Tensor:
    """The t where the parabola t(f) through three points meets f = 0."""
    return (
        t1 * f2 * f3 / ((f1 - f2) * (f1 - f3))
        + t2 * f1 * f3 / ((f2 - f1) * (f2 - f3))
        + t3 * f1 * f2 / ((f3 - f1) * (f3 - f2))
    )


def _refine(
    probe: Probe,
    x: torch.Tensor,
    s: torch.Tensor,
    y: torch.Tensor,
    found: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    f_lo: torch.Tensor,
    f_hi: torch.Tensor,
    cls: torch.Tensor,
    margin0: torch.Tensor | None,
    use_margin: bool,
    tol: float,
) -> torch.Tensor:
    """Shrink each bracket [lo, hi] (unflipped, flipped) until the root is known to tol.

    With margins, Brent-style: the probe is the inverse-quadratic estimate through the
    three newest points, else the secant through the two newest, else regula falsi on the
    bracket, whichever lands inside it first; bisection after three steps that did not
    halve the bracket, and always without margins. A ReLU network's margin is piecewise
    linear along the ray, so once the two newest probes share the root's piece their secant
    is exact: when it puts the root within tol/4 of the newest probe, that settles the
    point without a probe on the root's far side. Otherwise an estimate within tol of an
    end is pushed ~tol past it, to close the bracket in one more evaluation. Returns d:
    the bracket's flipped end, or for a settled point the flipped probe or the root."""
    n, dev = len(y), x.device
    nan = torch.full((n,), math.nan, dtype=torch.float64, device=dev)
    t1, f1 = hi.clone(), f_hi.clone()  # newest point with a known margin
    t2, f2 = lo.clone(), f_lo.clone()
    has0 = (lo > 0) if margin0 is not None else torch.zeros_like(found)
    t3 = torch.where(has0, torch.zeros_like(lo), nan)
    f3 = torch.where(has0, margin0.double(), nan) if margin0 is not None else nan.clone()
    stall = torch.zeros(n, dtype=torch.int8, device=dev)
    act = found & (hi - lo > tol)
    near = 0.98 * tol
    local = 100 * tol
    for _ in range(400):  # a guard only: bisection alone needs log2(step/tol) rounds
        i = act.nonzero().squeeze(1)
        if i.numel() == 0:
            break
        a, b = lo[i], hi[i]
        c = (a + b) / 2
        if use_margin:
            pick = c.clone().fill_(math.nan)
            for est in (
                _secant(a, f_lo[i], b, f_hi[i]),
                _secant(t1[i], f1[i], t2[i], f2[i]),
                _inverse_quadratic(t1[i], f1[i], t2[i], f2[i], t3[i], f3[i]),
            ):
                pick = torch.where(torch.isfinite(est) & (est > a) & (est < b), est, pick)
            c = torch.where(torch.isfinite(pick) & (stall[i] < 3), pick, c)
        # an estimate within tol of an end goes ~tol past it, to close the bracket
        c = torch.where(c < a + near, a + near, torch.where(c > b - near, b - near, c))
        pred, marg, rival = probe(x, s, i, c, y)
        flip = pred != y[i]
        hi[i] = torch.where(flip, c, b)
        lo[i] = torch.where(flip, a, c)
        cls[i] = torch.where(flip, pred, cls[i])
        if use_margin and marg is not None and rival is not None:
            # Settled without a closing probe: the secant through the newest two probes,
            # both within `local` of each other, puts the root within tol/4 of this one.
            # d is then this probe if it flipped, else that root, where `rival` takes over.
            slope = (marg - f1[i]) / (c - t1[i])
            root = c - marg / slope
            settled = (slope < 0) & ((c - t1[i]).abs() <= local) & ((root - c).abs() <= tol / 4)
            hi[i] = torch.where(settled & ~flip, root, hi[i])
            lo[i] = torch.where(settled, hi[i], lo[i])
            cls[i] = torch.where(settled & ~flip, rival, cls[i])
            f_hi[i] = torch.where(flip, marg, f_hi[i])
            f_lo[i] = torch.where(flip, f_lo[i], marg)
            t3[i], f3[i] = t2[i], f2[i]
            t2[i], f2[i] = t1[i], f1[i]
            t1[i], f1[i] = c, marg
            halved = (hi[i] - lo[i]) <= 0.5 * (b - a)
            stall[i] = torch.where(halved, 0, stall[i] + 1).to(torch.int8)
        act[i] = hi[i] - lo[i] > tol
    return torch.where(found, hi, torch.full_like(hi, math.inf))


# ---------------------------------------------------------------- measuring points


@dataclass
class SourceSide:
    """The source's half of a measurement: directions, distances, classes at the flip."""

    index: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    s: torch.Tensor
    correct: torch.Tensor
    d: torch.Tensor
    adv: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        return self.correct & torch.isfinite(self.d)

    def take(self, keep: torch.Tensor) -> SourceSide:
        return SourceSide(*(getattr(self, k)[keep] for k in SourceSide.__dataclass_fields__))


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
    d, adv = boundary_distance(probe, xs, s, ys, correct, _margin(z, ys)[0], cfg)
    return SourceSide(index.to(dev), xs, ys, s, correct, d, adv)


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
    d, adv = boundary_distance(probe, src.x, src.s, src.y, correct, margin0, cfg)
    matched = correct & torch.isfinite(d) & (adv == src.adv)
    cpu = {
        "index": src.index,
        "label": src.y,
        "valid": valid,
        "d_source": src.d,
        "d_suspect": d,
        "adv_source": src.adv,
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
    src = Probe(source, "source", _batch_size(c, _device_of(source), x[0].numel()))
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
    sus = Probe(model, name, src.batch_size)
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
    with _eval_mode(source, suspect), _ieee_fp32(_device_of(source)):
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
    with _eval_mode(source, suspect), _ieee_fp32(_device_of(source)):
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
    with _eval_mode(source, *refs.lineage, *refs.independent), _ieee_fp32(_device_of(source)):
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

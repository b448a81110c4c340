"""The batched search for adversarial distances: every point's ray x + t*s at once.

See `lineage.evaluate.closeness` for what is measured; this module only finds, for one
model, where along each ray its prediction first leaves y: the first flip on the 0.1 grid,
then a root search on the logit margin (bisection without margins) until the root is known
to `tol`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LineageError

Model = Callable[[torch.Tensor], torch.Tensor]


def device_of(model: Any) -> torch.device:
    dev = getattr(model, "device", None)
    if isinstance(dev, (str, torch.device)):
        return torch.device(dev)
    if isinstance(model, nn.Module):
        for t in chain(model.parameters(), model.buffers()):
            return t.device
    return torch.device("cpu")


@contextmanager
def eval_mode(*models: Any) -> Iterator[None]:
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
def ieee_fp32(device: torch.device) -> Iterator[None]:
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


def logit_margin(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
        self.device = device_of(model)
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
        margin w.r.t. y and its rival class (see `logit_margin`); None for labels."""
        preds, margins, rivals = [], [], []
        shape = (-1,) + (1,) * (x.dim() - 1)
        for a in range(0, len(idx), self.batch_size):
            i, tt = idx[a : a + self.batch_size], t[a : a + self.batch_size]
            out = self.forward(torch.addcmul(x[i], tt.to(x.dtype).view(shape), s[i])).to(x.device)
            if out.dim() == 2:
                preds.append(out.argmax(1))
                margin, rival = logit_margin(out, y[i])
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


@dataclass
class Boundary:
    """One model's search along the rays: the distance and class at its flip, plus what a
    second model's search on the same rays can start from."""

    distance: torch.Tensor  # inf where no flip within d_max
    cls: torch.Tensor  # -1 where none
    grid: torch.Tensor  # index k of the first flipped grid point k*step (0: none)
    margin_lo: torch.Tensor  # margins at grid points k-1 and k (nan without margins)
    margin_hi: torch.Tensor
    slope: torch.Tensor  # d margin / dt at the flip (nan when unknown)


def boundary_distance(
    probe: Probe,
    x: torch.Tensor,
    s: torch.Tensor,
    y: torch.Tensor,
    active: torch.Tensor,
    margin0: torch.Tensor | None,
    cfg: Mapping[str, Any],
    near: Boundary | None = None,
) -> Boundary:
    """Adversarial distance along x + t*s for the `active` points (the model predicts y at
    x; `margin0` is its logit margin there, or None); inf and class -1 where the model does
    not flip within d_max or the point is inactive. `near` is another model's search on the
    same rays (the source's, for a suspect): where both first flip in the same grid step,
    the first probe is that model's flip, moved by the change of margin between the two
    models interpolated across the step, which for a close relative lands near the root."""
    n, dev = len(y), x.device
    h, tol = float(cfg["step"]), float(cfg["tol"])
    K = int(math.floor(cfg["d_max"] / h + 1e-9))  # grid points h, 2h, ..., K*h
    use_margin = margin0 is not None and cfg["search"] == "brent"
    lo_k = torch.zeros(n, dtype=torch.long, device=dev)  # last grid index seen unflipped
    hi_k = torch.zeros_like(lo_k)  # first grid index seen flipped (0: none yet)
    cls = torch.full_like(lo_k, -1)
    f_hi = torch.zeros(n, dtype=torch.float64, device=dev)
    f_lo = margin0.double().clone() if margin0 is not None and use_margin else f_hi.clone()
    f_before = torch.full_like(f_hi, math.nan)  # the margin one grid step before lo_k
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
            f_before[f] = torch.where(
                o > 1, M[has, (o - 2).clamp(min=0)], torch.where(o == 1, f_lo[f], f_before[f])
            )
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
                f_before[g] = before
                f_lo[g] = last
            else:
                chunk[g] = (2 * cg).clamp(max=cfg["max_chunk"])
            lo_k[g] += cg
            pending[g[lo_k[g] >= K]] = False

    # 2. Refine each bracket until the root is known to tol.
    found = active & (hi_k > 0)
    lo = (hi_k - 1).double() * h
    hi = hi_k.double() * h
    prior = (lo - h, f_before) if use_margin else None
    guess = None
    if use_margin and near is not None:
        # margins: this model's = the other's + delta, delta linear across the step; the
        # other's is linear with its known slope near its flip at d
        d_a = f_lo - near.margin_lo
        d_b = f_hi - near.margin_hi
        dd = (d_b - d_a) / h
        t = (near.slope * near.distance - d_a + lo * dd) / (near.slope + dd)
        guess = torch.where(found & (near.grid == hi_k), t, torch.full_like(t, math.nan))
    dist, slope = _refine(probe, x, s, y, found, lo, hi, f_lo, f_hi, cls, prior, guess, tol)
    if not use_margin:
        slope = torch.full_like(slope, math.nan)
    nan = torch.full_like(dist, math.nan)
    return Boundary(
        dist,
        torch.where(found, cls, torch.full_like(cls, -1)),
        hi_k,
        torch.where(found, f_lo, nan) if use_margin else nan,
        torch.where(found, f_hi, nan) if use_margin else nan,
        slope,
    )


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
    prior: tuple[torch.Tensor, torch.Tensor] | None,
    guess: torch.Tensor | None,
    tol: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink each bracket [lo, hi] (unflipped, flipped) until the root is known to tol;
    returns (d, the margin's slope there) and writes the class at the flip into `cls`.
    `prior` is the grid point before lo with its margin, `guess` an optional first probe
    (both None for a label-only model).

    With margins, Brent-style: the probe is the first estimate inside the bracket of: the
    guess (first step only), the inverse-quadratic estimate through the three newest points,
    the secant through the two newest, regula falsi on the bracket; bisection after three
    steps that did not halve the bracket, and always without margins. A ReLU network's
    margin is piecewise linear along the ray, so once the two newest probes share the
    root's piece their secant is exact: when it puts the root within tol of the newest
    probe, that settles the point without a probe on the root's far side. Otherwise an
    estimate within tol of an end is pushed ~tol past it, to close the bracket in one more
    evaluation. d is the bracket's flipped end, or for a settled point the flipped probe or
    the root (where `rival` takes over). The state of the rows in flight lives in one
    (rows, 13) table, so each step costs a few dozen small tensor ops, whatever the rows."""
    dev = x.device
    rows = found.nonzero().squeeze(1)
    m = len(rows)
    nan = torch.full((m,), math.nan, dtype=torch.float64, device=dev)
    lo_, hi_, fl, fh = lo[rows], hi[rows], f_lo[rows], f_hi[rows]
    t3, f3 = (prior[0][rows], prior[1][rows]) if prior is not None else (nan, nan)
    g = guess[rows] if guess is not None else nan
    # columns: lo hi f_lo f_hi | t1 f1 t2 f2 t3 f3 (newest probes first) | stall cls guess
    S = torch.stack(
        [lo_, hi_, fl, fh, hi_, fh, lo_, fl, t3, f3, torch.zeros_like(nan), cls[rows].double(), g],
        1,
    )
    live = hi_ - lo_ > tol
    near, local = 0.98 * tol, 100 * tol
    for _ in range(400):  # a guard only: bisection alone needs log2(step/tol) rounds
        j = live.nonzero().squeeze(1)
        if j.numel() == 0:
            break
        a, b, fa, fb, t1, f1, t2, f2, t3, f3, stall, cl, g = S[j].unbind(1)
        c = (a + b) / 2
        if prior is not None:
            est = torch.stack(
                [
                    _secant(a, fa, b, fb),
                    _secant(t1, f1, t2, f2),
                    _inverse_quadratic(t1, f1, t2, f2, t3, f3),
                    g,
                ],
                1,
            )
            ok = torch.isfinite(est) & (est > a.unsqueeze(1)) & (est < b.unsqueeze(1))
            ok &= (stall < 3).unsqueeze(1)
            col = (ok * torch.arange(1, 5, device=dev)).argmax(1, keepdim=True)
            c = torch.where(ok.any(1), est.gather(1, col).squeeze(1), c)
        # an estimate within tol of an end goes ~tol past it, to close the bracket
        c = torch.where(c < a + near, a + near, torch.where(c > b - near, b - near, c))
        pred, marg, rival = probe(x, s, rows[j], c, y)
        flip = pred != y[rows[j]]
        new_hi = torch.where(flip, c, b)
        new_lo = torch.where(flip, a, c)
        new_cl = torch.where(flip, pred.double(), cl)
        if prior is None or marg is None or rival is None:
            S[j, 0], S[j, 1], S[j, 11] = new_lo, new_hi, new_cl
        else:
            # settled: the secant with the previous probe (within `local`) puts the root
            # within tol of this one
            slope = (marg - f1) / (c - t1)
            root = c - marg / slope
            settled = (slope < 0) & ((c - t1).abs() <= local) & ((root - c).abs() <= tol)
            new_hi = torch.where(settled & ~flip, root, new_hi)
            new_lo = torch.where(settled, new_hi, new_lo)
            new_cl = torch.where(settled & ~flip, rival.double(), new_cl)
            halved = (new_hi - new_lo) <= 0.5 * (b - a)
            S[j] = torch.stack(
                [
                    new_lo,
                    new_hi,
                    torch.where(flip, fa, marg),
                    torch.where(flip, marg, fb),
                    c,
                    marg,
                    t1,
                    f1,
                    t2,
                    f2,
                    torch.where(halved, 0.0, stall + 1),
                    new_cl,
                    torch.full_like(c, math.nan),
                ],
                1,
            )
        live[j] = new_hi - new_lo > tol
    dist = torch.full_like(lo, math.inf)
    dist[rows] = S[:, 1]
    cls[rows] = S[:, 11].long()
    slope = torch.full_like(lo, math.nan)
    slope[rows] = (S[:, 5] - S[:, 7]) / (S[:, 4] - S[:, 6])
    return dist, slope

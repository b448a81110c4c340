"""The batched search for adversarial distances: every point's ray x + t*s at once.

See `lineage.evaluate.closeness` for what is measured; this module only finds, for one
model, where along each ray its prediction first leaves y: the first flip on the 0.1 grid,
then a root search on the logit margins (bisection without margins) until the root is known
to `tol`, both in the same passes over the rays.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LineageError
from ..runtime import device_of
from .refine import Refinement

Model = Callable[[torch.Tensor], torch.Tensor]


def class_margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each class's logit margin z_y - z_k (rows, classes), +inf at y itself: column k
    crosses 0 where class k overtakes y."""
    z = logits.double()
    yy = y.clamp(max=z.shape[1] - 1).unsqueeze(1)  # y >= C only with a class mismatch
    return (z.gather(1, yy) - z).scatter(1, yy, math.inf)


def logit_margin(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logit margin z_y - max_{k != y} z_k (>= 0 while the prediction is y, <= 0 once it
    flipped) and that rival class k, the one that takes over where the margin crosses 0."""
    margin, rival = class_margins(logits, y).min(1)
    return margin, rival


# ---------------------------------------------------------------- model evaluation

# Conv nets that refused channels-last input (their code needs NCHW strides, e.g. a .view
# after a convolution); they are fed NCHW from then on.
_NCHW_ONLY: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def _channels_last(model: nn.Module, rows: torch.Tensor) -> bool:
    """Whether to feed `model` channels-last images: on CPU, oneDNN's NHWC convolution and
    max-pool kernels run MNIST LeNet ~1.5x faster than NCHW, forward and backward alike.
    CPU only, where it was measured."""
    return (
        rows.dim() == 4
        and rows.device.type == "cpu"
        and model not in _NCHW_ONLY
        and any(isinstance(m, nn.Conv2d) for m in model.modules())
    )


def run_model(model: Model, rows: torch.Tensor) -> Any:
    """model(rows), channels-last where that is faster (see `_channels_last`): the same
    values, only their order in memory differs, so gradients w.r.t. rows flow through. A
    Hugging Face output object gives its `.logits`."""
    if isinstance(model, nn.Module) and _channels_last(model, rows):
        fast = torch.empty_like(rows, memory_format=torch.channels_last).copy_(rows)
        try:
            return _logits(model(fast))
        except RuntimeError:
            _NCHW_ONLY.add(model)  # retried in NCHW: a real error is raised there
    return _logits(model(rows))


def _logits(out: Any) -> Any:
    logits = getattr(out, "logits", None)
    return logits if not isinstance(out, torch.Tensor) and logits is not None else out


class Probe:
    """Evaluates one model on points of the rays x + t*s in memory-sized chunks, counting
    evaluations. Learns on first use whether the model answers logits or labels."""

    def __init__(self, model: Model, name: str, batch_size: int):
        self.model, self.name, self.batch_size = model, name, batch_size
        self.device = device_of(model)
        self.kind: str | None = None
        self.num_classes: int | None = None
        self.evals = 0
        self.grid_evals = 0  # of evals, the rows that walked the grid (the rest: refinement)
        self.shift_prior: Any = None  # label-only suspects: see label_search.ShiftPrior

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        out = run_model(self.model, rows.to(self.device))
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
    def margins(
        self, x: torch.Tensor, s: torch.Tensor, idx: torch.Tensor, t: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """At x[idx] + t * s[idx]: the prediction and, for a model answering logits, every
        class's margin w.r.t. y (see `class_margins`); None for labels."""
        preds, margins = [], []
        shape = (-1,) + (1,) * (x.dim() - 1)
        for a in range(0, len(idx), self.batch_size):
            i, tt = idx[a : a + self.batch_size], t[a : a + self.batch_size]
            out = self.forward(torch.addcmul(x[i], tt.to(x.dtype).view(shape), s[i])).to(x.device)
            if out.dim() == 2:
                preds.append(out.argmax(1))
                margins.append(class_margins(out, y[i]))
            else:
                preds.append(out.long())
        pred = torch.cat(preds) if preds else y[:0]
        if margins and len(margins) == len(preds):
            return pred, torch.cat(margins)
        return pred, None

    def __call__(
        self, x: torch.Tensor, s: torch.Tensor, idx: torch.Tensor, t: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """At x[idx] + t * s[idx]: the prediction and, for a model answering logits, the
        margin w.r.t. y and its rival class (see `logit_margin`); None for labels."""
        pred, margins = self.margins(x, s, idx, t, y)
        if margins is None:
            return pred, None, None
        margin, rival = margins.min(1)
        return pred, margin, rival


def direction(
    source: Model, x: torch.Tensor, y: torch.Tensor, batch_size: int, name: str = "source"
) -> tuple[torch.Tensor, torch.Tensor]:
    """s = sign(grad_x CE(f_source(x), y)) and the source's logits at x."""
    dirs, logits = [], []
    for a in range(0, len(x), batch_size):
        xi = x[a : a + batch_size].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            z = run_model(source, xi)
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
    models interpolated across the step, which for a close relative lands near the root.

    Each pass evaluates, in one call, the grid points of the rays still bracketing and the
    next probe of the rays already refining (see `Refinement`), so the few rays that walk
    the grid far (or to d_max without a flip) share their passes with the refinement
    instead of adding passes of a handful of rows each."""
    n, dev = len(y), x.device
    h, tol = float(cfg["step"]), float(cfg["tol"])
    K = int(math.floor(cfg["d_max"] / h + 1e-9))  # grid points h, 2h, ..., K*h
    use_margin = margin0 is not None and cfg["search"] == "brent"
    # a label-only model with another's search to go by: label_search spends its queries
    guided = near is not None and margin0 is None and cfg["search"] == "brent"
    lo_k = torch.zeros(n, dtype=torch.long, device=dev)  # last grid index seen unflipped
    hi_k = torch.zeros_like(lo_k)  # first grid index seen flipped (0: none yet)
    nan = torch.full((n,), math.nan, dtype=torch.float64, device=dev)
    f_lo = margin0.double().clone() if margin0 is not None and use_margin else nan.clone()
    f_hi = nan.clone()  # the margin at hi_k
    f_before = nan.clone()  # the margin one grid step before lo_k
    chunk = torch.ones_like(lo_k)
    pending = active.clone()
    if guided and near is not None:
        from .label_search import GuidedRefinement, ShiftPrior

        chunk = near.grid.clamp(1, K)  # every grid point up to the other's flip, at once
        if probe.shift_prior is None:
            probe.shift_prior = ShiftPrior(tol, float(cfg["d_max"]) + h, dev)
        refine: Refinement = GuidedRefinement(
            n, tol, h, dev, near.distance - tol / 2, probe.shift_prior
        )
    else:
        refine = Refinement(n, tol, h, use_margin, dev)
    for _ in range(K + 1000):  # a guard only: K passes bracket, ~3 log2(step/tol) refine
        idx = pending.nonzero().squeeze(1)
        live = refine.live.nonzero().squeeze(1)
        if idx.numel() == 0 and live.numel() == 0:
            break
        # Bracket the first flip on the grid (every grid point before the flip is checked,
        # as the reference does: a flip that un-flips between grid points is missed by
        # both), and in the same call take the next probe of the brackets found before.
        c = torch.minimum(chunk[idx], K - lo_k[idx])
        width = int(c.max()) if idx.numel() else 0
        off = torch.arange(1, width + 1, device=dev)
        mask = off.unsqueeze(0) <= c.unsqueeze(1)
        rows = idx.unsqueeze(1).expand(-1, width)[mask]
        grid = (lo_k[idx].unsqueeze(1) + off.unsqueeze(0))[mask]
        t_live = refine.probes(live)
        pred, margins = probe.margins(
            x, s, torch.cat([rows, live]), torch.cat([grid.double() * h, t_live]), y
        )
        nb = len(rows)
        probe.grid_evals += nb
        refine.update(live, t_live, pred[nb:], None if margins is None else margins[nb:], y)
        if idx.numel() == 0:
            continue
        flip = torch.zeros(mask.shape, dtype=torch.bool, device=dev)
        flip[mask] = pred[:nb] != y[rows]
        M = torch.full(mask.shape, math.nan, dtype=torch.float64, device=dev)
        if use_margin and margins is not None:
            M[mask] = margins[:nb].min(1).values
        has = flip.any(1)
        if has.any():  # found: bracket [grid-1, grid], refined from the next pass on
            P = torch.full(mask.shape, -1, dtype=torch.long, device=dev)
            P[mask] = pred[:nb]
            first = flip.int().argmax(1)
            f, o = idx[has], first[has]
            hi_k[f] = lo_k[f] + o + 1
            lo_k[f] = hi_k[f] - 1
            pending[f] = False
            f_hi[f] = M[has, o]
            f_before[f] = torch.where(
                o > 1, M[has, (o - 2).clamp(min=0)], torch.where(o == 1, f_lo[f], f_before[f])
            )
            f_lo[f] = torch.where(o > 0, M[has, (o - 1).clamp(min=0)], f_lo[f])
            lo = lo_k[f].double() * h
            guess = None
            if use_margin and near is not None:
                # margins: this model's = the other's + delta, delta linear across the step;
                # the other's is linear with its known slope near its flip at d
                d_a = f_lo[f] - near.margin_lo[f]
                d_b = f_hi[f] - near.margin_hi[f]
                dd = (d_b - d_a) / h
                t = (near.slope[f] * near.distance[f] - d_a + lo * dd) / (near.slope[f] + dd)
                guess = torch.where(near.grid[f] == hi_k[f], t, math.nan)
            refine.start(f, lo, P[has, o], f_lo[f], f_hi[f], f_before[f], guess)
        if not has.all():
            # not yet: move on, sized by the margin's trend (doubling when there is none)
            g, cg = idx[~has], c[~has]
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
    found = active & (hi_k > 0)
    dist, cls, slope = refine.result()
    return Boundary(
        torch.where(found, dist, math.inf),
        torch.where(found, cls, -1),
        hi_k,
        torch.where(found, f_lo, nan) if use_margin else nan,
        torch.where(found, f_hi, nan) if use_margin else nan,
        slope if use_margin else nan,
    )

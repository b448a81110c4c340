"""Few queries for a label-only suspect: where along each ray to probe next.

A suspect that answers labels only (a remote black box, often paid per query) gives one
bit per query: flipped or not. `boundary.boundary_distance` finds each ray's first flip on
the 0.1 grid, then narrows that bracket to `tol`; plain bisection spends log2(0.1 / tol)
= 14 queries per point on the narrowing whatever the suspect. But the source's own flip on
the same ray is known (white box), and a derived suspect's flip lies near it, so this
module spends the queries where the root is likely:

1. **Grid.** The first pass checks every grid point up to the source's first flip at
   once (the in-process label search doubles from 1 grid point: 1, 2, 4, ...), so a suspect
   that flips in the source's bracket costs exactly the grid points before it, in one
   request. Every grid point before the flip is still checked, as the reference does.
2. **Prior on the shift.** The root's shift u = t - r0 from the source's root r0 gets a
   prior over signed half-octave bins of |u| (tol/2 .. d_max), a box |u| < tol/2 in the
   middle: scale-free when nothing is known (each bin equally likely), then learnt. The
   bins' weights are a Dirichlet posterior: pseudo-count `ALPHA` per bin, plus the final
   brackets of every ray this suspect already finished (earlier sampling batches), plus,
   one EM step per pass, the current brackets of this batch's rays as soft counts. So a
   suspect whose boundaries barely moved (quantized, lightly pruned) is learnt to be one
   within a few passes, and one far from the source (an independent model) to be far.
3. **Weight-balanced probes on a lattice.** Each probe splits the ray's bracket where the
   prior mass on both sides is equal (one bit per query, as bisection's midpoint does for
   a flat prior), snapped to a lattice of step 0.98 tol anchored at r0, so that once the
   root's lattice cell is known the bracket is narrower than tol and the ray stops: no
   query is spent resolving less than tol. A suspect equal to the source costs 2 probes.
   A share `UNIFORM` of the prior is flat over the grid bracket, which bounds the worst
   case (a shift the prior says is unlikely) at log2(step / (UNIFORM tol)) + 1, ~18.

**Exactness.** The answer is what bisection gives: the flipped end of a bracket at most
tol wide that holds the first grid bracket's sign change; only the probe positions
differ. Where a ray crosses the boundary more than once inside one grid step, the two
searches may settle on different crossings of that step (both are roots to tol), which is
the one way their distances can differ by more than tol.

**Trade-off.** Queries against bits of information, not against precision: the cost per
point is about the entropy of the suspect's shift at resolution tol (2 queries for a copy,
~14-16 for a model unrelated to the source, against bisection's 14 for every model). The
probe positions depend on the other rays of the batch and on earlier batches, so the same
audit (same points, same order) sends the same queries, which a cache can answer, but a
point's queries depend on its batch. MNIST LeNet: see benchmarks/bench_remote.py.
"""

from __future__ import annotations

import math

import torch

from .refine import Refinement

LATTICE = 0.98  # the probe lattice's step, in units of tol: a cell is narrower than tol
ALPHA = 0.5  # Dirichlet pseudo-count of each shift bin
UNIFORM = 0.1  # share of the prior spread flat over the grid bracket (the worst-case bound)
TINY = 1e-300


class ShiftPrior:
    """The distribution of a suspect's root shift u = t - r0 over signed log bins: the box
    (-s0, s0), then (s0 2^(k/2), s0 2^((k+1)/2)) on each side, log-uniform inside each
    bin (uniform inside the box). `counts` accumulates finished rays across calls."""

    def __init__(self, tol: float, span: float, device: torch.device):
        s0 = LATTICE * tol / 2
        k = math.ceil(2 * math.log2(max(span, 2 * s0) / s0))
        edges = s0 * 2.0 ** (torch.arange(k + 1, dtype=torch.float64, device=device) / 2)
        lo_pos, hi_pos = edges[:-1], edges[1:]
        box = torch.tensor([-s0], dtype=torch.float64, device=device), edges[:1]
        self.left = torch.cat([-hi_pos.flip(0), box[0], lo_pos])
        self.right = torch.cat([-lo_pos.flip(0), box[1], hi_pos])
        self.side = torch.cat(
            [
                -torch.ones(k, device=device),
                torch.zeros(1, device=device),
                torch.ones(k, device=device),
            ]
        )
        self.log_width = torch.log(self.right.abs() / self.left.abs()).abs()
        self.counts = torch.zeros(len(self.left), dtype=torch.float64, device=device)

    def weights(self, extra: torch.Tensor | None = None) -> torch.Tensor:
        w = ALPHA + self.counts + (0 if extra is None else extra)
        return w / w.sum()

    def below(self, u: torch.Tensor) -> torch.Tensor:
        """(..., bins): the share of each bin's mass below u."""
        u = u.unsqueeze(-1)
        lo, hi = self.left, self.right
        box = ((u - lo) / (hi - lo)).clamp(0, 1)
        pos = (torch.log(u.clamp(min=TINY) / lo.clamp(min=TINY)) / self.log_width).clamp(0, 1)
        neg_inside = torch.log(-lo / (-u).clamp(min=TINY)) / self.log_width
        neg = torch.where(u >= hi, 1.0, torch.where(u <= lo, 0.0, neg_inside.clamp(0, 1)))
        return torch.where(self.side == 0, box, torch.where(self.side > 0, pos, neg))

    def cdf(self, u: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return (self.below(u) * p).sum(-1)

    def posterior(self, ua: torch.Tensor, ub: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """(rays, bins): each ray's bin probabilities given its root lies in [ua, ub]."""
        w = p * (self.below(ub) - self.below(ua)).clamp(min=0)
        return w / w.sum(1, keepdim=True).clamp(min=TINY)


class GuidedRefinement(Refinement):
    """`Refinement` without margins whose probes split each bracket at equal prior mass
    (see the module docstring) instead of at its midpoint; brackets, stopping and results
    are bisection's."""

    def __init__(
        self,
        n: int,
        tol: float,
        step: float,
        device: torch.device,
        anchor: torch.Tensor,
        prior: ShiftPrior,
    ):
        super().__init__(n, tol, step, False, device)
        self.anchor = anchor.double()  # r0: the source's root on each ray
        self.delta = LATTICE * tol
        self.prior = prior
        self.start_lo = torch.full((n,), math.nan, dtype=torch.float64, device=device)

    def start(
        self,
        f: torch.Tensor,
        lo: torch.Tensor,
        cls: torch.Tensor,
        f_lo: torch.Tensor,
        f_hi: torch.Tensor,
        f_before: torch.Tensor,
        guess: torch.Tensor | None,
    ) -> None:
        super().start(f, lo, cls, f_lo, f_hi, f_before, None)
        self.start_lo[f] = lo.double()

    def _started(self) -> tuple[torch.Tensor, torch.Tensor]:
        i = (~self.start_lo.isnan() & self.anchor.isfinite()).nonzero().squeeze(1)
        r0 = self.anchor[i]
        return i, self.prior.posterior(self.S[i, 0] - r0, self.S[i, 1] - r0, self.prior.weights())

    def probes(self, j: torch.Tensor) -> torch.Tensor:
        if j.numel() == 0:
            return self.S[:0, 0]
        _, soft = self._started()  # one EM step: this batch's brackets as soft counts
        p = self.prior.weights(soft.sum(0))
        a, b = self.S[j, 0], self.S[j, 1]
        r0 = torch.where(self.anchor[j].isfinite(), self.anchor[j], (a + b) / 2)
        A0 = self.start_lo[j]
        F0 = self.prior.cdf(A0 - r0, p)
        Z = self.prior.cdf(A0 + self.step - r0, p) - F0
        share = torch.where(Z > TINY, 1 - UNIFORM, 0.0)

        def mass(t: torch.Tensor) -> torch.Tensor:
            learnt = (self.prior.cdf(t - r0, p) - F0) / Z.clamp(min=TINY)
            return share * learnt + (1 - share) * (t - A0) / self.step

        def at(i: torch.Tensor) -> torch.Tensor:
            return r0 + (i + 0.5) * self.delta

        target = (mass(a) + mass(b)) / 2
        i_lo = torch.floor((a - r0) / self.delta - 0.5) + 1  # lattice points inside (a, b)
        i_hi = torch.ceil((b - r0) / self.delta - 0.5) - 1
        i_lo = torch.where(at(i_lo) <= a, i_lo + 1, i_lo)  # rounding at the ends
        i_hi = torch.where(at(i_hi) >= b, i_hi - 1, i_hi)
        none = i_lo > i_hi
        lo, hi = i_lo.clone(), torch.where(none, i_lo, i_hi)
        while bool((lo < hi).any()):  # the first lattice point with mass >= target
            mid = torch.floor((lo + hi) / 2)
            up = mass(at(mid)) >= target
            hi = torch.where(up, mid, hi)
            lo = torch.where(up, lo, mid + 1)
        prev = (lo - 1).clamp(min=i_lo)
        closer = (mass(at(prev)) - target).abs() < (mass(at(lo)) - target).abs()
        t = at(torch.where(closer, prev, lo))
        return torch.where(none, (a + b) / 2, t)

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = super().result()
        _, final = self._started()  # each finished ray's bracket, for the next batches
        self.prior.counts += final.sum(0)
        return out

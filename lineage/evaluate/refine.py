"""The root search inside each ray's grid bracket (see `Refinement`), for
lineage.evaluate.boundary: one probe per bracket and pass, on the logit margins."""

from __future__ import annotations

import math

import torch


def _secant(t1: torch.Tensor, f1: torch.Tensor, t2: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    return t1 - f1 * (t1 - t2) / (f1 - f2)


def _first_crossing(
    t1: torch.Tensor, K1: torch.Tensor, t2: torch.Tensor, K2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the first class overtakes y, and which, with every class's margin linear
    through its values K1 at t1 and K2 at t2 (rows, classes): exact for a linear model, so
    a change of rival between the probes and the root costs no accuracy. -inf where a
    margin below 0 is not falling (no consistent first crossing), nan where K1 is."""
    slope = (K2 - K1) / (t2 - t1).unsqueeze(1)
    root = t2.unsqueeze(1) - K2 / slope
    none = torch.where(K2 > 0, math.inf, -math.inf)
    first, cls = torch.where(slope < 0, root, none).min(1)
    return torch.where(K1.isnan().all(1), math.nan, first), cls


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


class Refinement:
    """The root search inside the grid brackets, one probe per bracket and pass, for rays
    that join (`start`) as their bracket is found: each bracket [lo, hi] (unflipped,
    flipped) shrinks until the root is known to tol. `probes` gives the next probe of the
    live rays, `update` takes their predictions there, `result` the distances.

    With margins, Brent-style: the probe is the first estimate inside the bracket of: the
    guess (first step only), the inverse-quadratic estimate through the three newest points,
    the secant through the two newest, regula falsi on the bracket; bisection after three
    steps that did not halve the bracket, and always without margins.

    Along the ray of a ReLU network every class's margin z_y - z_k is piecewise linear.
    The pieces are short (~1e-5 on MNIST LeNet), but their slopes change little from one
    to the next, so the secants through two probes less than step/10 apart, one per
    class, are trusted for a short way: when the first of them to cross 0 (the first class
    to overtake y; exact for a linear model, even where the rival changes) does so inside
    the bracket within 5 tol of the newest probe, that crossing settles the point without
    a probe on its far side. Otherwise an estimate within tol of an end is pushed ~tol
    past it, to close the bracket in one more evaluation. d is the bracket's flipped end,
    or for a settled point the crossing + tol/2, at most the flipped end: the middle of
    [root, root + tol], where the reference's walk and bisection put it. MNIST LeNet, 500
    points: 11.0 evaluations per point against 11.8 when settling within tol only, every
    distance still within tol of the true root. The state of all rays lives in one (n, 13)
    table, so each step costs a few dozen small tensor ops, whatever the rows."""

    def __init__(self, n: int, tol: float, step: float, margins: bool, device: torch.device):
        self.tol, self.step, self.margins = tol, step, margins
        self.near, self.local, self.reach = 0.98 * tol, step / 10, 5 * tol
        self.S = torch.full((n, 13), math.nan, dtype=torch.float64, device=device)
        self.live = torch.zeros(n, dtype=torch.bool, device=device)
        self.K1: torch.Tensor | None = None  # every class's margin at t1 (nan: not known)

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
        """Rays f join with bracket [lo, lo + step], the class at its flipped end, the
        margins at lo, lo + step and lo - step (nan without margins) and an optional first
        probe."""
        hi, zero = lo + self.step, torch.zeros_like(lo)
        g = torch.full_like(lo, math.nan) if guess is None else guess
        # columns: lo hi f_lo f_hi | t1 f1 t2 f2 t3 f3 (newest probes first) | stall cls guess
        S = [lo, hi, f_lo, f_hi, hi, f_hi, lo, f_lo, lo - self.step, f_before, zero, cls, g]
        self.S[f] = torch.stack([v.double() for v in S], 1)
        self.live[f] = hi - lo > self.tol

    def probes(self, j: torch.Tensor) -> torch.Tensor:
        """The next probe of rays j: a margin estimate inside the bracket, else bisection;
        within tol of an end it goes ~tol past it, to close the bracket."""
        if j.numel() == 0:
            return self.S[:0, 0]
        a, b, fa, fb, t1, f1, t2, f2, t3, f3, stall, _, g = self.S[j].unbind(1)
        c = (a + b) / 2
        if self.margins:
            est = torch.stack(
                [
                    _secant(a, fa, b, fb),
                    _secant(t1, f1, t2, f2),
                    _inverse_quadratic(t1, f1, t2, f2, t3, f3),
                    g,
                ],
                1,
            )
            # an estimate on an end, or past it by rounding (the last probe hit the root),
            # counts: pushed ~tol inside, it closes the bracket
            lo, hi = (a - self.near).unsqueeze(1), (b + self.near).unsqueeze(1)
            ok = torch.isfinite(est) & (est > lo) & (est < hi)
            ok &= (stall < 3).unsqueeze(1)
            col = (ok * torch.arange(1, 5, device=j.device)).argmax(1, keepdim=True)
            c = torch.where(ok.any(1), est.gather(1, col).squeeze(1), c)
        return torch.where(
            c < a + self.near, a + self.near, torch.where(c > b - self.near, b - self.near, c)
        )

    def update(
        self,
        j: torch.Tensor,
        c: torch.Tensor,
        pred: torch.Tensor,
        K: torch.Tensor | None,
        y: torch.Tensor,
    ) -> None:
        """Rays j were probed at c: the prediction there and every class's margin (or
        None for labels)."""
        if j.numel() == 0:
            return
        a, b, fa, fb, t1, f1, t2, f2, _, _, stall, cl, _ = self.S[j].unbind(1)
        flip = pred != y[j]
        new_hi = torch.where(flip, c, b)
        new_lo = torch.where(flip, a, c)
        new_cl = torch.where(flip, pred.double(), cl)
        if not self.margins or K is None:
            self.S[j, 0], self.S[j, 1], self.S[j, 11] = new_lo, new_hi, new_cl
        else:
            if self.K1 is None:
                self.K1 = torch.full(
                    (len(self.S), K.shape[1]), math.nan, dtype=K.dtype, device=K.device
                )
            marg = K.min(1).values
            # settled: the secants with the previous probe (within `local`) of every
            # class's margin put the first crossing in the bracket, within `reach` of
            # this probe; d is the crossing + tol/2, at most the flipped end
            root, rival = _first_crossing(t1, self.K1[j], c, K)
            settled = ((c - t1).abs() <= self.local) & (root > new_lo) & (root <= new_hi)
            settled &= (root - c).abs() <= self.reach
            self.K1[j] = K
            new_hi = torch.where(settled, torch.minimum(root + self.tol / 2, new_hi), new_hi)
            new_lo = torch.where(settled, new_hi, new_lo)
            new_cl = torch.where(settled, rival.double(), new_cl)
            halved = (new_hi - new_lo) <= 0.5 * (b - a)
            self.S[j] = torch.stack(
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
        self.live[j] = new_hi - new_lo > self.tol

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per ray (nan or -1 where it never started): the distance, the class at the flip
        and the margin's slope there (the secant of the two newest probes)."""
        S = self.S
        slope = (S[:, 5] - S[:, 7]) / (S[:, 4] - S[:, 6])
        return S[:, 1], torch.nan_to_num(S[:, 11], nan=-1.0).long(), slope

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
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn

from ...errors import LineageError
from ...runtime import device_of, eval_mode, ieee_fp32
from .. import sampling
from ..boundary import Model
from ..evidence import Kind, Parent, Suspect, register
from ..sampling import Points
from ..verdict import logit
from . import filtering
from .filtering import References, check_candidates, filter_points
from .measure import (
    SourceCache,
    check_data,
    source_probe,
    suspect_probe,
    suspect_side,
)
from .progress import progress_bar
from .score import closeness_threshold, contributions, score_terms
from .settings import ClosenessConf, settings

__all__ = [
    "ClosenessConf",
    "ClosenessResult",
    "LabelOnly",
    "References",
    "SourceCache",
    "closeness",
    "closeness_threshold",
    "contributions",
    "filter_points",
    "measure_points",
    "score_terms",
    "settings",
]


class LabelOnly(nn.Module):
    """A black-box view of `model` that answers hard labels only (1-D int64)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).argmax(1)


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
    route: str = "direct"  # "trunk": another task's suspect read under the parent's head
    threshold: float | None = None  # the AAAI 2025 rule's over the references (recorded)

    def to_dict(self) -> dict[str, Any]:
        """The scalar fields (for metrics.json); the per-point arrays stay out."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "points"}


def measure_points(
    source: Model,
    suspect: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: Mapping[str, Any] | ClosenessConf | None = None,
) -> tuple[Points, float]:
    """Attack every point once (no sampling): per-point measurements and evaluations/point."""
    from .measure import source_side

    c = asdict(settings(cfg))
    check_data(x, y)
    with eval_mode(source, suspect), ieee_fp32(device_of(source)):
        src = source_probe(source, x, y, c)
        sus = suspect_probe(src, suspect, "suspect", x, y, c)
        side = source_side(source, src, x, y, torch.arange(len(x)), c)
        pts = suspect_side(sus, side, c)
    return pts, (src.evals + sus.evals) / len(x)


def closeness(
    source: Model,
    suspect: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: Mapping[str, Any] | ClosenessConf | None = None,
    references: References | None = None,
    seed: int | None = None,
    candidates: torch.Tensor | None = None,
    cache: SourceCache | None = None,
) -> ClosenessResult:
    """Lineage closeness of `suspect` to `source` on data (x, y); see the module docstring.

    Points are drawn by `lineage.evaluate.sampling` (cfg.strategy): stratified by class,
    invalid points dropped, in batches until the bootstrap 95% CI half-width of the score is
    <= ci_tol or max_points is reached. With `references` holding both known lineage and
    known independent models (and cfg.filter), only points from `filter_points` are drawn
    (AAAI 2025); `candidates` (indices into x, e.g. a saved `filter_points` answer reused
    for many suspects) fixes the points and their order instead. `cache` keeps the source's
    half of each measurement for the next suspect (it depends on the source only).
    """
    t0 = time.perf_counter()
    c = asdict(settings(cfg))
    check_data(x, y)
    seed = int(c["seed"] if seed is None else seed)
    tol = float(c["tol"])
    refs = references or References()
    filtered = candidates is not None or bool(c["filter"] and refs.lineage and refs.independent)
    ref_evals = 0
    if candidates is None and filtered:
        candidates, ref_evals = filtering._filter_points(source, x, y, refs, c, seed)
    uniform = c["strategy"] == "uniform" and candidates is None
    if candidates is not None:
        order = check_candidates(candidates, len(x))
    elif uniform:
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    else:
        order = sampling.stratified_order(y, seed)
    sources = cache if cache is not None else SourceCache()
    with eval_mode(source, suspect), ieee_fp32(device_of(source)):
        src = source_probe(source, x, y, c)
        sus = suspect_probe(src, suspect, "suspect", x, y, c)

        def measure(ids: torch.Tensor) -> Points:
            side = sources.get(source, src, x, y, ids, c)
            return suspect_side(sus, side, c)

        bar = progress_bar(bool(c["progress"]), c["max_points"], "closeness")
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


@register("closeness", rank=20)
class Closeness(Kind):
    """Closeness as evidence: a score near 1 is parent-like. The source's half of every
    measurement depends on the parent only, so it is kept across suspects."""

    Conf = ClosenessConf
    headline = "score"
    scale = "logit(score): higher scores are more parent-like"

    def prepare(self, parent: Parent, conf: ClosenessConf) -> SourceCache:
        return SourceCache()

    def measure(
        self, cache: SourceCache, parent: Parent, suspect: Suspect, conf: ClosenessConf
    ) -> ClosenessResult:
        r = closeness(parent.model, suspect.view, parent.x, parent.y, conf, seed=parent.seed,
                      cache=cache)  # fmt: skip
        return replace(r, route=suspect.route)

    def statistic(self, r: ClosenessResult, conf: ClosenessConf) -> float | None:
        return logit(r.score)

    def recorded(
        self, r: ClosenessResult, others: list[ClosenessResult | None], conf: ClosenessConf
    ) -> ClosenessResult:
        finite = [o.score for o in others if o is not None and math.isfinite(o.score)]
        tau = closeness_threshold(finite, conf.gamma) if finite else None
        return replace(r, threshold=tau)

    def describe(self, r: ClosenessResult) -> str:
        return (
            f"{r.score:.4f} [{r.ci_low:.4f}, {r.ci_high:.4f}], match rate {r.match_rate:.4f} "
            f"on {r.n_points} points ({r.route})"
        )

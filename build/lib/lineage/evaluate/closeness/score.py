"""The closeness score of a set of measured points, and the function-route threshold.

See the package docstring for the measures; each function here takes per-point weights, so
the bootstrap (a row of resample counts) and the plain estimate (a row of ones) share it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ...errors import LineageError
from ..sampling import Points


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

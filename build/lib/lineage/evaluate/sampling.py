"""Which points to attack, and how many: the paper's sampling strategy for closeness.

1. Invalid points are dropped: the source misclassifies them, or does not flip within d_max.
   Such a point says nothing about the suspect, yet uniform sampling pays to attack it.
2. Points are stratified by class: each class's points are shuffled and dealt round-robin,
   so every prefix of the order holds the classes in (near) equal numbers, and the
   bootstrap resamples within classes.
3. With known lineage and independent references (AAAI 2025), only points that every
   lineage reference matches and no independent one matches are kept: they discriminate.
4. Points are drawn in batches until the bootstrap 95% CI half-width of the score is at
   most ci_tol (after min_points), or max_points is reached, or a suspect's query budget
   runs out (`BudgetSpent`, lineage.remote): the batch it interrupted is dropped (its
   answers stay in the remote client's cache) and the points before it are the sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from ..errors import BudgetSpent, LineageError


@dataclass
class Points:
    """Per-point closeness measurements; `index` points into the data given to closeness."""

    index: torch.Tensor
    label: torch.Tensor
    valid: torch.Tensor  # the source is right at x and flips within d_max
    d_source: torch.Tensor  # inf where the source does not flip within d_max
    d_suspect: torch.Tensor  # inf where the suspect is wrong at x or does not flip
    adv_source: torch.Tensor  # the class at the source's flip, -1 where none
    adv_suspect: torch.Tensor
    suspect_correct: torch.Tensor
    matched: torch.Tensor

    def arrays(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def take(self, keep: torch.Tensor) -> Points:
        return Points(**{k: v[keep] for k, v in self.arrays().items()})

    @staticmethod
    def cat(parts: Sequence[Points]) -> Points:
        arrays = [p.arrays() for p in parts]
        return Points(**{k: torch.cat([a[k] for a in arrays]) for k in arrays[0]})


# statistic(points, weights (B, n)) -> (B,): the score of each weighted resample
Statistic = Callable[[Points, torch.Tensor], torch.Tensor]


def stratified_order(y: torch.Tensor, seed: int) -> torch.Tensor:
    """All indices of y: each class shuffled, then dealt one per class in turn."""
    g = torch.Generator().manual_seed(seed)
    y = y.cpu()
    per_class = [
        idx[torch.randperm(len(idx), generator=g)]
        for idx in (torch.nonzero(y == c).squeeze(1) for c in torch.unique(y))
    ]
    rank = torch.empty(len(y), dtype=torch.long)
    for idx in per_class:
        rank[idx] = torch.arange(len(idx))
    # sort by (position within its class, class): round-robin over the classes
    cls = torch.empty(len(y), dtype=torch.long)
    for k, idx in enumerate(per_class):
        cls[idx] = k
    return torch.argsort(rank * (len(per_class) + 1) + cls)


def consistent_points(
    lineage_matched: torch.Tensor, independent_matched: torch.Tensor
) -> torch.Tensor:
    """AAAI 2025 filter over (references, points) match masks: True where the point
    matches on every lineage reference and on no independent reference."""
    return lineage_matched.all(0) & ~independent_matched.any(0)


def bootstrap(
    statistic: Statistic, points: Points, strata: torch.Tensor | None, n_boot: int, seed: int
) -> torch.Tensor:
    """n_boot resampled statistics; resampling is within strata when given."""
    n = len(points.index)
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(n_boot, n, dtype=torch.float64)
    groups = (
        [torch.arange(n)]
        if strata is None
        else [torch.nonzero(strata == c).squeeze(1) for c in torch.unique(strata)]
    )
    for idx in groups:
        draws = idx[torch.randint(len(idx), (n_boot, len(idx)), generator=g)]
        w.scatter_add_(1, draws, torch.ones(draws.shape, dtype=torch.float64))
    return statistic(points, w)


def confidence_interval(
    statistic: Statistic,
    points: Points,
    strata: torch.Tensor | None,
    n_boot: int,
    seed: int,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the statistic."""
    stats = bootstrap(statistic, points, strata, n_boot, seed)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(stats, q).tolist()
    return float(low), float(high)


@dataclass
class Sampled:
    points: Points
    ci_low: float
    ci_high: float
    n_drawn: int  # points attacked, dropped ones included
    stopped: str  # "ci" | "max_points" | "exhausted" | "budget"


def sequential(
    order: torch.Tensor,
    measure: Callable[[torch.Tensor], Points],
    statistic: Statistic,
    cfg: Mapping[str, Any],
    seed: int,
    drop_invalid: bool = True,
    on_step: Callable[[int], Any] | None = None,
    cost: Callable[[], float] | None = None,
) -> Sampled:
    """Attack points in `order`, batch_points at a time, until the CI is tight enough.

    With drop_invalid, invalid points are not counted (strategy steps 1-2, CI stratified
    by class); without, every drawn point counts, as plain uniform sampling would.
    `cost` (queries spent on the suspect so far) only words the message of a budget too
    small for min_points."""
    parts: list[Points] = []
    n_have = n_drawn = 0
    ci = (float("nan"), float("nan"))
    stopped = "exhausted"
    pos = 0
    spent = 0.0
    while pos < len(order):
        take = min(cfg["batch_points"], cfg["max_points"] - n_have)
        ids = order[pos : pos + take]
        pos += len(ids)
        try:
            p = measure(ids)
        except BudgetSpent as e:
            if n_have < cfg["min_points"]:
                raise LineageError(
                    _budget_message(e, n_have, n_drawn, len(ids), spent, cost, cfg["min_points"])
                ) from None
            stopped = "budget"
            break
        n_drawn += len(ids)
        spent = cost() if cost else 0.0
        if drop_invalid:
            p = p.take(p.valid)
        parts.append(p)
        n_have += len(p.index)
        if on_step:
            on_step(len(p.index))
        if n_have >= cfg["min_points"]:
            pts = Points.cat(parts)
            ci = confidence_interval(
                statistic, pts, pts.label if drop_invalid else None, cfg["n_boot"], seed
            )
            if (ci[1] - ci[0]) / 2 <= cfg["ci_tol"]:
                stopped = "ci"
                break
        if n_have >= cfg["max_points"]:
            stopped = "max_points"
            break
    if not parts:
        raise LineageError("closeness: no points to sample from")
    pts = Points.cat(parts)
    if 0 < n_have < cfg["min_points"]:
        ci = confidence_interval(
            statistic, pts, pts.label if drop_invalid else None, cfg["n_boot"], seed
        )
    return Sampled(pts, ci[0], ci[1], n_drawn, stopped)


def _budget_message(
    e: BudgetSpent,
    n_have: int,
    n_drawn: int,
    n_batch: int,
    spent: float,
    cost: Callable[[], float] | None,
    min_points: int,
) -> str:
    """How many points the budget allowed, and about what min_points would need."""
    msg = (
        f"the query budget of {e.budget} queries allowed {n_have} valid points "
        f"({n_drawn} drawn), fewer than min_points={min_points}"
    )
    if n_have > 0 and cost is not None:
        rate = spent / n_drawn
        need = rate * min_points * n_drawn / n_have
        return f"{msg}: at {rate:.1f} queries per point, min_points needs about {need:.0f}"
    if n_have == 0:
        return (
            f"{msg}: its {e.budget} queries did not finish the first {n_batch} points (over "
            f"{e.budget / max(1, n_batch):.1f} queries per point)"
        )
    return msg

"""Weight distance: how far the suspect's weights are from the source's, once aligned.

A derived model (fine-tuned, pruned, quantized, noised) keeps most of its parent's
weights, so after the basin test's route (lineage.evaluate.basin.route: permutation
alignment by weight matching, pruned widths mapped back, a new head left out) its relative
distance

    D = ||theta_suspect - theta_source|| / ||theta_source||   (over the route's moving tensors)

is small. Independent models sit far apart even where they share a basin (digits MLPs do,
so the barrier says nothing there), and the distance still separates. Its scale depends on
the suspect's own training (its weight norms, its recipe), so it is meant for the
suspect-centred null (lineage.engine): the suspect's distance to the parent against its
distance to each reference in the parent's place, where that scale cancels.

Weights only: a black box has none. Cost: nothing beyond the basin test's weight matching
of the same pair, whose route it shares (Suspect.memo), or one of its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..settings import knob
from .basin.route import shared_plan
from .basin.settings import DeterminationConf
from .evidence import Kind, Parent, Suspect, register


@dataclass
class DistanceConf:
    enabled: bool = knob(True)
    align_rounds: int = knob(20, lo=1)  # most rounds of weight matching
    # the distance's floor on the log scale: a copy is at 0, and no closer than this
    floor: float = knob(1e-6, lo=0, hi=1, ends="(]")


@dataclass
class DistanceResult:
    distance: float | None  # relative, after alignment; None without a weight-space route
    route: str
    seconds: float
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def weight_distance(
    source: torch.nn.Module, suspect: torch.nn.Module, record: Any, head: str | None,
    spec: Any, conf: DistanceConf, memo: MutableMapping[Any, Any] | None = None,
) -> DistanceResult:  # fmt: skip
    """`memo`: the pair's shared work, where the basin test may have left its route."""
    t0 = time.perf_counter()
    s = DeterminationConf(align_rounds=conf.align_rounds)
    route = shared_plan(memo, source, suspect, s, record, head, spec)
    if isinstance(route, str):
        return DistanceResult(None, "function", time.perf_counter() - t0, route)
    own = source.state_dict()
    keys = [k for k in route.keys if own[k].is_floating_point()]
    if route.trunk and route.head:
        keys = [k for k in keys if not k.startswith(f"{route.head}.")]
    with torch.no_grad():
        diff = sum(float((route.target[k].float() - own[k].float()).pow(2).sum()) for k in keys)
        norm = sum(float(own[k].float().pow(2).sum()) for k in keys)
    d = math.sqrt(diff) / max(math.sqrt(norm), 1e-12)
    return DistanceResult(d, route.name, time.perf_counter() - t0)


@register("distance", rank=15)
class Distance(Kind):
    """The aligned weight distance as evidence: closer is parent-like."""

    Conf = DistanceConf
    access = ("weights",)
    headline = "distance"
    scale = "-log max(distance, floor): closer weights are more parent-like"

    def measure(
        self, prepared: Any, parent: Parent, suspect: Suspect, conf: DistanceConf
    ) -> DistanceResult:
        assert isinstance(suspect.model, torch.nn.Module)
        return weight_distance(
            parent.model, suspect.model, suspect.record, parent.head, parent.spec, conf,
            memo=suspect.memo,
        )  # fmt: skip

    def statistic(self, r: DistanceResult, conf: DistanceConf) -> float | None:
        if r.distance is None or not math.isfinite(r.distance):
            return None
        return -math.log(max(r.distance, conf.floor))

    def describe(self, r: DistanceResult) -> str:
        if r.distance is None:
            return "no weight-space route"
        return f"distance {r.distance:.4g}, route {r.route}"

"""Judge suspects against a parent: the same-basin test, closeness, and the combined verdict,
with thresholds calibrated on independent references. Shared by run.py and `lineage compare`,
so both give the same numbers for the same pair.

Each independent reference is also judged, as a false-positive check, with thresholds
calibrated leave-one-out on the *other* references (judging it against a threshold it set
itself would be circular).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .errors import LineageError
from .evaluate.basin import DeterminationResult, determine, settings, with_threshold
from .evaluate.calibration import calibrate
from .evaluate.closeness import ClosenessResult, closeness, closeness_threshold
from .evaluate.verdict import combine
from .models import head_of


@dataclasses.dataclass
class Suspect:
    model: nn.Module | None  # None: a black box only (e.g. lineage.remote.RemoteModel)
    record: Mapping[str, Any] | None = None  # lineage record (kept channels, ...)
    blackbox: Callable[[torch.Tensor], torch.Tensor] | None = None  # what closeness queries


def black_box_determination() -> DeterminationResult:
    """The basin evidence of a suspect without weights: none, so the function evidence
    alone decides (verdict.combine), as for a suspect of another architecture."""
    return DeterminationResult(
        is_lineage=False,
        basin_is_lineage=None,
        function_is_lineage=None,
        barrier=None,
        barrier_rel=None,
        error_barrier=None,
        threshold=None,
        margin=None,
        method="function",
        route="function",
        aligned=False,
        calibrated=False,
        reason="a black box (no weights): only the function evidence applies",
    )


@dataclasses.dataclass
class Verdict:
    determination: DeterminationResult
    closeness: ClosenessResult
    closeness_route: str = "direct"

    def to_dict(self) -> dict[str, Any]:
        return {
            "determination": self.determination.to_dict(),
            "closeness": {**self.closeness.to_dict(), "route": self.closeness_route},
        }


class Graft(nn.Module):
    """The suspect's trunk under the parent's head: the transfer route. A suspect tuned to
    another task (other classes) is compared on the parent's task through the features it
    kept, the same route the basin test takes for different heads."""

    def __init__(self, suspect: nn.Module, parent: nn.Module):
        super().__init__()
        self.features: nn.Module = suspect.features  # type: ignore[assignment]
        self.head = head_of(parent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def closeness_view(parent: nn.Module, suspect: Suspect) -> tuple[Callable[..., Any], str]:
    """What closeness queries, and the route it takes."""
    if suspect.model is None:
        if suspect.blackbox is None:
            raise LineageError("a suspect needs a model or a black box to query")
        return suspect.blackbox, "direct"
    if head_of(suspect.model).out_features != head_of(parent).out_features:
        return Graft(suspect.model, parent), "trunk"
    return (suspect.blackbox or suspect.model), "direct"


def _recalibrate(
    r: DeterminationResult, barriers: Sequence[float], cfg: Mapping[str, Any]
) -> DeterminationResult:
    if r.barrier is None or r.loss_parent is None or r.loss_suspect is None:
        return r
    tau, calibrated = calibrate(barriers, (r.loss_parent, r.loss_suspect), settings(cfg))
    return with_threshold(r, tau, calibrated)


def judge(
    parent: nn.Module,
    suspect: Suspect | None,
    references: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: Mapping[str, Any],
    seed: int,
) -> tuple[Verdict | None, list[Verdict], dict[str, float]]:
    """Returns (verdict on the suspect, verdict on each reference, seconds per stage).

    `cfg` holds the `determination` and `closeness` groups; `x, y` are the probe points of
    the parent's task (its test split).
    """
    dcfg, ccfg = cfg["determination"], cfg["closeness"]
    probe = int(dcfg.get("probe_points") or len(y))
    px, py = x[:probe], y[:probe]
    t0 = time.perf_counter()
    ref_det = [determine(parent, r, px, py, dcfg) for r in references]
    all_barriers = [r.barrier for r in ref_det]
    barriers = [b for b in all_barriers if b is not None]
    sus_det = None
    if suspect is not None:
        sus_det = (
            black_box_determination()
            if suspect.model is None
            else determine(parent, suspect.model, px, py, dcfg, barriers, None, suspect.record)
        )
    t1 = time.perf_counter()
    ref_close = [closeness(parent, r, x, y, ccfg, seed=seed) for r in references]
    scores = [c.score for c in ref_close]
    sus_close, route = None, "direct"
    if suspect:
        view, route = closeness_view(parent, suspect)
        sus_close = closeness(parent, view, x, y, ccfg, seed=seed)
    t2 = time.perf_counter()
    out_refs = []
    for i, (d, c) in enumerate(zip(ref_det, ref_close)):
        others = [b for j, b in enumerate(all_barriers) if j != i and b is not None]
        other_scores = [s for j, s in enumerate(scores) if j != i]
        d = combine(_recalibrate(d, others, dcfg), c.score, closeness_threshold(other_scores))
        out_refs.append(Verdict(d, c))
    verdict = None
    if suspect and sus_det is not None and sus_close is not None:
        verdict = Verdict(
            combine(sus_det, sus_close.score, closeness_threshold(scores)), sus_close, route
        )
    return verdict, out_refs, {"determination_s": t1 - t0, "closeness_s": t2 - t1}

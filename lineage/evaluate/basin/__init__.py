"""Lineage determination: are parent and suspect in the same basin of the loss landscape?

Along the straight path theta(a) = (1 - a) * theta_parent + a * theta_suspect the probe
loss L(a) is measured, and the barrier

    B = max_a [ L(a) - env(a) ],   env = the lower convex envelope of the measured L(a)

is how far the path rises above convexity. A model derived from the parent (fine-tuned,
pruned, quantized, noised) stays in the parent's basin, where the path is convex: B is ~0.
An independently trained model sits in another basin, behind a ridge: B is large. The
paper measures the rise above the chord, max_a [L(a) - ((1 - a) L(0) + a L(1))]
(`chord_barrier`); the two agree for every reference of our zoos, but a badly damaged
suspect of another parent lifts the chord's far end over the ridge (MNIST: the other
parent's noise-0.9 model, chord barrier 0, envelope barrier 0.098), which the envelope is
not fooled by.

`route` puts the suspect into the parent's layout first (alignment, pruned widths, the
trunk of a transfer suspect), `path` walks the line with BatchNorm re-estimated at every
point. When no weight-space route exists (another architecture), the result says
`route="function"` and the other evidence decides (lineage.evaluate.verdict). A
suspect that has learnt nothing of the parent's task (a loss no better than a uniform
guess's, L(1) >= ln C, or an accuracy within a margin of guessing the most frequent class)
lifts the chord over any ridge, so the test abstains (`abstains`, with the reason; see
`uninformative`).

`Basin` at the end registers the test as the verdict's "basin" evidence (options: the
`determination` config group).

Everything here is a pure function of models and tensors, on the parent's device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...adapters import Spec, find_head, n_outputs
from ...errors import LineageError
from ...runtime import device_of
from ...settings import from_mapping
from ..calibration import calibrate
from ..evidence import Kind, Parent, Suspect, register
from .path import Path, Start, curve_of, evaluate, fit_head, gap, reestimate_bn, rise
from .route import Route, check_record, kept_channels, plan, recorded, shared_plan
from .settings import DeterminationConf

__all__ = [
    "DeterminationConf",
    "barrier_of",
    "BasinResult",
    "Route",
    "Start",
    "determine",
    "evaluate",
    "kept_channels",
    "plan",
    "recorded",
    "reestimate_bn",
    "settings",
    "with_threshold",
]


@dataclass
class BasinResult:
    """The same-basin test's result. `barrier` etc. are None without a weight-space route
    (`reason` says why); the paper's threshold rule is recorded, never deciding (the
    verdict is lineage.evaluate.verdict's)."""

    barrier: float | None  # the path's rise above its lower convex envelope (loss units)
    barrier_rel: float | None  # barrier / mean endpoint loss
    error_barrier: float | None  # the same construction on the error rate
    threshold: float | None  # the paper's rule: gamma * the lowest reference barrier
    margin: float | None  # threshold - barrier (> 0: below the paper's threshold)
    route: str  # the weight-space route: basin|trunk [+pruned-map|+pruned-match][+aligned]
    aligned: bool  # weight matching reordered the suspect's units
    threshold_calibrated: bool  # threshold from reference barriers (False: the fallback)
    abstains: bool = False  # the suspect learnt nothing of the task: no evidence either way
    loss_parent: float | None = None  # L(0)
    loss_suspect: float | None = None  # L(1)
    curve: list[dict[str, float]] = field(default_factory=list)  # {alpha, loss, error}
    seconds: float = 0.0
    reason: str = ""  # why the weight-space test was not applicable, or proves nothing
    alignment: str = ""  # units alignment could not cover, and why ("" when none)
    chord_barrier: float | None = None  # the paper's barrier, against the chord (see `barrier`)

    @property
    def below_threshold(self) -> bool | None:
        """The paper's rule, B <= tau (None: no barrier, or the test abstains). Recorded
        for comparison with the paper; the verdict is the p-value test's."""
        if self.barrier is None or self.threshold is None or self.abstains:
            return None
        return self.barrier <= self.threshold

    def to_dict(self) -> dict[str, Any]:
        """The fields for metrics.json, the loss path's curve included."""
        return asdict(self)


def settings(cfg: Mapping[str, Any] | DeterminationConf | None) -> DeterminationConf:
    """The options over their defaults, checked (a bad value names its key)."""
    if isinstance(cfg, DeterminationConf):
        return cfg
    return from_mapping(DeterminationConf, cfg, "determination")


# ---- input checks ----


def check_finite(model: nn.Module, who: str) -> None:
    for k, t in model.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise LineageError(f"{who}: tensor {k!r} holds NaN or Inf values")


def check_probe(x: torch.Tensor, y: torch.Tensor, parent: nn.Module) -> int:
    """Refuse probe data the parent cannot be measured on; returns its number of classes."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise LineageError("probe data must be tensors (x, y)")
    if len(x) == 0 or len(y) == 0:
        raise LineageError("probe data is empty: the barrier needs at least one sample")
    if len(x) != len(y):
        raise LineageError(f"probe data: {len(x)} inputs but {len(y)} labels")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise LineageError("probe inputs hold NaN or Inf values")
    dev = device_of(parent)
    try:
        n = n_outputs(parent.eval(), x[:2].to(dev))
    except RuntimeError as e:
        raise LineageError(
            f"probe inputs of shape {tuple(x.shape[1:])} do not fit the parent "
            f"({str(e).splitlines()[0]})"
        ) from None
    if y.dtype.is_floating_point or int(y.min()) < 0 or int(y.max()) >= n:
        raise LineageError(f"probe labels must be class indices in 0..{n - 1}")
    return n


# A suspect must beat the best constant guess by this share of the room above it to
# count as having learnt the task (0.1: on ten balanced classes, 19% accuracy).
CHANCE_MARGIN = 0.1


def uninformative(last: Mapping[str, float], y: torch.Tensor, n_classes: int) -> str:
    """Why the suspect's end of the path carries no basin evidence ("" when it does).

    A suspect that has learnt nothing of the parent's task cannot share its basin, and
    its end of the chord sits so high that any path stays under it: a barrier of 0 then
    proves nothing (a distilled student that failed to train did exactly this). Two
    signs, either enough: a loss no better than the uniform guess's (L(1) >= ln C), or
    an accuracy within CHANCE_MARGIN of the best constant guess (the majority class of
    the probe set). The loss alone misses a near-constant model: one that predicts the
    class frequencies scores below ln C on an unbalanced probe set (pruning at ratio 1,
    which leaves only the biases, gave L(1) = 2.3015 < ln 10)."""
    loss, acc = last["loss"], 1.0 - last["error"]
    if loss >= math.log(n_classes):
        return (
            f"the suspect's loss on the parent's task, {loss:.3g}, is no better than a "
            f"uniform guess (ln {n_classes} = {math.log(n_classes):.3g}): no basin evidence "
            "either way"
        )
    chance = float(torch.bincount(y.cpu(), minlength=n_classes).max()) / max(len(y), 1)
    if acc <= chance + CHANCE_MARGIN * (1 - chance):
        return (
            f"the suspect's accuracy on the parent's task, {acc:.3g}, is no better than "
            f"guessing one class ({chance:.3g}, the most frequent): it has learnt nothing "
            "that could share a basin, so no basin evidence either way"
        )
    return ""


def _function_only(reason: str, t0: float) -> BasinResult:
    return BasinResult(
        barrier=None,
        barrier_rel=None,
        error_barrier=None,
        threshold=None,
        margin=None,
        route="function",
        aligned=False,
        threshold_calibrated=False,
        seconds=time.perf_counter() - t0,
        reason=reason,
    )


def determine(
    parent: nn.Module,
    suspect: Any,
    probe_x: torch.Tensor,
    probe_y: torch.Tensor,
    cfg: Mapping[str, Any] | DeterminationConf | None = None,
    reference_barriers: Sequence[float | None] | None = None,
    bn_x: torch.Tensor | None = None,
    suspect_record: Mapping[str, Any] | None = None,
    head: str | None = None,
    spec: Spec | None = None,
    *,
    start: Start | None = None,
    memo: MutableMapping[Any, Any] | None = None,
) -> BasinResult:
    """The same-basin test of `suspect` against `parent` on the probe set (the parent's task).

    `reference_barriers`: barriers between the parent and independent references (same
    architecture and data, other seeds), for the calibrated threshold; None or empty -> the
    documented fallback, and `calibrated=False`. `bn_x`: data for the BatchNorm
    re-estimation (default: the probe inputs). `suspect_record`: the suspect's lineage
    record; its `kept_channels` ({layer: kept parent indices}) maps a structurally pruned
    suspect back into the parent's widths. `head`: the parent's head module for the trunk
    route (default: found in the graph). `spec`: the parent's permutation groups, when
    already known. A suspect that is not an nn.Module (a black box) has no weights to test.
    `start`: the parent's theta(0) kept from earlier calls (path.Start); `memo`: the pair's
    shared work (route.shared_plan). Neither changes the result, only what it costs.
    """
    t0 = time.perf_counter()
    s = settings(cfg)
    n_classes = check_probe(probe_x, probe_y, parent)
    check_finite(parent, "parent")
    if not isinstance(suspect, nn.Module):
        return _function_only("the suspect is a black box: it has no weights to compare", t0)
    check_finite(suspect, "suspect")
    suspect_record = check_record(suspect_record)
    head = find_head(parent, head)
    route = shared_plan(memo, parent, suspect, s, suspect_record, head, spec)
    if isinstance(route, str):
        return _function_only(route, t0)
    bn_x = probe_x if bn_x is None else bn_x
    has_bn = any(isinstance(m, _BatchNorm) for m in parent.modules())
    if s.bn_reestimate and has_bn and len(bn_x) < 2:
        raise LineageError(
            f"BatchNorm re-estimation needs at least 2 samples; bn_x has {len(bn_x)}"
        )
    if route.trunk:
        fit_head(parent, route, probe_x, probe_y, bn_x, s)
    path = Path(parent, route, probe_x, probe_y, bn_x, s)
    curve = curve_of(path, s.alphas, s.refine, start)
    first, last = curve[0], curve[-1]
    barrier = max(rise(curve))
    chord = max(gap(c, first, last, "loss") for c in curve)
    err_barrier = max(gap(c, first, last, "error") for c in curve)
    threshold, calibrated = calibrate(reference_barriers, (first["loss"], last["loss"]), s)
    reason = uninformative(last, probe_y, n_classes)
    mean_end = (first["loss"] + last["loss"]) / 2
    return BasinResult(
        barrier=barrier,
        barrier_rel=barrier / max(mean_end, torch.finfo(torch.float32).eps),
        error_barrier=err_barrier,
        chord_barrier=chord,
        threshold=threshold,
        margin=threshold - barrier,
        route=route.name,
        aligned=route.aligned,
        threshold_calibrated=calibrated,
        abstains=bool(reason),
        loss_parent=first["loss"],
        loss_suspect=last["loss"],
        curve=curve,
        seconds=time.perf_counter() - t0,
        reason=reason,
        alignment=route.alignment,
    )


def with_threshold(r: BasinResult, tau: float, calibrated: bool) -> BasinResult:
    """`r` with the paper's threshold from other reference barriers (recorded)."""
    if r.barrier is None:
        return r
    return replace(r, threshold=tau, threshold_calibrated=calibrated, margin=tau - r.barrier)


def barrier_of(
    parent: nn.Module,
    other: nn.Module,
    probe_x: torch.Tensor,
    probe_y: torch.Tensor,
    cfg: Mapping[str, Any] | DeterminationConf | None = None,
    bn_x: torch.Tensor | None = None,
    record: Mapping[str, Any] | None = None,
) -> float | None:
    """The barrier alone, with the same route and settings as `determine` (for computing
    the reference barriers). None when there is no weight-space route."""
    return determine(parent, other, probe_x, probe_y, cfg, None, bn_x, record).barrier


LIFT = 2.0  # L(1) / L(0) above which a low barrier alone is weak evidence


@register("basin", rank=10)
class Basin(Kind):
    """The same-basin test as evidence: a low barrier is parent-like."""

    group = "determination"
    Conf = DeterminationConf
    access = ("weights",)
    headline = "barrier"
    scale = "-log max(barrier, fallback_rel * L(0)): lower barriers are more parent-like"

    def prepare(self, parent: Parent, conf: DeterminationConf) -> Start:
        """The parent's end of every path, measured once (by the first path)."""
        return Start()

    def measure(
        self, prepared: Start | None, parent: Parent, suspect: Suspect, conf: DeterminationConf
    ) -> BasinResult:
        n = conf.probe_points
        return determine(
            parent.model, suspect.model, parent.x[:n], parent.y[:n], conf, None, None,
            suspect.record, parent.head, parent.spec, start=prepared, memo=suspect.memo,
        )  # fmt: skip

    def statistic(self, r: BasinResult, conf: DeterminationConf) -> float | None:
        if r.barrier is None or r.abstains or r.loss_parent is None:
            return None
        if not math.isfinite(r.barrier):
            return None
        # the fallback's 2% of L(0) floors the scale: "convex up to a small tolerance"
        eps = max(conf.fallback_rel * r.loss_parent, 1e-12)
        return -math.log(max(r.barrier, eps))

    def recorded(
        self, r: BasinResult, others: list[BasinResult | None], conf: DeterminationConf
    ) -> BasinResult:
        if r.barrier is None or r.loss_parent is None or r.loss_suspect is None:
            return r
        bars = [o.barrier for o in others if o is not None and self.statistic(o, conf) is not None]
        tau, ok = calibrate(bars, (r.loss_parent, r.loss_suspect), conf)
        return with_threshold(r, tau, ok)

    def caveat(self, r: BasinResult, conf: DeterminationConf) -> str:
        """A high L(1) bends the path, so a low barrier says less there."""
        l0, l1 = r.loss_parent, r.loss_suspect
        if not (l0 and l1 and l1 > LIFT * l0):
            return ""
        return (
            f"weak basin evidence: the suspect's loss L(1) {l1:.3g} is {l1 / l0:.0f}x the "
            f"parent's L(0) {l0:.3g}, and no other evidence says lineage"
        )

    def describe(self, r: BasinResult) -> str:
        if r.barrier is None:
            return "no weight-space route"
        abst = " (abstains)" if r.abstains else ""
        return f"barrier {r.barrier:.4g}{abst}, route {r.route}"

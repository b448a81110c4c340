"""The one judging engine: calibrate once per parent, then judge any number of suspects.

    cal = calibrate(parent, references, x, y)        # reference barriers, scores, thresholds
    v = judge(parent, suspect, x, y, calibration=cal)

`run.py`, `lineage compare`, `lineage tree` and the experiments all go through these two
functions, so they give the same numbers for the same pair. What depends on the parent
alone is computed once, in `calibrate`: its head, its permutation groups, the references'
evidence and thresholds, and the source's half of every closeness measurement.

Each independent reference is also judged, as a false-positive check, with thresholds
calibrated leave-one-out on the *other* references (judging it against a threshold it set
itself would be circular).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .adapters import HeadSwap, Spec, find_head, n_outputs, permutation_spec
from .errors import LineageError
from .evaluate.basin import (
    DeterminationConf,
    DeterminationResult,
    determine,
    with_threshold,
)
from .evaluate.basin import settings as determination_settings
from .evaluate.calibration import calibrate as basin_threshold
from .evaluate.closeness import ClosenessConf, ClosenessResult, SourceCache
from .evaluate.closeness import closeness as measure_closeness
from .evaluate.closeness import settings as closeness_settings
from .evaluate.closeness.score import closeness_threshold
from .evaluate.inherited import (
    InheritedConf,
    InheritedResult,
    Probes,
    inherited_errors,
    probe_points,
)
from .evaluate.inherited import settings as inherited_settings
from .evaluate.verdict import Evidence, decide

Model = nn.Module | Callable[[torch.Tensor], Any]


@dataclasses.dataclass
class Verdict:
    """Is the suspect derived from the parent, and how closely: the combined decision with
    its evidence (`determination`: the basin test and the decision; `closeness`)."""

    determination: DeterminationResult
    closeness: ClosenessResult
    closeness_route: str = "direct"
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    inherited: InheritedResult | None = None

    @property
    def is_lineage(self) -> bool:
        return bool(self.determination.is_lineage)

    @property
    def calibrated(self) -> bool:
        return bool(self.determination.calibrated)

    def to_dict(self, curve: bool = True) -> dict[str, Any]:
        """For metrics.json: the scalar fields of each evidence, the path's loss curve."""
        out = {
            "determination": self.determination.to_dict(curve=curve),
            "closeness": {**self.closeness.to_dict(), "route": self.closeness_route},
        }
        if self.inherited is not None:
            out["inherited"] = self.inherited.to_dict()
        return out

    def explain(self, references: Sequence[Evidence] = ()) -> str:
        """The verdict and the evidence behind it, for a person: each evidence with its
        p-value, and the references' values it was measured against (given `references`,
        e.g. Calibration.evidence)."""
        d, c = self.determination, self.closeness
        head = "lineage" if self.is_lineage else "not lineage"
        if not d.calibrated:
            head = "undetermined"
        by = f", decided by {d.decided_by}" if d.decided_by else ""
        p = "" if d.p_value is None else f" (p = {d.p_value:.3g} vs alpha {d.alpha}{by})"
        lines = [head + p]

        def span(values: Sequence[float | None]) -> str:
            v = [x for x in values if x is not None]
            return f"; references {min(v):.3g}-{max(v):.3g}" if v else ""

        if d.barrier is not None:
            abst = " (abstains)" if d.basin_is_lineage is None else ""
            lines.append(
                f"  basin: barrier {d.barrier:.4g}{abst}, p {_p(d.p_basin)}, route {d.route}"
                + span([r.barrier for r in references])
            )
        lines.append(
            f"  closeness: {c.score:.4f} [{c.ci_low:.4f}, {c.ci_high:.4f}], p "
            f"{_p(d.p_closeness)}, match rate {c.match_rate:.4f} on {c.n_points} points "
            f"({self.closeness_route})" + span([r.closeness for r in references])
        )
        if self.inherited is not None:
            lines.append(
                f"  inherited errors: {self.inherited.score:.4f} on "
                f"{self.inherited.n_points} points ({self.inherited.n_wrong} the parent "
                f"gets wrong), p {_p(d.p_inherited)}" + span([r.inherited for r in references])
            )
        for label, text in (("note", d.reason), ("alignment", d.alignment), ("caution", d.caveat)):
            if text:
                lines.append(f"  {label}: {text}")
        return "\n".join(lines)


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3g}"


@dataclasses.dataclass
class Calibration:
    """Everything about one parent that judging a suspect needs, computed once."""

    parent: nn.Module
    references: list[Verdict]  # each judged leave-one-out against the others
    barriers: list[float | None]  # the references' barriers to the parent (None: no route)
    scores: list[float]  # the references' closeness scores
    head: str | None  # the parent's head module (the trunk route's)
    spec: Spec  # the parent's permutation groups
    determination: DeterminationConf
    closeness: ClosenessConf
    seed: int
    cache: SourceCache = dataclasses.field(default_factory=SourceCache, repr=False)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    inherited: InheritedConf = dataclasses.field(default_factory=InheritedConf)
    probes: Probes | None = dataclasses.field(default=None, repr=False)  # the parent's errors
    evidence: list[Evidence] = dataclasses.field(default_factory=list)  # each reference's

    @property
    def calibrated(self) -> bool:
        """Enough references for the verdict's p-values (determination.min_references)."""
        return len(self.references) >= self.determination.min_references

    def thresholds(self) -> dict[str, float | None]:
        """The basin threshold's reference term and the function threshold."""
        valid = [b for b in self.barriers if b is not None]
        return {
            "barrier_min": min(valid) if valid else None,
            "closeness_threshold": function_threshold(self.scores, self.closeness.gamma),
        }


def _probe(x: torch.Tensor, y: torch.Tensor, s: DeterminationConf) -> tuple[Any, Any]:
    return x[: s.probe_points], y[: s.probe_points]


def closeness_view(
    parent: nn.Module, suspect: Model, x: torch.Tensor, head: str | None
) -> tuple[Model, str]:
    """What closeness queries, and the route it takes: a suspect answering another task
    (other classes) is read through its trunk under the parent's head."""
    if not isinstance(suspect, nn.Module):
        return suspect, "direct"
    if n_outputs(suspect, x) == n_outputs(parent, x):
        return suspect, "direct"
    theirs = find_head(suspect)
    if head is None or theirs is None:
        raise LineageError(
            "the suspect answers another number of classes and no Linear head was found to "
            "read its features with the parent's (pass head=...)"
        )
    return HeadSwap(suspect, theirs, parent.get_submodule(head)), "trunk"


def _check_model(model: Any, who: str) -> Model:
    if not (isinstance(model, nn.Module) or callable(model)):
        kind = type(model).__name__
        raise LineageError(f"{who}: expected an nn.Module or a callable, got {kind}")
    return model


def calibrate(
    parent: nn.Module,
    references: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    determination: Mapping[str, Any] | DeterminationConf | None = None,
    closeness: Mapping[str, Any] | ClosenessConf | None = None,
    seed: int = 0,
    head: str | None = None,
    inherited: Mapping[str, Any] | InheritedConf | None = None,
) -> Calibration:
    """Measure `parent` against its independent `references` (same task, other seeds or
    data) once: their evidence is the distribution every suspect of this parent is judged
    against (lineage.evaluate.verdict). `x, y` are the parent task's test points (the first
    `determination.probe_points` of them are the basin test's probe set)."""
    if not isinstance(parent, nn.Module):
        raise LineageError("the parent must be an nn.Module (its gradient and weights are used)")
    for i, r in enumerate(references):
        _check_model(r, f"reference {i}")
    ds, cs = determination_settings(determination), closeness_settings(closeness)
    ins = inherited_settings(inherited)
    px, py = _probe(x, y, ds)
    head = find_head(parent, head)
    spec = permutation_spec(parent)
    cache = SourceCache()
    t0 = time.perf_counter()
    dets = [determine(parent, r, px, py, ds, None, None, None, head, spec) for r in references]
    t1 = time.perf_counter()
    closes = [measure_closeness(parent, r, x, y, cs, seed=seed, cache=cache) for r in references]
    t2 = time.perf_counter()
    probes = probe_points(parent, x, y, ins) if ins.enabled else None
    views = [closeness_view(parent, r, x, head)[0] for r in references]
    inh = [inherited_errors(v, probes, ins) if probes is not None else None for v in views]
    t3 = time.perf_counter()
    evidence = [evidence_of(d, c, i) for d, c, i in zip(dets, closes, inh)]
    refs = []
    for i, (d, c, h) in enumerate(zip(dets, closes, inh)):
        others = [e for j, e in enumerate(evidence) if j != i]
        if d.barrier is not None and d.loss_parent is not None and d.loss_suspect is not None:
            bars = [e.barrier for e in others if e.barrier is not None]
            tau, ok = basin_threshold(bars, (d.loss_parent, d.loss_suspect), ds)
            d = with_threshold(d, tau, ok)  # the paper's threshold, for the record
        d = with_function_threshold(d, [e.closeness for e in others], cs.gamma)
        refs.append(Verdict(decide(d, evidence[i], others, ds), c, inherited=h))
    barriers = [d.barrier for d in dets]
    scores = [c.score for c in closes]
    seconds = {"determination_s": t1 - t0, "closeness_s": t2 - t1, "inherited_s": t3 - t2}
    return Calibration(
        parent, refs, barriers, scores, head, spec, ds, cs, seed, cache, seconds, ins, probes,
        evidence,
    )  # fmt: skip


def evidence_of(
    d: DeterminationResult, c: ClosenessResult, inherited: InheritedResult | None
) -> Evidence:
    """What the verdict's p-values are computed from: a basin test that abstained, or had
    no route, gives no barrier."""
    barrier = d.barrier if d.basin_is_lineage is not None else None
    return Evidence(barrier, d.loss_parent, c.score, None if inherited is None else inherited.score)


def function_threshold(scores: Sequence[float], gamma: float) -> float | None:
    """The AAAI 2025 rule's closeness threshold over the references' finite scores (None
    without any), recorded beside the p-value verdict."""
    finite = [s for s in scores if math.isfinite(s)]
    return closeness_threshold(finite, gamma) if finite else None


def with_function_threshold(
    d: DeterminationResult, scores: Sequence[float], gamma: float
) -> DeterminationResult:
    return dataclasses.replace(d, function_threshold=function_threshold(scores, gamma))


def judge(
    parent: nn.Module,
    suspect: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    calibration: Calibration | None = None,
    references: Sequence[nn.Module] = (),
    record: Mapping[str, Any] | None = None,
    blackbox: Model | None = None,
    determination: Mapping[str, Any] | DeterminationConf | None = None,
    closeness: Mapping[str, Any] | ClosenessConf | None = None,
    seed: int = 0,
    head: str | None = None,
    inherited: Mapping[str, Any] | InheritedConf | None = None,
) -> Verdict:
    """Is `suspect` derived from `parent`? `suspect` is an nn.Module (both kinds of
    evidence) or a callable black box answering logits or labels (closeness only).

    `calibration` from `calibrate` (reused for every suspect of this parent); without it,
    one is made from `references` (fewer than determination.min_references: the verdict is
    undetermined, calibrated=False). `record`: the suspect's lineage record (e.g. kept channels of a
    structured prune). `blackbox`: what closeness queries instead of `suspect` (a deployed
    artefact whose float twin `suspect` is). Options are those of the calibration when one
    is given."""
    _check_model(suspect, "suspect")
    cal = calibration
    if cal is None:
        cal = calibrate(parent, references, x, y, determination, closeness, seed, head, inherited)
    elif cal.parent is not parent:
        raise LineageError("the calibration was made for another parent model")
    px, py = _probe(x, y, cal.determination)
    t0 = time.perf_counter()
    det = determine(
        parent, suspect, px, py, cal.determination, cal.barriers, None, record, cal.head, cal.spec
    )
    t1 = time.perf_counter()
    view, route = closeness_view(parent, blackbox or suspect, x, cal.head)
    close = measure_closeness(parent, view, x, y, cal.closeness, seed=cal.seed, cache=cal.cache)
    t2 = time.perf_counter()
    inh = inherited_errors(view, cal.probes, cal.inherited) if cal.probes is not None else None
    t3 = time.perf_counter()
    det = with_function_threshold(det, cal.scores, cal.closeness.gamma)
    verdict = decide(det, evidence_of(det, close, inh), cal.evidence, cal.determination)
    seconds = {"determination_s": t1 - t0, "closeness_s": t2 - t1, "inherited_s": t3 - t2}
    return Verdict(verdict, close, route, seconds, inh)

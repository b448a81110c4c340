"""The one judging engine: calibrate once per parent, then judge any number of suspects.

    cal = calibrate(parent, references, x, y)        # each evidence against the references
    v = judge(parent, suspect, x, y, calibration=cal)

`run.py`, `lineage compare`, `lineage tree` and the experiments all go through these two
functions, so they give the same numbers for the same pair. They loop over the registered
kinds of evidence (lineage.evaluate.evidence) and name none: what a kind prepares once per
parent is made in `calibrate`, what it measures per suspect in `judge`, and the verdict
(lineage.evaluate.verdict) combines their statistics.

Each independent reference is also judged, as a false-positive check, against the *other*
references (judging it against a distribution it is part of would be circular).

**Two nulls.** Parent-centred (the paper's): the suspect's evidence e(parent, suspect)
against the references' e(parent, reference_i): it assumes an unrelated suspect looks like
the references, i.e. was trained by their recipe. Suspect-centred (the kinds named in
`verdict.suspect_centred`): e(parent, suspect) against e(reference_i, suspect), each
reference in the parent's place. Under H0 the parent is one more model trained like its
references, so the n + 1 values are exchangeable whatever trained the suspect: its recipe,
accuracy and error rate are common to all of them and cancel. It assumes instead that the
references were trained like the parent, which its owner can always do, and it costs n + 1
measurements per suspect.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .adapters import HeadSwap, features_at, find_head, n_outputs, permutation_spec
from .errors import LineageError
from .evaluate import evidence
from .evaluate.boundary import run_model
from .evaluate.evidence import Kind, Parent, Suspect
from .evaluate.verdict import Decision, VerdictConf, decide, pooled_spread
from .runtime import device_of, eval_mode
from .settings import from_mapping

Model = nn.Module | Callable[[torch.Tensor], Any]


@dataclasses.dataclass
class Verdict:
    """Is the suspect derived from the parent: the decision, and each kind's evidence
    (`evidence[name]`: its result, None where it did not apply)."""

    decision: Decision
    evidence: dict[str, Any]
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    # each suspect-centred kind's headline value with every reference in the parent's place
    against: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    @property
    def is_lineage(self) -> bool | None:
        """True, False, or None when undetermined (`decision.reason` says why)."""
        return self.decision.is_lineage

    @property
    def calibrated(self) -> bool:
        return self.decision.calibrated

    def to_dict(self, curve: bool = True) -> dict[str, Any]:
        """For metrics.json: `verdict.*`, and `evidence.<kind>.*` for each kind that
        applied (lists such as the basin's loss `curve` only if `curve`)."""
        ev = {}
        for name, r in self.evidence.items():
            if r is not None:
                d = r.to_dict()
                if name in self.against:
                    d["against"] = self.against[name]
                ev[name] = d if curve else {k: v for k, v in d.items() if not isinstance(v, list)}
        return {"verdict": self.decision.to_dict(), "evidence": ev}

    def explain(self, calibration: Calibration | None = None) -> str:
        """The verdict and the evidence behind it, for a person: each evidence with its
        p-value, and (given the calibration) the references' values it was measured against."""
        d = self.decision
        by = f", decided by {d.decided_by}" if d.decided_by else ""
        lines = [f"{d.answer} (p = {d.p_value:.3g} vs alpha {d.alpha}{by})"]
        for kind, r in evidence.items(self.evidence):
            if r is None:
                continue
            p = d.p.get(kind.name)
            line = f"  {kind.name}: {kind.describe(r)}, p {'n/a' if p is None else f'{p:.3g}'}"
            if kind.name in self.against:
                vals = self.against[kind.name]
                if vals:
                    line += f"; references in the parent's place {min(vals):.3g}-{max(vals):.3g}"
            elif calibration is not None:
                vals = evidence.headlines(kind, calibration.results)
                if vals:
                    line += f"; references {min(vals):.3g}-{max(vals):.3g}"
            lines.append(line)
        for label, text in (("note", d.reason), ("caution", d.caveat)):
            if text:
                lines.append(f"  {label}: {text}")
        for r in self.evidence.values():
            if getattr(r, "alignment", ""):
                lines.append(f"  alignment: {r.alignment}")
        return "\n".join(lines)


@dataclasses.dataclass
class Source:
    """A reference in the parent's place, for the suspect-centred kinds: what each of them
    prepares for it, as they do for the parent."""

    index: int  # which reference
    context: Parent
    prepared: dict[str, Any]
    # (kind, model, record) -> its result against this source, when the source is shared
    # by several calibrations (calibrate's `share`); None: nothing kept
    memo: dict[tuple[str, int, int], tuple[Any, Any, Any]] | None = None


@dataclasses.dataclass
class Calibration:
    """Everything about one parent that judging a suspect needs, computed once."""

    parent: Parent
    options: dict[str, Any]  # each kind's options by its name, and "verdict"
    prepared: dict[str, Any]  # what each kind prepared for this parent
    results: list[dict[str, Any]]  # each reference's evidence, by kind
    statistics: list[dict[str, float | None]]  # the same on the verdict's scales
    references: list[Verdict]  # each judged against the others
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    # the suspect-centred kinds' sources, one per reference that is an nn.Module
    sources: list[Source] = dataclasses.field(default_factory=list)
    # the references' accuracies on the first COVER_POINTS test points: what they cover
    accuracy: list[float] = dataclasses.field(default_factory=list)
    # each suspect-centred kind of verdict.spread_floor: its pooled spread of
    # e(reference_j, reference_i) over j for each reference i, the floor on a suspect's
    # sources' sd (lineage.evaluate.verdict)
    spread: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def suspect_centred(self) -> list[str]:
        on = {k.name for k in _active(self.options)}
        return [k for k in self.verdict.suspect_centred if k in on]

    @property
    def verdict(self) -> VerdictConf:
        return self.options["verdict"]  # type: ignore[no-any-return]

    @property
    def calibrated(self) -> bool:
        """Enough references for the verdict's p-values (verdict.min_references)."""
        return len(self.references) >= self.verdict.min_references


def settings(options: Mapping[str, Any] | None = None, **groups: Any) -> dict[str, Any]:
    """Each kind's options (from its config group) and the verdict's, checked once.
    `options`: a whole config (its groups are read), `groups`: single groups over it."""
    given = {**(options or {}), **{k: v for k, v in groups.items() if v is not None}}
    known = {k.group for k in evidence.kinds()} | {"verdict"}
    unknown = sorted(set(groups) - known)
    if unknown:
        raise LineageError(f"unknown option group(s) {unknown}; valid: {', '.join(sorted(known))}")
    out = {k.name: k.settings(given.get(k.group)) for k in evidence.kinds()}
    v = given.get("verdict")
    out["verdict"] = v if isinstance(v, VerdictConf) else from_mapping(VerdictConf, v, "verdict")
    for key in ("suspect_centred", "spread_floor"):
        bad = sorted(set(getattr(out["verdict"], key)) - set(evidence.names()))
        if bad:
            raise LineageError(
                f"verdict.{key}: unknown evidence {bad[0]!r}; registered: "
                f"{', '.join(evidence.names())}"
            )
    for name in out["verdict"].suspect_centred:
        if evidence.get(name).parent_centred_only:
            raise LineageError(
                f"verdict.suspect_centred: {name!r} is parent-centred only (it chooses its "
                "points with the references)"
            )
    return out


def suspect_view(parent: nn.Module, suspect: Model, x: torch.Tensor, head: str | None) -> Suspect:
    """The suspect as the kinds see it: a suspect answering another task (other classes) is
    read through its trunk under the parent's head by the function evidence."""
    if not isinstance(suspect, nn.Module) or n_outputs(suspect, x) == n_outputs(parent, x):
        return Suspect(suspect, suspect, "direct")
    theirs = find_head(suspect)
    if head is None or theirs is None:
        raise LineageError(
            "the suspect answers another number of classes and no Linear head was found to "
            "read its features with the parent's (pass head=...)"
        )
    mine = parent.get_submodule(head)
    with eval_mode(suspect):  # one row: BatchNorm in train mode would refuse it
        width = features_at(suspect, theirs, x[:1]).shape[1]
    fits = getattr(mine, "in_features", width)
    if width != fits:  # e.g. a narrow student as the parent of a full-width transfer
        raise LineageError(
            f"the suspect answers another number of classes, and its features ({width} "
            f"wide) do not fit the parent's head ({fits} inputs): nothing can read it "
            "under the parent's task"
        )
    return Suspect(suspect, HeadSwap(suspect, theirs, mine), "trunk")


def _check_model(model: Any, who: str) -> Model:
    if not (isinstance(model, nn.Module) or callable(model)):
        kind = type(model).__name__
        raise LineageError(f"{who}: expected an nn.Module or a callable, got {kind}")
    return model


def _active(opts: Mapping[str, Any]) -> list[Kind]:
    return [k for k in evidence.kinds() if k.name in opts and k.enabled(opts[k.name])]


def _apply(
    kind: Kind, cal: Calibration, suspect: Suspect, reasons: list[str], source: Source | None = None
) -> Any:
    """`kind`'s result for one model against the parent (or a reference in its place), or
    None (and why, in `reasons`) where it does not apply to that model's access."""
    if suspect.access not in kind.access:
        reasons.append(f"{kind.name}: the suspect is a black box, and it needs {kind.access[0]}")
        return None
    ctx, prepared = (cal.parent, cal.prepared) if source is None else (
        source.context, source.prepared)  # fmt: skip
    return kind.measure(prepared[kind.name], ctx, suspect, cal.options[kind.name])


def _from_sources(
    cal: Calibration,
    model: Model,
    record: Any,
    skip: int | None = None,
    queried: Model | None = None,
    against: dict[str, list[float]] | None = None,
) -> list[dict[str, float | None]]:
    """The suspect-centred kinds' statistics of `model` against each source (the reference
    `skip` left out: a model is not compared with itself); `queried`: what the function
    evidence queries instead of `model` (judge's `blackbox`); `against` collects each kind's
    headline values, for the explanation."""
    out = []
    kinds = [evidence.get(k) for k in cal.suspect_centred]
    for src in cal.sources:
        if src.index == skip:
            continue
        ctx = src.context
        view = suspect_view(ctx.model, queried or model, ctx.x, ctx.head)
        s = Suspect(model, view.view, view.route, record)
        stats: dict[str, float | None] = {}
        for kind in kinds:
            # e(reference, model) does not depend on the parent: calibrations that share
            # their sources (lineage tree) measure it once per model
            key = (kind.name, id(model), id(record))
            hit = src.memo.get(key) if src.memo is not None and queried is None else None
            if hit is not None and hit[0] is model and hit[1] is record:
                r = hit[2]
            else:
                try:
                    r = _apply(kind, cal, s, [], src)
                except LineageError:  # e.g. a reference that classifies no probe point right
                    r = None
                if src.memo is not None and queried is None:
                    src.memo[key] = (model, record, r)  # holding both keeps their ids unique
            stats[kind.name] = None if r is None else kind.statistic(r, cal.options[kind.name])
            if against is not None:
                against.setdefault(kind.name, []).extend(evidence.headlines(kind, [{kind.name: r}]))
        out.append(stats)
    return out


def _nulls(
    cal: Calibration,
    parent_centred: Sequence[Mapping[str, float | None]],
    from_sources: Sequence[Mapping[str, float | None]],
) -> list[dict[str, float | None]]:
    """The values each kind's p-value is measured against: the references' own statistics
    for parent-centred kinds, the sources' statistics on this suspect for suspect-centred
    ones (None where a reference cannot be a source)."""
    n = max(len(parent_centred), len(from_sources))
    rows: list[dict[str, float | None]] = [{} for _ in range(n)]
    for i in range(n):
        if i < len(parent_centred):
            rows[i].update({k: v for k, v in parent_centred[i].items()
                            if k not in cal.suspect_centred})  # fmt: skip
        for k in cal.suspect_centred:
            rows[i][k] = from_sources[i].get(k) if i < len(from_sources) else None
    return rows


def _measure(
    cal: Calibration, suspect: Suspect, seconds: dict[str, float]
) -> tuple[dict[str, Any], list[str]]:
    """Each active kind's result for one suspect (None where it does not apply)."""
    out: dict[str, Any] = {}
    reasons: list[str] = []
    for kind in _active(cal.options):
        t0 = time.perf_counter()
        out[kind.name] = _apply(kind, cal, suspect, reasons)
        seconds[f"{kind.name}_s"] = time.perf_counter() - t0
    return out, reasons


def _statistics(opts: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, float | None]:
    return {
        kind.name: None if r is None else kind.statistic(r, opts[kind.name])
        for kind, r in evidence.items(results)
    }


def _verdict(
    opts: Mapping[str, Any],
    results: dict[str, Any],
    reasons: list[str],
    ref_results: Sequence[Mapping[str, Any]],
    ref_stats: Sequence[Mapping[str, float | None]],
    seconds: dict[str, float],
    spread: Mapping[str, float] | None = None,
) -> Verdict:
    """Record the references' context in each result, then decide."""
    recorded = {}
    for kind, r in evidence.items(results):
        others = [e.get(kind.name) for e in ref_results]
        recorded[kind.name] = None if r is None else kind.recorded(r, others, opts[kind.name])
    stats = _statistics(opts, recorded)
    caveats, why = {}, list(reasons)
    for kind, r in evidence.items(recorded):
        if r is not None:
            caveats[kind.name] = kind.caveat(r, opts[kind.name])
            if getattr(r, "reason", ""):
                why.append(f"{kind.name}: {r.reason}")
    decision = decide(stats, ref_stats, opts["verdict"], caveats, why, spread)
    return Verdict(decision, recorded, seconds)


def calibrate(
    parent: nn.Module,
    references: Sequence[Model],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seed: int = 0,
    head: str | None = None,
    options: Mapping[str, Any] | None = None,
    share: bool | Calibration = False,
    lean: bool = False,
    **groups: Any,
) -> Calibration:
    """Measure `parent` against its independent `references` (same task, other seeds or
    data) once: their evidence is the distribution every suspect of this parent is judged
    against (lineage.evaluate.verdict). `x, y` are the parent task's test points. Options:
    a whole config as `options`, or groups as keywords (determination=, closeness=,
    inherited=, verdict=, or a plug-in kind's group), each over its defaults.

    `share`: True keeps what the suspect-centred kinds measure of each model against the
    references in the parent's place; a calibration made so, with the same references,
    options, seed and test points (and head=), lends them to this one. Those measurements
    do not depend on the parent, so calibrations of many parents against one set of
    references (lineage tree) make each once per model. What is kept holds every model
    judged: for a collection's lifetime, not a long-lived service's.

    `lean`: measure the parent against its references with the parent-centred kinds only.
    A suspect-centred kind's p-value is read against the references in the parent's place,
    so e(parent, reference) only fills reports and the paper's thresholds: a verdict's
    p-values are the same without it, for half the calibration's cost (lineage tree)."""
    if not isinstance(parent, nn.Module):
        raise LineageError("the parent must be an nn.Module (its gradient and weights are used)")
    for i, r in enumerate(references):
        _check_model(r, f"reference {i}")
    opts = settings(options, **groups)
    ctx = Parent(
        parent, x, y, find_head(parent, head), permutation_spec(parent), seed, tuple(references)
    )
    views = [suspect_view(parent, r, x, ctx.head) for r in references]
    cal = Calibration(ctx, opts, {}, [{} for _ in references], [], [])
    reasons: list[list[str]] = [[] for _ in references]
    for kind in _active(opts):  # each kind prepares once for the parent
        t0 = time.perf_counter()
        cal.prepared[kind.name] = kind.prepare(ctx, opts[kind.name])
        cal.seconds[f"{kind.name}_s"] = time.perf_counter() - t0
    skip = set(cal.suspect_centred) if lean else set()
    for mine, s, why in zip(cal.results, views, reasons):  # then measures each reference
        for kind in _active(opts):
            if kind.name in skip:
                mine[kind.name] = None
                continue
            t0 = time.perf_counter()
            mine[kind.name] = _apply(kind, cal, s, why)
            cal.seconds[f"{kind.name}_s"] += time.perf_counter() - t0
        s.memo.clear()  # what the kinds shared for this pair (a route: a model's tensors)
    cal.statistics = [_statistics(opts, r) for r in cal.results]
    cal.accuracy = [a for r in references if (a := _accuracy(r, x, y)) is not None]
    _prepare_sources(cal, references, head, share)
    t0 = time.perf_counter()
    theirs = [
        _from_sources(cal, r, None, skip=i) if cal.suspect_centred else []
        for i, r in enumerate(references)
    ]
    cal.seconds["sources_s"] = time.perf_counter() - t0
    floored = [k for k in cal.suspect_centred if k in cal.verdict.spread_floor]
    cal.spread = pooled_spread(theirs, floored)
    for i, mine in enumerate(cal.results):
        others = [e for j, e in enumerate(cal.results) if j != i]
        their = [s for j, s in enumerate(cal.statistics) if j != i]
        nulls = _nulls(cal, their, theirs[i])
        cal.references.append(_verdict(opts, mine, reasons[i], others, nulls, {}, cal.spread))
    return cal


COVER_POINTS = 2000  # test points for the coverage caveat's accuracies


def _accuracy(model: Model, x: torch.Tensor, y: torch.Tensor) -> float | None:
    """A model's accuracy on the first COVER_POINTS points; None for a black box (its
    queries are the auditor's budget, spent on evidence only)."""
    if not isinstance(model, nn.Module):
        return None
    x, y = x[:COVER_POINTS], y[:COVER_POINTS]
    with eval_mode(model), torch.no_grad():
        out = run_model(model, x.to(device_of(model)))
    out = torch.as_tensor(out)
    pred = out.argmax(1) if out.dim() == 2 else out
    return float((pred.cpu().long() == y.cpu()).float().mean())


def coverage_caveat(cal: Calibration, accuracy: float | None) -> str:
    """Why the references say less about this suspect: its accuracy lies well outside
    theirs (beyond their range, widened by its own width, at least 0.01, on each side)."""
    if accuracy is None or len(cal.accuracy) < 2:
        return ""
    lo, hi = min(cal.accuracy), max(cal.accuracy)
    pad = max(0.01, hi - lo)
    if lo - pad <= accuracy <= hi + pad:
        return ""
    return (
        f"the suspect's accuracy {accuracy:.3f} lies outside its references' {lo:.3f}-{hi:.3f}: "
        "no reference is a model like it"
    )


def _prepare_sources(
    cal: Calibration, references: Sequence[Model], head: str | None, share: bool | Calibration
) -> None:
    """Each reference in the parent's place, for the suspect-centred kinds (a black-box
    reference has no gradient or weights to be a source)."""
    if not cal.suspect_centred:
        return
    if isinstance(share, Calibration):
        theirs = [s.context for s in share.sources]
        mine = [r for r in references if isinstance(r, nn.Module)]
        p = cal.parent
        if not (
            share.options == cal.options
            and len(theirs) == len(mine)
            and all(c.model is r and c.seed == p.seed for c, r in zip(theirs, mine))
            and all(c.x is p.x and c.y is p.y for c in theirs)
        ):
            raise LineageError("share: that calibration has other references or options")
        cal.sources = share.sources
        return
    t0 = time.perf_counter()
    p = cal.parent
    for i, r in enumerate(references):
        if not isinstance(r, nn.Module):
            continue
        try:
            their_head = find_head(r, head)
        except LineageError:
            their_head = None
        ctx = Parent(r, p.x, p.y, their_head, permutation_spec(r), p.seed)
        prepared = {k: evidence.get(k).prepare(ctx, cal.options[k]) for k in cal.suspect_centred}
        cal.sources.append(Source(i, ctx, prepared, {} if share else None))
    cal.seconds["sources_s"] = time.perf_counter() - t0


def judge(
    parent: nn.Module,
    suspect: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    calibration: Calibration | None = None,
    references: Sequence[Model] = (),
    record: Mapping[str, Any] | None = None,
    blackbox: Model | None = None,
    *,
    seed: int = 0,
    head: str | None = None,
    options: Mapping[str, Any] | None = None,
    **groups: Any,
) -> Verdict:
    """Is `suspect` derived from `parent`? `suspect` is an nn.Module (every kind of
    evidence) or a callable black box answering logits or labels (the kinds that need no
    weights).

    `calibration` from `calibrate` (reused for every suspect of this parent); without it,
    one is made from `references` (fewer than verdict.min_references: the verdict is
    undetermined, `is_lineage` None). `record`: the suspect's lineage record (e.g. kept
    channels of a structured prune). `blackbox`: what the function evidence queries instead
    of `suspect` (a deployed artefact whose float twin `suspect` is). Options are the
    calibration's when one is given."""
    _check_model(suspect, "suspect")
    cal = calibration
    if cal is None:
        cal = calibrate(parent, references, x, y, seed=seed, head=head, options=options, **groups)
    elif cal.parent.model is not parent:
        raise LineageError("the calibration was made for another parent model")
    view = suspect_view(parent, blackbox or suspect, x, cal.parent.head)
    s = Suspect(suspect, view.view, view.route, record)
    seconds: dict[str, float] = {}
    results, reasons = _measure(cal, s, seconds)
    theirs: list[dict[str, float | None]] = []
    against: dict[str, list[float]] = {}
    if cal.suspect_centred:
        t0 = time.perf_counter()
        theirs = _from_sources(cal, suspect, record, queried=blackbox, against=against)
        seconds["sources_s"] = time.perf_counter() - t0
    nulls = _nulls(cal, cal.statistics, theirs)
    v = _verdict(cal.options, results, reasons, cal.results, nulls, seconds, cal.spread)
    v.against = against
    if view.route == "direct":
        note = coverage_caveat(cal, _accuracy(suspect, x, y))
        v.decision.caveat = "; ".join(filter(None, [v.decision.caveat, note]))
    return v

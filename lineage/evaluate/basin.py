"""Lineage determination: are parent and suspect in the same basin of the loss landscape?

Along the straight path theta(a) = (1 - a) * theta_parent + a * theta_suspect the probe
loss L(a) is measured, and the barrier

    B = max_a [ L(a) - ((1 - a) * L(0) + a * L(1)) ]

is how far the path rises above the chord between the endpoints. A model derived from the
parent (fine-tuned, pruned, quantized, noised) stays in the parent's basin: B is ~0. An
independently trained model sits in another basin, behind a ridge: B is large.

Before interpolating, the suspect is put into the parent's layout: units are aligned by
weight matching (so a `permute` attack cannot hide lineage), structurally pruned suspects
are mapped back into the parent's widths (kept units at their recorded indices, or placed
by matching; nothing reads a removed unit, see alignment.complete), and a suspect with
another head (transfer) is compared on its trunk: the path ends at the suspect's trunk under
a head fitted for the parent's task (see `fit_head`). Integer
buffers (num_batches_tracked) stay the parent's; BatchNorm statistics are re-estimated at
every point of the path. When no weight-space route exists
(another architecture), the result says `method="function"` and takes its verdict from
the closeness evidence (see verdict.combine). A suspect that has learnt nothing of the
parent's task (a loss no better than a uniform guess's, L(1) >= ln C, or an accuracy
within a margin of guessing the most frequent class) lifts the chord over any ridge, so
the test abstains (`basin_is_lineage=None`, with the reason; see `uninformative`) and the
closeness evidence decides.

Everything here is a pure function of models and tensors, on the parent's device.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import LineageError
from ..models import head_of
from .alignment import (
    Group,
    State,
    apply_permutation,
    complete,
    embed,
    spec_of,
    weight_matching,
)
from .calibration import calibrate

# Every key has a default here; conf/determination/default.yaml documents each.
DEFAULTS: dict[str, Any] = {
    "alphas": 11,
    "refine": 0,
    "bn_reestimate": True,
    "bn_batches": 8,
    "batch_size": 500,
    "align": True,
    "align_rounds": 20,
    "seed": 0,
    "gamma": 0.25,
    "fallback_rel": 0.02,
    "head_steps": 50,
}


@dataclass
class DeterminationResult:
    """The verdict and its evidence. `barrier` etc. are None on the function route."""

    is_lineage: bool
    basin_is_lineage: bool | None  # the same-basin test (None: no weight-space route)
    function_is_lineage: bool | None  # the closeness evidence (None until combine())
    barrier: float | None  # loss units (mean cross-entropy on the probe set)
    barrier_rel: float | None  # barrier / mean endpoint loss
    error_barrier: float | None  # the same construction on the error rate
    threshold: float | None  # the barrier below which the basin test says lineage
    margin: float | None  # threshold - barrier (> 0: lineage by the basin test)
    method: str  # the evidence that decided; see verdict.combine
    route: str  # the weight-space route: basin|trunk [+pruned-map|+pruned-match][+aligned]
    aligned: bool  # weight matching reordered the suspect's units
    calibrated: bool  # threshold from reference barriers (False: the fallback rule)
    loss_parent: float | None = None  # L(0)
    loss_suspect: float | None = None  # L(1)
    curve: list[dict[str, float]] = field(default_factory=list)  # {alpha, loss, error}
    seconds: float = 0.0
    reason: str = ""  # why the weight-space test was not applicable, or proves nothing
    function_score: float | None = None
    function_threshold: float | None = None
    caveat: str = ""  # why the verdict is weaker than it looks (verdict.caveat_of)

    def to_dict(self, curve: bool = False) -> dict[str, Any]:
        """Flat scalar fields (for metrics.json); the curve as a list only if asked."""
        d = asdict(self)
        c = d.pop("curve")
        return {**d, "curve": c} if curve else d


@dataclass
class Route:
    """How the suspect maps onto the parent's parameters."""

    name: str
    target: State  # the suspect's tensors, in the parent's keys, shapes and unit order
    keys: list[str]  # tensors that move along the path (the rest stay the parent's)
    aligned: bool
    trunk: bool = False  # the head in `target` is the parent's, to be refitted (fit_head)


def settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """`cfg` over DEFAULTS, checked (a bad value names its key)."""
    s = {**DEFAULTS, **{k: v for k, v in cfg.items() if k in DEFAULTS}}
    ints = {
        "alphas": 2,
        "refine": 0,
        "bn_batches": 1,
        "batch_size": 1,
        "align_rounds": 1,
        "seed": 0,
        "head_steps": 1,
    }
    for k, lo in ints.items():
        v = s[k]
        if isinstance(v, bool) and k == "refine":
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise LineageError(f"determination.{k}={s[k]!r}: must be an integer >= {lo}")
        s[k] = v
    for k in ("gamma", "fallback_rel"):
        v = s[k]
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < math.inf:
            raise LineageError(f"determination.{k}={v!r}: must be a positive number")
    for k in ("bn_reestimate", "align"):
        if not isinstance(s[k], bool):
            raise LineageError(f"determination.{k}={s[k]!r}: must be true or false")
    return s


# ---- input checks ----


def check_finite(model: nn.Module, who: str) -> None:
    for k, t in model.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise LineageError(f"{who}: tensor {k!r} holds NaN or Inf values")


def check_probe(x: torch.Tensor, y: torch.Tensor, parent: nn.Module) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise LineageError("probe data must be tensors (x, y)")
    if len(x) == 0 or len(y) == 0:
        raise LineageError("probe data is empty: the barrier needs at least one sample")
    if len(x) != len(y):
        raise LineageError(f"probe data: {len(x)} inputs but {len(y)} labels")
    if not torch.isfinite(x).all():
        raise LineageError("probe inputs hold NaN or Inf values")
    n = getattr(parent, "head", None)
    n = n.out_features if isinstance(n, nn.Linear) else None
    if y.dtype.is_floating_point or int(y.min()) < 0 or (n is not None and int(y.max()) >= n):
        raise LineageError(f"probe labels must be class indices in 0..{(n or 0) - 1}")
    dev = _device(parent)
    try:
        with torch.no_grad():
            parent.eval()(x[:2].to(dev))
    except RuntimeError as e:
        raise LineageError(
            f"probe inputs of shape {tuple(x.shape[1:])} do not fit the parent "
            f"({str(e).splitlines()[0]})"
        ) from None


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _arch_name(model: nn.Module) -> str:
    arch = getattr(model, "arch", None)
    return arch["name"] if isinstance(arch, dict) else type(model).__name__


# ---- the route: the suspect in the parent's layout ----


def recorded(record: Mapping[str, Any] | None, key: str) -> list[Any]:
    """Every value of `key` in a lineage record and, for chains, in its steps' records
    (lineage.modifications.chain: {"chain": [{..., "record": {...}}]}), in chain order."""
    if not record:
        return []
    out = [record[key]] if record.get(key) is not None else []
    for step in record.get("chain") or ():
        out += recorded(step.get("record"), key)
    return out


def kept_channels(record: Mapping[str, Any] | None) -> dict[str, list[int]] | None:
    """Kept-channel indices into the parent's units, {layer: indices}, from the record of a
    structured pruning (lineage.modifications.pruning). Successive prunings in a chain
    index into the previous model, so their indices are composed."""
    found = recorded(record, "kept_channels")
    if not found:
        return None
    kept = {k: list(v) for k, v in found[0].items()}
    for later in found[1:]:
        for k, idx in later.items():
            prev = kept.get(k)
            if prev is not None and not all(0 <= i < len(prev) for i in idx):
                raise LineageError(
                    f"suspect record: kept_channels[{k!r:.60}] of a later chain step indexes "
                    f"past the {len(prev)} units the step before kept"
                )
            kept[k] = [prev[i] for i in idx] if prev is not None else list(idx)
    return kept


def plan(
    parent: nn.Module,
    suspect: nn.Module,
    s: Mapping[str, Any],
    record: Mapping[str, Any] | None = None,
) -> Route | str:
    """The suspect's parameters in the parent's layout, or the reason there is no route.

    Same architecture name but other state-dict keys is a malformed suspect (LineageError
    naming the layers); another architecture or irreconcilable shapes is no route.
    """
    pname, sname = _arch_name(parent), _arch_name(suspect)
    if pname != sname:
        return f"architectures differ (parent {pname}, suspect {sname})"
    P, S = parent.state_dict(), suspect.state_dict()
    missing, extra = sorted(P.keys() - S.keys()), sorted(S.keys() - P.keys())
    if missing or extra:
        raise LineageError(
            f"suspect ({sname}) does not have the parent's layers: missing {missing}, extra {extra}"
        )
    dev = _device(parent)
    # A new head (transfer to another task) cannot be compared on the parent's task;
    # the trunk can: interpolate features only and read them with the parent's head.
    # A transfer record (`task`) says the same, even when the class counts agree.
    trunk = any(S[k].shape[0] != P[k].shape[0] for k in P if k.startswith("head.")) or bool(
        recorded(record, "task")
    )
    S = {k: v.to(dev) for k, v in S.items() if not (trunk and k.startswith("head."))}
    parts = ["trunk" if trunk else "basin"]
    try:
        spec: list[Group] | None = spec_of(parent)
    except LineageError:
        spec = None  # a layer without a permutation rule: no alignment, no shape mapping
    match = s["align"]
    present: dict[str, torch.Tensor] = {}
    if any(S[k].shape != P[k].shape for k in S):
        kept = kept_channels(record)
        try:
            if spec is None:
                raise LineageError("the parent has layers without a permutation rule")
            S, present = embed(spec, spec_of(suspect), P, S, kept)
        except LineageError as e:
            return f"no weight-space mapping from the suspect's shapes ({e})"
        parts.append("pruned-map" if kept else "pruned-match")
        match = match or not kept  # without a record, matching is what maps the units
    aligned = False
    if match and spec is not None:
        learnt = [k for k, _ in parent.named_parameters() if k in S]
        perms = weight_matching(spec, P, S, learnt, s["align_rounds"], s["seed"])
        S = apply_permutation(spec, S, perms)
        present = {g: m[perms[g]] for g, m in present.items()}
        aligned = True
        parts.append("aligned")
    if spec is not None and present:
        S = complete(spec, S, P, present)
    if trunk:
        S.update({k: v for k, v in P.items() if k.startswith("head.")})
    movable = {k for k, _ in parent.named_parameters()}
    if not s["bn_reestimate"]:  # the ablation interpolates the running statistics too
        movable |= {k for k, b in parent.named_buffers() if b.is_floating_point()}
    keys = [k for k in P if k in movable]
    return Route("+".join(parts), S, keys, aligned, trunk)


# ---- the path ----


def fit_head(
    parent: nn.Module,
    route: Route,
    x: torch.Tensor,
    y: torch.Tensor,
    bn_x: torch.Tensor,
    s: Mapping[str, Any],
) -> None:
    """Replace the head in `route.target` by a linear probe for the parent's task on the
    suspect's trunk, warm-started from the parent's head (L-BFGS, `head_steps` iterations).

    Why not the parent's head itself: on a foreign trunk it gives a huge L(1), the chord
    from L(0) rises with it, and the path stays under the chord however high the ridge
    between the two trunks: an unrelated transfer model would pass as lineage. With a head
    that reads the suspect's own features, both endpoints solve the parent's task, and
    only the trunks' basins decide the barrier. For fixed features the loss is convex in
    the head, so moving the head along the path adds no ridge of its own."""
    dev = _device(parent)
    model = copy.deepcopy(parent).eval()
    model.load_state_dict(route.target)
    if s["bn_reestimate"]:
        reestimate_bn(model, bn_x.to(dev), s["bn_batches"], s["batch_size"])
    head, trunk = model.head, model.features
    if not isinstance(head, nn.Linear) or not isinstance(trunk, nn.Module):
        return  # no linear head to refit: keep the parent's
    with torch.no_grad():
        feats = torch.cat(
            [
                trunk(x[i : i + s["batch_size"]].to(dev)).flatten(1)
                for i in range(0, len(x), s["batch_size"])
            ]
        ).float()
    yd = y.to(dev)
    w = head.weight.detach().clone().float().requires_grad_(True)
    b = head.bias.detach().clone().float().requires_grad_(True) if head.bias is not None else None
    params = [w] + ([b] if b is not None else [])
    opt = torch.optim.LBFGS(params, max_iter=s["head_steps"], line_search_fn="strong_wolfe")
    decay = 1e-4  # a touch of L2: the probe set is also the set it is scored on

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = feats @ w.T + (b if b is not None else 0)
        loss = F.cross_entropy(logits, yd) + decay * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    route.target["head.weight"] = w.detach().to(head.weight.dtype)
    if b is not None:
        route.target["head.bias"] = b.detach().to(head.weight.dtype)


def reestimate_bn(model: nn.Module, x: torch.Tensor, batches: int, batch_size: int) -> None:
    """Fresh BatchNorm statistics: reset, cumulative average (momentum None) over `batches`
    batches of `x` in train mode, then back to eval. Interpolated weights change every
    layer's activation statistics, so statistics carried over from the endpoints (or
    interpolated) would show a barrier that is an artefact of stale normalisation."""
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for i in range(batches):
            xb = x[i * batch_size : (i + 1) * batch_size]
            if len(xb) < 2:  # one sample has no batch variance
                break
            model(xb)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
        m.eval()


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    """(mean cross-entropy, error rate) on (x, y), batched."""
    loss = wrong = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(x[i : i + batch_size]).float()
            yb = y[i : i + batch_size]
            loss += float(F.cross_entropy(logits, yb, reduction="sum"))
            wrong += float((logits.argmax(1) != yb).sum())
    return loss / len(x), wrong / len(x)


class Path:
    """theta(a) in one scratch copy of the parent: each point overwrites its tensors."""

    def __init__(
        self,
        parent: nn.Module,
        route: Route,
        x: torch.Tensor,
        y: torch.Tensor,
        bn_x: torch.Tensor,
        s: Mapping[str, Any],
    ):
        dev = _device(parent)
        self.model = copy.deepcopy(parent).eval()
        self.x, self.y, self.bn_x = x.to(dev), y.to(dev), bn_x.to(dev)
        if x.dim() == 4 and any(isinstance(m, nn.Conv2d) for m in parent.modules()):
            # oneDNN convolutions run about twice as fast on channels-last tensors.
            fmt = torch.channels_last
            self.model.to(memory_format=fmt)  # type: ignore[call-overload]
            self.x = self.x.contiguous(memory_format=fmt)
            self.bn_x = self.bn_x.contiguous(memory_format=fmt)
        self.state = self.model.state_dict()  # shares storage with the scratch model
        src = parent.state_dict()
        self.keys = route.keys
        self.start = [src[k] for k in route.keys]
        self.end = [route.target[k].to(src[k].dtype) for k in route.keys]
        self.s = s
        self.bn = s["bn_reestimate"]

    def point(self, a: float) -> dict[str, float]:
        with torch.no_grad():
            for k, p, q in zip(self.keys, self.start, self.end):
                torch.lerp(p, q, a, out=self.state[k])
        if self.bn:
            reestimate_bn(self.model, self.bn_x, self.s["bn_batches"], self.s["batch_size"])
        loss, err = evaluate(self.model, self.x, self.y, self.s["batch_size"])
        return {"alpha": a, "loss": loss, "error": err}


def _gap(
    c: Mapping[str, float], first: Mapping[str, float], last: Mapping[str, float], key: str
) -> float:
    a = c["alpha"]
    return c[key] - ((1 - a) * first[key] + a * last[key])


def curve_of(path: Path, alphas: int, refine: int) -> list[dict[str, float]]:
    """The loss/error curve on an even grid, plus `refine` rounds that bisect both
    neighbouring intervals of the current maximum of the barrier gap."""
    curve = [path.point(float(a)) for a in torch.linspace(0, 1, alphas).tolist()]
    for _ in range(refine):
        k = max(range(len(curve)), key=lambda i: _gap(curve[i], curve[0], curve[-1], "loss"))
        mids = [
            (curve[j]["alpha"] + curve[j + 1]["alpha"]) / 2
            for j in (k - 1, k)
            if 0 <= j < len(curve) - 1
        ]
        curve = sorted(curve + [path.point(a) for a in mids], key=lambda c: c["alpha"])
    return curve


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


def check_record(record: Any, depth: int = 0) -> Mapping[str, Any] | None:
    """A lineage record as the methods read it, or LineageError. It comes from the
    suspect's file, so its shape is checked before anything indexes with it: a mapping;
    `chain` a list of steps, each a mapping whose `record` is checked the same way (at
    most 16 deep); `kept_channels` a mapping of layer names to lists of unit indices."""
    if record is None:
        return None
    if not isinstance(record, Mapping):
        raise LineageError(f"suspect record: must be a mapping, not {type(record).__name__}")
    if depth > 16:
        raise LineageError("suspect record: chain nested more than 16 deep")
    kept = record.get("kept_channels")
    if kept is not None:
        if not isinstance(kept, Mapping) or len(kept) > 4096:
            raise LineageError("suspect record: kept_channels must map layer names to indices")
        for layer, idx in kept.items():
            if not (
                isinstance(layer, str)
                and isinstance(idx, list | tuple)
                and len(idx) <= 2**20
                and all(
                    isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**31 for i in idx
                )
            ):
                raise LineageError(
                    f"suspect record: kept_channels[{layer!r:.60}] must be a list of unit indices"
                )
    chain = record.get("chain")
    if chain is not None:
        if not isinstance(chain, list | tuple) or len(chain) > 1024:
            raise LineageError("suspect record: chain must be a list of steps")
        for step in chain:
            if not isinstance(step, Mapping):
                raise LineageError("suspect record: each chain step must be a mapping")
            check_record(step.get("record"), depth + 1)
    return record


def determine(
    parent: nn.Module,
    suspect: nn.Module,
    probe_x: torch.Tensor,
    probe_y: torch.Tensor,
    cfg: Mapping[str, Any],
    reference_barriers: Sequence[float] | None = None,
    bn_x: torch.Tensor | None = None,
    suspect_record: Mapping[str, Any] | None = None,
) -> DeterminationResult:
    """The same-basin test of `suspect` against `parent` on the probe set (the parent's task).

    `reference_barriers`: barriers between the parent and independent references (same
    architecture and data, other seeds) from `barrier_of`, for the calibrated threshold;
    None or empty -> the documented fallback, and `calibrated=False`. `bn_x`: data for the
    BatchNorm re-estimation (default: the probe inputs). `suspect_record`: the suspect's
    lineage record; its `kept_channels` ({layer: kept parent indices}) maps a structurally
    pruned suspect back into the parent's widths.
    """
    t0 = time.perf_counter()
    s = settings(cfg)
    check_probe(probe_x, probe_y, parent)
    check_finite(parent, "parent")
    check_finite(suspect, "suspect")
    suspect_record = check_record(suspect_record)
    route = plan(parent, suspect, s, suspect_record)
    if isinstance(route, str):
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
            seconds=time.perf_counter() - t0,
            reason=route,
        )
    bn_x = probe_x if bn_x is None else bn_x
    has_bn = any(isinstance(m, _BatchNorm) for m in parent.modules())
    if s["bn_reestimate"] and has_bn and len(bn_x) < 2:
        raise LineageError(
            f"BatchNorm re-estimation needs at least 2 samples; bn_x has {len(bn_x)}"
        )
    if route.trunk:
        fit_head(parent, route, probe_x, probe_y, bn_x, s)
    path = Path(parent, route, probe_x, probe_y, bn_x, s)
    curve = curve_of(path, s["alphas"], s["refine"])
    first, last = curve[0], curve[-1]
    barrier = max(_gap(c, first, last, "loss") for c in curve)
    err_barrier = max(_gap(c, first, last, "error") for c in curve)
    threshold, calibrated = calibrate(reference_barriers, (first["loss"], last["loss"]), s)
    basin: bool | None = barrier <= threshold
    reason = uninformative(last, probe_y, head_of(parent).out_features)
    if reason:
        basin = None
    mean_end = (first["loss"] + last["loss"]) / 2
    return DeterminationResult(
        is_lineage=bool(basin),
        basin_is_lineage=basin,
        function_is_lineage=None,
        barrier=barrier,
        barrier_rel=barrier / max(mean_end, torch.finfo(torch.float32).eps),
        error_barrier=err_barrier,
        threshold=threshold,
        margin=threshold - barrier,
        method=route.name,
        route=route.name,
        aligned=route.aligned,
        calibrated=calibrated,
        loss_parent=first["loss"],
        loss_suspect=last["loss"],
        curve=curve,
        seconds=time.perf_counter() - t0,
        reason=reason,
    )


def with_threshold(r: DeterminationResult, tau: float, calibrated: bool) -> DeterminationResult:
    """`r` judged against another threshold (e.g. calibrated leave-one-out). An abstention
    stays one: it depends on the suspect's loss, not on the threshold."""
    if r.barrier is None:
        return r
    basin = None if r.basin_is_lineage is None else r.barrier <= tau
    return replace(
        r,
        threshold=tau,
        calibrated=calibrated,
        margin=tau - r.barrier,
        basin_is_lineage=basin,
        is_lineage=bool(basin),
    )


def barrier_of(
    parent: nn.Module,
    other: nn.Module,
    probe_x: torch.Tensor,
    probe_y: torch.Tensor,
    cfg: Mapping[str, Any],
    bn_x: torch.Tensor | None = None,
    record: Mapping[str, Any] | None = None,
) -> float | None:
    """The barrier alone, with the same route and settings as `determine` (for computing
    the reference barriers). None when there is no weight-space route."""
    return determine(parent, other, probe_x, probe_y, cfg, None, bn_x, record).barrier

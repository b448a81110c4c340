"""The path theta(a) = (1 - a) theta_parent + a theta_suspect, and the loss along it.

BatchNorm statistics are re-estimated at every point of the path: interpolated weights
change every layer's activation statistics, so statistics carried over from the endpoints
(or interpolated) would show a barrier that is an artefact of stale normalisation.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...adapters import features_at, logits_of
from ...runtime import device_of
from .route import Route
from .settings import DeterminationConf


def reestimate_bn(model: nn.Module, x: torch.Tensor, batches: int, batch_size: int) -> None:
    """Fresh BatchNorm statistics: reset, cumulative average (momentum None) over `batches`
    batches of `x` in train mode, then back to eval."""
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
            logits = logits_of(model(x[i : i + batch_size])).float()
            yb = y[i : i + batch_size]
            loss += float(F.cross_entropy(logits, yb, reduction="sum"))
            wrong += float((logits.argmax(1) != yb).sum())
    return loss / len(x), wrong / len(x)


def fit_head(
    parent: nn.Module,
    route: Route,
    x: torch.Tensor,
    y: torch.Tensor,
    bn_x: torch.Tensor,
    s: DeterminationConf,
) -> None:
    """Replace the head in `route.target` by a linear probe for the parent's task on the
    suspect's trunk, warm-started from the parent's head (L-BFGS, `head_steps` iterations).

    Why not the parent's head itself: on a foreign trunk it gives a huge L(1), the chord
    from L(0) rises with it, and the path stays under the chord however high the ridge
    between the two trunks: an unrelated transfer model would pass as lineage. With a head
    that reads the suspect's own features, both endpoints solve the parent's task, and
    only the trunks' basins decide the barrier. For fixed features the loss is convex in
    the head, so moving the head along the path adds no ridge of its own."""
    assert route.head is not None
    dev = device_of(parent)
    model = copy.deepcopy(parent).eval()
    model.load_state_dict(route.target)
    if s.bn_reestimate:
        reestimate_bn(model, bn_x.to(dev), s.bn_batches, s.batch_size)
    head = model.get_submodule(route.head)
    assert isinstance(head, nn.Linear)
    feats = torch.cat(
        [
            features_at(model, route.head, x[i : i + s.batch_size].to(dev))
            for i in range(0, len(x), s.batch_size)
        ]
    ).float()
    yd = y.to(dev)
    w = head.weight.detach().clone().float().requires_grad_(True)
    b = head.bias.detach().clone().float().requires_grad_(True) if head.bias is not None else None
    params = [w] + ([b] if b is not None else [])
    opt = torch.optim.LBFGS(params, max_iter=s.head_steps, line_search_fn="strong_wolfe")
    decay = 1e-4  # a touch of L2: the probe set is also the set it is scored on

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = feats @ w.T + (b if b is not None else 0)
        loss = F.cross_entropy(logits, yd) + decay * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    route.target[f"{route.head}.weight"] = w.detach().to(head.weight.dtype)
    if b is not None:
        route.target[f"{route.head}.bias"] = b.detach().to(head.weight.dtype)


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(x, 2) on a channels-last batch as three elementwise maxima of the
    window's four positions: the same values (a maximum is exact, and NaN wins in both),
    in the same layout, and 7x faster where there are few channels (LeNet's 6: PyTorch's
    channels-last kernel vectorises over channels). Other layouts and odd sides are
    F.max_pool2d's."""
    if x.dim() != 4 or x.shape[2] % 2 or x.shape[3] % 2 or x.is_contiguous():
        return F.max_pool2d(x, 2)
    if not x.is_contiguous(memory_format=torch.channels_last):
        return F.max_pool2d(x, 2)
    n, c, h, w = x.shape
    y = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2 * c)
    rows = torch.maximum(y[:, :, 0], y[:, :, 1])  # (n, h/2, w/2, [left c, right c])
    return torch.maximum(rows[..., :c], rows[..., c:]).permute(0, 3, 1, 2)


def _is_2x2(m: nn.Module) -> bool:
    return (
        type(m) is nn.MaxPool2d
        and (m.kernel_size, m.stride, m.padding, m.dilation)
        in ((2, 2, 0, 1), ((2, 2), (2, 2), 0, 1))
        and not m.ceil_mode
        and not m.return_indices
    )


class Path:
    """theta(a) in one scratch copy of the parent: each point overwrites its tensors."""

    def __init__(
        self,
        parent: nn.Module,
        route: Route,
        x: torch.Tensor,
        y: torch.Tensor,
        bn_x: torch.Tensor,
        s: DeterminationConf,
    ):
        dev = device_of(parent)
        self.given = (x, y, bn_x)
        self.model = copy.deepcopy(parent).eval()
        self.x, self.y, self.bn_x = x.to(dev), y.to(dev), bn_x.to(dev)
        if x.dim() == 4 and any(isinstance(m, nn.Conv2d) for m in parent.modules()):
            # oneDNN convolutions run about twice as fast on channels-last tensors.
            fmt = torch.channels_last
            self.model.to(memory_format=fmt)  # type: ignore[call-overload]
            self.x = self.x.contiguous(memory_format=fmt)
            self.bn_x = self.bn_x.contiguous(memory_format=fmt)
            for m in self.model.modules():
                if _is_2x2(m):  # the scratch copy's own: the same values, faster
                    m.forward = max_pool_2x2  # type: ignore[method-assign]
        self.state = self.model.state_dict()  # shares storage with the scratch model
        src = parent.state_dict()
        self.keys = route.keys
        self.start = [src[k] for k in route.keys]
        self.end = [route.target[k].to(src[k].dtype) for k in route.keys]
        self.s = s
        self.parent = parent

    def start_key(self) -> tuple[object, ...]:
        """What theta(0)'s loss depends on besides the source's tensors: the probe points
        (same storage, shape and strides: the same points) and the settings."""
        s = self.s
        return (id(self.parent), *(
            (t.device, t.dtype, t.data_ptr(), t.shape, t.stride()) for t in self.given
        ), s.batch_size, s.bn_reestimate, s.bn_batches)  # fmt: skip

    def point(self, a: float) -> dict[str, float]:
        with torch.no_grad():
            for k, p, q in zip(self.keys, self.start, self.end):
                if a == 0:  # the source itself, whatever the suspect (see Start)
                    self.state[k].copy_(p)
                else:
                    torch.lerp(p, q, a, out=self.state[k])
        if self.s.bn_reestimate:
            reestimate_bn(self.model, self.bn_x, self.s.bn_batches, self.s.batch_size)
        loss, err = evaluate(self.model, self.x, self.y, self.s.batch_size)
        return {"alpha": a, "loss": loss, "error": err}


class Start:
    """The path's first point, theta(0): the source alone, so its loss and error depend on
    the source, the probe points and the settings, never on the suspect. Measured by the
    first path that needs it and reused by every later one from the same source (the
    basin kind prepares one per source, so a calibration measures it once).

    theta(0) copies the source's tensors rather than lerp(p, q, 0) = p + 0 * (q - p): the
    two differ only in the sign of a zero weight (and where q - p overflows), which makes
    it a function of the source by construction."""

    def __init__(self) -> None:
        self.key: tuple[object, ...] | None = None
        self.value: dict[str, float] | None = None

    def of(self, path: Path) -> dict[str, float]:
        key = path.start_key()
        if self.value is None or self.key != key:
            self.value, self.key = path.point(0.0), key
        return dict(self.value)


def gap(
    c: Mapping[str, float], first: Mapping[str, float], last: Mapping[str, float], key: str
) -> float:
    """How far the curve at c rises above the chord between its endpoints."""
    a = c["alpha"]
    return c[key] - ((1 - a) * first[key] + a * last[key])


def envelope(curve: Sequence[Mapping[str, float]], key: str = "loss") -> list[float]:
    """The curve's lower convex envelope at each of its points (the curve sorted by alpha).

    The barrier is measured against it, not against the chord: a path inside one basin is
    convex, so it lies on its envelope, while a ridge shows as non-convexity wherever it
    sits. Against the chord, a suspect whose own loss is high (a badly damaged model of
    another parent) lifts the far end so far that the path stays under the chord and a
    ridge passes unseen; the envelope is not lifted by one high endpoint."""
    pts = [(c["alpha"], c[key]) for c in curve]
    hull: list[tuple[float, float]] = []
    for p in pts:  # monotone chain, lower hull
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) <= 0:
                hull.pop()  # hull[-1] lies on or above the segment hull[-2] -> p
            else:
                break
        hull.append(p)
    out, k = [], 0
    for a, _ in pts:
        while k + 1 < len(hull) - 1 and hull[k + 1][0] <= a:
            k += 1
        (x1, y1), (x2, y2) = hull[k], hull[min(k + 1, len(hull) - 1)]
        out.append(y1 if x2 == x1 else y1 + (y2 - y1) * (a - x1) / (x2 - x1))
    return out


def rise(curve: Sequence[Mapping[str, float]], key: str = "loss") -> list[float]:
    """Each point's height above the lower convex envelope (>= 0)."""
    return [max(0.0, c[key] - e) for c, e in zip(curve, envelope(curve, key))]


def curve_of(
    path: Path, alphas: int, refine: int, start: Start | None = None
) -> list[dict[str, float]]:
    """The loss/error curve on an even grid, plus `refine` rounds that bisect both
    neighbouring intervals of the point that rises most above the envelope. `start`: the
    source's theta(0), kept across suspects."""
    grid = torch.linspace(0, 1, alphas).tolist()
    curve = [path.point(float(a)) if a or start is None else start.of(path) for a in grid]
    for _ in range(refine):
        heights = rise(curve)
        k = max(range(len(curve)), key=lambda i: heights[i])
        mids = [
            (curve[j]["alpha"] + curve[j + 1]["alpha"]) / 2
            for j in (k - 1, k)
            if 0 <= j < len(curve) - 1
        ]
        curve = sorted(curve + [path.point(a) for a in mids], key=lambda c: c["alpha"])
    return curve

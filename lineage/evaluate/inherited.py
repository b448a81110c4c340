"""Inherited errors: does the suspect give the parent's answers where the parent is wrong?

A student trained from fresh weights (distillation, extraction) sits in another basin and
its boundaries drift, yet it copies its teacher's behaviour, most of all where the teacher
is wrong: it inherits the teacher's mistakes and its odd answers, which an independent
model, trained on the true labels, does not share.

**Points** (chosen from the parent's outputs alone, once per parent, `probe_points`):
1. the parent's misclassified test points, in test order;
2. then, for when those are few, "third-class mixups": x = lam * x_i + (1 - lam) * x_j for
   test points i, j of different classes (pairs and lam ~ U(lam_low, lam_high) from a
   fixed seed, `pool` candidates) that the parent assigns to a class that is neither y_i
   nor y_j, most confident first. Such an answer is the parent's own idiosyncrasy: the
   true labels never taught it.

Up to `n_points` in all. With a = the parent's answer (argmax) on each point, the score is

    logits:       mean_i softmax(f_suspect(x_i))[a_i]   (its probability of the parent's answer)
    labels only:  mean_i [argmax f_suspect(x_i) == a_i] (agreement with the parent's answer)

so a label-only black box gets it too. It costs n_points forward passes of the suspect
(~0.02 s per MNIST LeNet pair). The score alone has no scale: lineage.evaluate.verdict
turns it into a p-value against independent references, like the other evidence. It
shares nothing with the AKH baseline (lineage/baselines/akh.py: shifted and noised
images, a raw rate), which stays the peer method it is compared against.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..errors import LineageError
from ..runtime import device_of, eval_mode
from ..settings import SEED_MAX, from_mapping, knob
from .boundary import Model, run_model
from .evidence import Kind, Parent, Suspect, register
from .verdict import logit


@dataclass
class InheritedConf:
    enabled: bool = knob(True)  # false: the verdict uses basin and closeness only
    n_points: int = knob(200, lo=1, hi=100_000)  # wrong points, then third-class mixups
    # fewer points than this (a parent almost never wrong, two classes so no third-class
    # mixup): no evidence either way, rather than a noisy mean of a handful
    min_points: int = knob(20, lo=1, hi=100_000)
    pool: int = knob(5000, lo=1, hi=1_000_000)  # mixup candidates to choose from
    lam_low: float = knob(0.3, lo=0, hi=1)  # mixing weight range
    lam_high: float = knob(0.7, lo=0, hi=1)
    batch_size: int = knob(1000, lo=1)
    seed: int = knob(0, lo=0, hi=SEED_MAX)

    def check(self, where: str = "inherited") -> None:
        if self.lam_low > self.lam_high:
            raise LineageError(f"{where}: lam_low={self.lam_low} exceeds lam_high={self.lam_high}")


def settings(cfg: Mapping[str, Any] | InheritedConf | None) -> InheritedConf:
    if isinstance(cfg, InheritedConf):
        return cfg
    return from_mapping(InheritedConf, cfg, "inherited")


@dataclass
class Probes:
    """The parent's points and its answers on them (they depend on the parent only)."""

    x: torch.Tensor
    answer: torch.Tensor
    n_wrong: int  # how many are the parent's misclassified test points


@dataclass
class InheritedResult:
    score: float  # in [0, 1]: the parent's answers reproduced (see the module docstring)
    n_points: int
    n_wrong: int
    suspect_output: str  # logits | labels
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def outputs(model: Model, x: torch.Tensor, batch: int) -> torch.Tensor:
    """`model` on `x` in batches, on the CPU, without gradients."""
    dev = device_of(model)
    with torch.no_grad():
        return torch.cat(
            [run_model(model, x[i : i + batch].to(dev)).cpu() for i in range(0, len(x), batch)]
        )


def class_mixups(
    x: torch.Tensor, y: torch.Tensor, n: int, lam_low: float, lam_high: float,
    g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Up to `n` blends w * x_i + (1 - w) * x_j of two points of different classes,
    w ~ U(lam_low, lam_high), pairs and weights drawn from `g`: the blends, i and j."""
    i = torch.randint(0, len(x), (2 * n,), generator=g)
    j = torch.randint(0, len(x), (2 * n,), generator=g)
    keep = (y[i] != y[j]).nonzero().squeeze(1)[:n]
    i, j = i[keep], j[keep]
    w = lam_low + (lam_high - lam_low) * torch.rand(len(i), generator=g)
    w = w.view(-1, *[1] * (x.dim() - 1))
    return w * x[i] + (1 - w) * x[j], i, j


def probe_points(
    parent: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: Mapping[str, Any] | InheritedConf | None = None,
) -> Probes:
    """Where the parent is wrong (its misclassified points, then third-class mixups)."""
    c = settings(cfg)
    if not (isinstance(x, torch.Tensor) and x.is_floating_point() and len(x) == len(y) > 0):
        raise LineageError(
            "inherited errors: x must be a non-empty float batch with one label each"
        )
    with eval_mode(parent):
        pred = outputs(parent, x, c.batch_size).argmax(1)
        wrong = (pred != y.cpu()).nonzero().squeeze(1)[: c.n_points]
        xs, ans = [x[wrong].cpu()], [pred[wrong]]
        need = c.n_points - len(wrong)
        if need > 0 and len(torch.unique(y)) > 2:  # a third class needs three
            g = torch.Generator().manual_seed(c.seed)
            yc = y.cpu()
            xm, i, j = class_mixups(x.cpu(), yc, c.pool, c.lam_low, c.lam_high, g)
            pm = outputs(parent, xm, c.batch_size).float().softmax(1)
            conf, a = pm.max(1)
            third = ((a != yc[i]) & (a != yc[j])).nonzero().squeeze(1)
            third = third[conf[third].argsort(descending=True)][:need]
            xs.append(xm[third])
            ans.append(a[third])
    points = Probes(torch.cat(xs), torch.cat(ans), len(wrong))
    return points


def inherited_errors(
    suspect: Model, points: Probes, cfg: Mapping[str, Any] | InheritedConf | None = None
) -> InheritedResult | None:
    """How closely `suspect` reproduces the parent's answers on the parent's `points`;
    None when there are fewer than `min_points` of them (nothing to measure)."""
    t0 = time.perf_counter()
    c = settings(cfg)
    if len(points.answer) < c.min_points:
        return None
    with eval_mode(suspect):
        out = outputs(suspect, points.x, c.batch_size)
    if out.dim() == 2 and out.is_floating_point():
        if not torch.isfinite(out).all():
            raise LineageError("inherited errors: the suspect produced NaN or Inf logits")
        score = float(out.float().softmax(1).gather(1, points.answer[:, None]).mean())
        kind = "logits"
    elif out.dim() == 1 and not out.is_floating_point():
        score = float((out.long() == points.answer).float().mean())
        kind = "labels"
    else:
        raise LineageError(
            f"inherited errors: the suspect returned {out.dtype} {tuple(out.shape)}; expected "
            "logits (N, classes) or labels (N,)"
        )
    return InheritedResult(
        score, len(points.answer), points.n_wrong, kind, time.perf_counter() - t0
    )


@register("inherited", rank=30)
class Inherited(Kind):
    """Inherited errors as evidence: reproducing the parent's mistakes is parent-like."""

    Conf = InheritedConf
    headline = "score"
    scale = "logit(score): more of the parent's answers on its mistakes is more parent-like"

    def prepare(self, parent: Parent, conf: InheritedConf) -> Probes:
        return probe_points(parent.model, parent.x, parent.y, conf)

    def measure(
        self, probes: Probes, parent: Parent, suspect: Suspect, conf: InheritedConf
    ) -> InheritedResult | None:
        return inherited_errors(suspect.view, probes, conf)

    def statistic(self, r: InheritedResult, conf: InheritedConf) -> float | None:
        return logit(r.score)

    def describe(self, r: InheritedResult) -> str:
        return f"{r.score:.4f} on {r.n_points} points ({r.n_wrong} the parent gets wrong)"

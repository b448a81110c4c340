"""Surrogate evidence: does the suspect answer like the parent's students where only they do?

A student trained from fresh weights (distillation, extraction) sits in another basin, so
the weight evidence cannot see it, and its boundaries drift, so closeness sees little.
What it keeps is its teacher's behaviour where the teacher's answer is its own: on inputs
where independent models disagree with the parent, a student still gives the parent's
answer. Which inputs those are is learnt from the parent itself (conferrable points, as in
CAE, Lukas et al., ICLR 2021, without its adversarial step):

1. once per parent, inside `calibrate`, `surrogates` students of the parent are distilled
   from fresh weights (its own architecture, other seeds) on the calibration inputs and
   their mixups, matching its temperature-softened outputs: what a thief would do;
2. candidate points are fresh mixups of test points of different classes (between
   classes is where boundaries, and so idiosyncrasies, lie);
3. a point is *conferrable* when every surrogate gives the parent's answer and no
   reference (an independent model) does. Up to `n_points` of them, the parent's most
   confident first.

The score is the suspect's agreement with the parent's answer there (argmax; a label-only
black box gets it too). A reference scored on points chosen with itself among the
references would score 0 by construction, so each reference is scored on the points its
*leave-one-out* set picks (every other reference disagrees): its score is then what an
independent model's is. The null is parent-centred: the suspect against the references'
leave-one-out scores (suspect-centred would need surrogates of every reference).

Cost: the surrogates' training (once per parent; `epochs` passes over the calibration
inputs each) and one pass of each reference over the pool; a suspect costs one forward
over the chosen points.

**Off by default, from measurement** (the MNIST Results zoo's first parent, 6 references,
`surrogate.pool=20000 surrogate.epochs=15`: 138 conferrable points, 100 s to prepare on one
busy core): distillation students at ratio 0.1 and 0.5 agree at 0.67-0.71 (p 0.002), above
every independent (at most 0.43), but extraction students (hard labels on training
inputs, no mixups) agree at 0.32-0.46, like independents; and the references' leave-one-out
scores (0.12-0.30) sit below other-architecture and other-half independents (0.25-0.43),
the recipe problem of the parent-centred null again. `surrogate.enabled=true` adds it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LineageError
from ..runtime import device_of, eval_mode
from ..settings import LR_MAX, SEED_MAX, knob
from .boundary import Model, run_model
from .evidence import Kind, Parent, Suspect, register
from .inherited import class_mixups, outputs
from .verdict import logit


@dataclass
class SurrogateConf:
    # off by default: on MNIST LeNet it catches distillation students but not extraction
    # ones, and independents of another architecture score like students (module docstring)
    enabled: bool = knob(False)
    surrogates: int = knob(3, lo=1, hi=20)  # students of the parent to agree on points
    # each surrogate learns from the first `train_points` calibration inputs and their
    # mixups, `epochs` passes: a student needs the parent's answers, not the whole test set
    train_points: int = knob(3000, lo=1, hi=10_000_000)
    epochs: int = knob(5, lo=1, hi=1000)
    lr: float = knob(3e-3, lo=0, hi=LR_MAX, ends="(]")
    batch_size: int = knob(256, lo=1)
    temperature: float = knob(4.0, lo=0, ends="()")
    pool: int = knob(5000, lo=1, hi=1_000_000)  # candidate mixups
    n_points: int = knob(300, lo=1, hi=100_000)  # conferrable points kept
    min_points: int = knob(20, lo=1, hi=100_000)  # fewer: no evidence either way
    lam_low: float = knob(0.3, lo=0, hi=1)
    lam_high: float = knob(0.7, lo=0, hi=1)
    seed: int = knob(0, lo=0, hi=SEED_MAX)

    def check(self, where: str = "surrogate") -> None:
        if self.lam_low > self.lam_high:
            raise LineageError(f"{where}: lam_low={self.lam_low} exceeds lam_high={self.lam_high}")


@dataclass
class Points:
    """The candidates and the parent's answers on them; `mine`: which are conferrable
    against all the references; `without[i]`: against all but reference i."""

    x: torch.Tensor
    answer: torch.Tensor
    mine: torch.Tensor  # indices into x
    without: list[torch.Tensor]
    references: tuple[Any, ...]  # the models `without` is for, by identity
    seconds: float


@dataclass
class SurrogateResult:
    score: float  # agreement with the parent's answer on the conferrable points
    n_points: int
    leave_one_out: bool  # scored as a reference: on its leave-one-out points
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _answers(model: Model, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    with eval_mode(model):
        out = outputs(model, x, batch)
    if out.dim() == 2 and out.is_floating_point():
        if not torch.isfinite(out).all():
            raise LineageError("surrogate evidence: the model produced NaN or Inf logits")
        return out.argmax(1)
    if out.dim() == 1 and not out.is_floating_point():
        return out.long()
    raise LineageError(
        f"surrogate evidence: the model returned {out.dtype} {tuple(out.shape)}; expected "
        "logits (N, classes) or labels (N,)"
    )


def train_surrogate(parent: nn.Module, x: torch.Tensor, c: SurrogateConf, seed: int) -> nn.Module:
    """A student of `parent`: its architecture from fresh weights (seeded), distilled on
    `x` and mixups of `x` (lam ~ U(0, 1): the space between points, where the teacher's
    boundaries are). A plain loop, not a Lightning fit: it runs inside `calibrate` on
    tensors already in memory, with nothing to log or checkpoint."""
    dev = device_of(parent)
    student = copy.deepcopy(parent).to(dev)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in student.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
        for w in student.parameters():  # a parent loaded frozen still gives a trainable copy
            w.requires_grad_(True)
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(student.parameters(), lr=c.lr)
        t = c.temperature
        with eval_mode(parent):
            for _ in range(c.epochs):
                student.train()
                order = torch.randperm(len(x), generator=g)
                for k in range(0, len(x), c.batch_size):
                    xb = x[order[k : k + c.batch_size]]
                    lam = torch.rand(len(xb), generator=g).view(-1, *[1] * (x.dim() - 1))
                    xb = torch.cat([xb, lam * xb + (1 - lam) * xb.flip(0)]).to(dev)
                    with torch.no_grad():
                        teacher = run_model(parent, xb).float()
                    out = run_model(student, xb).float()
                    loss = F.kl_div(
                        F.log_softmax(out / t, 1), F.softmax(teacher / t, 1),
                        reduction="batchmean",
                    ) * t * t  # fmt: skip
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    return student


def conferrable_points(
    parent: nn.Module, references: tuple[Any, ...], x: torch.Tensor, y: torch.Tensor,
    c: SurrogateConf,
) -> Points:  # fmt: skip
    """Train the surrogates, then pick the conferrable points (see the module docstring)."""
    t0 = time.perf_counter()
    if not (isinstance(x, torch.Tensor) and x.is_floating_point() and len(x) == len(y) > 0):
        raise LineageError("surrogate evidence: x must be a non-empty float batch with labels")
    x, y = x.cpu(), y.cpu()
    g = torch.Generator().manual_seed(c.seed)
    # the surrogates learn from one part of the points; the candidates come from the other,
    # which no surrogate saw (a student of the parent never saw the auditor's points either)
    n_train = min(c.train_points, len(x) // 2) or len(x)
    held_x, held_y = x[n_train:], y[n_train:]
    if not len(held_x):
        held_x, held_y = x, y
    blends, _, _ = class_mixups(held_x, held_y, c.pool, c.lam_low, c.lam_high, g)
    pool = torch.cat([held_x, blends])
    with eval_mode(parent):
        logits = outputs(parent, pool, 1000).float()
    conf, answer = logits.softmax(1).max(1)
    copied = torch.ones(len(pool), dtype=torch.bool)
    for k in range(c.surrogates):
        s = train_surrogate(parent, x[:n_train], c, seed=c.seed * 1000 + k + 1)
        copied &= _answers(s, pool) == answer
    agree = torch.stack([_answers(r, pool) == answer for r in references]) if references else (
        torch.zeros(0, len(pool), dtype=torch.bool))  # fmt: skip

    def pick(rows: torch.Tensor) -> torch.Tensor:
        ok = (copied & ~rows.any(0)).nonzero().squeeze(1)
        return ok[conf[ok].argsort(descending=True)][: c.n_points]

    mine = pick(agree)
    without = [pick(torch.cat([agree[:i], agree[i + 1 :]])) for i in range(len(references))]
    return Points(pool, answer, mine, without, references, time.perf_counter() - t0)


def agreement(suspect: Model, points: Points, c: SurrogateConf) -> SurrogateResult | None:
    """The suspect's agreement with the parent on the conferrable points (a reference's on
    its leave-one-out points); None with fewer than `min_points`."""
    t0 = time.perf_counter()
    idx, loo = points.mine, False
    for i, r in enumerate(points.references):
        if suspect is r:
            idx, loo = points.without[i], True
    if len(idx) < c.min_points:
        return None
    same = _answers(suspect, points.x[idx]) == points.answer[idx]
    return SurrogateResult(float(same.float().mean()), len(idx), loo, time.perf_counter() - t0)


@register("surrogate", rank=40)
class Surrogate(Kind):
    """Agreement with the parent where its surrogate students agree and no reference does."""

    Conf = SurrogateConf
    parent_centred_only = True
    headline = "score"
    scale = "logit(score): the parent's answers where only its students give them"

    def prepare(self, parent: Parent, conf: SurrogateConf) -> Points:
        return conferrable_points(parent.model, parent.references, parent.x, parent.y, conf)

    def measure(
        self, points: Points, parent: Parent, suspect: Suspect, conf: SurrogateConf
    ) -> SurrogateResult | None:
        # a reference is recognised by identity: the engine hands the model it was given
        model = suspect.model if any(suspect.model is r for r in points.references) else (
            suspect.view)  # fmt: skip
        return agreement(model, points, conf)

    def statistic(self, r: SurrogateResult, conf: SurrogateConf) -> float | None:
        return logit(r.score)

    def describe(self, r: SurrogateResult) -> str:
        return f"{r.score:.4f} on {r.n_points} conferrable points"

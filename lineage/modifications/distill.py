"""distill: a student trained from random initialisation on the parent's (the teacher's)
temperature-softened outputs, `ratio` of its width taken away.

loss = ce_weight * CE(student, y) + (1 - ce_weight) * T^2 * [KL_T(x) + KL_T(x_mix)]

(the T^2 keeps the soft-target gradients on the scale of the hard-label ones). With
`mixup` (the default) the teacher is also matched on x_mix = lam * x + (1 - lam) * x',
lam ~ U(0, 1), inputs between training points: that is where the teacher's decision
boundaries lie, so the student copies them and not only the teacher's labels on the data,
which is what a thief would want, and what lineage closeness has to see.

`ratio` is the compression: every width of the student (channels, hidden units, the
`width` multiplier; see models.scale_widths) is the teacher's times (1 - ratio), so 0 is a
student of the teacher's own size and 0.9 keeps a tenth of each layer. Compression is
what distillation is used for, and its strength moves the student's function: in the
MNIST LeNet zoo (2 epochs) closeness fell from 0.37-0.45 at ratio 0.1 to 0.25-0.36 at 0.5
and 0.0-0.11 at 0.9. The hard-label weight `ce_weight` (default 0, pure distillation) was
the strength knob before; it barely moves the student, because the mixup term pins the
boundaries between points at any weight: 0.43/0.40/0.35 at weights 0.1/0.5/0.9.

The student is any registered architecture (`student`, default the parent's, with the
parent's kwargs, or `student_kwargs`), scaled by (1 - ratio), and initialised from a seed
derived from (distill, seed), never from the parent's own initial seed.

Effect keys (metrics.json derived.<key>):

| key               | meaning                                                      |
|-------------------|--------------------------------------------------------------|
| student           | the student's architecture name                              |
| width_factor      | 1 - ratio: the student's widths over the unscaled ones       |
| param_ratio       | the student's parameter count over the teacher's             |
| temperature       | T                                                            |
| ce_weight         | weight of the hard-label loss                                |
| mixup             | whether the teacher was also matched between training points |
| teacher_agreement | top-1 agreement of student and teacher on the test inputs    |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import models
from ..data import DataModule
from ..errors import LineageError
from ..settings import LR_MAX, knob
from ..training import Classifier, TrainCfg, predict
from ..utils import seed_all
from .common import (
    check_data_option,
    check_labels_fit,
    check_student,
    copy_parent,
    fit_model,
    fresh_seed,
    n_outputs,
    task_data,
    train_cfg,
)
from .registry import Derived, register


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class DistillConf:
    name: str = "distill"
    student: str | None = knob(None)  # a registered architecture; null: the teacher's
    student_kwargs: Any = knob(None)  # null: the teacher's (for its own architecture)
    temperature: float = knob(4.0, lo=0, ends="()")
    ce_weight: float = knob(0.0, lo=0, hi=1)  # weight of the hard-label loss
    epochs: int = knob(10, lo=0)
    lr: float = knob(3.0e-3, lo=0, hi=LR_MAX, ends="(]")
    data: Any = knob(None)  # the transfer set; null: the parent's training inputs
    mixup: bool = knob(True)  # also match the teacher between training points

    def check(self, where: str) -> None:
        check_student(self.student, where)
        check_data_option(self.data, where)

    def check_ratio(self, ratio: float) -> None:
        if ratio >= 1:
            raise LineageError("distill: ratio 1 would leave the student no width; use ratio < 1")


def init_student(
    parent: nn.Module,
    cfg: Mapping[str, Any],
    seed: int,
    tag: str = "distill.student",
    width_factor: float = 1.0,
) -> nn.Module:
    """The student before training: `student` (default the parent's arch and kwargs), its
    widths times `width_factor`, built under a seed of its own, drawn from (`tag`, seed)."""
    arch = models.arch_of(parent)
    own = arch.get("target") or arch["name"]  # a `_target_` parent's student: its factory
    name = cfg.get("student") or own
    kw = cfg.get("student_kwargs")
    if kw is None:
        kw = arch["kwargs"] if name == own else {}
    if width_factor != 1.0:
        kw = models.scale_widths(name, dict(kw), width_factor)
    with torch.random.fork_rng():
        seed_all(fresh_seed(seed, tag))
        if name in models.MODELS:
            return models.build(
                name, arch["num_classes"], arch["in_channels"], arch["input_size"], **dict(kw)
            )
        return models.build_target(
            name, arch["num_classes"], models.input_shape_of(arch), **dict(kw)
        )


class Distiller(Classifier):
    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        cfg: TrainCfg,
        num_classes: int,
        temperature: float,
        ce_weight: float,
        mixup: bool = True,
    ):
        super().__init__(student, cfg, num_classes)
        self.teacher = teacher.requires_grad_(False)
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.mixup = mixup

    def kd(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        self.teacher.eval()  # the parent's function, whatever mode the Trainer set
        with torch.no_grad():
            soft = F.softmax(self.teacher(x) / t, dim=1)
        return F.kl_div(F.log_softmax(logits / t, dim=1), soft, reduction="batchmean") * t * t

    def loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        kd = self.kd(logits, x)
        if self.mixup and self.ce_weight < 1:
            lam = torch.rand(len(x), *[1] * (x.dim() - 1), device=x.device)
            mixed = lam * x + (1 - lam) * x[torch.randperm(len(x), device=x.device)]
            kd = kd + self.kd(self.model(mixed), mixed)
        if self.ce_weight == 0:
            return kd  # pure distillation: the labels are not even looked at
        return self.ce_weight * F.cross_entropy(logits, y) + (1 - self.ce_weight) * kd


@register("distill", DistillConf, fresh_weights=True)
def distill(
    parent: nn.Module,
    dm: DataModule,
    cfg: Mapping[str, Any],
    ratio: float,
    seed: int,
    logger: Any = None,
    train: Mapping[str, Any] | None = None,
) -> Derived:
    data = task_data(dm, cfg["data"])
    teacher = copy_parent(parent).eval()
    student = init_student(parent, cfg, seed, width_factor=1.0 - ratio)
    check_labels_fit(data, student, "distill")
    tc = train_cfg(cfg, train=train)
    module = Distiller(
        student,
        teacher,
        tc,
        n_outputs(student),
        float(cfg["temperature"]),
        float(cfg["ce_weight"]),
        bool(cfg.get("mixup", True)),
    )
    student = fit_model(module, data, tc, seed, logger)
    agree = predict(student, data.test.x).argmax(1) == predict(teacher, data.test.x).argmax(1)
    effect = {
        "student": models.arch_of(student)["name"],
        "width_factor": 1.0 - ratio,
        "param_ratio": n_params(student) / n_params(teacher),
        "temperature": float(cfg["temperature"]),
        "ce_weight": float(cfg["ce_weight"]),
        "mixup": bool(cfg.get("mixup", True)),
        "teacher_agreement": float(agree.float().mean()),
    }
    return Derived(student, effect)

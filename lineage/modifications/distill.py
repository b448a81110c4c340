"""distill: a student trained from random initialisation on the parent's (the teacher's)
temperature-softened outputs.

loss = ratio * CE(student, y) + (1 - ratio) * T^2 * [KL_T(x) + KL_T(x_mix)]

(the T^2 keeps the soft-target gradients on the scale of the hard-label ones). With
`mixup` (the default) the teacher is also matched on x_mix = lam * x + (1 - lam) * x',
lam ~ U(0, 1), inputs between training points: that is where the teacher's decision
boundaries lie, so the student copies them and not only the teacher's labels on the data,
which is what a thief would want, and what lineage closeness has to see. `ratio` is
the weight of the ground-truth label loss: 0 is pure distillation, 1 ignores the teacher
(an independent model: a boundary case). The student is any registered architecture
(`student`, default the parent's, with the parent's kwargs), initialised from a seed
derived from (distill, seed), never from the parent's own initial seed.

Effect keys (metrics.json derived.<key>):

| key               | meaning                                                      |
|-------------------|--------------------------------------------------------------|
| student           | the student's architecture name                              |
| temperature       | T                                                            |
| ce_weight         | weight of the hard-label loss (= ratio)                      |
| mixup             | whether the teacher was also matched between training points |
| teacher_agreement | top-1 agreement of student and teacher on the test inputs    |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import models
from ..data import DataModule
from ..errors import LineageError
from ..training import Classifier, TrainCfg, predict
from ..utils import seed_all
from .common import (
    check_labels_fit,
    copy_parent,
    fit_model,
    fresh_seed,
    n_outputs,
    need_arch,
    need_data,
    need_float,
    need_int,
    task_data,
    train_cfg,
)
from .registry import Derived, register

DEFAULTS = {
    "student": None,
    "student_kwargs": None,
    "temperature": 4.0,
    "epochs": 10,
    "lr": 3.0e-3,
    "data": None,
    "mixup": True,
}


def _validate(opts: Mapping[str, Any], ratio: float) -> None:
    need_arch(opts, "student")
    need_float(opts, "temperature", 0.0, open_lo=True)
    need_int(opts, "epochs", 0)
    need_float(opts, "lr", 0.0, open_lo=True)
    need_data(opts)
    if not isinstance(opts.get("mixup", True), bool):
        raise LineageError(f"distill.mixup={opts['mixup']!r}: must be true or false")


def init_student(
    parent: nn.Module, cfg: Mapping[str, Any], seed: int, tag: str = "distill.student"
) -> nn.Module:
    """The student before training: `student` (default the parent's arch and kwargs),
    built under a seed of its own, drawn from (`tag`, seed)."""
    arch = models.arch_of(parent)
    name = cfg.get("student") or arch["name"]
    kw = cfg.get("student_kwargs")
    if kw is None:
        kw = arch["kwargs"] if name == arch["name"] else {}
    with torch.random.fork_rng():
        seed_all(fresh_seed(seed, tag))
        return models.build(
            name, arch["num_classes"], arch["in_channels"], arch["input_size"], **dict(kw)
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


@register("distill", validate=_validate, defaults=DEFAULTS)
def distill(
    parent: nn.Module,
    dm: DataModule,
    cfg: Mapping[str, Any],
    ratio: float,
    seed: int,
    logger: Any = None,
) -> Derived:
    data = task_data(dm, cfg["data"])
    teacher = copy_parent(parent).eval()
    student = init_student(parent, cfg, seed)
    check_labels_fit(data, student, "distill")
    tc = train_cfg(cfg)
    module = Distiller(
        student,
        teacher,
        tc,
        n_outputs(student),
        float(cfg["temperature"]),
        ratio,
        bool(cfg.get("mixup", True)),
    )
    student = fit_model(module, data, tc, seed, logger)
    agree = predict(student, data.test.x).argmax(1) == predict(teacher, data.test.x).argmax(1)
    effect = {
        "student": models.arch_of(student)["name"],
        "temperature": float(cfg["temperature"]),
        "ce_weight": ratio,
        "mixup": bool(cfg.get("mixup", True)),
        "teacher_agreement": float(agree.float().mean()),
    }
    return Derived(student, effect)

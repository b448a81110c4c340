"""adversarial: adversarial fine-tuning of the parent with PGD examples (Madry et al.).

`ratio` = fraction of every training batch replaced by its PGD counterpart (0: plain
fine-tuning, 1: every example adversarial). PGD is L_inf: a random start in the eps-ball,
`steps` signed-gradient steps of `step_size` (null: 2.5 * eps / steps), each projected
back onto the eps-ball and onto the valid pixel range [0, 1]. Examples are crafted with
the model in eval mode (BatchNorm statistics see only the training forward pass).

Effect keys (metrics.json derived.<key>):

| key                    | meaning                                                 |
|------------------------|---------------------------------------------------------|
| adv_fraction           | adversarial examples / all training examples seen       |
| eps                    | L_inf radius                                            |
| steps                  | PGD steps                                               |
| robust_accuracy        | derived model's accuracy under the same PGD (test, at   |
|                        | most `eval_samples` points)                             |
| parent_robust_accuracy | the parent's, on the same points                        |
| relative_change        | parameter change ||theta' - theta|| / ||theta||        |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import DataModule
from ..settings import LR_MAX, knob
from ..training import Classifier, TrainCfg
from .common import (
    check_labels_fit,
    copy_parent,
    fit_model,
    n_outputs,
    relative_change,
    train_cfg,
)
from .registry import Derived, register


@dataclass
class AdversarialConf:
    name: str = "adversarial"
    eps: float = knob(0.1, lo=0, hi=1, ends="(]")  # L_inf radius of the PGD examples
    steps: int = knob(5, lo=1)  # PGD steps
    step_size: float | None = knob(None, lo=0, ends="()")  # null: 2.5 * eps / steps
    epochs: int = knob(5, lo=0)
    lr: float = knob(1.0e-3, lo=0, hi=LR_MAX, ends="(]")
    eval_samples: int = knob(256, lo=1)  # test points for the robust accuracy


def pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, step_size: float
) -> torch.Tensor:
    """L_inf PGD with a random start; the result stays in the eps-ball and in [0, 1].
    Gradients are taken w.r.t. the input only, so no parameter gradient accumulates."""
    was_training = model.training
    model.eval()
    x = x.detach()
    adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        adv = adv.detach() + step_size * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    model.train(was_training)
    return adv.detach()


class AdversarialTrainer(Classifier):
    def __init__(
        self,
        model: nn.Module,
        cfg: TrainCfg,
        num_classes: int,
        fraction: float,
        eps: float,
        steps: int,
        step_size: float,
    ):
        super().__init__(model, cfg, num_classes)
        self.fraction, self.eps, self.steps, self.step_size = fraction, eps, steps, step_size
        self.n_adv = self.n_seen = 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> torch.Tensor:
        x, y = batch
        k = int(self.fraction * len(x) + 0.5)
        if k:
            x = x.clone()
            x[:k] = pgd(self.model, x[:k], y[:k], self.eps, self.steps, self.step_size)
        self.n_adv += k
        self.n_seen += len(x)
        return super().training_step((x, y), i)


@register("adversarial", AdversarialConf)
def adversarial(
    parent: nn.Module,
    dm: DataModule,
    cfg: Mapping[str, Any],
    ratio: float,
    seed: int,
    logger: Any = None,
    train: Mapping[str, Any] | None = None,
) -> Derived:
    model = copy_parent(parent)
    check_labels_fit(dm, model, "adversarial")
    eps, steps = float(cfg["eps"]), int(cfg["steps"])
    step = float(cfg["step_size"]) if cfg["step_size"] is not None else 2.5 * eps / steps
    tc = train_cfg(cfg, train=train)
    module = AdversarialTrainer(model, tc, n_outputs(model), ratio, eps, steps, step)
    model = fit_model(module, dm, tc, seed, logger)

    n = min(len(dm.test), int(cfg["eval_samples"]))
    x, y = dm.test.x[:n], dm.test.y[:n]

    def robust(m: nn.Module) -> float:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            adv = pgd(m, x, y, eps, steps, step)
        with torch.no_grad():
            return float((m(adv).argmax(1) == y).float().mean())

    effect = {
        "adv_fraction": module.n_adv / max(1, module.n_seen),
        "eps": eps,
        "steps": steps,
        "robust_accuracy": robust(model),
        "parent_robust_accuracy": robust(copy_parent(parent).eval()),
        "relative_change": relative_change(parent, model),
    }
    return Derived(model, effect)

"""ModelDiff (Li et al., ISSTA 2021): compare models by their decision distance vectors.

Probes are pairs (x, x'): x a test input, x' an adversarial input of the SOURCE made by
L-inf PGD (random start, `steps` signed-gradient steps of size 2.5*eps/steps) that pushes
the source away from the true label. A model's decision distance vector (DDV) holds, for
each pair, the cosine distance between its softmax outputs on x and on x'. The score is
the cosine similarity of the source's and the suspect's DDVs: a derived model moves its
outputs on the same pairs by similar amounts. The paper's generator also rewards probe
diversity; plain PGD from random test points stands in for it here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import device_of
from ..settings import knob
from .registry import (
    baseline,
    num_classes,
    paired_logits,
    source_probes,
    subset,
)


def pgd_away(
    source: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    gen: torch.Generator,
    batch_size: int,
) -> torch.Tensor:
    """L-inf PGD that raises the source's cross-entropy on y; x' stays in [0, 1]."""
    dev = device_of(source)
    alpha = 2.5 * eps / steps
    start = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev)
        xa = (xb + start[i : i + batch_size].to(dev)).clamp(0.0, 1.0)
        for _ in range(steps):
            xa.requires_grad_(True)
            # autograd.grad, not backward: the source's .grad fields stay untouched.
            (g,) = torch.autograd.grad(F.cross_entropy(source(xa), yb, reduction="sum"), xa)
            xa = xa.detach() + alpha * g.sign()
            xa = torch.minimum(torch.maximum(xa, xb - eps), xb + eps).clamp(0.0, 1.0)
        out.append(xa.detach().cpu())
    return torch.cat(out)


def ddv(model_out: torch.Tensor, model_out_adv: torch.Tensor) -> torch.Tensor:
    """Decision distance vector: cosine distance of softmax outputs on each (x, x') pair."""
    return 1.0 - F.cosine_similarity(model_out.softmax(1), model_out_adv.softmax(1), dim=1)


@dataclass
class ModelDiffConf:
    """`baselines.modeldiff`: its options (defaults and ranges, lineage.settings)."""

    n_points: int = knob(100, lo=1)
    eps: float = knob(0.1, lo=0, ends="(]")  # L-inf radius of the source's adversarial x'
    steps: int = knob(10, lo=1)  # PGD steps, each of size 2.5 * eps / steps
    batch_size: int = knob(256, lo=1)


@baseline("modeldiff", access="outputs", options=ModelDiffConf)
def modeldiff(
    source: nn.Module,
    suspect: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: ModelDiffConf,
    gen: torch.Generator,
) -> tuple[float, dict[str, Any]]:
    num_classes(source, x, y)

    def make() -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = subset(x, y, cfg.n_points, gen)
        return xs, pgd_away(source, xs, ys, cfg.eps, cfg.steps, gen, cfg.batch_size)

    t0 = time.perf_counter()
    xs, xa = source_probes(source, "modeldiff", x, y, cfg, gen, make)
    probe_s = time.perf_counter() - t0  # ~0 when reused
    a, b = paired_logits(source, suspect, xs, cfg.batch_size)
    a_adv, b_adv = paired_logits(source, suspect, xa, cfg.batch_size)
    ddv_src, ddv_sus = ddv(a, a_adv), ddv(b, b_adv)
    sim = float(F.cosine_similarity(ddv_src, ddv_sus, dim=0))
    return sim, {
        "n_points": len(xs),
        "probe_seconds": probe_s,
        "source_flip_rate": float((a_adv.argmax(1) != a.argmax(1)).float().mean()),
        "ddv_source_mean": float(ddv_src.mean()),
    }

"""IPGuard (Cao, Jia and Gong, AsiaCCS 2021): fingerprint the source with data points near
its classification boundary, then check that the suspect labels them the same way.

Each point starts from a random test image; with i its source label and j a random other
class, Adam moves it (kept in [0, 1]) to minimise

    ReLU(g_i(x) - g_j(x) + k) + ReLU(max_{t != i, j} g_t(x) - g_i(x))

over the source's logits g: j ends on top by a margin k and i is the runner-up, so the
point sits just across the i/j boundary. A model derived from the source keeps that
boundary and so most of these labels; an independent one disagrees on many of them. The
score is the suspect's label match rate with the source on the final points (labels only).
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
    label_agreement,
    logits,
    num_classes,
    paired_logits,
    source_probes,
    subset,
)


def ipguard_loss(z: torch.Tensor, i: torch.Tensor, j: torch.Tensor, k: float) -> torch.Tensor:
    """Per-point IPGuard objective on logits z (zero once j leads i by k and i is second)."""
    zi, zj = z.gather(1, i[:, None])[:, 0], z.gather(1, j[:, None])[:, 0]
    rest = z.scatter(1, i[:, None], float("-inf")).scatter(1, j[:, None], float("-inf"))
    return F.relu(zi - zj + k) + F.relu(rest.max(1).values - zi)


def boundary_points(
    source: nn.Module,
    x: torch.Tensor,
    k: float,
    steps: int,
    lr: float,
    gen: torch.Generator,
    n_classes: int,
    batch_size: int,
) -> tuple[torch.Tensor, int]:
    """Boundary points from x, and how many of them met the objective within `steps`."""
    dev = device_of(source)
    i_all = logits(source, x, batch_size, "source").argmax(1)
    j_all = (i_all + torch.randint(1, n_classes, (len(x),), generator=gen)) % n_classes
    out, n_done = [], 0
    for s in range(0, len(x), batch_size):
        xb = x[s : s + batch_size].to(dev).clone().requires_grad_(True)
        i, j = i_all[s : s + batch_size].to(dev), j_all[s : s + batch_size].to(dev)
        opt = torch.optim.Adam([xb], lr=lr)
        done = torch.zeros(len(xb), dtype=torch.bool, device=dev)
        final = xb.detach().clone()
        for _ in range(steps):
            loss = ipguard_loss(source(xb), i, j, k)
            # A point is kept the first time it meets the objective: Adam's momentum would
            # carry it on, far past the boundary.
            newly = (loss == 0) & ~done
            final[newly], done = xb.detach()[newly], done | newly
            if bool(done.all()):
                break
            # autograd.grad, not backward: the source's .grad fields stay untouched.
            (xb.grad,) = torch.autograd.grad(loss.sum(), xb)
            opt.step()
            with torch.no_grad():
                xb.clamp_(0.0, 1.0)
        final[~done] = xb.detach()[~done]
        out.append(final.cpu())
        n_done += int(done.sum())
    return torch.cat(out), n_done


@dataclass
class IPGuardConf:
    """`baselines.ipguard`: its options (defaults and ranges, lineage.settings)."""

    n_points: int = knob(100, lo=1)
    k: float = knob(0.5, lo=0)  # logit margin of the target class j over the runner-up i
    steps: int = knob(100, lo=1)  # Adam steps per point
    lr: float = knob(0.01, lo=0, ends="(]")
    batch_size: int = knob(256, lo=1)


@baseline("ipguard", access="labels", options=IPGuardConf)
def ipguard(
    source: nn.Module,
    suspect: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: IPGuardConf,
    gen: torch.Generator,
) -> tuple[float, dict[str, Any]]:
    n_classes = num_classes(source, x, y)

    def make() -> tuple[torch.Tensor, int]:
        xs, _ = subset(x, y, cfg.n_points, gen)
        return boundary_points(source, xs, cfg.k, cfg.steps, cfg.lr, gen, n_classes, cfg.batch_size)

    t0 = time.perf_counter()
    xb, n_done = source_probes(source, "ipguard", x, y, cfg, gen, make)
    probe_s = time.perf_counter() - t0  # ~0 when reused
    a, b = paired_logits(source, suspect, xb, cfg.batch_size)
    top2 = a.topk(2, dim=1).values
    return label_agreement(a, b), {
        "n_points": len(xb),
        "probe_seconds": probe_s,
        "converged": n_done / len(xb),
        "source_margin_median": float((top2[:, 0] - top2[:, 1]).median()),
    }

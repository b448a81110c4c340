"""The reference search, per sample, as the papers' code does it: batch size 1, the source's
sign-gradient direction, then walk the ray x + t*s with steps of 0.1 until the prediction
flips (cap d_max = 10), step back and walk with 0.01, ..., down to 1e-5. The distance is the
first flipped point of the finest walk. No clamping to [0, 1], as in the reference.

Used by bench_closeness.py to check the batched search's agreement and speed; not part of
the package. Run alone, it prints the per-point table of a seeded MLP and its noised copy:

    python -m benchmarks.reference_closeness [--points 8]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

STEPS = (0.1, 0.01, 1e-3, 1e-4, 1e-5)
Model = Callable[[torch.Tensor], torch.Tensor]


def reference_direction(source: Model, x: torch.Tensor, y: int) -> tuple[torch.Tensor, int]:
    """sign(grad_x CE) for one point x of shape (1, ...), and the source's label there."""
    x = x.detach().clone().requires_grad_(True)
    logits = source(x)
    loss = F.cross_entropy(logits, torch.tensor([y], device=x.device))
    (grad,) = torch.autograd.grad(loss, x)  # input gradient only: no parameter grads to pay
    return grad.sign(), int(logits.argmax(1).item())


@torch.no_grad()
def reference_distance(
    model: Model,
    x: torch.Tensor,
    y: int,
    s: torch.Tensor,
    d_max: float = 10.0,
    steps: tuple[float, ...] = STEPS,
) -> tuple[float, int]:
    """(distance, class at the flip) for one point; (inf, -1) without a flip by d_max.
    Call only where the model predicts y at x."""

    def label(t: float) -> int:
        return int(model(x + t * s).argmax(1).item())

    t = 0.0
    flipped_at, cls = math.inf, -1
    while t + steps[0] <= d_max + 1e-9:
        p = label(t + steps[0])
        if p != y:
            flipped_at, cls = t + steps[0], p
            break
        t += steps[0]
    if cls < 0:
        return math.inf, -1
    for prev, step in zip(steps, steps[1:]):
        # walk from the last unflipped point; the previous walk's flip bounds it (the
        # bound only guards against rounding: the walk flips by then)
        for _ in range(int(round(prev / step)) + 1):
            p = label(t + step)
            if p != y:
                flipped_at, cls = t + step, p
                break
            t += step
            if t >= flipped_at:
                t -= step
                break
    return flipped_at, cls


@dataclass
class ReferenceResult:
    d_source: list[float]
    d_suspect: list[float]
    adv_source: list[int]
    adv_suspect: list[int]
    source_correct: list[bool]
    suspect_correct: list[bool]
    matched: list[bool]


def reference_closeness(
    source: Model, suspect: Model, x: torch.Tensor, y: torch.Tensor, d_max: float = 10.0
) -> ReferenceResult:
    """Per-point distances and match decisions, one sample at a time."""
    out = ReferenceResult([], [], [], [], [], [], [])
    for i in range(len(x)):
        xi, yi = x[i : i + 1], int(y[i])
        s, pred = reference_direction(source, xi, yi)
        src_ok = pred == yi
        d_src, a_src = math.inf, -1
        d_sus, a_sus = math.inf, -1
        sus_ok = False
        if src_ok:
            d_src, a_src = reference_distance(source, xi, yi, s, d_max)
            if math.isfinite(d_src):
                with torch.no_grad():
                    sus_ok = int(suspect(xi).argmax(1).item()) == yi
                if sus_ok:
                    d_sus, a_sus = reference_distance(suspect, xi, yi, s, d_max)
        out.d_source.append(d_src)
        out.d_suspect.append(d_sus)
        out.adv_source.append(a_src)
        out.adv_suspect.append(a_sus)
        out.source_correct.append(src_ok)
        out.suspect_correct.append(sus_ok)
        out.matched.append(sus_ok and math.isfinite(d_sus) and a_sus == a_src)
    return out


def main(argv: list[str] | None = None) -> None:
    from benchmarks.bench_closeness import table
    from lineage import models
    from lineage.data import build_datamodule

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=8)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    source = models.build("mlp", 10, 1, 8, hidden=[16]).eval()
    suspect = models.build("mlp", 10, 1, 8, hidden=[16]).eval()
    with torch.no_grad():
        for a, b in zip(source.parameters(), suspect.parameters()):
            b.copy_(a + 0.05 * a.std() * torch.randn_like(a))
    x = build_datamodule("digits").test.x[: args.points]
    with torch.no_grad():
        y = source(x).argmax(1)  # the source's own labels: every point starts a walk
    r = reference_closeness(source, suspect, x, y)
    rows = [
        {"point": i, "d_source": r.d_source[i], "d_suspect": r.d_suspect[i],
         "adv_source": r.adv_source[i], "adv_suspect": r.adv_suspect[i], "matched": r.matched[i]}
        for i in range(len(x))
    ]  # fmt: skip
    print(f"\n## reference search, seeded MLP vs its 5%-noised copy, {len(x)} digits points")
    print(table(rows, list(rows[0])))


def smallest(tmp: Path) -> None:
    main(["--points", "4"])


if __name__ == "__main__":
    main()

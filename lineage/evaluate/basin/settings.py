"""The same-basin test's options: the defaults and the checks (lineage.settings)."""

from __future__ import annotations

from dataclasses import dataclass

from ...settings import INF, SEED_MAX, knob


@dataclass
class DeterminationConf:
    # the path theta(a) = (1 - a) theta_parent + a theta_suspect
    # Points on the path (endpoints included) and probe points (the first of the parent
    # task's test split). 6 and 500 instead of 11 and 2000: 4x less per suspect (MNIST LeNet,
    # 6 references: 1.7 CPU s instead of 7.1, benchmarks/bench_judge.py), and on the three
    # recipe zoos (568 pairs) every verdict equal to 11 and 1000 (README "Recipe shift")
    alphas: int = knob(6, lo=2)
    refine: int = knob(0, lo=0)  # bisection rounds around the curve's maximum (<= 2 points each)
    probe_points: int = knob(500, lo=1)
    batch_size: int = knob(500, lo=1)  # rows per forward pass (evaluation, BN re-estimation)
    bn_reestimate: bool = knob(True)  # fresh BatchNorm statistics at every a (false: ablation)
    bn_batches: int = knob(8, lo=1)  # probe batches for that, cumulative average
    # permutation alignment by weight matching, before the path (false: ablation only)
    align: bool = knob(True)
    align_rounds: int = knob(20, lo=1)  # most rounds of assignment; stops at a fixed point
    seed: int = knob(0, lo=0, hi=SEED_MAX)  # the order in which weight matching visits the groups
    head_steps: int = knob(50, lo=1)  # L-BFGS steps fitting a parent-task head on a trunk
    # Calibrated threshold (lineage.evaluate.calibration): tau = gamma * min(reference barriers)
    gamma: float = knob(0.25, lo=0, hi=INF, ends="()")
    # Uncalibrated fallback: tau = fallback_rel * mean endpoint loss (calibrated=false); also
    # the barrier's floor, fallback_rel * L(0), on the verdict's log scale
    fallback_rel: float = knob(0.02, lo=0, hi=INF, ends="()")

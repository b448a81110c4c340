"""Closeness's options: the defaults and the checks (lineage.settings).

Distances are in input units along sign(grad_x loss): pixels in [0, 1] for the image data
sets here, standard deviations of each feature for the standardised tabular ones. The ray
is never clamped to the data's range, so d_max and step need no change between tasks whose
inputs have a unit scale."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import LineageError
from ...settings import INF, SEED_MAX, from_mapping, knob


@dataclass
class ClosenessConf:
    d_max: float = knob(10.0, lo=0, hi=INF, ends="()")  # cap on the adversarial distance
    step: float = knob(0.1, lo=0, hi=INF, ends="()")  # the reference's coarse grid
    tol: float = knob(1.0e-5, lo=0, hi=INF, ends="()")  # precision of each distance
    search: str = knob("brent", choices=("brent", "bisection"))  # root search on the margin
    max_chunk: int = knob(8, lo=1)  # most grid points tried per point in one pass
    batch_size: int | None = knob(None, lo=1)  # rows per pass; null: by input size and device
    allow_class_mismatch: bool = knob(False)  # compare labels of a suspect with other classes
    # sampling (lineage.evaluate.sampling)
    strategy: str = knob("stratified", choices=("stratified", "uniform"))
    ci_tol: float = knob(0.02, lo=0, hi=1, ends="()")  # stop at this bootstrap CI half-width
    batch_points: int = knob(100, lo=1)  # points attacked per sequential step
    min_points: int = knob(100, lo=1)  # never stop on the CI before this many valid points
    max_points: int = knob(2000, lo=1)  # ... and always stop here
    n_boot: int = knob(1000, lo=1)  # bootstrap resamples
    filter: bool = knob(True)  # AAAI 2025 filtering, with lineage and independent references
    filter_pool: int | None = knob(None, lo=1)  # points the filter keeps; null: max_points
    seed: int = knob(0, lo=0, hi=SEED_MAX)
    progress: bool = knob(True)  # a progress bar on a terminal (never in logs)
    # The AAAI 2025 function threshold tau_f = m + gamma * (1 - m), m = the highest reference
    # score: recorded beside the p-value verdict (`function_threshold`), it does not decide
    gamma: float = knob(0.25, lo=0, hi=1, ends="[)")

    def check(self, where: str = "closeness") -> None:
        if not self.tol < self.step <= self.d_max:
            raise LineageError(
                f"{where}: need tol < step <= d_max, got tol={self.tol}, "
                f"step={self.step}, d_max={self.d_max}"
            )
        if self.min_points > self.max_points:
            raise LineageError(
                f"{where}: min_points={self.min_points} exceeds max_points={self.max_points}"
            )


def settings(cfg: Mapping[str, Any] | ClosenessConf | None) -> ClosenessConf:
    """The options over their defaults, checked (a bad value names its key)."""
    if isinstance(cfg, ClosenessConf):
        return cfg
    return from_mapping(ClosenessConf, cfg, "closeness")

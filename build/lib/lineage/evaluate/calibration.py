"""The decision threshold of the same-basin test.

A model derived from the parent stays in the parent's basin, where the linear path is
(nearly) convex: its barrier is zero, or tiny. An independent model sits in another
basin; even after permutation alignment a ridge separates the two, whose height depends
on the architecture, the data and the probe set (wide aligned models can be nearly
linearly connected). So the threshold is set against that ridge when it can be measured.

Calibrated (the default when independent references are given):

    tau = gamma * min(reference barriers),   gamma = 0.25

The references are independent models (same architecture and data, other seeds); their
barriers to the parent are the ridge heights between unrelated basins. A suspect is
lineage when its barrier is below a quarter of the lowest of them. gamma is a ratio, not a
loss value, so it carries over between datasets and loss scales; a quarter leaves room for
the spread among independent references (the ratio between two of them stayed within 2.5
in our benchmarks), which matters most when references are judged leave-one-out against
a single other reference.

Uncalibrated fallback (no references; the result says calibrated=False):

    tau = fallback_rel * (L(0) + L(1)) / 2,   fallback_rel = 0.02

i.e. the path may rise above the chord by at most 2% of the endpoints' mean loss
(barrier_rel <= fallback_rel): "convex up to a small tolerance". It is relative to the
endpoint losses, so it does not depend on the loss scale; what it cannot know is how low
the ridge between unrelated basins is for a given architecture, which is why calibrated
results are preferred.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def calibrate(
    reference_barriers: Sequence[float | None] | None,
    endpoint_losses: tuple[float, float],
    cfg: Any,
) -> tuple[float, bool]:
    """(threshold, calibrated). `cfg` has `gamma` and `fallback_rel` (DeterminationConf).
    None and non-finite reference barriers (references with no weight-space route) are
    ignored; with none left, the fallback applies."""
    refs = [float(b) for b in reference_barriers or () if b is not None and math.isfinite(b)]
    if refs:
        return float(cfg.gamma) * max(min(refs), 0.0), True
    return float(cfg.fallback_rel) * sum(endpoint_losses) / 2, False

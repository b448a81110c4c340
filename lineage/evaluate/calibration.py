"""The decision threshold of the same-basin test.

Calibrated: tau = gamma * min(reference barriers). The references are independent models
(same architecture and data, other seeds), so their barriers to the parent show how high
the ridge between *unrelated* basins is for this architecture, dataset and probe set; a
suspect whose barrier is well below the lowest of them is in the parent's basin.

Uncalibrated fallback (no references): tau = fallback_rel * (L(0) + L(1)) / 2, i.e. the
path may rise above the chord by at most that fraction of the endpoints' mean loss
(barrier_rel <= fallback_rel). It is relative, so it carries over between datasets and
loss scales; but it cannot know how low the ridges between unrelated basins are for a
given architecture (wide aligned models can be nearly linearly connected), which is why
calibrated results are preferred and the result says `calibrated=False`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def calibrate(
    reference_barriers: Sequence[float | None] | None,
    endpoint_losses: tuple[float, float],
    cfg: Mapping[str, Any],
) -> tuple[float, bool]:
    """(threshold, calibrated)."""
    refs = [float(b) for b in reference_barriers or () if b is not None and math.isfinite(b)]
    if refs:
        return float(cfg["gamma"]) * max(min(refs), 0.0), True
    return float(cfg["fallback_rel"]) * sum(endpoint_losses) / 2, False

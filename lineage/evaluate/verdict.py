"""The overall lineage verdict from two kinds of evidence.

- Basin evidence (basin.determine): the suspect's weights sit in the parent's basin.
- Function evidence (closeness): the suspect's decision boundaries match the parent's.

Students trained from fresh weights (distillation, extraction, another architecture) can
copy the parent's function without sharing its basin, so either kind of evidence suffices:
`is_lineage = basin_is_lineage or function_is_lineage`. The function evidence has its own
threshold, calibrated on the independent references' closeness scores, so it does not turn
unrelated models into false positives.

The verdict also carries a `caveat` when its evidence is weak in a known way: a suspect
much worse than the parent on the parent's task (L(1) > LIFT * L(0)) raises the far end of
the chord, which can hide the ridge between two basins, so a barrier of 0 says little. In
the MNIST zoo a noise-0.9 model of another parent (L(1) = 50 x L(0)) passed the basin test
this way; its closeness was the lowest of any pair the basin test passed. The caveat is
text for the auditor: no verdict depends on it.
"""

from __future__ import annotations

import dataclasses
import math

from .basin import DeterminationResult

LIFT = 2.0


def caveat_of(result: DeterminationResult, function: bool | None) -> str:
    """The caveat for a basin verdict of lineage that the function evidence contradicts on a
    badly damaged suspect; "" otherwise."""
    l0, l1 = result.loss_parent, result.loss_suspect
    if not (result.basin_is_lineage and function is False and l0 and l1 and l1 > LIFT * l0):
        return ""
    return (
        f"weak basin evidence: the suspect's loss L(1) {l1:.3g} is {l1 / l0:.0f}x the "
        f"parent's L(0) {l0:.3g}, which lifts the chord and can hide a ridge between basins, "
        "and the closeness evidence says not lineage"
    )


def combine(
    result: DeterminationResult, closeness_score: float | None, closeness_threshold: float | None
) -> DeterminationResult:
    """`result` with the function evidence added.

    `closeness_score` is higher for closer models (lineage.evaluate.closeness `score`, in
    [0, 1]); the function evidence says lineage when it is >= `closeness_threshold`. Either
    being None (or NaN) leaves the function evidence undecided (None).

    `method` then names the evidence that decided: the basin route (e.g. "basin+aligned")
    when the basin test says lineage, "function" when only the closeness evidence does, or
    when there was no weight-space route; when neither says lineage, the basin route
    (both were consulted; `function_is_lineage` records the second).
    """
    function: bool | None = None
    score = threshold = None
    if (
        closeness_score is not None
        and closeness_threshold is not None
        and math.isfinite(closeness_score)
        and math.isfinite(closeness_threshold)
    ):
        score, threshold = float(closeness_score), float(closeness_threshold)
        function = score >= threshold
    basin = result.basin_is_lineage
    if basin:
        method = result.route
    elif function or basin is None:
        method = "function"
    else:
        method = result.route
    return dataclasses.replace(
        result,
        is_lineage=bool(basin) or bool(function),
        function_is_lineage=function,
        method=method,
        function_score=score,
        function_threshold=threshold,
        caveat=caveat_of(result, function),
    )

"""The lineage verdict: how unusual the suspect would be for an independent model.

Three kinds of evidence, each higher-is-more-parent-like after its transform:
- **basin** (lineage.evaluate.basin): the barrier B along the path; a lineage suspect has
  B ~ 0. Scale: log(max(B, eps)), eps = fallback_rel * L(0) (the 2% "convex up to a small
  tolerance" of the fallback rule), lower tail.
- **closeness** (lineage.evaluate.closeness): the boundary-distance score in [0, 1].
  Scale: logit(clip(score, 1e-3, 1 - 1e-3)), upper tail.
- **inherited errors** (lineage.evaluate.inherited): the parent's wrong answers
  reproduced, in [0, 1]. Same scale, upper tail.

**p-value per evidence**: a one-sided prediction-interval p-value against the n
independent references (same task and architecture, other seeds or data),

    t = (v - mean(r)) / (sd(r) * sqrt(1 + 1/n)),   p = P(T_{n-1} >= t)   (upper tail)

Assumptions, written down: the references are i.i.d. draws of "an independent model", and
the evidence is normal on its scale; then p is exact for a new independent model, and the
t distribution with n - 1 degrees of freedom accounts for the references' mean and spread
being estimated from a few of them. An evidence that does not apply (no weight-space route,
a basin test that abstains, fewer than two references with a value) is left out. sd has a
floor of 1e-3 on its scale, so references that agree exactly give a suspect at their
value p = 0.5, not certainty (an easy task where independent models share a basin then
yields no basin evidence at all, instead of a threshold of 0).

**Combination**: Bonferroni, p = min(1, m * min_e p_e) over the m evidences that apply:
valid whatever their dependence (they are correlated: among unrelated pairs of the MNIST
zoo, closeness and inherited errors have Spearman +0.7), where Fisher's and Stouffer's
rules assume independence. The verdict is lineage when p <= alpha (`determination.alpha`,
0.005), and `verdict_score` = -log10 p ranks pairs for ROC curves.

**How many references**: with n references the one-sided p of a value k sds away needs
t_{n-1}: with alpha / 3 = 0.0017 that is t = 14 for 3 references, 5.7 for 5 and 4.8 for 6,
and empirical (rank) p-values cannot go below 1 / (n + 1) at all. The default is 6
(RootConf.n_independent); below `min_references` (4) the verdict is "undetermined".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .basin import DeterminationResult
from .basin.settings import DeterminationConf

CLIP = 1e-3  # scores are clipped to [CLIP, 1 - CLIP] before the logit
SD_FLOOR = 1e-3  # on the transformed scale
KINDS = ("basin", "closeness", "inherited")


@dataclass
class Evidence:
    """One model's raw evidence against a parent: what the p-values are computed from."""

    barrier: float | None  # None: no weight-space route, or the basin test abstained
    loss_parent: float | None
    closeness: float
    inherited: float | None  # None: the evidence is disabled


def _logit(s: float) -> float:
    s = min(max(s, CLIP), 1 - CLIP)
    return math.log(s / (1 - s))


def transformed(e: Evidence, eps_rel: float) -> dict[str, float | None]:
    """Each evidence on its scale, signed so that higher = more like the parent."""
    basin = None
    if e.barrier is not None and e.loss_parent is not None and math.isfinite(e.barrier):
        eps = max(eps_rel * e.loss_parent, 1e-12)
        basin = -math.log(max(e.barrier, eps))
    return {
        "basin": basin,
        "closeness": _logit(e.closeness) if math.isfinite(e.closeness) else None,
        "inherited": None if e.inherited is None else _logit(e.inherited),
    }


def prediction_p(value: float, refs: Sequence[float]) -> float | None:
    """P(an independent model's value >= `value`), the references as the sample."""
    from scipy.stats import t as student

    n = len(refs)
    if n < 2:
        return None
    mean = sum(refs) / n
    sd = max(math.sqrt(sum((r - mean) ** 2 for r in refs) / (n - 1)), SD_FLOOR)
    t = (value - mean) / (sd * math.sqrt(1 + 1 / n))
    return float(student.sf(t, n - 1))


def decide(
    result: DeterminationResult,
    suspect: Evidence,
    references: Sequence[Evidence],
    cfg: DeterminationConf,
) -> DeterminationResult:
    """`result` (the basin test's) with the verdict of all the evidence: p-values against
    `references`, their Bonferroni combination, and the decision at cfg.alpha."""
    mine = transformed(suspect, cfg.fallback_rel)
    theirs = [transformed(r, cfg.fallback_rel) for r in references]
    p: dict[str, float | None] = {}
    for kind in KINDS:
        v = mine[kind]
        refs = [t[kind] for t in theirs if t[kind] is not None]
        p[kind] = None if v is None else prediction_p(v, refs)  # type: ignore[arg-type]
    used = {k: v for k, v in p.items() if v is not None}
    enough = len(references) >= cfg.min_references and bool(used)
    combined = min(1.0, len(used) * min(used.values())) if used else 1.0
    decided = min(used, key=lambda k: used[k]) if used else "none"
    each = {k: (None if v is None else len(used) * v <= cfg.alpha) for k, v in p.items()}
    lineage = enough and combined <= cfg.alpha
    reason = result.reason
    if not enough:
        reason = "; ".join(
            filter(
                None,
                [
                    reason,
                    f"undetermined: {len(references)} references, and p-values need at least "
                    f"{cfg.min_references} (pass more references)",
                ],
            )
        )
    method = {"basin": result.route, "closeness": "function", "inherited": "inherited"}
    return dataclasses.replace(
        result,
        is_lineage=lineage,
        basin_is_lineage=each["basin"] if result.basin_is_lineage is not None else None,
        function_is_lineage=each["closeness"],
        inherited_is_lineage=each["inherited"],
        method=method.get(decided, result.route) if lineage else result.method,
        function_score=suspect.closeness,
        inherited_score=suspect.inherited,
        p_basin=p["basin"],
        p_closeness=p["closeness"],
        p_inherited=p["inherited"],
        p_value=combined,
        alpha=cfg.alpha,
        verdict_score=max(0.0, -math.log10(max(combined, 1e-300))),  # no "-0.0" at p = 1
        decided_by=decided if lineage else "",
        n_references=len(references),
        calibrated=enough,
        reason=reason,
        caveat=caveat_of(result, each),
    )


LIFT = 2.0


def caveat_of(result: DeterminationResult, each: Mapping[str, bool | None]) -> str:
    """Why a verdict is weaker than it looks: the basin evidence alone says lineage, on a
    suspect much worse than the parent (L(1) > LIFT * L(0)), and the function evidence
    says not. A high L(1) bends the path, so a low barrier says less there."""
    l0, l1 = result.loss_parent, result.loss_suspect
    others = [each["closeness"], each["inherited"]]
    if not (each["basin"] and not any(others) and l0 and l1 and l1 > LIFT * l0):
        return ""
    return (
        f"weak basin evidence: the suspect's loss L(1) {l1:.3g} is {l1 / l0:.0f}x the "
        f"parent's L(0) {l0:.3g}, and neither closeness nor inherited errors say lineage"
    )

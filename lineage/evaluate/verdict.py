"""The lineage verdict: how unusual the suspect would be for an independent model.

Every registered kind of evidence (lineage.evaluate.evidence) puts its result on a scale
where higher is more like the parent (`Kind.statistic`): the basin test's barrier as
-log(max(B, fallback_rel * L(0))), the weight distance as -log(max(D, floor)), closeness
and inherited errors as logit(score) (scores clipped to [1e-3, 1 - 1e-3]).

**p-value per evidence**: a one-sided prediction-interval p-value of the suspect's value v
against n values r from the independent references (same task and architecture, other
seeds): e(reference_i, suspect) for the suspect-centred kinds (`suspect_centred`, the
default for every built-in one), e(parent, reference_i) for the parent-centred ones
(lineage.engine explains both),

    t = (v - mean(r)) / (sd(r) * sqrt(1 + 1/n)),   p = P(T_{n-1} >= t)   (upper tail)

Assumptions, written down: the n + 1 values are exchangeable under H0 (suspect-centred:
the parent was trained like its references; parent-centred: the suspect was), and the
evidence is normal on its scale; then p is exact, and the t distribution with n - 1
degrees of freedom accounts for the mean and spread being estimated from a few values.
An evidence that does not apply (no weight-space route, a basin test that abstains, fewer
than two references with a value) is left out. sd has a
floor of 1e-3 on its scale, so references that agree exactly give a suspect at their
value p = 0.5, not certainty (an easy task where independent models share a basin then
yields no basin evidence at all, instead of a threshold of 0).

**The references' own spread as a second floor** (the suspect-centred kinds named in
`spread_floor`, by default the weight-space ones: basin and distance): sd is at least the
spread the references show among themselves, sqrt(mean_i var_{j != i} e(reference_j,
reference_i)), pooled at calibration over n (n - 1) values (`Calibration.spread`). One
suspect's six sources can agree closely by chance, and a parent that happens to lie near
the suspect's own parent then reads as a many-sd outlier: on the CIFAR-10 recipe zoo the
parent's barrier to the other parent's fine-tuned model was 0.28 against its references'
0.63-0.81 (t = 8.9, p_basin 8e-5), while barriers between independent models there range
from 0.12 to 0.87. The floor only raises sd, so it only raises p.

**Combination**: Bonferroni, p = min(1, m * min_e p_e) over the m evidences that apply:
valid whatever their dependence (they are correlated: among unrelated pairs of the MNIST
zoo, closeness and inherited errors have Spearman +0.7), where Fisher's and Stouffer's
rules assume independence. The verdict is lineage when p <= alpha (`verdict.alpha`,
0.005), and `verdict_score` = -log10 p ranks pairs for ROC curves.

**How many references**: with n references the one-sided p of a value k sds away needs
t_{n-1}: with alpha / 4 = 0.00125 that is t = 20 for 3 references, 6.8 for 5 and 5.6 for 6,
and empirical (rank) p-values cannot go below 1 / (n + 1) at all. The default is 6
(RootConf.n_independent); below `min_references` (4), or with no evidence that applies, the
verdict is undetermined: `is_lineage` is None, never False.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..settings import knob

CLIP = 1e-3  # scores are clipped to [CLIP, 1 - CLIP] before the logit
SD_FLOOR = 1e-3  # on the transformed scale


@dataclass
class VerdictConf:
    alpha: float = knob(0.005, lo=0, hi=1, ends="()")  # lineage when the combined p <= alpha
    min_references: int = knob(4, lo=2, hi=1000)  # fewer: undetermined
    # the kinds whose null is suspect-centred: the suspect's relation to the parent against
    # its relation to each reference in the parent's place (lineage.engine); the others are
    # parent-centred. Measured on recipe-shifted independents (experiments/recipe_shift.py,
    # README "Recipe shift"): parent-centred inherited errors, distance and basin accuse
    # models of other recipes; suspect-centred closeness is heavy-tailed (it accused
    # label-smoothed MNIST models), parent-centred closeness accused none
    suspect_centred: list[str] = knob(["basin", "distance", "inherited"])
    # suspect-centred kinds whose sd is floored by the references' own pooled spread (the
    # module docstring). Measured on the three recipe zoos: on the weight-space kinds it
    # removed CIFAR-10's one false positive and no true pair; on inherited errors, whose
    # spread follows the suspect's own error rate, it cost two MNIST distillation students
    spread_floor: list[str] = knob(["basin", "distance"])


@dataclass
class Decision:
    """The verdict of all the evidence against the references."""

    is_lineage: bool | None  # None: undetermined (`reason` says why)
    p_value: float  # the Bonferroni combination of the evidences' p-values (1: none applied)
    alpha: float
    verdict_score: float  # -log10 p_value: ranks pairs
    decided_by: str  # the evidence with the smallest p, when lineage
    n_references: int
    calibrated: bool  # enough references, and some evidence applied
    p: dict[str, float | None] = field(default_factory=dict)  # each evidence's p-value
    says: dict[str, bool | None] = field(default_factory=dict)  # each alone at alpha
    # each evidence's null: "suspect-centred" or "parent-centred" (lineage.engine)
    null: dict[str, str] = field(default_factory=dict)
    # the values each evidence's p was measured against, on its verdict scale
    against: dict[str, list[float]] = field(default_factory=dict)
    # the floor on their sd, where the references' own spread set one (suspect-centred)
    sd_floor: dict[str, float] = field(default_factory=dict)
    caveat: str = ""  # why the verdict is weaker than it looks
    reason: str = ""  # why an evidence did not apply, or the verdict is undetermined

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def answer(self) -> str:
        return answer(self.is_lineage)


def answer(is_lineage: Any) -> str:
    """The verdict in words, from `is_lineage` as any table holds it: None, NaN or pandas'
    NA (a missing value) is undetermined, never "not lineage"."""
    try:
        if is_lineage is None or is_lineage != is_lineage:  # NaN is not equal to itself
            return "undetermined"
    except TypeError:  # pandas' NA: its comparisons have no truth value
        return "undetermined"
    return "lineage" if is_lineage else "not lineage"


def logit(s: float) -> float | None:
    """A score in [0, 1] on the verdict's scale (None when it is not finite)."""
    if not math.isfinite(s):
        return None
    s = min(max(s, CLIP), 1 - CLIP)
    return math.log(s / (1 - s))


def sample_variance(values: Sequence[float]) -> float:
    """The unbiased sample variance of two or more values."""
    mean = sum(values) / len(values)
    return sum((r - mean) ** 2 for r in values) / (len(values) - 1)


def pooled_spread(
    theirs: Sequence[Sequence[Mapping[str, float | None]]], kinds: Sequence[str]
) -> dict[str, float]:
    """Each kind's within-suspect sd pooled over the references as suspects: theirs[i] holds
    e(reference_j, reference_i) for j != i. Estimated from n (n - 1) values, it is the
    floor on one suspect's sources' sd, which six values can put far too low."""
    out = {}
    for k in kinds:
        rows = [[float(v) for s in row if (v := s.get(k)) is not None and math.isfinite(v)]
                for row in theirs]  # fmt: skip
        var = [sample_variance(v) for v in rows if len(v) >= 2]
        if var:
            out[k] = math.sqrt(sum(var) / len(var))
    return out


def prediction_p(value: float, refs: Sequence[float], sd_floor: float = SD_FLOOR) -> float | None:
    """P(an independent model's value >= `value`), the references as the sample; their sd
    is taken as at least `sd_floor`."""
    from scipy.stats import t as student

    n = len(refs)
    if n < 2:
        return None
    mean = sum(refs) / n
    sd = max(math.sqrt(sample_variance(refs)), sd_floor, SD_FLOOR)
    t = (value - mean) / (sd * math.sqrt(1 + 1 / n))
    return float(student.sf(t, n - 1))


def decide(
    suspect: Mapping[str, float | None],
    references: Sequence[Mapping[str, float | None]],
    cfg: VerdictConf,
    caveats: Mapping[str, str] | None = None,
    reasons: Sequence[str] = (),
    spread: Mapping[str, float] | None = None,
) -> Decision:
    """The verdict from each evidence's statistic (`suspect`, in the kinds' order) against
    the references' statistics. `caveats[kind]`: why that evidence is weak alone; it is
    the verdict's caveat when that evidence is the only one that says lineage.
    `spread[kind]`: that kind's floor on the references' sd (the module docstring)."""
    p: dict[str, float | None] = {}
    against: dict[str, list[float]] = {}
    floors = dict(spread or {})
    for kind, v in suspect.items():
        refs = [r[kind] for r in references if r.get(kind) is not None]
        against[kind] = [float(r) for r in refs]  # type: ignore[arg-type]
        floor = floors.get(kind, SD_FLOOR)
        p[kind] = None if v is None else prediction_p(v, refs, floor)  # type: ignore[arg-type]
    used = {k: v for k, v in p.items() if v is not None}
    enough = len(references) >= cfg.min_references and bool(used)
    combined = min(1.0, len(used) * min(used.values())) if used else 1.0
    decided = min(used, key=lambda k: used[k]) if used else ""
    says = {k: (None if v is None else len(used) * v <= cfg.alpha) for k, v in p.items()}
    lineage = combined <= cfg.alpha if enough else None
    why = list(reasons)
    if len(references) < cfg.min_references:
        why.append(
            f"undetermined: {len(references)} references, and p-values need at least "
            f"{cfg.min_references} (pass more references)"
        )
    elif not used:
        why.append("undetermined: no evidence applies to this pair")
    yes = [k for k, v in says.items() if v]
    caveat = (caveats or {}).get(yes[0], "") if len(yes) == 1 else ""
    return Decision(
        is_lineage=lineage,
        p_value=combined,
        alpha=cfg.alpha,
        verdict_score=max(0.0, -math.log10(max(combined, 1e-300))),  # no "-0.0" at p = 1
        decided_by=decided if lineage else "",
        n_references=len(references),
        calibrated=enough,
        p=p,
        says=says,
        null={k: "suspect-centred" if k in cfg.suspect_centred else "parent-centred" for k in p},
        against=against,
        sd_floor={k: v for k, v in floors.items() if k in p},
        caveat=caveat,
        reason="; ".join(filter(None, why)),
    )

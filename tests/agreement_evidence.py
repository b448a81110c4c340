"""A fourth kind of evidence, defined outside `lineage/`: agreement on random inputs.

Inputs drawn around the parent's test data (its per-feature mean and spread) carry no
label, so two models answer them alike only where their functions agree off the data: a
copy does, an independent model much less. Importing this module registers the kind; the
engine, the verdict, metrics.json, the report, W&B and `lineage compare` then carry it
(tests/test_evidence_plugin.py).
"""

from dataclasses import asdict, dataclass

import torch

from lineage.evaluate.evidence import Kind, Parent, Suspect, register
from lineage.evaluate.verdict import logit
from lineage.settings import SEED_MAX, knob


@dataclass
class AgreementConf:
    points: int = knob(256, lo=1, hi=100_000)  # random inputs
    seed: int = knob(0, lo=0, hi=SEED_MAX)


@dataclass
class AgreementResult:
    score: float  # share of the random inputs where the suspect gives the parent's class
    n_points: int

    def to_dict(self):
        return asdict(self)


@register("agreement", rank=40)
class Agreement(Kind):
    """Agreement on random inputs around the data: a high share is parent-like."""

    Conf = AgreementConf
    headline = "score"
    scale = "logit(score)"

    def prepare(self, parent: Parent, conf: AgreementConf):
        g = torch.Generator().manual_seed(conf.seed)
        x = parent.x.float()
        noise = torch.randn((conf.points, *x.shape[1:]), generator=g)
        probe = x.mean(0) + x.std(0) * noise
        with torch.no_grad():
            return probe, parent.model(probe).argmax(1)

    def measure(self, prepared, parent: Parent, suspect: Suspect, conf: AgreementConf):
        probe, answer = prepared
        with torch.no_grad():
            out = suspect.view(probe)
        pred = out.argmax(1) if out.dim() == 2 else out
        return AgreementResult(float((pred == answer).float().mean()), len(probe))

    def statistic(self, r: AgreementResult, conf: AgreementConf):
        return logit(r.score)

"""The suspect-centred null (lineage.engine): a suspect's relation to the parent against its
relation to each reference in the parent's place. Known answers from a toy kind of evidence
whose value is a model's recipe effect plus a bonus for true descent: the parent-centred
null accuses an unrelated suspect with a strong recipe effect, the suspect-centred one
does not, and both catch a true child."""

import math
from dataclasses import asdict, dataclass

import pytest
import torch
from torch import nn

import lineage
from lineage.errors import LineageError
from lineage.evaluate import evidence
from lineage.evaluate.evidence import Kind


class Toy(nn.Module):
    """A model that is its identity, its ancestor and its recipe's effect on the evidence."""

    def __init__(self, ident: int, recipe: float = 0.0, ancestor: int | None = None):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.ident, self.recipe, self.ancestor = ident, recipe, ancestor

    def forward(self, x):
        return self.lin(x)


@dataclass
class LikeResult:
    score: float

    def to_dict(self):
        return asdict(self)


@dataclass
class LikeConf:
    pass


class Likeness(Kind):
    """Higher when the suspect descends from the source; every value is shifted by the
    suspect's recipe, as inherited errors were by another training recipe."""

    name = group = "likeness"
    Conf = LikeConf

    def prepare(self, parent, conf):
        return parent.model.ident

    def measure(self, source_ident, parent, suspect, conf):
        m = suspect.model
        jitter = 0.3 * math.sin(13.0 * source_ident + 7.0 * m.ident)  # pair-to-pair spread
        descends = 3.0 if m.ancestor == source_ident else 0.0
        return LikeResult(m.recipe + jitter + descends)

    def statistic(self, r, conf):
        return r.score


@pytest.fixture
def only_likeness(monkeypatch):
    evidence.kinds()  # the built-ins registered first, then set aside for this test
    kind = Likeness()
    kind._rank = 1
    monkeypatch.setattr(evidence, "_KINDS", {"likeness": kind})


X, Y = torch.randn(8, 2), torch.tensor([0, 1] * 4)


def _judge(suspect, centred, refs, floor=False):
    parent = Toy(0)
    verdict = {"suspect_centred": centred, "spread_floor": [k for k in centred if floor]}
    cal = lineage.calibrate(parent, refs, X, Y, verdict=verdict)
    return lineage.judge(parent, suspect, X, Y, calibration=cal), cal


def test_another_recipe_is_accused_parent_centred_and_not_suspect_centred(only_likeness):
    refs = [Toy(i) for i in range(1, 7)]
    stranger = Toy(50, recipe=2.5)  # unrelated, trained by another recipe
    child = Toy(51, ancestor=0)
    parent_c, _ = _judge(stranger, [], refs)
    suspect_c, _ = _judge(stranger, ["likeness"], refs)
    assert parent_c.is_lineage is True  # the recipe alone looks like descent
    assert suspect_c.is_lineage is False and suspect_c.decision.p_value > 0.05
    assert len(suspect_c.against["likeness"]) == 6  # one value per reference as the source
    assert "references in the parent's place" in suspect_c.explain()
    for centred in ([], ["likeness"]):
        v, _ = _judge(child, centred, refs)
        assert v.is_lineage is True and v.decision.p_value < 0.005
    # a child of another recipe: the recipe cancels, the descent stands out
    v, _ = _judge(Toy(52, recipe=2.5, ancestor=0), ["likeness"], refs)
    assert v.is_lineage is True


def test_each_reference_is_judged_against_the_others_in_the_parents_place(only_likeness):
    refs = [Toy(i) for i in range(1, 7)]
    refs[2].ancestor = 0  # a "reference" that in truth descends from the parent
    _, cal = _judge(Toy(60), ["likeness"], refs)
    assert [r.is_lineage for r in cal.references] == [False, False, True, False, False, False]
    # a reference is never its own source: five values against each
    assert all(r.decision.n_references == 5 for r in cal.references)


def test_a_black_box_reference_is_no_source(only_likeness):
    class Box:  # a reference only answered through an API: no gradient, no weights
        ident, recipe, ancestor = 7, 0.0, None

        def __call__(self, x):
            return refs[0](x)

    refs = [Toy(i) for i in range(1, 7)]
    box = Box()
    _, cal = _judge(Toy(61), ["likeness"], [*refs[1:], box])
    assert [s.index for s in cal.sources] == [0, 1, 2, 3, 4]


def test_an_unknown_kind_is_refused_in_one_line(only_likeness):
    with pytest.raises(LineageError, match="suspect_centred: unknown evidence 'closenes'"):
        _judge(Toy(62), ["closenes"], [Toy(i) for i in range(1, 7)])
    with pytest.raises(LineageError, match="spread_floor: unknown evidence 'basn'"):
        lineage.calibrate(
            Toy(0), [Toy(1)], X, Y, verdict={"suspect_centred": [], "spread_floor": ["basn"]}
        )


def _solver(ident: int, right: bool) -> Toy:
    """A toy model answering class 1 where x0 > 0 (right: accuracy 1 on XC, YC), or
    always class 0 (half the points right)."""
    m = Toy(ident)
    with torch.no_grad():
        m.lin.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]) if right else torch.zeros(2, 2))
        m.lin.bias.copy_(torch.zeros(2) if right else torch.tensor([1.0, 0.0]))
    return m


XC = torch.tensor([[-2.0, 0.0], [-1.0, 1.0], [1.0, 0.0], [2.0, 1.0]] * 4)
YC = (XC[:, 0] > 0).long()


def test_a_suspect_unlike_every_reference_gets_a_caveat(only_likeness):
    parent, refs = _solver(0, True), [_solver(i, True) for i in range(1, 7)]
    cal = lineage.calibrate(
        parent, refs, XC, YC, verdict={"suspect_centred": ["likeness"], "spread_floor": []}
    )
    assert cal.accuracy == [1.0] * 6
    weak = lineage.judge(parent, _solver(70, False), XC, YC, calibration=cal)
    assert "accuracy 0.500 lies outside its references' 1.000-1.000" in weak.decision.caveat
    like = lineage.judge(parent, _solver(71, True), XC, YC, calibration=cal)
    assert like.decision.caveat == ""

    class Box:  # the weak model behind an API
        ident, recipe, ancestor = 72, 0.0, None

        def __call__(self, x):
            return _solver(72, False)(x)

    box = lineage.judge(parent, Box(), XC, YC, calibration=cal)
    assert "accuracy" not in box.decision.caveat  # a black box's queries are not spent on it


class TightLikeness(Likeness):
    """Likeness, except that a `tight` suspect's six sources agree to within 0.05 by chance,
    and a suspect `near` a source sits 0.6 closer to it (an independent parent that happens
    to lie near the suspect's own parent, as on the CIFAR-10 recipe zoo)."""

    def measure(self, source_ident, parent, suspect, conf):
        m = suspect.model
        if not getattr(m, "tight", False):
            return super().measure(source_ident, parent, suspect, conf)
        near = 0.6 if getattr(m, "near", None) == source_ident else 0.0
        descends = 3.0 if m.ancestor == source_ident else 0.0
        return LikeResult(0.01 * source_ident + near + descends)


def test_the_references_own_spread_floors_a_suspects_sources_sd(monkeypatch):
    from lineage.evaluate.verdict import prediction_p

    evidence.kinds()
    kind = TightLikeness()
    kind._rank = 1
    monkeypatch.setattr(evidence, "_KINDS", {"likeness": kind})
    refs = [Toy(i) for i in range(1, 7)]
    stranger = Toy(70)
    stranger.tight, stranger.near = True, 0
    v, cal = _judge(stranger, ["likeness"], refs, floor=True)
    # the known answer: each reference i as the suspect, its five sources j != i
    var = []
    for i in range(1, 7):
        vals = [0.3 * math.sin(13.0 * j + 7.0 * i) for j in range(1, 7) if j != i]
        mean = sum(vals) / 5
        var.append(sum((x - mean) ** 2 for x in vals) / 4)
    assert cal.spread["likeness"] == pytest.approx(math.sqrt(sum(var) / 6))
    assert v.decision.sd_floor == {"likeness": cal.spread["likeness"]}
    # six sources within 0.05 of each other make 0.6 look like 28 sds without the floor
    assert prediction_p(0.6, v.decision.against["likeness"]) < 1e-5
    assert v.is_lineage is False and v.decision.p_value > 0.005
    assert v.decision.p["likeness"] == pytest.approx(
        prediction_p(0.6, v.decision.against["likeness"], cal.spread["likeness"])
    )
    child = Toy(71, ancestor=0)
    child.tight = True
    assert _judge(child, ["likeness"], refs, True)[0].is_lineage is True  # descent still stands out

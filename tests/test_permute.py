import math

import pytest
import torch

from lineage import models
from lineage.errors import LineageError
from lineage.evaluate.alignment import spec_of
from lineage.modifications import derive
from lineage.training import predict

ARCHS = [("mlp", {}), ("lenet", {}), ("vgg11", {"width": 0.125}), ("resnet18", {"width": 0.125})]


def parent(name, kw, seed=0):
    torch.manual_seed(seed)
    m = models.build(name, 10, 1, 8, **kw)
    m.train()(torch.rand(32, 1, 8, 8))  # BN running statistics that are not 0/1
    return m.eval()


@pytest.mark.parametrize("name,kw", ARCHS)
def test_permute_keeps_the_function_and_changes_every_group(digits_dm, name, kw):
    p = parent(name, kw)
    before = {k: v.clone() for k, v in p.state_dict().items()}
    d = derive(p, digits_dm, {"name": "permute"}, 1.0, seed=3)
    x = digits_dm.test.x
    assert (predict(d.model, x) - predict(p, x)).abs().max() <= 1e-5
    assert d.effect["max_output_diff"] <= 1e-5
    n = len(spec_of(p))
    assert d.effect["permuted_groups"] == d.effect["groups_total"] == n
    assert len(d.record["permuted"]) == n
    for g in spec_of(p):  # every group's producing weight moved
        key = g.axes[0].key
        assert not torch.equal(d.model.state_dict()[key], before[key]), key
    assert all(torch.equal(p.state_dict()[k], v) for k, v in before.items())  # parent intact


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5])
def test_ratio_is_the_fraction_of_groups(digits_dm, ratio):
    p = parent("vgg11", {"width": 0.125})
    d = derive(p, digits_dm, {"name": "permute"}, ratio, seed=0)
    n = len(spec_of(p))
    assert d.effect["permuted_groups"] == math.ceil(ratio * n) == len(d.record["permuted"])
    changed = sum(not torch.equal(v, p.state_dict()[k]) for k, v in d.model.state_dict().items())
    assert (changed == 0) == (ratio == 0.0)


def test_seeded_and_options_checked(digits_dm):
    p = parent("mlp", {})
    a = derive(p, digits_dm, {"name": "permute"}, 1.0, seed=1).model.state_dict()
    b = derive(p, digits_dm, {"name": "permute"}, 1.0, seed=1).model.state_dict()
    c = derive(p, digits_dm, {"name": "permute"}, 1.0, seed=2).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    with pytest.raises(LineageError, match="strength"):
        derive(p, digits_dm, {"name": "permute", "strength": 2}, 1.0, seed=0)

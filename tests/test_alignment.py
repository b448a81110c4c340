import copy

import pytest
import torch

from lineage import models
from lineage.errors import LineageError
from lineage.evaluate.alignment import (
    apply_permutation,
    complete,
    embed,
    group_aliases,
    random_permutations,
    spec_of,
    weight_matching,
)
from lineage.modifications.pruning import shrink

ARCHS = [
    ("mlp", {}, 8),
    ("lenet", {}, 8),
    ("lenet", {}, 28),
    ("vgg11", {"width": 0.125}, 8),
    ("resnet18", {"width": 0.125}, 8),
    ("resnet18", {"width": 0.125}, 32),
]


def model(name, kw, size, seed=0):
    torch.manual_seed(seed)
    m = models.build(name, 10, 1, size, **kw)
    m.train()(torch.rand(32, 1, size, size))  # BN running statistics that are not 0/1
    return m.eval()


def loaded(m, state):
    out = copy.deepcopy(m)
    out.load_state_dict(state)
    return out.eval()


def out(m, size):
    torch.manual_seed(123)
    with torch.no_grad():
        return m(torch.rand(64, 1, size, size))


def test_spec_groups():
    sizes = {n: [(g.name, g.size) for g in spec_of(model(n, kw, s))] for n, kw, s in ARCHS[:5]}
    assert sizes["mlp"] == [("features.1", 128), ("features.3", 128)]
    assert [s for _, s in sizes["lenet"]] == [6, 16, 120, 84]
    assert [s for _, s in sizes["vgg11"]] == [8, 16, 32, 32, 64, 64, 64, 64]
    # resnet18: one residual stream per stage (stem, then each projection) + 8 inner widths
    res = dict(sizes["resnet18"])
    assert len(res) == 12 and res["features.0"] == 8
    assert [res[f"features.{i}.conv1"] for i in range(3, 11)] == [8, 8, 16, 16, 32, 32, 64, 64]
    assert {"features.5.conv2", "features.7.conv2", "features.9.conv2"} <= set(res)
    stream = next(g for g in spec_of(model(*ARCHS[4])) if g.name == "features.0")
    keys = {a.key for a in stream.axes}  # the stage's two blocks write into the stem's group
    assert {
        "features.3.conv2.weight",
        "features.4.bn2.weight",
        "features.5.conv1.weight",
        "features.5.shortcut.0.weight",
    } <= keys
    lenet28 = spec_of(model(*ARCHS[2]))[1]
    assert any(a.key == "features.7.weight" and a.block == 49 for a in lenet28.axes)


@pytest.mark.parametrize("name,kw,size", ARCHS)
def test_random_permutation_keeps_function_and_matching_undoes_it(name, kw, size):
    m = model(name, kw, size)
    spec = spec_of(m)
    perms = random_permutations(spec, [g.name for g in spec], torch.Generator().manual_seed(1))
    state = apply_permutation(spec, m.state_dict(), perms)
    p = loaded(m, state)
    assert (out(p, size) - out(m, size)).abs().max() < 1e-5
    assert all(not torch.equal(perms[g.name], torch.arange(g.size)) for g in spec if g.size > 1)
    learnt = [k for k, _ in m.named_parameters()]
    back = apply_permutation(spec, state, weight_matching(spec, m.state_dict(), state, learnt))
    assert all(torch.equal(back[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("name,kw,size", [ARCHS[0], ARCHS[1], ARCHS[3], ARCHS[4]])
def test_alignment_of_an_unrelated_model_keeps_its_function(name, kw, size):
    a, b = model(name, kw, size, seed=0), model(name, kw, size, seed=1)
    spec = spec_of(a)
    learnt = [k for k, _ in a.named_parameters()]
    perms = weight_matching(spec, a.state_dict(), b.state_dict(), learnt)
    aligned = loaded(b, apply_permutation(spec, b.state_dict(), perms))
    assert (out(aligned, size) - out(b, size)).abs().max() < 1e-5

    # it moved b's units towards a's: the weights are closer than before
    def dist(x):
        return sum(float((x.state_dict()[k] - a.state_dict()[k]).pow(2).sum()) for k in learnt)

    assert dist(aligned) < dist(b)


@pytest.mark.parametrize("name,kw,size", [ARCHS[0], ARCHS[2], ARCHS[3], ARCHS[4]])
@pytest.mark.parametrize("with_record", [True, False])
def test_embed_structured_pruned_keeps_its_function(name, kw, size, with_record):
    m = model(name, kw, size)
    small, kept = shrink(m, 0.5)
    spec = spec_of(m)
    state, present = embed(
        spec, spec_of(small), m.state_dict(), small.state_dict(), kept if with_record else None
    )
    assert (out(loaded(m, state), size) - out(small, size)).abs().max() < 1e-5
    # removed units take the parent's own parameters: still the pruned model's function
    filled = complete(spec, state, m.state_dict(), present)
    assert (out(loaded(m, filled), size) - out(small, size)).abs().max() < 1e-5
    k, idx = next(iter(kept.items()))
    w, parent_w = filled[f"{k}.weight"], m.state_dict()[f"{k}.weight"]
    assert int(present[k].sum()) == len(idx) < len(present[k])
    assert torch.equal(w[~present[k]], parent_w[~present[k]])
    if with_record:  # kept units sit where they were in the parent
        assert torch.equal(present[k].nonzero().flatten(), torch.tensor(idx))
        assert torch.equal(w[idx], small.state_dict()[f"{k}.weight"])


def test_embed_rejects_what_cannot_map():
    m = model("mlp", {}, 8)
    bigger = models.build("mlp", 10, 1, 8, hidden=[200, 128])
    with pytest.raises(LineageError, match="features.1"):
        embed(spec_of(m), spec_of(bigger), m.state_dict(), bigger.state_dict())
    small, kept = shrink(m, 0.5)
    with pytest.raises(LineageError, match="features.9"):
        embed(
            spec_of(m), spec_of(small), m.state_dict(), small.state_dict(), {"features.9": [0, 1]}
        )
    with pytest.raises(LineageError, match="distinct"):
        embed(
            spec_of(m),
            spec_of(small),
            m.state_dict(),
            small.state_dict(),
            {"features.1": [0] * len(kept["features.1"])},
        )


def test_group_aliases_name_bn_and_producer():
    alias = group_aliases(spec_of(model("vgg11", {"width": 0.125}, 8)))
    assert alias["features.0"] == alias["features.1"] == "features.0"


def test_units_that_reach_an_unknown_layer_are_left_out_and_said_so():
    from lineage.adapters import permutation_spec

    m = model("mlp", {}, 8)
    m.features.append(torch.nn.LSTM(4, 4))
    spec = permutation_spec(m)  # never raises: aligns what it can
    assert [g.name for g in spec.groups] == ["features.1"]  # the group before stays
    assert "features.3: features.5: LSTM has no permutation rule" in spec.reason

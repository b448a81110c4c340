"""Narrowing a model: keep some units of its permutation groups, remove the rest physically.

Structured pruning removes whole hidden units; the permutation groups of the fx graph
(lineage.adapters.permutation_spec) say which tensor entries each unit owns, for any model
the graph walk can follow. `narrow` slices every tensor a kept group touches and updates
the layers' sizes. A model file records the kept widths (`arch["narrow"]`), so loading
builds the full architecture and narrows it to those widths before reading the weights.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..adapters import Group, Spec, permutation_spec
from ..errors import LineageError

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def prunable(spec: Spec, model: nn.Module) -> list[Group]:
    """Groups with exactly one producing Linear/Conv: removing a unit there removes one
    filter. Groups several layers write into (residual streams) are left whole, as the
    inner widths of residual blocks carry the pruning (the usual practice)."""
    mods = dict(model.named_modules())
    out = []
    for g in spec.groups:
        producers = [
            a
            for a in g.axes
            if a.dim == 0
            and a.key.endswith(".weight")
            and isinstance(mods.get(a.key.rsplit(".", 1)[0]), LAYERS)
        ]
        if len(producers) == 1 and producers[0].key == f"{g.name}.weight":
            out.append(g)
    return out


def narrow(
    model: nn.Module, kept: Mapping[str, Sequence[int]], spec: Spec | None = None
) -> nn.Module:
    """A copy of `model` with only the `kept` units (indices, per group name) of each group
    named; every other group stays whole."""
    spec = spec if spec is not None else permutation_spec(model)
    groups = {g.name: g for g in spec.groups}
    small = copy.deepcopy(model)
    state = small.state_dict()
    new = dict(state)
    for name, idx in kept.items():
        g = groups.get(name)
        if g is None:
            raise LineageError(f"narrow: {name!r} is not a permutation group of the model")
        # index tensors on the CPU, also when the model is built on the meta device
        k = torch.as_tensor(list(idx), dtype=torch.long, device="cpu")
        if (
            len(k) == 0
            or len(set(k.tolist())) != len(k)
            or int(k.min()) < 0
            or int(k.max()) >= g.size
        ):
            raise LineageError(f"narrow: kept units of {name} must be distinct, in 0..{g.size - 1}")
        for a in g.axes:
            t = new[a.key]
            seg = g.size * a.block
            cpu = torch.device("cpu")
            units = (k[:, None] * a.block + torch.arange(a.block, device=cpu)).reshape(-1)
            index = torch.cat(
                [
                    torch.arange(a.offset, device=cpu),
                    units + a.offset,
                    torch.arange(a.offset + seg, t.shape[a.dim], device=cpu),
                ]
            )
            new[a.key] = t.index_select(a.dim, index.to(t.device))
    for key, t in new.items():
        if t is not state[key]:
            _set(small, key, t)
    for m in small.modules():
        _resize(m)
    return small


def _set(model: nn.Module, key: str, t: torch.Tensor) -> None:
    owner, _, leaf = key.rpartition(".")
    mod = model.get_submodule(owner) if owner else model
    if leaf in mod._parameters:
        old = mod._parameters[leaf]
        mod._parameters[leaf] = nn.Parameter(
            t.clone(), requires_grad=bool(old is not None and old.requires_grad)
        )
    else:
        mod._buffers[leaf] = t.clone()


def _resize(m: nn.Module) -> None:
    """A layer's size attributes, from its (narrowed) tensors."""
    if isinstance(m, nn.Linear):
        m.out_features, m.in_features = m.weight.shape
    elif isinstance(m, nn.Conv1d | nn.Conv2d):
        m.out_channels = m.weight.shape[0]
        m.in_channels = m.weight.shape[1] * m.groups
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        m.num_features = len(m.running_mean) if m.running_mean is not None else m.weight.shape[0]
    elif isinstance(m, nn.LayerNorm) and m.weight is not None:
        m.normalized_shape = (m.weight.shape[0],)
    elif isinstance(m, nn.Embedding):
        m.embedding_dim = m.weight.shape[1]


def to_widths(model: nn.Module, widths: Mapping[str, int]) -> nn.Module:
    """The structure of a narrowed model (its first `width` units per group), for loading
    weights saved from one."""
    return narrow(model, {g: range(int(n)) for g, n in widths.items()})

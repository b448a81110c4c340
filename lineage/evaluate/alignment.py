"""Permutation symmetry of hidden units, and weight matching to undo it.

Reordering the hidden units of a layer (the rows of its weight, its bias, the matching
BatchNorm entries, and the columns of every layer that reads it) leaves the network's
function unchanged. Two models of one lineage can therefore sit in "different" places of
weight space only because their units are listed in another order; the same-basin test
must see through that (and the `permute` attack exploits it).

A *spec* lists the permutation groups of a model: each group is one set of units that must
be reordered together, with every (tensor, dimension) it touches. Specs are derived by
walking `model.features` and `model.head`, so they follow the layers actually built:

- Linear/Conv2d outputs start a new group; their inputs read the current group.
- BatchNorm belongs to the group it normalises.
- Flatten after conv maps channel c onto the `h*w` consecutive inputs c*h*w .. c*h*w+h*w-1
  of the next Linear, so a channel permutation moves whole blocks there.
- A residual BasicBlock with an identity shortcut must write back into the same group it
  reads (the residual stream of a stage shares one permutation); a projection shortcut
  starts a new stream group. The block's inner width is its own group.

Weight matching (Ainsworth et al., "Git Re-Basin") then picks, group by group, the
permutation that maximises the summed inner products between the parent's and the
suspect's weights, with `scipy.optimize.linear_sum_assignment`, holding the other groups
fixed and iterating until no group changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..errors import LineageError
from ..models.resnet import BasicBlock

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Axis:
    """Dimension `dim` of tensor `key` is indexed by the group's units; each unit covers
    `block` consecutive entries (conv channels flattened into a Linear)."""

    key: str
    dim: int
    block: int = 1


@dataclass(frozen=True)
class Group:
    """Hidden units that permute together. `name` is the module that produces them."""

    name: str
    size: int
    axes: tuple[Axis, ...]


class _Walker:
    """Collects groups while walking the layers in forward order."""

    def __init__(self) -> None:
        self.axes: dict[str, list[Axis]] = {}
        self.sizes: dict[str, int] = {}
        self.cur: str | None = None  # group of the running activation (None: the input)
        self.flat = False  # a Flatten sits between the current group and the next Linear

    def new(self, name: str, size: int) -> str:
        self.axes[name], self.sizes[name] = [], size
        return name

    def add(self, group: str | None, key: str, dim: int, block: int = 1) -> None:
        if group is not None:
            self.axes[group].append(Axis(key, dim, block))

    def read(self, prefix: str, in_dim: int) -> None:
        """A Linear/Conv at `prefix` reads the current group on weight dim 1."""
        block = 1
        if self.cur is not None and self.flat:
            n = self.sizes[self.cur]
            if in_dim % n:
                raise LineageError(f"{prefix}: {in_dim} inputs do not split into {n} channels")
            block = in_dim // n
        self.add(self.cur, f"{prefix}.weight", 1, block)
        self.flat = False

    def write(self, prefix: str, layer: nn.Conv2d | nn.Linear, group: str | None = None) -> str:
        """The layer's outputs: a new group, or an existing one (residual stream)."""
        size = layer.weight.shape[0]
        g = group if group is not None else self.new(prefix, size)
        self.add(g, f"{prefix}.weight", 0)
        if layer.bias is not None:
            self.add(g, f"{prefix}.bias", 0)
        return g

    def norm(self, prefix: str, bn: nn.Module, group: str | None) -> None:
        for k, _ in list(bn.named_parameters(recurse=False)) + list(bn.named_buffers()):
            if k != "num_batches_tracked":
                self.add(group, f"{prefix}.{k}", 0)

    def layer(self, prefix: str, m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            self.read(prefix, m.in_features)
            self.cur = self.write(prefix, m)
        elif isinstance(m, nn.Conv2d):
            if m.groups != 1:
                raise LineageError(f"{prefix}: grouped convolutions have no permutation rule")
            self.read(prefix, m.in_channels)
            self.cur = self.write(prefix, m)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            self.norm(prefix, m, self.cur)
        elif isinstance(m, nn.Flatten):
            self.flat = self.cur is not None
        elif isinstance(m, BasicBlock):
            self.block(prefix, m)
        elif isinstance(m, nn.Sequential):
            for name, child in m.named_children():
                self.layer(f"{prefix}.{name}", child)
        elif not isinstance(
            m,
            nn.ReLU | nn.MaxPool2d | nn.AvgPool2d | nn.AdaptiveAvgPool2d | nn.Identity | nn.Dropout,
        ):
            raise LineageError(f"{prefix}: no permutation rule for {type(m).__name__}")

    def block(self, prefix: str, b: BasicBlock) -> None:
        stream = self.cur
        self.layer(f"{prefix}.conv1", b.conv1)
        self.layer(f"{prefix}.bn1", b.bn1)
        self.read(f"{prefix}.conv2", b.conv2.in_channels)
        if len(b.shortcut) == 0:  # identity: conv2 must write into the stream it read
            out = self.write(f"{prefix}.conv2", b.conv2, group=stream)
        else:
            out = self.write(f"{prefix}.conv2", b.conv2)
            self.cur = stream
            proj = b.shortcut[0]
            assert isinstance(proj, nn.Conv2d)
            self.read(f"{prefix}.shortcut.0", proj.in_channels)
            self.write(f"{prefix}.shortcut.0", proj, group=out)
            self.norm(f"{prefix}.shortcut.1", b.shortcut[1], out)
        self.norm(f"{prefix}.bn2", b.bn2, out)
        self.cur = out


def spec_of(model: nn.Module) -> list[Group]:
    """The permutation groups of a model built from `.features` (nn.Sequential) + `.head`.

    Raises LineageError when some layer has no permutation rule (then no alignment route).
    """
    features, head = getattr(model, "features", None), getattr(model, "head", None)
    if not isinstance(features, nn.Sequential) or not isinstance(head, nn.Linear):
        raise LineageError(
            f"{type(model).__name__}: needs .features (Sequential) and a "
            "Linear .head for permutation alignment"
        )
    w = _Walker()
    w.layer("features", features)
    w.read("head", head.in_features)
    return [Group(n, w.sizes[n], tuple(w.axes[n])) for n in w.axes]


def _index(perm: torch.Tensor, block: int) -> torch.Tensor:
    """Unit permutation -> entry permutation when each unit spans `block` entries."""
    if block == 1:
        return perm
    return (perm[:, None] * block + torch.arange(block, device=perm.device)).reshape(-1)


def _axes_by_key(spec: Sequence[Group]) -> dict[str, list[tuple[Axis, str]]]:
    out: dict[str, list[tuple[Axis, str]]] = {}
    for g in spec:
        for a in g.axes:
            out.setdefault(a.key, []).append((a, g.name))
    return out


def _permute(
    t: torch.Tensor,
    axes: Iterable[tuple[Axis, str]],
    perms: Mapping[str, torch.Tensor],
    skip: int | None = None,
) -> torch.Tensor:
    for a, g in axes:
        if a.dim != skip and g in perms:
            t = t.index_select(a.dim, _index(perms[g].to(t.device), a.block))
    return t


def apply_permutation(
    spec: Sequence[Group], state: Mapping[str, torch.Tensor], perms: Mapping[str, torch.Tensor]
) -> State:
    """A new state dict with every group's units reordered: unit i of group g becomes
    old unit perms[g][i]. Groups missing from `perms` stay as they are."""
    by_key = _axes_by_key(spec)
    return {k: _permute(v, by_key.get(k, ()), perms) for k, v in state.items()}


def _rows(t: torch.Tensor, a: Axis, n: int) -> torch.Tensor:
    """Tensor as (units, everything else) along axis `a`."""
    return t.movedim(a.dim, 0).reshape(n, -1)


def weight_matching(
    spec: Sequence[Group],
    target: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    keys: Iterable[str] | None = None,
    rounds: int = 20,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Permutations that bring `state`'s units onto `target`'s (same shapes).

    Only tensors in `keys` (default: all that the spec touches) enter the similarity; pass
    the learnt parameters, since BN running statistics mirror them. Each round visits the
    groups in a seeded random order and solves one linear assignment per group; it stops
    when a whole round changes nothing (the objective never decreases, so this is a fixed
    point) or after `rounds` rounds.
    """
    threads = torch.get_num_threads()
    # These matrices are small: a parallel region costs more than it saves, and far more
    # on a busy machine, where a worker thread waits to be scheduled at every step.
    torch.set_num_threads(1)
    try:
        return _match(spec, target, state, keys, rounds, seed)
    finally:
        torch.set_num_threads(threads)


def _match(
    spec: Sequence[Group],
    target: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    keys: Iterable[str] | None,
    rounds: int,
    seed: int,
) -> dict[str, torch.Tensor]:
    by_key = _axes_by_key(spec)
    use = set(by_key) if keys is None else set(keys) & set(by_key)
    # float64 on the CPU once: the similarities sum many products of small weights, and
    # these tensors are small enough that copies cost less than per-step conversions.
    tgt = {k: target[k].detach().double().cpu() for k in use}
    src = {k: state[k].detach().double().cpu() for k in use}
    rows = {(g.name, a): _rows(tgt[a.key], a, g.size) for g in spec for a in g.axes if a.key in use}
    perms = {g.name: torch.arange(g.size) for g in spec}
    gen = torch.Generator().manual_seed(seed)
    for _ in range(rounds):
        changed = False
        for i in torch.randperm(len(spec), generator=gen).tolist():
            g = spec[i]
            score = torch.zeros(g.size, g.size, dtype=torch.float64)
            for a in g.axes:
                if a.key in use:
                    other = _permute(src[a.key], by_key[a.key], perms, skip=a.dim)
                    score += rows[g.name, a] @ _rows(other, a, g.size).T
            _, col = linear_sum_assignment(score.numpy(), maximize=True)
            new = torch.as_tensor(col, dtype=torch.long)
            if not torch.equal(new, perms[g.name]):
                changed, perms[g.name] = True, new
        if not changed:
            break
    return perms


def random_permutations(
    spec: Sequence[Group], groups: Iterable[str], generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """A random reordering of each named group; never the identity when size > 1."""
    sizes = {g.name: g.size for g in spec}
    out = {}
    for name in groups:
        n = sizes[name]
        p = torch.randperm(n, generator=generator)
        while n > 1 and torch.equal(p, torch.arange(n)):
            p = torch.randperm(n, generator=generator)
        out[name] = p
    return out


def _fill(key: str) -> float:
    # A removed BN channel is given variance 1 so that it stays finite before re-estimation.
    return 1.0 if key.endswith("running_var") else 0.0


def group_aliases(spec: Sequence[Group]) -> dict[str, str]:
    """Module names that identify a group: every module writing or normalising its units
    (e.g. "features.0" for a conv and "features.1" for its BatchNorm)."""
    out = {}
    for g in spec:
        for a in g.axes:
            if a.dim == 0:
                out[a.key.rsplit(".", 1)[0]] = g.name
    return out


def embed(
    parent_spec: Sequence[Group],
    suspect_spec: Sequence[Group],
    parent_state: Mapping[str, torch.Tensor],
    suspect_state: Mapping[str, torch.Tensor],
    kept: Mapping[str, Sequence[int]] | None = None,
) -> tuple[State, dict[str, torch.Tensor]]:
    """Map a structurally pruned suspect (fewer units per group) into the parent's shapes.

    `kept` maps a layer name (any module of the group, see `group_aliases`, optionally
    with a ".weight" suffix) to the parent indices of the units the suspect kept, in the
    suspect's order. Groups without an entry put their units first; the caller then lets
    weight matching find where they belong. Removed units are zero (variance 1 for BN),
    which is exactly how the pruned network computes. Returns the state and, per group,
    which of the parent's units the suspect has (a bool mask; see `complete`). Raises
    LineageError when the shapes cannot be reconciled (more units than the parent, or
    another non-unit dimension).
    """
    sizes = {g.name: g.size for g in suspect_spec}
    if [g.name for g in parent_spec] != list(sizes):
        raise LineageError("suspect's layers are arranged differently from the parent's")
    alias = group_aliases(parent_spec)
    index: dict[str, torch.Tensor] = {}
    for layer, idx in (kept or {}).items():
        name = alias.get(layer.removesuffix(".weight"), layer)
        if name not in sizes:
            raise LineageError(
                f"kept-channel record names {layer!r}, which is not a hidden "
                f"layer of the parent (known: {sorted(alias)})"
            )
        index[name] = torch.as_tensor(list(idx), dtype=torch.long)
    for g in parent_spec:
        k = sizes[g.name]
        if k > g.size:
            raise LineageError(f"group {g.name}: suspect has {k} units, parent {g.size}")
        i = index.setdefault(g.name, torch.arange(k))
        if (
            len(i) != k
            or len(set(i.tolist())) != k
            or (k and not 0 <= int(i.min()) <= int(i.max()) < g.size)
        ):
            raise LineageError(
                f"kept indices for {g.name} are not {k} distinct units in 0..{g.size - 1}"
            )
    by_key = _axes_by_key(parent_spec)
    out: State = {}
    for key, t in suspect_state.items():
        ref = parent_state[key]
        dims = {a.dim: (a, name) for a, name in by_key.get(key, ())}
        for d in range(t.dim()):
            if d in dims:
                a, name = dims[d]
                pos = _index(index[name].to(t.device), a.block)
                shape = list(t.shape)
                shape[d] = ref.shape[d]
                t = torch.full(shape, _fill(key), dtype=t.dtype, device=t.device).index_copy(
                    d, pos, t
                )
            elif t.shape[d] != ref.shape[d]:
                raise LineageError(
                    f"{key}: dimension {d} is {t.shape[d]} in the suspect, "
                    f"{ref.shape[d]} in the parent, and is not a hidden unit"
                )
        out[key] = t
    present = {}
    for g in parent_spec:
        mask = torch.zeros(g.size, dtype=torch.bool)
        mask[index[g.name]] = True
        present[g.name] = mask
    return out, present


def complete(
    spec: Sequence[Group],
    state: Mapping[str, torch.Tensor],
    parent_state: Mapping[str, torch.Tensor],
    present: Mapping[str, torch.Tensor],
) -> State:
    """Give each removed unit the parent's own parameters (its weight rows, bias and BN
    entries), keeping zero every weight that reads it.

    Nothing reads a removed unit, so its own parameters do not change what the suspect
    computes: any value is the same model. As permutation alignment picks, among equal
    models, the one nearest the parent, so does this. With all-zero units instead, the path
    would shrink a removed unit's input and output together, so its contribution would fall
    as (1 - a)^2 rather than linearly, and that curvature alone shows up as a barrier.
    """
    out = dict(state)
    for g in spec:
        gone = ~present[g.name]
        if not gone.any():
            continue
        for a in g.axes:
            if a.dim == 0 and a.key in out:
                t = out[a.key].clone()
                t[gone.to(t.device)] = parent_state[a.key][gone.to(t.device)].to(t.dtype)
                out[a.key] = t
    return out

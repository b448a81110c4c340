"""Permutation symmetry of hidden units, and weight matching to undo it.

Reordering the hidden units of a layer (the rows of its weight, its bias, the matching
BatchNorm entries, and the columns of every layer that reads it) leaves the network's
function unchanged. Two models of one lineage can therefore sit in "different" places of
weight space only because their units are listed in another order; the same-basin test
must see through that (and the `permute` attack exploits it).

A *spec* lists the permutation groups of a model: each group is one set of units that must
be reordered together, with every (tensor, dimension) it touches. Specs are derived from the
model's fx graph by `lineage.adapters.permutation_spec`, for any model it can follow.

Weight matching (Ainsworth et al., "Git Re-Basin") then picks, group by group, the
permutation that maximises the summed inner products between the parent's and the
suspect's weights, with `scipy.optimize.linear_sum_assignment`, holding the other groups
fixed and iterating until no group changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..adapters import Axis, Group, permutation_spec
from ..errors import LineageError

State = dict[str, torch.Tensor]


def spec_of(model: nn.Module) -> list[Group]:
    """The permutation groups of `model` (lineage.adapters.permutation_spec, which also
    says what it had to leave out)."""
    return permutation_spec(model).groups


def _index(perm: torch.Tensor, block: int) -> torch.Tensor:
    """Unit permutation -> entry permutation when each unit spans `block` entries."""
    if block == 1:
        return perm
    return (perm[:, None] * block + torch.arange(block, device=perm.device)).reshape(-1)


def _entries(perm: torch.Tensor, a: Axis, length: int) -> torch.Tensor:
    """The index along a whole dimension of `length` that applies `perm` to axis a's
    entries [offset, offset + units * block) and leaves the others in place."""
    seg = a.offset + _index(perm, a.block)
    if a.offset == 0 and len(seg) == length:
        return seg
    idx = torch.arange(length, device=perm.device)
    idx[a.offset : a.offset + len(seg)] = seg
    return idx


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
            t = t.index_select(a.dim, _entries(perms[g].to(t.device), a, t.shape[a.dim]))
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
    return t.movedim(a.dim, 0)[a.offset : a.offset + n * a.block].reshape(n, -1)


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
    parent_sizes = {g.name: g.size for g in parent_spec}
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
    p_axes, s_axes = _axes_by_key(parent_spec), _axes_by_key(suspect_spec)
    out: State = {}
    for key, t in suspect_state.items():
        ref = parent_state[key]
        for d in range(t.dim()):
            mine = [(a, name) for a, name in p_axes.get(key, ()) if a.dim == d]
            if not mine:
                if t.shape[d] != ref.shape[d]:
                    raise LineageError(
                        f"{key}: dimension {d} is {t.shape[d]} in the suspect, "
                        f"{ref.shape[d]} in the parent, and is not a hidden unit"
                    )
                continue
            theirs = {name: a for a, name in s_axes.get(key, ()) if a.dim == d}
            src, dst = [], []
            seen_s = torch.zeros(t.shape[d], dtype=torch.bool)
            seen_p = torch.zeros(ref.shape[d], dtype=torch.bool)
            for a, name in mine:  # each group's units, to their kept places
                b = theirs.get(name)
                if b is None or b.block != a.block:
                    raise LineageError(f"{key}: the suspect's layers are laid out differently")
                src.append(b.offset + torch.arange(sizes[name] * b.block))
                dst.append(a.offset + _index(index[name], a.block))
                seen_s[src[-1]] = True
                seen_p[a.offset : a.offset + parent_sizes[name] * a.block] = True
            # entries no group owns (e.g. a layer the alignment left out) keep their order
            rest_s, rest_p = (~seen_s).nonzero().squeeze(1), (~seen_p).nonzero().squeeze(1)
            if len(rest_s) != len(rest_p):
                raise LineageError(f"{key}: dimension {d} cannot be mapped onto the parent's")
            src.append(rest_s)
            dst.append(rest_p)
            shape = list(t.shape)
            shape[d] = ref.shape[d]
            rows = t.index_select(d, torch.cat(src).to(t.device))
            t = torch.full(shape, _fill(key), dtype=t.dtype, device=t.device).index_copy(
                d, torch.cat(dst).to(t.device), rows
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

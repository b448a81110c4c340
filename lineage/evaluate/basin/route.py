"""The route: the suspect's parameters in the parent's layout, or why there is none.

Units are aligned by weight matching (so a `permute` attack cannot hide lineage),
structurally pruned suspects are mapped back into the parent's widths (kept units at their
recorded indices, or placed by matching; nothing reads a removed unit, see
alignment.complete), and a suspect with another head (transfer) is compared on its trunk:
the path ends at the suspect's trunk under a head fitted for the parent's task (path.fit_head).
Integer buffers (num_batches_tracked) stay the parent's.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ...adapters import Spec, arch_name, permutation_spec
from ...errors import LineageError
from ...runtime import device_of
from ..alignment import State, apply_permutation, complete, embed, spec_of, weight_matching
from .settings import DeterminationConf


@dataclass
class Route:
    """How the suspect maps onto the parent's parameters."""

    name: str  # basin|trunk [+pruned-map|+pruned-match][+aligned]
    target: State  # the suspect's tensors, in the parent's keys, shapes and unit order
    keys: list[str]  # tensors that move along the path (the rest stay the parent's)
    aligned: bool
    trunk: bool = False  # the head in `target` is the parent's, to be refitted (fit_head)
    head: str | None = None  # the parent's head module
    alignment: str = ""  # what alignment could not cover, and why ("" when nothing)


def recorded(record: Mapping[str, Any] | None, key: str) -> list[Any]:
    """Every value of `key` in a lineage record and, for chains, in its steps' records
    (lineage.modifications.chain: {"chain": [{..., "record": {...}}]}), in chain order."""
    if not isinstance(record, Mapping):
        return []
    out = [record[key]] if record.get(key) is not None else []
    for step in record.get("chain") or ():
        if isinstance(step, Mapping):
            out += recorded(step.get("record"), key)
    return out


def kept_channels(record: Mapping[str, Any] | None) -> dict[str, list[int]] | None:
    """Kept-channel indices into the parent's units, {layer: indices}, from the record of a
    structured pruning (lineage.modifications.pruning). Successive prunings in a chain
    index into the previous model, so their indices are composed."""
    found = recorded(record, "kept_channels")
    if not found:
        return None
    kept = {k: list(v) for k, v in found[0].items()}
    for later in found[1:]:
        for k, idx in later.items():
            prev = kept.get(k)
            if prev is not None and not all(0 <= i < len(prev) for i in idx):
                raise LineageError(
                    f"suspect record: kept_channels[{k!r:.60}] of a later chain step indexes "
                    f"past the {len(prev)} units the step before kept"
                )
            kept[k] = [prev[i] for i in idx] if prev is not None else list(idx)
    return kept


def check_record(record: Any, depth: int = 0) -> Mapping[str, Any] | None:
    """A lineage record as the methods read it, or LineageError. It comes from the
    suspect's file, so its shape is checked before anything indexes with it: a mapping;
    `chain` a list of steps, each a mapping whose `record` is checked the same way (at
    most 16 deep); `kept_channels` a mapping of layer names to lists of unit indices."""
    if record is None:
        return None
    if not isinstance(record, Mapping):
        raise LineageError(f"suspect record: must be a mapping, not {type(record).__name__}")
    if depth > 16:
        raise LineageError("suspect record: chain nested more than 16 deep")
    kept = record.get("kept_channels")
    if kept is not None:
        if not isinstance(kept, Mapping) or len(kept) > 4096:
            raise LineageError("suspect record: kept_channels must map layer names to indices")
        for layer, idx in kept.items():
            if not (
                isinstance(layer, str)
                and isinstance(idx, list | tuple)
                and len(idx) <= 2**20
                and all(
                    isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**31 for i in idx
                )
            ):
                raise LineageError(
                    f"suspect record: kept_channels[{layer!r:.60}] must be a list of unit indices"
                )
    chain = record.get("chain")
    if chain is not None:
        if not isinstance(chain, list | tuple) or len(chain) > 1024:
            raise LineageError("suspect record: chain must be a list of steps")
        for step in chain:
            if not isinstance(step, Mapping):
                raise LineageError("suspect record: each chain step must be a mapping")
            check_record(step.get("record"), depth + 1)
    return record


def plan(
    parent: nn.Module,
    suspect: nn.Module,
    s: DeterminationConf,
    record: Mapping[str, Any] | None = None,
    head: str | None = None,
    spec: Spec | None = None,
) -> Route | str:
    """The suspect's parameters in the parent's layout, or the reason there is no route.

    `head` is the parent's head module (adapters.find_head; None: no trunk route), `spec`
    the parent's permutation groups when already known (they depend on the parent only)."""
    pname, sname = arch_name(parent), arch_name(suspect)
    if pname != sname:
        return f"architectures differ (parent {pname}, suspect {sname})"
    P, S = parent.state_dict(), suspect.state_dict()
    missing, extra = sorted(P.keys() - S.keys()), sorted(S.keys() - P.keys())
    if missing or extra:
        return f"the models' layers differ (missing {missing[:4]}, extra {extra[:4]})"
    dev = device_of(parent)
    # A new head (transfer to another task) cannot be compared on the parent's task;
    # the trunk can: interpolate features only and read them with the parent's head.
    # A transfer record (`task`) says the same, even when the class counts agree.
    own = (f"{head}.",) if head else ()
    is_head = [k for k in P if own and k.startswith(own)]
    trunk = any(S[k].shape[0] != P[k].shape[0] for k in is_head) or bool(recorded(record, "task"))
    if trunk and not head:
        return "the suspect answers another task and the parent has no Linear head to swap"
    S = {k: v.to(dev) for k, v in S.items() if not (trunk and k in is_head)}
    parts = ["trunk" if trunk else "basin"]
    spec = permutation_spec(parent) if spec is None else spec
    match = s.align
    present: dict[str, torch.Tensor] = {}
    if any(S[k].shape != P[k].shape for k in S):
        kept = kept_channels(record)
        try:
            if not spec.groups:
                raise LineageError(spec.reason or "the parent has no permutation groups")
            S, present = embed(spec.groups, spec_of(suspect), P, S, kept)
        except LineageError as e:
            return f"no weight-space mapping from the suspect's shapes ({e})"
        parts.append("pruned-map" if kept else "pruned-match")
        match = match or not kept  # without a record, matching is what maps the units
    aligned = False
    if match and spec.groups:
        learnt = [k for k, _ in parent.named_parameters() if k in S]
        perms = weight_matching(spec.groups, P, S, learnt, s.align_rounds, s.seed)
        S = apply_permutation(spec.groups, S, perms)
        present = {g: m[perms[g]] for g, m in present.items()}
        aligned = True
        parts.append("aligned")
    if spec.groups and present:
        S = complete(spec.groups, S, P, present)
    if trunk:
        S.update({k: v for k, v in P.items() if k in is_head})
    movable = {k for k, _ in parent.named_parameters()}
    if not s.bn_reestimate:  # the ablation interpolates the running statistics too
        movable |= {k for k, b in parent.named_buffers() if b.is_floating_point()}
    keys = [k for k in P if k in movable]
    note = f"aligned what it could: {spec.reason}" if match and spec.reason else ""
    return Route("+".join(parts), S, keys, aligned, trunk, head, note)


def shared_plan(
    memo: MutableMapping[Any, Any] | None,
    parent: nn.Module,
    suspect: nn.Module,
    s: DeterminationConf,
    record: Mapping[str, Any] | None = None,
    head: str | None = None,
    spec: Spec | None = None,
) -> Route | str:
    """`plan`, made once per pair: `memo` is the pair's (lineage.evaluate.evidence.Suspect
    .memo), so the basin test and the weight distance of one (source, suspect) pair align
    once. The key holds every setting the route depends on; each caller gets its own
    `target` mapping (fit_head replaces the head's tensors in it), the tensors shared."""
    if memo is None:
        return plan(parent, suspect, s, record, head, spec)
    key = ("route", id(parent), id(suspect), id(record), head, s.align, s.align_rounds,
           s.seed, s.bn_reestimate)  # fmt: skip
    if key not in memo:
        memo[key] = plan(parent, suspect, s, record, head, spec)
    route = memo[key]
    return route if isinstance(route, str) else replace(route, target=dict(route.target))

"""Permutation groups of hidden units, derived from a model's torch.fx graph.

Hidden units can be reordered without changing the function; alignment must undo that,
structured pruning removes whole units, and `permute` exploits it. `permutation_spec`
derives the groups from the graph (no per-architecture table): Linear/Conv outputs start a
group, BatchNorm/LayerNorm and element-wise ops keep it, flatten spreads a channel over the
spatial entries that the next Linear reads, residual adds (and weight sharing) merge
groups, and channel concatenation lays groups side by side. A group that reaches an op the
walk cannot follow (attention, reshapes, custom ops) or the output (the class logits) is
left out, so what is aligned is always safe to permute; `Spec.skipped` says what was left
out and why.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn


@dataclass(frozen=True)
class Axis:
    """Entries [offset, offset + size * block) of dimension `dim` of tensor `key` are
    indexed by a group's units; each unit covers `block` consecutive entries (conv
    channels flattened into a Linear)."""

    key: str
    dim: int
    block: int = 1
    offset: int = 0


@dataclass(frozen=True)
class Group:
    """Hidden units that permute together. `name` is the module that first produces them."""

    name: str
    size: int
    axes: tuple[Axis, ...]


@dataclass
class Spec:
    groups: list[Group]
    skipped: list[str] = field(default_factory=list)  # why some units are not aligned

    @property
    def reason(self) -> str:
        return "; ".join(self.skipped)


# An activation's channel layout: segments (group id, units) along its channel dimension,
# and whether it was flattened since (the next Linear then reads h*w entries per unit).
# None: not a layout of permutable units (the input, or after an op we cannot follow).
@dataclass(frozen=True)
class Layout:
    segments: tuple[tuple[int, int], ...]
    flat: bool = False

    @property
    def units(self) -> int:
        return sum(n for _, n in self.segments)


ELEMENTWISE_FUNCS: set[Any] = {
    F.relu,
    F.relu6,
    F.gelu,
    F.silu,
    F.elu,
    F.leaky_relu,
    F.hardswish,
    F.dropout,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    F.sigmoid,
    F.tanh,
    F.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    F.max_pool1d,
    F.avg_pool1d,
}
ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "detach"}
ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.LeakyReLU,
    nn.Hardswish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Dropout,
    nn.Identity,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
NORMS: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
ADDS = {operator.add, torch.add, operator.iadd}


class _Walk:
    """Union-find over groups while walking the fx graph in order."""

    def __init__(self, modules: Mapping[str, nn.Module]):
        self.mods = modules
        self.parent: list[int] = []
        self.names: list[str] = []
        self.sizes: list[int] = []
        self.axes: list[list[Axis]] = []
        self.frozen: dict[int, str] = {}  # root -> why
        self.claims: dict[tuple[str, int, int], int] = {}  # (key, dim, offset) -> group

    def root(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def new(self, name: str, size: int) -> int:
        g = len(self.parent)
        self.parent.append(g)
        self.names.append(name)
        self.sizes.append(size)
        self.axes.append([])
        return g

    def union(self, a: int, b: int) -> None:
        a, b = self.root(a), self.root(b)
        if a == b:
            return
        if self.sizes[a] != self.sizes[b]:
            self.freeze([a, b], "groups of different widths meet")
            return
        a, b = min(a, b), max(a, b)  # the older group names the merged one
        self.parent[b] = a
        self.axes[a] += self.axes[b]
        if b in self.frozen:
            self.frozen.setdefault(a, self.frozen.pop(b))

    def freeze(self, groups: Iterable[int], why: str) -> None:
        for g in groups:
            self.frozen.setdefault(self.root(g), why)

    def add(self, g: int, key: str, dim: int, block: int = 1, offset: int = 0) -> None:
        claim = (key, dim, offset)
        if claim in self.claims:  # a shared module: its units are one group
            self.union(self.claims[claim], g)
            return
        self.claims[claim] = g
        self.axes[self.root(g)].append(Axis(key, dim, block, offset))

    def freeze_layout(self, layout: Layout | None, why: str) -> None:
        if layout is not None:
            self.freeze([g for g, _ in layout.segments], why)

    # ---- layers

    def read(self, prefix: str, layout: Layout | None, in_dim: int) -> None:
        """A Linear/Conv at `prefix` reads `layout` on weight dim 1."""
        if layout is None:
            return
        block = 1
        if layout.flat:
            if in_dim % layout.units:
                self.freeze_layout(layout, f"{prefix}: {in_dim} inputs do not split into units")
                return
            block = in_dim // layout.units
        elif in_dim != layout.units:
            self.freeze_layout(layout, f"{prefix}: reads {in_dim} inputs of {layout.units}")
            return
        offset = 0
        for g, n in layout.segments:
            self.add(g, f"{prefix}.weight", 1, block, offset)
            offset += n * block

    def write(self, prefix: str, layer: nn.Module, size: int) -> Layout:
        g = self.new(prefix, size)
        self.add(g, f"{prefix}.weight", 0)
        if getattr(layer, "bias", None) is not None:
            self.add(g, f"{prefix}.bias", 0)
        return Layout(((g, size),))

    def norm(self, prefix: str, m: nn.Module, layout: Layout | None) -> Layout | None:
        if layout is None:
            return None
        width = m.num_features if isinstance(m, nn.modules.batchnorm._BatchNorm) else None
        if isinstance(m, nn.LayerNorm):
            shape = tuple(m.normalized_shape)
            width = shape[0] if len(shape) == 1 else None
        if layout.flat or width != layout.units or len(layout.segments) != 1:
            self.freeze_layout(layout, f"{prefix}: normalises more than one unit axis")
            return None
        (g, _), keys = layout.segments[0], [k for k, _ in m.named_parameters(recurse=False)]
        keys += [k for k, _ in m.named_buffers(recurse=False) if k != "num_batches_tracked"]
        for k in keys:
            self.add(g, f"{prefix}.{k}", 0)
        return layout

    def module(self, prefix: str, m: nn.Module, layout: Layout | None) -> Layout | None:
        if isinstance(m, nn.Linear):
            self.read(prefix, layout, m.in_features)
            return self.write(prefix, m, m.out_features)
        if isinstance(m, nn.Conv1d | nn.Conv2d):
            if m.groups == 1:
                self.read(prefix, layout, m.in_channels)
                return self.write(prefix, m, m.out_channels)
            depthwise = m.groups == m.in_channels == m.out_channels
            if depthwise and layout is not None and not layout.flat:
                for g, _ in layout.segments:  # channel c reads channel c: one group
                    self.add(g, f"{prefix}.weight", 0)
                    if m.bias is not None:
                        self.add(g, f"{prefix}.bias", 0)
                return layout if len(layout.segments) == 1 else None
            self.freeze_layout(layout, f"{prefix}: grouped convolution")
            return None
        if isinstance(m, nn.Embedding):
            g = self.new(prefix, m.embedding_dim)
            self.add(g, f"{prefix}.weight", 1)
            return Layout(((g, m.embedding_dim),))
        if isinstance(m, NORMS):
            return self.norm(prefix, m, layout)
        if isinstance(m, nn.Flatten):
            return Layout(layout.segments, True) if layout is not None else None
        if isinstance(m, ELEMENTWISE_MODULES):
            return layout
        self.freeze_layout(layout, f"{prefix}: {type(m).__name__} has no permutation rule")
        return None

    def merge(self, a: Layout | None, b: Layout | None, where: str) -> Layout | None:
        """Residual add: both operands' units are the same units."""
        if a is None or b is None or a.flat != b.flat or len(a.segments) != len(b.segments):
            for lay in (a, b):
                self.freeze_layout(lay, f"{where}: adds tensors of different layouts")
            return None
        for (ga, na), (gb, nb) in zip(a.segments, b.segments):
            if na != nb:
                self.freeze([ga, gb], f"{where}: adds tensors of different layouts")
                return None
            self.union(ga, gb)
        return a


def _arg(node: fx.Node, pos: int, key: str) -> Any:
    if len(node.args) > pos:
        return node.args[pos]
    return node.kwargs.get(key)


def _is_batch_size(a: Any) -> bool:
    """`x.size(0)` or `x.shape[0]`: the first dim of a reshape to (batch, -1)."""
    if not isinstance(a, fx.Node):
        return False
    if a.op == "call_method" and a.target == "size":
        return _arg(a, 1, "dim") == 0
    if a.op == "call_function" and a.target is operator.getitem and a.args[1] == 0:
        src = a.args[0]
        return isinstance(src, fx.Node) and src.op == "call_function" and src.target is getattr
    return False


def _flatten_start(n: fx.Node) -> int | None:
    """1 for ops that flatten all but the batch dim, 0 for a full flatten, else None."""
    if (n.op, n.target) in (("call_function", torch.flatten), ("call_method", "flatten")):
        return int(_arg(n, 1, "start_dim") or 0)
    if n.op == "call_method" and n.target in ("view", "reshape") and len(n.args) == 3:
        return 1 if _is_batch_size(n.args[1]) and n.args[2] == -1 else None
    return None


METADATA = {"size", "dim", "shape"}  # reading a tensor's shape does not mix its units


def permutation_spec(model: nn.Module) -> Spec:
    """The permutation groups of `model`, from its fx graph (see the module docstring).
    Never raises: a model that cannot be traced has no groups, and the reason says why."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as e:  # noqa: BLE001  (fx raises many kinds on code it cannot trace)
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return Spec([], [f"the forward pass could not be traced with torch.fx ({msg[:160]})"])
    w = _Walk(dict(model.named_modules()))
    lay: dict[fx.Node, Layout | None] = {}

    def of(a: Any) -> Layout | None:
        return lay.get(a) if isinstance(a, fx.Node) else None

    def freeze_all(nodes: Iterable[Any], why: str) -> None:
        for a in nodes:
            w.freeze_layout(of(a), why)

    for n in graph.nodes:
        ins = list(n.all_input_nodes)
        first: Any = n.args[0] if n.args else None
        name = getattr(n.target, "__name__", str(n.target))
        lay[n] = None
        if n.op in ("placeholder", "get_attr"):
            continue
        if n.op == "output":
            freeze_all(ins, "reaches the output (class logits keep their order)")
        elif n.op == "call_module":
            m = w.mods[str(n.target)]
            freeze_all([a for a in ins if a is not first], f"{n.target}: a second input")
            lay[n] = w.module(str(n.target), m, of(first))
        elif n.op == "call_function" and n.target in ADDS and len(ins) == 2:
            lay[n] = w.merge(of(n.args[0]), of(n.args[1]), n.name)
        elif n.op == "call_function" and n.target is torch.cat:
            parts, dim = list(n.args[0]), _arg(n, 1, "dim") or 0  # type: ignore[arg-type]
            layouts = [of(p) for p in parts]
            if dim == 1 and all(lt is not None and not lt.flat for lt in layouts):
                lay[n] = Layout(tuple(s for lt in layouts for s in lt.segments))  # type: ignore[union-attr]
            else:
                freeze_all(parts, f"{n.name}: concatenation not along the channels")
        elif _flatten_start(n) is not None:
            src = of(first)
            if src is not None and _flatten_start(n) == 1:
                lay[n] = Layout(src.segments, True)
            else:
                w.freeze_layout(src, f"{n.name}: flattens the unit axis")
        elif n.op == "call_method" and n.target in METADATA:
            continue
        elif n.op == "call_function" and n.target is getattr and n.args[1] in METADATA:
            continue
        elif (n.op == "call_function" and n.target in ELEMENTWISE_FUNCS) or (
            n.op == "call_method" and n.target in ELEMENTWISE_METHODS
        ):
            lay[n] = of(first)
            freeze_all([a for a in ins if a is not first], f"{n.name}: a second input")
        elif n.op == "call_function" and n.target in (operator.mul, torch.mul):
            tensors = [a for a in ins if of(a) is not None]
            if len(tensors) == 1 and len(ins) == 1:  # scaling by a constant
                lay[n] = of(tensors[0])
            else:
                freeze_all(ins, f"{n.name}: multiplies two tensors")
        else:
            freeze_all(ins, f"{n.name}: {name} has no permutation rule")
    groups, skipped = [], []
    for g in range(len(w.parent)):
        if w.root(g) != g:
            continue
        why = w.frozen.get(g)
        if why is None:
            groups.append(Group(w.names[g], w.sizes[g], tuple(w.axes[g])))
        elif "reaches the output" not in why:  # the logits are fixed by design, not a gap
            skipped.append(f"{w.names[g]}: {why}")
    return Spec(groups, skipped)

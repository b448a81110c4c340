"""Reading the structure the methods need from any classifier, instead of demanding it.

- **Logits.** A model may return a tensor or an object with `.logits` (Hugging Face);
  `Logits` makes either a module that returns the tensor.
- **The head.** The trunk route (transfer) reads a suspect's features under the parent's
  head: the last Linear of the forward pass (`find_head`), or the one named by `head=`.
- **Permutation groups** come from the fx graph too: lineage.permutation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from .errors import LineageError
from .permutation import Axis, Group, Spec, permutation_spec

__all__ = [
    "Axis",
    "Group",
    "HeadSwap",
    "Logits",
    "Spec",
    "arch_name",
    "features_at",
    "find_head",
    "logits_of",
    "n_outputs",
    "permutation_spec",
    "replace_submodule",
]


# ---------------------------------------------------------------- logits and the head


def logits_of(out: Any) -> torch.Tensor:
    """The logits tensor of a model's output: the tensor itself or its `.logits`."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise LineageError(
        f"the model returned {type(out).__name__}; expected logits (a tensor, or an object "
        "with .logits such as a Hugging Face output)"
    )


class Logits(nn.Module):
    """`model` answering the logits tensor. Its state dict keys gain the prefix `model.`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model(x))


def arch_name(model: Any) -> str:
    """The architecture's name: its lineage record's, else its class's (inside `Logits`)."""
    arch = getattr(model, "arch", None)
    if isinstance(arch, dict) and isinstance(arch.get("name"), str):
        return arch["name"]
    return type(model.model if isinstance(model, Logits) else model).__name__


def find_head(model: nn.Module, head: str | None = None) -> str | None:
    """The name of the head: `head` when given (it must be a Linear), else `.head` when that
    is a Linear, else the last Linear called in the fx graph, else (a model fx cannot
    trace, such as most Hugging Face models) the last Linear registered, which is where
    Hugging Face and torchvision classifiers keep theirs. None when there is no Linear."""
    mods = dict(model.named_modules())
    if head is not None:
        if not isinstance(mods.get(head), nn.Linear):
            raise LineageError(f"head={head!r} is not a Linear layer of {type(model).__name__}")
        return head
    if isinstance(getattr(model, "head", None), nn.Linear):
        return "head"
    linears = [n for n, m in mods.items() if isinstance(m, nn.Linear)]
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001  (fx raises many kinds on code it cannot trace)
        return linears[-1] if linears else None
    called = [str(n.target) for n in graph.nodes if n.op == "call_module" and n.target in linears]
    return called[-1] if called else None


def replace_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


class HeadSwap(nn.Module):
    """`model` with the output of its head module replaced by `head(input of that module)`:
    the suspect's trunk read by the parent's head (the transfer route), for any model, with
    no need to know where its trunk ends. The swap lives only inside this module's forward
    (a hook added and removed per call), so the suspect itself is never changed."""

    def __init__(self, model: nn.Module, head_name: str, head: nn.Module):
        super().__init__()
        self.model, self.head, self.head_name = model, head, head_name

    def _swap(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        return self.head(inputs[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hook = self.model.get_submodule(self.head_name).register_forward_hook(self._swap)
        try:
            return logits_of(self.model(x))
        finally:
            hook.remove()


def features_at(model: nn.Module, head_name: str, x: torch.Tensor) -> torch.Tensor:
    """The input of the head module on `x` (the features the head reads), flattened."""
    seen: list[torch.Tensor] = []

    def grab(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        seen.append(inputs[0].detach())

    hook = model.get_submodule(head_name).register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            model(x)
    finally:
        hook.remove()
    return seen[-1].flatten(1)


def n_outputs(model: Any, x: torch.Tensor) -> int:
    """How many classes a model answers, from one forward pass on the first row of x."""
    with torch.no_grad():
        out = model(x[:1])
    if isinstance(model, nn.Module):
        out = logits_of(out)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise LineageError("the model must answer logits (N, classes) for a batch of N")
    return int(out.shape[1])

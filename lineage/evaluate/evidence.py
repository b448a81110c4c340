"""Kinds of evidence: the plug-ins the verdict is computed from.

A kind is one class, registered with `@register("name")` in its own module (the built-in
ones: lineage.evaluate.basin, .closeness, .inherited). It declares

- `Conf`: its options dataclass (defaults and ranges, lineage.settings.knob), configured by
  the config group `group` (its name unless it says otherwise);
- `access`: the suspects it applies to: "weights" (an nn.Module), "logits" or "labels" (a
  black box answering those). A suspect it does not apply to gets no result from it;
- `prepare(parent, conf)`: what it computes once per parent, inside `calibrate` (points,
  answers, surrogates); the engine keeps it in the Calibration;
- `measure(prepared, parent, suspect, conf)`: its result for one suspect, a dataclass with
  `to_dict()` (the scalar fields that metrics.json records under
  `evidence.<name>.`);
- `statistic(result, conf)`: the result on the verdict's scale, signed so that higher is
  more like the parent (None: no evidence either way, e.g. the basin test abstains);
- `recorded(result, others, conf)`: the result with what the references add to it for the
  record (the paper's threshold, the AAAI rule's), never deciding anything;
- `caveat(result, conf)`: why this evidence, when it alone says lineage, is weaker than
  it looks ("" when it is not); `describe(result)`: one line for `Verdict.explain`;
- `headline`: the result's field that tables show, and `scale`: its verdict scale in words;
- `parent_centred_only`: True for a kind that chooses its points with the references
  (`Parent.references`), so it has no suspect-centred form.

Kinds of one pair may share work through `suspect.memo`: the engine makes one Suspect per
(source, suspect) pair, so a value stored there under a key naming everything it depends
on (other than the pair) is seen by every kind measuring that pair, and by no other pair.
The basin test and the weight distance share their weight-space route this way
(lineage.evaluate.basin.route.shared_plan). What depends on the parent alone belongs in
`prepare` instead.

`calibrate`, `judge`, the verdict, metrics.json, the console, the report, W&B and the
experiments loop over `KINDS`; none of them names a kind. A user's own kind enters by
importing its module before the job (`plugins=[my_module]` in a run's config or
`lineage compare`'s overrides; lineage.plugins).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import LineageError
from ..settings import from_mapping
from .boundary import Model

ACCESS = ("weights", "logits", "labels")


@dataclasses.dataclass
class Parent:
    """What every kind may read about the parent; made once per calibration."""

    model: nn.Module
    x: torch.Tensor  # the parent task's test points
    y: torch.Tensor
    head: str | None  # the parent's head module (the trunk route's)
    spec: Any  # its permutation groups (lineage.adapters.Spec)
    seed: int
    # the independent references it is calibrated against, for a kind whose points are
    # chosen where they disagree with the parent (lineage.evaluate.surrogate)
    references: tuple[Any, ...] = ()


@dataclasses.dataclass
class Suspect:
    """One model to judge, as each kind needs it."""

    model: Model  # what was given: an nn.Module, or a callable black box
    view: Model  # what function evidence queries: the deployed artefact, or the trunk route
    route: str  # "direct", or "trunk": another task's model read under the parent's head
    record: Mapping[str, Any] | None = None  # its lineage record (kept channels, ...)
    # work the kinds share for this one pair (see the module docstring); never compared
    memo: dict[Any, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def access(self) -> str:
        if isinstance(self.model, nn.Module):
            return "weights"
        return "labels" if getattr(self.view, "labels_only", False) else "logits"


class Kind:
    """The interface of a kind of evidence (see the module docstring)."""

    name: ClassVar[str] = ""
    group: ClassVar[str] = ""
    Conf: ClassVar[type]
    access: ClassVar[tuple[str, ...]] = ACCESS
    headline: ClassVar[str] = "score"
    scale: ClassVar[str] = ""
    parent_centred_only: ClassVar[bool] = False

    def settings(self, given: Any) -> Any:
        """Its options over their defaults, checked (a bad value names its key)."""
        if isinstance(given, self.Conf):
            return given
        if given is not None and not isinstance(given, Mapping):
            raise LineageError(f"{self.group}: options must be a mapping")
        return from_mapping(self.Conf, given, self.group)

    def enabled(self, conf: Any) -> bool:
        return bool(getattr(conf, "enabled", True))

    def prepare(self, parent: Parent, conf: Any) -> Any:
        return None

    def measure(self, prepared: Any, parent: Parent, suspect: Suspect, conf: Any) -> Any:
        raise NotImplementedError

    def statistic(self, result: Any, conf: Any) -> float | None:
        raise NotImplementedError

    def recorded(self, result: Any, others: list[Any], conf: Any) -> Any:
        return result

    def caveat(self, result: Any, conf: Any) -> str:
        return ""

    def describe(self, result: Any) -> str:
        """One line for a person: the result's headline value and what qualifies it."""
        v = getattr(result, self.headline, None)
        return f"{self.headline} {v:.4g}" if isinstance(v, float) else f"{self.headline} {v}"


_KINDS: dict[str, Kind] = {}


def register(name: str, rank: int = 100) -> Callable[[type[Kind]], type[Kind]]:
    """Register a kind under `name`; `rank` orders the kinds (tables, and which evidence
    decides when two p-values tie). Registering a name again replaces the kind."""
    if not name.isidentifier():
        raise LineageError(f"evidence name {name!r} must be an identifier")

    def deco(cls: type[Kind]) -> type[Kind]:
        cls.name = name
        cls.group = cls.group or name
        kind = cls()
        kind._rank = rank  # type: ignore[attr-defined]
        _KINDS[name] = kind
        return cls

    return deco


def unregister(name: str) -> None:
    _KINDS.pop(name, None)


def kinds() -> list[Kind]:
    """The registered kinds, in rank order (then registration order)."""
    _builtins()
    return sorted(_KINDS.values(), key=lambda k: k._rank)  # type: ignore[attr-defined]


def names() -> list[str]:
    return [k.name for k in kinds()]


def on_by_default() -> list[str]:
    """The kinds a verdict uses at their options' defaults (an opt-in kind is registered,
    and off until its group enables it)."""
    return [k.name for k in kinds() if k.enabled(k.settings(None))]


def get(name: str) -> Kind:
    _builtins()
    if name not in _KINDS:
        raise LineageError(f"unknown evidence {name!r}; registered: {', '.join(names())}")
    return _KINDS[name]


def items(values: Mapping[str, Any]) -> Iterator[tuple[Kind, Any]]:
    """(kind, value) for each registered kind that has a value in `values`, in rank order."""
    for k in kinds():
        if k.name in values:
            yield k, values[k.name]


def headlines(kind: Kind, results: Iterable[Mapping[str, Any]]) -> list[float]:
    """`kind`'s finite headline values among `results` (each a model's results by kind)."""
    got = [getattr(r.get(kind.name), kind.headline, None) for r in results]
    return [float(v) for v in got if isinstance(v, int | float) and math.isfinite(v)]


def _builtins() -> None:
    # The built-in kinds register on import; importing here keeps the registry whole
    # whichever module a caller imported first.
    from . import basin, closeness, distance, inherited, surrogate  # noqa: F401

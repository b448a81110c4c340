"""One home for a component's options: its dataclass holds the defaults and the checks.

A field made with `knob` carries its range or choices; `from_mapping` builds the dataclass
from a mapping (a composed Hydra group, or keyword options of the public API), refusing
unknown keys and wrong types and checking every range, so each bad value fails with one
line naming its key. Hydra's ConfigStore registers the same dataclasses as the schemas of
the YAML groups (lineage.config), which then only select and override.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from .errors import LineageError

T = TypeVar("T")
INF = math.inf
SEED_MAX = 2**31 - 1  # references add 1000 * (i + 1); Lightning and NumPy take < 2**32
LR_MAX = 10.0  # every learning rate, the training's and each modification's


def knob(
    default: Any,
    lo: float | None = None,
    hi: float | None = None,
    ends: str = "[]",
    choices: Sequence[Any] | None = None,
) -> Any:
    """A dataclass field with its default and its allowed values. `ends` reads as interval
    notation: "(" excludes the low end (a scale that must be strictly positive), ")" the
    high end. Mutable defaults (lists) are copied per instance."""
    meta = {"lo": lo, "hi": hi, "ends": ends, "choices": tuple(choices) if choices else None}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _num(x: float) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def _inside(v: float, lo: float | None, hi: float | None, ends: str) -> bool:
    above = lo is None or (lo < v if ends[0] == "(" else lo <= v)
    below = hi is None or (v < hi if ends[1] == ")" else v <= hi)
    return above and below


def _kinds(tp: Any) -> tuple[set[type], bool]:
    """The plain types a field may hold, and whether None is allowed."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        kinds: set[type] = set()
        optional = False
        for a in typing.get_args(tp):
            if a is type(None):
                optional = True
            else:
                kinds |= _kinds(a)[0]
        return kinds, optional
    if origin is not None:
        return {origin}, False
    if tp is Any:
        return {object}, True
    return {tp}, False


def check_value(key: str, value: Any, tp: Any, meta: Mapping[str, Any]) -> Any:
    """`value` for a field of type `tp` with `knob` metadata `meta`, checked; ints are
    accepted where floats are expected (and become floats)."""
    kinds, optional = _kinds(tp)
    if value is None:
        if optional:
            return None
        raise LineageError(f"{key} must be set (null is not allowed)")
    if object not in kinds:
        ok = any(
            isinstance(value, k) and not (isinstance(value, bool) and k in (int, float))
            for k in kinds
        ) or (float in kinds and isinstance(value, int) and not isinstance(value, bool))
        if not ok and kinds == {int} and isinstance(value, float) and value.is_integer():
            ok, value = True, int(value)  # 5.0 from a YAML or a command line means 5
        if not ok:
            if kinds == {int}:
                raise LineageError(f"{key}={value!r} is not an integer")
            if kinds <= {int, float}:
                raise LineageError(f"{key}={value!r} is not a number")
            want = " or ".join(sorted(k.__name__ for k in kinds))
            raise LineageError(f"{key}={value!r} must be {want}")
        if float in kinds and isinstance(value, int) and int not in kinds:
            value = float(value)
    if meta.get("choices") and value not in meta["choices"]:
        raise LineageError(f"{key}={value!r}: valid are {', '.join(map(str, meta['choices']))}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        lo, hi, ends = meta.get("lo"), meta.get("hi"), meta.get("ends", "[]")
        bounded = lo is not None or hi is not None
        if bounded and (not math.isfinite(value) or not _inside(value, lo, hi, ends)):
            left = "(-inf" if lo is None else f"{ends[0]}{_num(lo)}"
            right = "inf)" if hi is None or hi == INF else f"{_num(hi)}{ends[1]}"
            raise LineageError(f"{key}={value} is outside its range {left}, {right}")
    return value


def from_mapping(cls: type[T], given: Mapping[str, Any] | None, where: str = "") -> T:
    """An instance of dataclass `cls` from `given` over its defaults, every key checked."""
    given = dict(given or {})
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(given) - set(names))
    if unknown:
        label = where or cls.__name__
        raise LineageError(f"{label}: unknown key(s) {unknown}; valid: {', '.join(names)}")
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in given:
            key = f"{where}.{f.name}" if where else f.name
            out[f.name] = check_value(key, given[f.name], hints[f.name], f.metadata)
    obj = cls(**out)
    check = getattr(obj, "check", None)
    if check is not None:
        check(where)
    return obj


def as_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)

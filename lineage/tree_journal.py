"""The tree's journal: every ordered pair `lineage.tree` has judged, one JSON line each, so
that an interrupted tree resumes without judging a pair again (and without calibrating a
would-be parent whose pairs are all done).

A line is reused only for the same question: the same two models (by their tensors' bytes,
not their names), the child's same lineage record, and the same run (the references'
tensors, the task's points, the seed and every judging option). Anything else, or a line
that does not read as one (a torn tail, a wrong type), is judged again.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models.tensorfile import checksum
from .trees import Pair
from .utils import append_line, stable_hash
from .zoo import read_jsonl


def model_digest(model: nn.Module) -> str:
    """The model files' own tensor checksum, over its state."""
    return checksum({k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)})


def run_digest(
    references: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, seed: int, opts: Any
) -> str:
    """What every verdict of one tree depends on besides its two models."""
    groups = {k: dataclasses.asdict(v) if _instance(v) else v for k, v in opts.items()}
    return stable_hash(
        {
            "references": [model_digest(r) for r in references],
            "points": checksum({"x": x, "y": y}),
            "seed": seed,
            "options": groups,
        },
        n=24,
    )


def _instance(v: Any) -> bool:
    return dataclasses.is_dataclass(v) and not isinstance(v, type)


# a Pair's fields after its ids, and their types
FIELDS = {"p_value": float, "score": float, "decided_by": str, "closeness": float,
          "distance": float}  # fmt: skip


class Journal:
    """The judged pairs of runs like this one, read from `path` and appended to it as the
    tree goes; with no path, it remembers nothing and keeps nothing."""

    def __init__(
        self,
        path: str | Path | None,
        models: Mapping[str, nn.Module],
        records: Mapping[str, Any] | None,
        references: Sequence[nn.Module],
        x: torch.Tensor,
        y: torch.Tensor,
        seed: int,
        opts: Mapping[str, Any],
    ):
        self.path = None if path is None else Path(path)
        self.done: dict[tuple[str, str, str], dict[str, Any]] = {}
        if self.path is None:
            return
        self.digest = {i: model_digest(m) for i, m in models.items()}
        self.record = {i: record_digest((records or {}).get(i)) for i in models}
        self.run = run_digest(references, x, y, seed, opts)
        for rec in read_jsonl(self.path):
            key = (rec.get("run"), rec.get("parent"), rec.get("child"), rec.get("record"))
            if key[0] == self.run and all(isinstance(k, str) for k in key) and _valid(rec):
                self.done[key[1:]] = rec  # type: ignore[index]

    def _key(self, a: str, b: str) -> tuple[str, str, str]:
        return (self.digest[a], self.digest[b], self.record[b])

    def recall(self, a: str, b: str, pairs: dict, unjudged: dict) -> bool:
        """Fill in (a, b)'s verdict, or why it could not be made, from an earlier run;
        whether there was one."""
        got = self.done.get(self._key(a, b)) if self.path else None
        if got is None:
            return False
        if "unjudged" in got:
            unjudged[(a, b)] = got["unjudged"]
        else:
            pairs[(a, b)] = Pair(a, b, **{f: got[f] for f in FIELDS})
        return True

    def keep(self, a: str, b: str, answer: Pair | str) -> None:
        """(a, b)'s verdict, or why it could not be made."""
        if self.path is None:
            return
        parent, child, record = self._key(a, b)
        got = {"unjudged": answer} if isinstance(answer, str) else {
            f: getattr(answer, f) for f in FIELDS
        }  # fmt: skip
        rec = {"run": self.run, "parent": parent, "child": child, "record": record, **got}
        append_line(self.path, json.dumps(rec))
        self.done[(parent, child, record)] = rec


def record_digest(record: Any) -> str:
    return stable_hash(record, n=24)


def _valid(rec: Mapping[str, Any]) -> bool:
    if "unjudged" in rec:
        return isinstance(rec["unjudged"], str)
    for name, kind in FIELDS.items():
        v = rec.get(name)
        if name in ("closeness", "distance") and v is None:
            continue
        if kind is float:
            if isinstance(v, bool) or not isinstance(v, int | float):
                return False
            if name != "score" and math.isnan(float(v)):
                return False
        elif not isinstance(v, kind):
            return False
    return True

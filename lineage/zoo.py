"""The zoo: a cache of trained models under outputs/zoo/, keyed by what defines them.

Layout:
    models/<id>.safetensors   parents, references and derived models
    locks/<id>.lock           one lock per model: parallel jobs train a model once
    record.jsonl              one line per model trained (who, when, how long)
    lineage.jsonl             one edge per derived model: parent id -> derived id
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock
from torch import nn

from . import models
from .errors import LineageError
from .utils import append_line, stable_hash

log = logging.getLogger(__name__)


class Zoo:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        try:
            (self.root / "models").mkdir(parents=True, exist_ok=True)
            (self.root / "locks").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LineageError(f"cannot create the zoo at {self.root}: {e.strerror}") from None

    @staticmethod
    def model_id(spec: Mapping[str, Any]) -> str:
        return "m-" + stable_hash(spec)

    def path(self, model_id: str) -> Path:
        return self.root / "models" / f"{model_id}.safetensors"

    def lock(self, name: str) -> FileLock:
        return FileLock(str(self.root / "locks" / f"{name}.lock"))

    def get_or_train(
        self, spec: Mapping[str, Any], train: Callable[[], tuple[nn.Module, dict]], role: str
    ) -> tuple[nn.Module, dict[str, Any], bool]:
        """Load the model that `spec` defines, or train it once under a lock.

        `train()` returns (model, meta). Returns (model, meta, trained_now).
        """
        mid = self.model_id(spec)
        path = self.path(mid)
        with self.lock(mid):
            if path.exists():
                try:
                    model, meta = models.load(path)
                    return model, meta, False
                except LineageError as e:
                    # A cached file that fails its checksum is rebuilt, never trusted.
                    log.warning("zoo: %s; retraining", e)
                    path.rename(path.with_suffix(".corrupt"))
            t0 = time.time()
            model, meta = train()
            meta = {**meta, "id": mid, "spec": dict(spec), "role": role}
            models.save(model, path, meta)
            append_line(
                self.root / "record.jsonl",
                json.dumps(
                    {
                        "event": "trained",
                        "id": mid,
                        "role": role,
                        "seconds": time.time() - t0,
                        "time": time.time(),
                    }
                ),
            )
        return model, meta, True

    def save_derived(self, model: nn.Module, meta: dict[str, Any]) -> Path:
        """Save a derived model and append its lineage edge exactly once."""
        mid = meta["id"]
        path = self.path(mid)
        with self.lock("lineage"):
            models.save(model, path, meta)
            if mid not in self.edges():
                append_line(
                    self.root / "lineage.jsonl",
                    json.dumps(
                        {
                            "parent": meta.get("parent_id"),
                            "child": mid,
                            "modification": meta.get("modification"),
                            "ratio": meta.get("ratio"),
                            "chain": meta.get("lineage"),
                            "time": time.time(),
                        }
                    ),
                )
        return path

    def edges(self) -> dict[str, dict[str, Any]]:
        """child id -> edge, read from lineage.jsonl (torn last lines are ignored)."""
        return {e["child"]: e for e in read_jsonl(self.root / "lineage.jsonl")}

    def trained(self) -> list[dict[str, Any]]:
        return read_jsonl(self.root / "record.jsonl")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out

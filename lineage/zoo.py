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
from .text import printable, shorten
from .utils import append_line, check_writable, loads_json, stable_hash

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

        `train()` returns (model, meta). Returns (model, meta, trained_now). A cached file
        is used only when it is the model asked for: its tensors verify (models.load) and
        its recorded id, spec and spec checksum are this key's. Anything else (a corrupt
        file, another model's file under this name) is moved aside, with a warning, and
        the model is retrained: the zoo never trusts a file for what its name says.
        """
        mid = self.model_id(spec)
        path = self.path(mid)
        with self.lock(mid):
            if path.exists():
                try:
                    model, meta = models.load(path)
                    why = self.mismatch(spec, meta)
                    if not why:
                        return model, meta, False
                    self._set_aside(path, ".mismatch", f"{path.name} {why}")
                except LineageError as e:
                    # A cached file that fails its checksum is rebuilt, never trusted.
                    self._set_aside(path, ".corrupt", str(e))
            # Fail now, not after the training, if the result could not be stored.
            check_writable(self.root / "models", 0, "the zoo")
            t0 = time.time()
            model, meta = train()
            meta = {
                **meta,
                "id": mid,
                "spec": dict(spec),
                "spec_sha256": spec_checksum(spec),
                "role": role,
            }
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

    def mismatch(self, spec: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
        """Why a loaded file is not the model `spec` defines ("" when it is)."""
        mid = self.model_id(spec)
        if meta.get("id") != mid:
            return f"holds model {shorten(repr(meta.get('id')), 60)}, not {mid}"
        recorded = meta.get("spec")
        if not isinstance(recorded, Mapping) or spec_checksum(recorded) != spec_checksum(spec):
            return f"records another configuration than {mid}'s (its spec differs)"
        if "spec_sha256" in meta and meta["spec_sha256"] != spec_checksum(spec):
            return "has a spec checksum that does not match its configuration"
        return ""

    @staticmethod
    def _set_aside(path: Path, suffix: str, why: str) -> None:
        aside = path.with_suffix(suffix)
        log.warning("zoo: %s; moved it to %s and retraining", printable(why), aside.name)
        path.replace(aside)

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
        """child id -> edge, read from lineage.jsonl (unreadable lines are skipped)."""
        path = self.root / "lineage.jsonl"
        out = {}
        for n, e in read_jsonl_numbered(path):
            if isinstance(e.get("child"), str):
                out[e["child"]] = e
            else:
                log.warning("%s:%d: skipped: an edge without a child id", printable(path), n)
        return out

    def trained(self) -> list[dict[str, Any]]:
        """One entry per model trained, read from record.jsonl (unreadable lines skipped)."""
        path = self.root / "record.jsonl"
        out = []
        for n, e in read_jsonl_numbered(path):
            if isinstance(e.get("id"), str):
                out.append(e)
            else:
                log.warning("%s:%d: skipped: a record without a model id", printable(path), n)
        return out


def spec_checksum(spec: Mapping[str, Any]) -> str:
    """The full SHA-256 of a spec (model_id keeps only 12 hex digits of it)."""
    return stable_hash(spec, n=64)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, one per line. A line that is not one (a torn
    tail, invalid UTF-8, `123`, a line nested too deep) is skipped with a warning naming
    the file and line: one damaged record must not stop every later job."""
    return [rec for _, rec in read_jsonl_numbered(path)]


def read_jsonl_numbered(path: Path) -> list[tuple[int, dict[str, Any]]]:
    out: list[tuple[int, dict[str, Any]]] = []
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return out
    except OSError as e:
        log.warning("%s: cannot read (%s); treated as empty", printable(path), e.strerror)
        return out
    for n, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            rec = loads_json(line.decode("utf-8"))
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            log.warning("%s:%d: skipped: not a JSON line (%s)", printable(path), n, shorten(e, 80))
            continue
        if not isinstance(rec, dict):
            log.warning(
                "%s:%d: skipped: a JSON %s, not an object", printable(path), n, type(rec).__name__
            )
            continue
        out.append((n, rec))
    return out

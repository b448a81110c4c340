"""The zoo: the model store. It owns what identifies a model (its id, from the spec that
defines it) and caches trained models under outputs/zoo/, keyed by that id.

- A trained model (parent, reference) is defined by its data, model and training config
  and its seed: `spec`, id "m-" + hash(spec).
- A derived model by its parent's id, the modification config, the ratio and the seed:
  `derived_id`, "d-" + hash.

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


# Keys of the data group that define a dataset's content (not where it is read from).
DATA_KEYS = ("name", "classes", "limit", "val_fraction", "split_seed", "batch_size")
DATA_OWN = ("root", "download", "epochs", "workers")


def data_spec(data: Mapping[str, Any]) -> dict[str, Any]:
    """What of the data config defines the data. A `_target_` dataset adds its factory and
    arguments (registered ones keep the keys they always had, so their ids stay)."""
    out = {k: data.get(k) for k in DATA_KEYS}
    if data.get("_target_"):
        extra = {k: v for k, v in data.items() if k not in (*DATA_KEYS, *DATA_OWN)}
        out.update(extra)
    return out


def model_spec(model: Mapping[str, Any]) -> dict[str, Any]:
    """What of the model config defines the architecture (an unset `_target_` says nothing)."""
    return {k: v for k, v in model.items() if not (k == "_target_" and v is None)}


# Train keys added after the zoo held models, each with the value every model stored before
# it trained with: at that value the key is left out of the spec, so those models keep
# their ids (and their files) while a model trained otherwise gets its own.
LATER_TRAIN_KEYS = {"label_smoothing": 0.0, "augment_noise": 0.0}


def without_later_defaults(train: Mapping[str, Any]) -> dict[str, Any]:
    """The train group as it read before LATER_TRAIN_KEYS, where they are at their default."""
    return {
        k: v for k, v in train.items() if not (k in LATER_TRAIN_KEYS and v == LATER_TRAIN_KEYS[k])
    }


def train_spec(train: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in without_later_defaults(train).items()
        if k not in ("accelerator", "progress")
    }


def spec(cfg: Mapping[str, Any], seed: int, **extra: Any) -> dict[str, Any]:
    """A trained model's defining spec: data, model, training and seed (+ `extra`, e.g. the
    half of the training set an independent model saw)."""
    data = {**data_spec(cfg["data"]), **extra}
    return {
        "data": data,
        "model": model_spec(cfg["model"]),
        "train": train_spec(cfg["train"]),
        "seed": seed,
    }


def derived_id(parent_id: str, modification: Mapping[str, Any], ratio: float, seed: int) -> str:
    return "d-" + stable_hash(
        {
            "parent": parent_id,
            "modification": dict(modification),
            "ratio": float(ratio),
            "seed": seed,
        }
    )


def _link_message(p: Path) -> str:
    return (
        f"the zoo's {shorten(p)} is a symbolic link; lineage never follows links in its "
        "zoo (remove it)"
    )


def _not_a_link(p: Path) -> Path:
    if p.is_symlink():  # a link made after the zoo opened
        raise LineageError(_link_message(p))
    return p


def reference_seed(seed: int, i: int) -> int:
    """Independent references use seeds far from any parent seed a sweep would use."""
    return 1000 * (i + 1) + seed


class Zoo:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        try:
            (self.root / "models").mkdir(parents=True, exist_ok=True)
            (self.root / "locks").mkdir(parents=True, exist_ok=True)
            self._no_links()
        except OSError as e:
            raise LineageError(f"cannot create the zoo at {self.root}: {e.strerror}") from None

    def _no_links(self) -> None:
        """A symbolic link among the zoo's files is refused now, in one line: a lock that
        is a link fails to open (ELOOP) only after a training, and a model file that is
        a link would be read, replaced or set aside where it points."""
        for folder, pattern in (("locks", "*.lock"), ("models", "*.safetensors")):
            for p in (self.root / folder).glob(pattern):
                if p.is_symlink():
                    raise LineageError(_link_message(p))

    @staticmethod
    def model_id(spec: Mapping[str, Any]) -> str:
        return "m-" + stable_hash(spec)

    def path(self, model_id: str) -> Path:
        return _not_a_link(self.root / "models" / f"{model_id}.safetensors")

    def lock(self, name: str) -> FileLock:
        return FileLock(str(_not_a_link(self.root / "locks" / f"{name}.lock")))

    def get_or_train(
        self,
        spec: Mapping[str, Any],
        train: Callable[[], tuple[nn.Module, dict]],
        role: str,
        builder: Callable[[], nn.Module] | None = None,
    ) -> tuple[nn.Module, dict[str, Any], bool]:
        """Load the model that `spec` defines, or train it once under a lock.

        `train()` returns (model, meta); `builder()` the untrained architecture, for loading
        (default: the file's record). Returns (model, meta, trained_now). A cached file
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
                    model, meta = models.load(path, builder=builder)
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

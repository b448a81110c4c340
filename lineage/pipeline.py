"""One job, one direction:

    config -> data -> parent and references (zoo) -> derived model (modification)
           -> determination + closeness (judge) -> metrics.json + tracker -> console

Each stage is a plain function call with plain values; nothing reaches back up the chain.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf
from torch import nn

from . import models
from .config import check_ranges
from .data import DataModule, datamodule_from_config
from .errors import LineageError
from .interrupt import stage
from .judge import Suspect, judge
from .modifications import Derived, derive, validate
from .text import printable
from .tracking import Tracker, make_tracker
from .training import accuracy, train_classifier
from .utils import (
    check_writable,
    flatten,
    git_sha,
    loads_json,
    package_versions,
    seed_all,
    stable_hash,
    write_json,
)
from .zoo import Zoo

log = logging.getLogger("lineage")

# Keys that change how a job runs or is logged, not what it computes.
NOT_HASHED = ("logger", "force", "paths", "hydra", "progress", "name")


class JobFailed(CompactHydraException):
    """A job of a sweep failed (its error.json says why). Hydra raises the first one after
    every job has run and prints only this one-line message, so the sweep exits 1."""


def config_hash(cfg: dict[str, Any]) -> str:
    return stable_hash({k: v for k, v in cfg.items() if k not in NOT_HASHED})


def data_spec(cfg: dict[str, Any]) -> dict[str, Any]:
    d = cfg["data"]
    return {
        k: d.get(k)
        for k in ("name", "classes", "limit", "val_fraction", "split_seed", "batch_size")
    }


def train_spec(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg["train"].items() if k not in ("accelerator", "progress")}


def build_model(model_cfg: dict[str, Any], dm: DataModule) -> nn.Module:
    c, h, w = dm.input_shape
    kw = {k: v for k, v in model_cfg.items() if k != "name"}
    return models.build(model_cfg["name"], dm.num_classes, c, (h, w), **kw)


def reference_seed(seed: int, i: int) -> int:
    """Independent references use seeds far from any parent seed a sweep would use."""
    return 1000 * (i + 1) + seed


def model_spec(cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """What defines a trained parent or reference: its zoo key (Zoo.model_id)."""
    return {
        "data": data_spec(cfg),
        "model": dict(cfg["model"]),
        "train": train_spec(cfg),
        "seed": seed,
    }


def trained_model(
    cfg: dict[str, Any], dm: DataModule, zoo: Zoo, seed: int, role: str, tracker: Tracker
) -> tuple[nn.Module, dict[str, Any], bool]:
    """A parent or an independent reference: same data and architecture, its own seed."""
    spec = model_spec(cfg, seed)

    def train() -> tuple[nn.Module, dict[str, Any]]:
        log.info("training %s (%s on %s, seed %d)", role, cfg["model"]["name"], dm.name, seed)
        seed_all(seed)  # the initial weights are part of what the seed defines
        with stage(f"training the {role} model {Zoo.model_id(spec)} (seed {seed})"):
            model, acc = train_classifier(
                build_model(cfg["model"], dm),
                dm,
                cfg["train"],
                seed,
                tracker.lightning_logger(role),
            )
        return model, {
            "accuracy": acc,
            "seed": seed,
            "parent_id": None,
            "lineage": [],
            "data": {"name": dm.name, "classes": dm.classes},
        }

    return zoo.get_or_train(spec, train, role)


def derive_model(
    cfg: dict[str, Any],
    dm: DataModule,
    parent: nn.Module,
    pmeta: dict[str, Any],
    zoo: Zoo,
    tracker: Tracker,
) -> tuple[Derived, dict[str, Any], Path]:
    """Apply the configured modification to the parent; save it with its lineage record."""
    mod, ratio, seed = cfg["modification"], float(cfg["ratio"]), int(cfg["seed"])
    did = "d-" + stable_hash(
        {"parent": pmeta["id"], "modification": mod, "ratio": ratio, "seed": seed}
    )
    log.info("deriving %s (%s, ratio %g) from %s", did, mod["name"], ratio, pmeta["id"])
    with stage(f"deriving {did} ({mod['name']}, ratio {ratio:g})"):
        d = derive(parent, dm, mod, ratio, seed, tracker.lightning_logger("derived"))
    acc = d.effect.get("accuracy")
    if acc is None and models.head_of(d.model).out_features == dm.num_classes:
        acc = accuracy(d.model, dm.test.x, dm.test.y)
    step = {"modification": mod["name"], "ratio": ratio, "config": mod}
    meta = {
        "id": did,
        "parent_id": pmeta["id"],
        "modification": mod["name"],
        "ratio": ratio,
        "modification_config": mod,
        "lineage": [*pmeta.get("lineage", []), step],
        "record": d.record,
        "accuracy": acc,
        "seed": seed,
        "data": pmeta.get("data"),
    }
    return d, meta, zoo.save_derived(d.model, meta)


def check(cfg: dict[str, Any]) -> None:
    """Everything that can be wrong with the config, before any data or training."""
    check_ranges(cfg)
    validate(cfg["modification"], cfg["ratio"])


def previous_result(path: Path, chash: str) -> dict[str, Any] | None:
    """The job's earlier metrics when they are this config's; None means "not done".
    A damaged metrics.json (binary, truncated, nested too deep) is not done either: the
    job reruns and overwrites it."""
    try:
        old = loads_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("%s is damaged (%s); rerunning the job", printable(path), printable(e))
        return None
    return old if isinstance(old, dict) and old.get("config_hash") == chash else None


def model_bytes(model_cfg: dict[str, Any], dm: DataModule) -> int:
    """The size of one model file of this architecture, from a build on the meta device."""
    with torch.device("meta"):
        m = build_model(model_cfg, dm)
    return sum(t.numel() * t.element_size() for t in m.state_dict().values())


def check_room(cfg: dict[str, Any], dm: DataModule, zoo: Zoo, out_dir: Path) -> None:
    """Before any training: the output folder and the zoo can take what this job will
    write (every model not yet in the zoo, the derived one, the metrics). A full disk or
    a read-only folder is one line now, not an OSError after all the compute."""
    seeds = [int(cfg["seed"])] + [
        reference_seed(int(cfg["seed"]), i) for i in range(int(cfg["n_independent"]))
    ]
    missing = sum(not zoo.path(Zoo.model_id(model_spec(cfg, s))).exists() for s in seeds)
    size = model_bytes(cfg["model"], dm)
    per_file = size + 2**16  # the tensors and the header
    check_writable(zoo.root / "models", (missing + 1) * per_file, "the zoo", per_file)
    check_writable(out_dir, 2**20, "the output folder")


def run(
    cfg: dict[str, Any], out_dir: Path, run_name: str = "run", group: str | None = None
) -> dict[str, Any]:
    """Run one job from a resolved config dict; write and return its flat metrics."""
    t_start = time.time()
    check(cfg)
    chash = config_hash(cfg)
    metrics_path = out_dir / "metrics.json"
    old = previous_result(metrics_path, chash)
    if old is not None and not cfg.get("force", False):
        log.info(
            "skipping: %s already holds this config's results (force=true reruns)", metrics_path
        )
        return old
    seed = int(cfg["seed"])
    zoo = Zoo(cfg["paths"]["zoo"])
    check_writable(out_dir, 0, "the output folder")
    dm = datamodule_from_config(cfg["data"])
    check_room(cfg, dm, zoo, out_dir)
    write_json(out_dir / "config.json", cfg)
    tracker = make_tracker(cfg, out_dir, run_name, group)
    try:
        m: dict[str, Any] = {
            "modification": cfg["modification"]["name"],
            "ratio": float(cfg["ratio"]),
            "data": dm.name,
            "model": cfg["model"]["name"],
            "seed": seed,
            "git_sha": git_sha(),
            "config_hash": chash,
            "versions": package_versions(),
            "time": {},
        }
        t0 = time.time()
        parent, pmeta, _ = trained_model(cfg, dm, zoo, seed, "parent", tracker)
        refs = [
            trained_model(cfg, dm, zoo, reference_seed(seed, i), "independent", tracker)
            for i in range(int(cfg["n_independent"]))
        ]
        m["time"]["parent_s"] = time.time() - t0
        t0 = time.time()
        derived, dmeta, dpath = derive_model(cfg, dm, parent, pmeta, zoo, tracker)
        m["time"]["derive_s"] = time.time() - t0
        tracker.log_artifact(dpath, dmeta["id"])
        with stage(f"judging {dmeta['id']} against {pmeta['id']}"):
            verdict, ref_verdicts, times = judge(
                parent,
                Suspect(derived.model, dmeta["record"], derived.blackbox),
                [r[0] for r in refs],
                dm.test.x,
                dm.test.y,
                cfg,
                seed,
            )
        m["time"].update(times)
        m["parent"] = {
            "id": pmeta["id"],
            "path": str(zoo.path(pmeta["id"])),
            "accuracy": pmeta["accuracy"],
        }
        m["derived"] = {
            "id": dmeta["id"],
            "path": str(dpath),
            "accuracy": dmeta["accuracy"],
            **derived.effect,
            **(verdict.to_dict() if verdict else {}),
        }
        m["independent"] = independent_summary(refs, ref_verdicts, zoo)
        m["time"]["total_s"] = time.time() - t_start
        flat = flatten(m)
        write_json(metrics_path, flat)
        (out_dir / "error.json").unlink(missing_ok=True)  # a failure this run has fixed
        tracker.log_summary({k: v for k, v in flat.items() if not k.startswith("versions.")})
    finally:
        tracker.finish()
    return flat


def independent_summary(
    refs: list[tuple[nn.Module, dict[str, Any], bool]], verdicts: list[Any], zoo: Zoo
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    barriers = [v.determination.barrier for v in verdicts if v.determination.barrier is not None]
    out["accuracy"] = sum(r[1]["accuracy"] for r in refs) / len(refs) if refs else None
    out["determination"] = {
        "barrier_min": min(barriers) if barriers else None,
        "false_positives": sum(bool(v.determination.is_lineage) for v in verdicts),
    }
    out["closeness"] = {"score_max": max((v.closeness.score for v in verdicts), default=None)}
    for i, ((_, meta, _), v) in enumerate(zip(refs, verdicts)):
        out[str(i)] = {
            "id": meta["id"],
            "path": str(zoo.path(meta["id"])),
            "accuracy": meta["accuracy"],
            **v.to_dict(),
        }
    return out


def to_container(cfg: DictConfig) -> dict[str, Any]:
    out = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(out, dict):
        raise LineageError("config did not resolve to a mapping")
    return {str(k): v for k, v in out.items()}

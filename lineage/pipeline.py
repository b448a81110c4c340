"""One job, one direction:

    config -> data -> parent (zoo) -> derived model -> determination / closeness
           -> metrics.json + tracker -> console summary

Each stage is a plain function call; nothing reaches back up the chain.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from . import models
from .data import DataModule, datamodule_from_config
from .errors import LineageError
from .tracking import Tracker, make_tracker
from .training import train_classifier
from .utils import flatten, git_sha, package_versions, seed_all, stable_hash, write_json
from .zoo import Zoo

log = logging.getLogger("lineage")

# Keys that change how a job runs or is logged, not what it computes.
NOT_HASHED = ("logger", "force", "paths", "hydra", "progress", "name")


def config_hash(cfg: dict[str, Any]) -> str:
    return stable_hash({k: v for k, v in cfg.items() if k not in NOT_HASHED})


def data_spec(cfg: dict[str, Any]) -> dict[str, Any]:
    d = cfg["data"]
    return {k: d.get(k) for k in ("name", "classes", "limit", "val_fraction", "split_seed",
                                  "batch_size")}


def train_spec(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg["train"].items() if k not in ("accelerator", "progress")}


def build_model(model_cfg: dict[str, Any], dm: DataModule) -> nn.Module:
    c, h, w = dm.input_shape
    kw = {k: v for k, v in model_cfg.items() if k != "name"}
    return models.build(model_cfg["name"], dm.num_classes, c, (h, w), **kw)


def trained_model(cfg: dict[str, Any], dm: DataModule, zoo: Zoo, seed: int, role: str,
                  tracker: Tracker) -> tuple[nn.Module, dict[str, Any], bool]:
    """A parent or an independent reference: same data and architecture, its own seed."""
    spec = {"data": data_spec(cfg), "model": dict(cfg["model"]), "train": train_spec(cfg),
            "seed": seed}

    def train() -> tuple[nn.Module, dict[str, Any]]:
        log.info("training %s (%s on %s, seed %d)", role, cfg["model"]["name"], dm.name, seed)
        seed_all(seed)  # the initial weights are part of what the seed defines
        model, acc = train_classifier(build_model(cfg["model"], dm), dm, cfg["train"], seed,
                                      tracker.lightning_logger(role))
        return model, {"accuracy": acc, "seed": seed, "parent_id": None,
                       "data": {"name": dm.name, "classes": dm.classes}}

    return zoo.get_or_train(spec, train, role)


def run(cfg: dict[str, Any], out_dir: Path, run_name: str = "run",
        group: str | None = None) -> dict[str, Any]:
    """Run one job from a resolved config dict; write and return its flat metrics."""
    t_start = time.time()
    chash = config_hash(cfg)
    metrics_path = out_dir / "metrics.json"
    if metrics_path.exists() and not cfg.get("force", False):
        import json

        old = json.loads(metrics_path.read_text())
        if old.get("config_hash") == chash:
            log.info("skipping: %s already holds this config's results (force=true reruns)",
                     metrics_path)
            return dict(old)
    seed = int(cfg["seed"])
    zoo = Zoo(cfg["paths"]["zoo"])
    dm = datamodule_from_config(cfg["data"])
    tracker = make_tracker(cfg, out_dir, run_name, group)
    try:
        m: dict[str, Any] = {
            "data": dm.name, "model": cfg["model"]["name"], "seed": seed,
            "git_sha": git_sha(), "config_hash": chash, "versions": package_versions(),
        }
        t0 = time.time()
        parent, pmeta, _ = trained_model(cfg, dm, zoo, seed, "parent", tracker)
        m["parent"] = {"id": pmeta["id"], "accuracy": pmeta["accuracy"]}
        m["time"] = {"parent_s": time.time() - t0}
        refs = []
        for i in range(int(cfg.get("n_independent", 2))):
            _, rmeta, _ = trained_model(cfg, dm, zoo, 1000 * (i + 1) + seed, "independent",
                                        tracker)
            refs.append(rmeta)
        m["independent"] = {
            "accuracy": sum(r["accuracy"] for r in refs) / len(refs) if refs else None,
            **{str(i): {"id": r["id"], "accuracy": r["accuracy"]} for i, r in enumerate(refs)},
        }
        m["time"]["total_s"] = time.time() - t_start
        flat = flatten(m)
        write_json(out_dir / "config.json", cfg)
        write_json(metrics_path, flat)
        tracker.log_summary({k: v for k, v in flat.items() if not k.startswith("versions.")})
    finally:
        tracker.finish()
    return flat


def to_container(cfg: DictConfig) -> dict[str, Any]:
    out = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(out, dict):
        raise LineageError("config did not resolve to a mapping")
    return {str(k): v for k, v in out.items()}

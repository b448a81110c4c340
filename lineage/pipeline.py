"""One job, one direction:

    config -> data -> parent and references (zoo) -> derived model (modification)
           -> calibrate + judge (lineage.engine) -> metrics.json + tracker -> console

Each stage is a plain function call with plain values; nothing reaches back up the chain.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from . import models, plugins
from .adapters import n_outputs
from .config import check_ranges
from .data import DataModule, datamodule_from_config
from .engine import Calibration, Verdict, calibrate, judge
from .errors import LineageError
from .evaluate import evidence
from .interrupt import stage
from .modifications import Derived, derive, validate
from .runtime import end_job, settle_on, start_job
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
from .zoo import Zoo, derived_id, reference_seed, spec, without_later_defaults

log = logging.getLogger("lineage")

# Keys that change how a job runs or is logged, not what it computes.
NOT_HASHED = ("logger", "force", "paths", "hydra", "progress", "name", "threads")


def config_hash(cfg: dict[str, Any]) -> str:
    # train keys added later count only when set: finished jobs stay finished (zoo.py)
    if isinstance(cfg.get("train"), dict):
        cfg = {**cfg, "train": without_later_defaults(cfg["train"])}
    return stable_hash({k: v for k, v in cfg.items() if k not in NOT_HASHED})


def build_model(model_cfg: dict[str, Any], dm: DataModule) -> nn.Module:
    """The configured architecture for the data's task (a registered name or `_target_`)."""
    return models.from_config(model_cfg, dm.num_classes, dm.input_shape)


def trained_model(
    cfg: dict[str, Any],
    dm: DataModule,
    zoo: Zoo,
    seed: int,
    role: str,
    tracker: Tracker,
    half: int | None = None,
    series: str | None = None,
) -> tuple[nn.Module, dict[str, Any], bool]:
    """A parent or an independent reference: same data and architecture, its own seed
    (`half`: trained on one half of the training split only, an independent model;
    `series`: the tracker's name for its training curves, by default the role)."""
    extra = {} if half is None else {"half": half}
    data = dm if half is None else dm.half(half)
    key = Zoo.model_id(spec(cfg, seed, **extra))

    def train() -> tuple[nn.Module, dict[str, Any]]:
        log.info("training %s (%s on %s, seed %d)", role, model_name(cfg), dm.name, seed)
        seed_all(seed)  # the initial weights are part of what the seed defines
        with stage(f"training the {role} model {key} (seed {seed})"):
            model, acc = train_classifier(
                build_model(cfg["model"], dm),
                data,
                cfg["train"],
                seed,
                tracker.lightning_logger(series or role),
            )
        return model, {
            "accuracy": acc,
            "seed": seed,
            "parent_id": None,
            "lineage": [],
            "data": {"name": dm.name, "classes": dm.classes, **extra},
        }

    return zoo.get_or_train(
        spec(cfg, seed, **extra), train, role, builder=lambda: build_model(cfg["model"], dm)
    )


def model_name(cfg: dict[str, Any]) -> str:
    m = cfg["model"]
    return str(m.get("_target_") or m["name"])


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
    did = derived_id(pmeta["id"], mod, ratio, seed)
    log.info("deriving %s (%s, ratio %g) from %s", did, mod["name"], ratio, pmeta["id"])
    with stage(f"deriving {did} ({mod['name']}, ratio {ratio:g})"):
        d = derive(parent, dm, mod, ratio, seed, tracker.lightning_logger("derived"), cfg["train"])
    acc = d.effect.get("accuracy")
    if acc is None and n_outputs(d.model, dm.test.x) == dm.num_classes:
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
    missing = sum(not zoo.path(Zoo.model_id(spec(cfg, s))).exists() for s in seeds)
    size = model_bytes(cfg["model"], dm)
    per_file = size + 2**16  # the tensors and the header
    check_writable(zoo.root / "models", (missing + 1) * per_file, "the zoo", per_file)
    check_writable(out_dir, 2**20, "the output folder")


def references_for(
    cfg: dict[str, Any], dm: DataModule, zoo: Zoo, seed: int, tracker: Tracker
) -> list[tuple[nn.Module, dict[str, Any], bool]]:
    """The parent's independent references: its recipe under reference seeds."""
    n = int(cfg["n_independent"])
    out = []
    for i in range(n):
        r = trained_model(
            cfg, dm, zoo, reference_seed(seed, i), "independent", tracker, series=f"independent/{i}"
        )
        log.info("reference %d/%d: %s (%s)", i + 1, n, r[1]["id"], "trained" if r[2] else "cached")
        out.append(r)
    return out


def calibration_for(
    cfg: dict[str, Any], dm: DataModule, parent: nn.Module, refs: list[nn.Module], seed: int
) -> Calibration:
    return calibrate(parent, refs, dm.test.x, dm.test.y, seed=seed, options=cfg)


def run(
    cfg: dict[str, Any],
    out_dir: Path,
    run_name: str = "run",
    group: str | None = None,
    jobs_at_once: int = 1,
) -> dict[str, Any]:
    """Run one job from a resolved config dict; write and return its flat metrics.
    `jobs_at_once`: the jobs its launcher runs side by side (the cores are shared)."""
    plugins.load(cfg.get("plugins") or [])
    check(cfg)
    start_job(cfg.get("threads"), jobs_at_once)
    try:
        return _run(cfg, out_dir, run_name, group)
    finally:
        end_job()


def _run(cfg: dict[str, Any], out_dir: Path, run_name: str, group: str | None) -> dict[str, Any]:
    t_start = time.time()
    chash = config_hash(cfg)
    metrics_path = out_dir / "metrics.json"
    old = previous_result(metrics_path, chash)
    if old is not None and not cfg.get("force", False):
        log.info(
            "skipping: %s already holds this config's results (force=true reruns)", metrics_path
        )
        return old
    seed = int(cfg["seed"])
    check_writable(out_dir, 0, "the output folder")
    zoo = Zoo(cfg["paths"]["zoo"])
    dm = datamodule_from_config(cfg["data"])
    check_room(cfg, dm, zoo, out_dir)
    write_json(out_dir / "config.json", cfg)
    tracker = make_tracker(cfg, out_dir, run_name, group)
    try:
        m: dict[str, Any] = {
            "modification": cfg["modification"]["name"],
            "ratio": float(cfg["ratio"]),
            "data": dm.name,
            "model": model_name(cfg),
            "seed": seed,
            "git_sha": git_sha(),
            "config_hash": chash,
            "versions": package_versions(),
            "time": {},
        }
        t0 = time.time()
        parent, pmeta, _ = trained_model(cfg, dm, zoo, seed, "parent", tracker)
        refs = references_for(cfg, dm, zoo, seed, tracker)
        m["time"]["parent_s"] = time.time() - t0
        t0 = time.time()
        derived, dmeta, dpath = derive_model(cfg, dm, parent, pmeta, zoo, tracker)
        m["time"]["derive_s"] = time.time() - t0
        tracker.log_artifact(dpath, dmeta["id"])
        with stage(f"judging {dmeta['id']} against {pmeta['id']}"):
            if len(dm.test.x):  # the job's threads for judging, timed on the probes
                settle_on(parent, dm.test.x[:256])
            cal = calibration_for(cfg, dm, parent, [r[0] for r in refs], seed)
            verdict = judge(
                parent,
                derived.model,
                dm.test.x,
                dm.test.y,
                calibration=cal,
                record=dmeta["record"],
                blackbox=derived.blackbox,
            )
        m["time"].update(
            {k: cal.seconds.get(k, 0.0) + verdict.seconds.get(k, 0.0) for k in cal.seconds}
        )
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
            **verdict.to_dict(),
        }
        m["independent"] = independent_summary(refs, cal.references, zoo)
        tracker.log_curves(path_curves(verdict, cal.references))
        tracker.log_verdicts(
            [("derived", verdict), *((f"independent.{i}", r) for i, r in enumerate(cal.references))]
        )
        m["time"]["total_s"] = time.time() - t_start
        flat = flatten(m)
        write_json(metrics_path, flat)
        tracker.log_summary({k: v for k, v in flat.items() if not k.startswith("versions.")})
    finally:
        tracker.finish()
    return flat


def path_curves(verdict: Verdict, references: list[Verdict]) -> dict[str, list[dict[str, float]]]:
    """Each evidence's curve (the basin test's loss path) of the derived pair and of each
    reference pair, keyed `<model>.<evidence>`, where one was measured."""
    out = {}
    for who, v in [
        ("derived", verdict),
        *((f"independent.{i}", r) for i, r in enumerate(references)),
    ]:
        for name, r in v.evidence.items():
            if getattr(r, "curve", None):
                out[f"{who}.{name}"] = r.curve
    return out


def independent_summary(
    refs: list[tuple[nn.Module, dict[str, Any], bool]], verdicts: list[Verdict], zoo: Zoo
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["accuracy"] = sum(r[1]["accuracy"] for r in refs) / len(refs) if refs else None
    out["false_positives"] = sum(v.is_lineage is True for v in verdicts)
    for kind in evidence.kinds():  # each kind's headline values: the references' range
        vals = evidence.headlines(kind, [v.evidence for v in verdicts])
        if vals:
            out.setdefault("evidence", {})[kind.name] = {"min": min(vals), "max": max(vals)}
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

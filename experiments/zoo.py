"""The lineage benchmark zoo: parents, derived models and independent models of one dataset and
architecture, and one judged row per (parent, model) pair.

    python experiments/zoo.py --preset digits_mlp         # a few minutes: tests and CI
    python experiments/zoo.py --preset mnist_lenet        # data at ../shared/data; < 60 min CPU
    python experiments/zoo.py --preset cifar10_resnet18   # sized for a GPU
    python experiments/zoo.py --preset cifar10_device     # reduced: one call on one GPU

Extra Hydra overrides go after --override (e.g. --override data.limit=2000).

Writes outputs/experiments/<preset>/:
    models.csv    one row per model: id, role, kind, parent_id, root_id, modification, ratio,
                  seed, arch, accuracy, seconds (to train or derive it, in the run that made it)
    pairs.csv     one row per (parent, model) pair (columns below)
    pairs.jsonl   the per-pair cache: an interrupted run resumes where it stopped
    zoo.{csv,md}  the counts and the time of this run (models_s, total_s)
    timings.jsonl seconds each derived model took to derive (the zoo records training)

The zoo, per parent seed s (0..P-1):
- derived models: every registered modification at each ratio (chain excluded: see below),
  with short training options from the preset; the registered `chain` modification; and
  derived-of-derived models (a modification applied to a derived model);
- calibration references: seeds reference_seed(s, i), exactly as run.py uses them. They set
  the thresholds and are never judged as suspects here.
Independent models, shared by all parents: other seeds; models trained on one half of the
training set each; models of another architecture on the same data.

Ground truth comes from the lineage records: a pair is lineage when the model's root (its
parent_id chain followed to the end) is the parent. A derived-of-derived model is lineage to
the root; another parent, and another parent's derived models, are not.

pairs.csv columns: parent_id, model_id, kind (derived | other_parent | other_parent_derived |
independent_seed | independent_half | independent_arch), truth (1 = lineage), modification,
ratio, model_accuracy; the project's verdict: is_lineage, basin_is_lineage,
function_is_lineage, method, route, barrier, neg_barrier, barrier_rel, loss_parent (L(0)) and
loss_suspect (L(1), the path's endpoints), threshold, margin, closeness,
closeness_threshold, match_rate, mean_distance, closeness_ci_low, closeness_ci_high,
closeness_points, verdict_score (>= 0 exactly when is_lineage), determination_s,
closeness_s; per baseline b: b (score, higher = lineage, NaN when it does not apply),
b_s (seconds), b_note (why NaN).

Models are cached in the zoo (outputs/zoo, the cache run.py uses), so a rerun only judges the
pairs not yet in pairs.jsonl. Each parent is calibrated once (lineage.calibrate) and every
suspect judged against it (lineage.engine): the engine run.py uses.
"""
# ruff: noqa: E402  (the repository root goes on sys.path first: this file runs as a script)

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import copy
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from omegaconf import OmegaConf
from torch import nn

from experiments.common import BASELINE_NAMES, ROOT, parser
from lineage import models
from lineage.baselines import BASELINES
from lineage.cli import compose
from lineage.data import DataModule, datamodule_from_config
from lineage.engine import Calibration, judge
from lineage.errors import LineageError
from lineage.modifications import MODIFICATIONS
from lineage.pipeline import calibration_for, derive_model, trained_model
from lineage.report.html import md_table
from lineage.tracking import Tracker
from lineage.utils import append_line, stable_hash
from lineage.zoo import Zoo, data_spec, derived_id, read_jsonl, reference_seed

log = logging.getLogger("lineage.experiments")

# Seeds of the independent models: far from the parents (0..P-1) and references (1000+).
SEED_BASE = {"independent_seed": 100, "independent_half": 200, "independent_arch": 300}


@dataclasses.dataclass
class Preset:
    """One zoo. `overrides` are Hydra overrides of conf/config.yaml (data, model, training,
    determination, closeness); the rest says which models the zoo holds."""

    name: str
    overrides: list[str]
    parents: int = 2
    ratios: list[float] = dataclasses.field(default_factory=lambda: [0.1, 0.5, 0.9])
    modifications: list[str] | None = None  # None: every registered one but chain
    options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    chains: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # chain configs
    # derived-of-derived: ((modification, ratio), (modification, ratio)), first applied first
    grand: list[tuple[tuple[str, float], tuple[str, float]]] = dataclasses.field(
        default_factory=list
    )
    references: int = 2
    seeds: int = 2  # independent: other seeds
    halves: int = 2  # independent: one per half of the training set (0..2)
    cross_arch: list[str] = dataclasses.field(default_factory=list)  # model overrides, 1 each
    baselines: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def _steps(epochs: int) -> list[dict[str, Any]]:
    return [
        {"name": "pruning", "ratio": 0.5},
        {"name": "finetune", "ratio": 0.3, "epochs": epochs},
        {"name": "quantize", "ratio": 0.5},
    ]


PRESETS: dict[str, Preset] = {
    "digits_mlp": Preset(
        name="digits_mlp",
        overrides=["experiment=smoke", "data.epochs=20"],
        options={
            "finetune": {"epochs": 2},
            "distill": {"epochs": 5},
            "adversarial": {"epochs": 1, "steps": 3},
            "extraction": {"epochs": 5},
            "transfer": {"epochs": 2},
            "pruning": {"finetune_epochs": 0},
        },
        chains=[{"name": "chain", "steps": _steps(2)}],
        grand=[(("pruning", 0.5), ("finetune", 0.5)), (("finetune", 0.5), ("noise", 0.1))],
        seeds=2,
        halves=2,
        cross_arch=["model=lenet", "model=lenet"],
        baselines={"ipguard": {"steps": 50}},
    ),
    "mnist_lenet": Preset(
        name="mnist_lenet",
        overrides=[
            "experiment=mnist_lenet",
            "determination.probe_points=1000",
            "closeness.max_points=400",
        ],
        options={
            "finetune": {"epochs": 1},
            "distill": {"epochs": 2},
            "adversarial": {"epochs": 1, "steps": 3},
            "extraction": {"epochs": 1},
            "transfer": {"epochs": 1},
            "pruning": {"finetune_epochs": 0},
        },
        chains=[{"name": "chain", "steps": _steps(1)}],
        grand=[(("pruning", 0.5), ("finetune", 0.5))],
        seeds=2,
        halves=2,
        cross_arch=["model=mlp", "model=mlp"],
        baselines={"ipguard": {"steps": 50}},
    ),
    "cifar10_resnet18": Preset(
        name="cifar10_resnet18",
        overrides=["experiment=cifar10_resnet18"],
        options={
            "finetune": {"epochs": 3},
            "distill": {"epochs": 10},
            "adversarial": {"epochs": 2, "steps": 5},
            "extraction": {"epochs": 10},
            "transfer": {"epochs": 3},
            "pruning": {"finetune_epochs": 1},
        },
        chains=[{"name": "chain", "steps": _steps(3)}],
        grand=[(("pruning", 0.5), ("finetune", 0.5))],
        seeds=2,
        halves=2,
        cross_arch=["model=vgg11", "model=vgg11"],
        baselines={"ipguard": {"steps": 50}},
    ),
    # The reduced CIFAR-10 zoo for one call on one GPU (scripts/device_cifar10.sh): 1 parent,
    # four modifications at 2 ratios, 2 independent models (another seed, the other half).
    "cifar10_device": Preset(
        name="cifar10_device",
        overrides=["experiment=cifar10_resnet18", "data.epochs=4", "closeness.max_points=500"],
        parents=1,
        ratios=[0.3, 0.7],
        modifications=["finetune", "pruning", "distill", "quantize"],
        options={
            "finetune": {"epochs": 1},
            "distill": {"epochs": 3},
            "pruning": {"finetune_epochs": 0},
        },
        seeds=1,
        halves=1,
        baselines={"ipguard": {"steps": 20}},
    ),
}


# ------------------------------------------------------------------------------ models


@dataclasses.dataclass
class Entry:
    """A model of the zoo and what the pairs table needs to know about it."""

    model: nn.Module
    meta: dict[str, Any]
    role: str  # parent | reference | derived | independent_seed | independent_half | ...
    seconds: float  # to train or derive it now; NaN when it came from the cache

    @property
    def id(self) -> str:
        return str(self.meta["id"])


def trained(
    cfg: dict[str, Any], dm: DataModule, zoo: Zoo, seed: int, role: str, half: int | None = None
) -> Entry:
    """run.py's parent/reference recipe (or half_model's), from the zoo or trained now."""
    t0 = time.perf_counter()
    zoo_role = "parent" if role == "parent" else "independent"  # as run.py records them
    model, meta, new = trained_model(cfg, dm, zoo, seed, zoo_role, Tracker(), half)
    return Entry(model.eval(), meta, role, time.perf_counter() - t0 if new else math.nan)


def derived_entry(
    cfg: dict[str, Any],
    dm: DataModule,
    parent: Entry,
    mod: dict[str, Any],
    ratio: float,
    zoo: Zoo,
) -> Entry:
    """derive_model's derived model, loaded from the zoo when it is already there (the id is
    derive_model's own: parent, modification config, ratio, seed)."""
    did = derived_id(parent.id, mod, ratio, int(cfg["seed"]))
    if zoo.path(did).exists():
        model, meta = models.load(zoo.path(did))
        return Entry(model.eval(), meta, "derived", math.nan)
    t0 = time.perf_counter()
    d, meta, _ = derive_model(
        {**cfg, "modification": mod, "ratio": ratio},
        dm,
        parent.model,
        parent.meta,
        zoo,
        Tracker(),
    )
    return Entry(d.model.eval(), meta, "derived", time.perf_counter() - t0)


def modification_configs(preset: Preset, base: list[str]) -> dict[str, dict[str, Any]]:
    """Each modification's composed config with the preset's option overrides."""
    names = preset.modifications
    if names is None:
        names = [n for n in MODIFICATIONS.names() if n != "chain"]
    out = {}
    for n in names:
        mod = compose([*base, f"modification={n}"])["modification"]
        out[n] = {**mod, **preset.options.get(n, {})}
    return out


@dataclasses.dataclass
class Family:
    """One parent, its calibration references and everything derived from it."""

    parent: Entry
    references: list[Entry]
    derived: list[Entry]


def build_models(
    preset: Preset, zoo: Zoo, base: list[str], say: Callable[[str], None] = print
) -> tuple[dict[str, Any], DataModule, list[Family], list[Entry]]:
    cfg = compose(base)
    dm = datamodule_from_config(cfg["data"])
    mods = modification_configs(preset, base)
    families = []
    for s in range(preset.parents):
        pcfg = {**cfg, "seed": s}
        parent = trained(pcfg, dm, zoo, s, "parent")
        say(f"parent seed {s}: {parent.id} acc {parent.meta['accuracy']:.4f}")
        refs = [
            trained(pcfg, dm, zoo, reference_seed(s, i), "reference")
            for i in range(preset.references)
        ]
        derived = []
        for name, mod in mods.items():
            for r in preset.ratios:
                derived.append(derived_entry(pcfg, dm, parent, mod, r, zoo))
                took = derived[-1].seconds
                say(
                    f"  {name} {r}: {derived[-1].id} "
                    f"({'cached' if math.isnan(took) else f'{took:.1f}s'})"
                )
        for chain in preset.chains:
            derived.append(derived_entry(pcfg, dm, parent, chain, 0.5, zoo))
            say(f"  chain: {derived[-1].id}")
        for (m1, r1), (m2, r2) in preset.grand:
            first = derived_entry(pcfg, dm, parent, mods[m1], r1, zoo)
            if first.id not in {e.id for e in derived}:
                derived.append(first)  # the link from the grandchild back to the root
            derived.append(derived_entry(pcfg, dm, first, mods[m2], r2, zoo))
            say(f"  {m1} {r1} > {m2} {r2}: {derived[-1].id}")
        families.append(Family(parent, refs, derived))
    independents = [
        trained(cfg, dm, zoo, SEED_BASE["independent_seed"] + j, "independent_seed")
        for j in range(preset.seeds)
    ]
    independents += [
        trained(cfg, dm, zoo, SEED_BASE["independent_half"] + h, "independent_half", half=h)
        for h in range(preset.halves)
    ]
    independents += [
        trained(
            compose([*base, over]), dm, zoo, SEED_BASE["independent_arch"] + j, "independent_arch"
        )
        for j, over in enumerate(preset.cross_arch)
    ]
    for e in independents:
        say(f"{e.role}: {e.id} acc {e.meta['accuracy']:.4f}")
    return cfg, dm, families, independents


def arch_name(model: nn.Module) -> str:
    return str(models.arch_of(model)["name"])


def root_of(model_id: str, parents: Mapping[str, str | None]) -> str:
    """Follow parent_id links to the model nothing was derived from."""
    seen = set()
    while parents.get(model_id) is not None:
        if model_id in seen:
            raise LineageError(f"lineage records hold a cycle through {model_id}")
        seen.add(model_id)
        model_id = str(parents[model_id])
    return model_id


def model_label(meta: Mapping[str, Any]) -> tuple[str | None, float | None]:
    """(modification, ratio) of a derived model; a derived-of-derived one is named by its
    steps, 'pruning>finetune', with the last step's ratio."""
    steps = meta.get("lineage") or []
    if not steps:
        return None, None
    return ">".join(str(s["modification"]) for s in steps), float(steps[-1]["ratio"])


def kind_of(entry: Entry, parent: Entry, root: str) -> str:
    if entry.role == "derived":
        return "derived" if root == parent.id else "other_parent_derived"
    if entry.role == "parent":
        return "other_parent"
    return entry.role


# ------------------------------------------------------------------------------ judging


def verdict_score(row: Mapping[str, Any]) -> float:
    """One score whose sign is the verdict, for ranking pairs (ROC AUC, TPR at low FPR),
    from a pairs-table row (so cached rows are rescored when this rule changes).

    Each kind of evidence gives a margin relative to its own threshold (0 at the threshold,
    1 for a perfect match), so pairs judged by different evidence, and parents with
    different thresholds, rank on one scale; the verdict is the sign of the larger.

    The basin margin saturates at 1 whenever the barrier is 0, which most derived models
    reach, so on its own it ties them with any unrelated suspect that also reaches 0 (one
    damaged so badly that its loss lifts the chord over the ridge), and one such pair then
    drives the TPR at 1% FPR to 0. The other evidence breaks the tie:

        score = top * (1 + 0.01 * tanh(other))

    The factor lies in (0.99, 1.01), so the sign stays the verdict's and the deciding margin
    still dominates the ranking."""
    parts = []
    b, tau = row.get("barrier"), row.get("threshold")
    basin_known = row.get("basin_is_lineage") is not None  # None: the barrier proves nothing
    if basin_known and b is not None and tau is not None and math.isfinite(b) and tau > 0:
        parts.append(1.0 - b / tau)
    c, ct = row.get("closeness"), row.get("closeness_threshold")
    if c is not None and ct is not None and math.isfinite(c) and ct < 1:
        parts.append((c - ct) / (1.0 - ct))
    if not parts:
        return math.nan
    top, other = max(parts), min(parts)
    return top * (1.0 + 0.01 * math.tanh(other))


def baseline_scores(
    source: nn.Module,
    suspect: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    bcfg: Mapping[str, Any],
    seed: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in BASELINE_NAMES:
        try:
            r = BASELINES.get(name)(source, suspect, x, y, bcfg[name], seed)
            out[name], out[f"{name}_s"] = r.score, r.seconds
            out[f"{name}_note"] = r.details.get("reason", "")
        except LineageError as e:  # e.g. output baselines on a suspect with other classes
            out[name], out[f"{name}_s"], out[f"{name}_note"] = math.nan, math.nan, str(e)
    return out


def pair_row(
    parent: Entry,
    entry: Entry,
    root: str,
    cal: Calibration,
    dm: DataModule,
    bcfg: Mapping[str, Any],
    seed: int,
) -> dict[str, Any]:
    x, y = dm.test.x, dm.test.y
    verdict = judge(
        parent.model, entry.model, x, y, calibration=cal, record=entry.meta.get("record")
    )
    times = verdict.seconds
    d, c = verdict.determination, verdict.closeness
    mod, ratio = model_label(entry.meta)
    row = {
        "parent_id": parent.id,
        "model_id": entry.id,
        "kind": kind_of(entry, parent, root),
        "truth": int(root == parent.id),
        "modification": mod,
        "ratio": ratio,
        "model_accuracy": entry.meta.get("accuracy"),
        "is_lineage": bool(d.is_lineage),
        "basin_is_lineage": d.basin_is_lineage,
        "function_is_lineage": d.function_is_lineage,
        "method": d.method,
        "route": d.route,
        "barrier": d.barrier,
        "neg_barrier": -d.barrier if d.barrier is not None else math.nan,
        "barrier_rel": d.barrier_rel,
        "loss_parent": d.loss_parent,
        "loss_suspect": d.loss_suspect,
        "threshold": d.threshold,
        "margin": d.margin,
        "closeness": c.score,
        "closeness_threshold": d.function_threshold,
        "match_rate": c.match_rate,
        "mean_distance": c.mean_distance,
        "closeness_ci_low": c.ci_low,
        "closeness_ci_high": c.ci_high,
        "closeness_points": c.n_points,
        "closeness_route": verdict.closeness_route,
        **times,
    }
    row["verdict_score"] = verdict_score(row)
    return {**row, **baseline_scores(parent.model, entry.model, x, y, bcfg, seed)}


def baseline_config(preset: Preset) -> dict[str, Any]:
    raw = OmegaConf.to_container(
        OmegaConf.load(ROOT / "lineage" / "conf" / "baselines" / "default.yaml")
    )
    assert isinstance(raw, dict)
    return {str(k): {**(v or {}), **preset.baselines.get(str(k), {})} for k, v in raw.items()}


def settings_hash(cfg: Mapping[str, Any], bcfg: Mapping[str, Any]) -> str:
    """What a cached pair row depends on beyond the two models: judge and baseline options."""
    return stable_hash(
        {
            "determination": cfg["determination"],
            "closeness": cfg["closeness"],
            "baselines": bcfg,
            "data": data_spec(cfg["data"]),
        }
    )


def build(
    preset: Preset, out: Path, zoo_root: Path | None = None, say: Callable[[str], None] = print
) -> pd.DataFrame:
    """Build (or resume) the zoo of `preset`; write models.csv, pairs.csv and zoo.md to `out`
    and return the pairs table."""
    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    zoo = Zoo(zoo_root or ROOT / "outputs" / "zoo")
    base = [*preset.overrides, "logger=none", "closeness.progress=false"]
    cfg, dm, families, independents = build_models(preset, zoo, base, say)
    t_models = time.perf_counter() - t_start
    bcfg = baseline_config(preset)
    shash = settings_hash(cfg, bcfg)
    everyone: dict[str, Entry] = {}
    for f in families:
        everyone.update({e.id: e for e in [f.parent, *f.derived]})
    everyone.update({e.id: e for e in independents})
    links = {mid: e.meta.get("parent_id") for mid, e in everyone.items()}
    cache_path = out / "pairs.jsonl"
    cached = {
        (r["parent_id"], r["model_id"]): r
        for r in read_jsonl(cache_path)
        if r.get("settings") == shash
    }
    rows = []
    n_new = 0
    for fi, f in enumerate(families):
        cal = None
        for mid, entry in everyone.items():
            if mid == f.parent.id:
                continue
            key = (f.parent.id, mid)
            if key in cached:
                rows.append({**cached[key], "verdict_score": verdict_score(cached[key])})
                continue
            if cal is None:
                cal = calibration_for(cfg, dm, f.parent.model, [r.model for r in f.references], fi)
            row = {
                **pair_row(f.parent, entry, root_of(mid, links), cal, dm, bcfg, fi),
                "settings": shash,
            }
            append_line(cache_path, json.dumps(row, default=_jsonable))
            rows.append(row)
            n_new += 1
            say(
                f"pair {f.parent.id} {mid} {row['kind']} {row['modification']} "
                f"{row['ratio']}: truth {row['truth']} verdict {int(row['is_lineage'])}"
            )
    pairs = pd.DataFrame(rows).drop(columns=["settings"])
    pairs.to_csv(out / "pairs.csv", index=False)
    model_rows = []
    for e in everyone.values():
        mod, ratio = model_label(e.meta)
        role = "parent" if e.role == "parent" else e.role
        model_rows.append(
            {
                "id": e.id,
                "role": role,
                "parent_id": e.meta.get("parent_id"),
                "root_id": root_of(e.id, links),
                "modification": mod,
                "ratio": ratio,
                "seed": e.meta.get("seed"),
                "arch": arch_name(e.model),
                "accuracy": e.meta.get("accuracy"),
                "seconds": e.seconds,
            }
        )
    for f in families:
        for r in f.references:
            model_rows.append(
                {
                    "id": r.id,
                    "role": "reference",
                    "parent_id": None,
                    "root_id": r.id,
                    "modification": None,
                    "ratio": None,
                    "seed": r.meta.get("seed"),
                    "arch": arch_name(r.model),
                    "accuracy": r.meta.get("accuracy"),
                    "seconds": r.seconds,
                }
            )
    models_df = pd.DataFrame(model_rows)
    models_df["seconds"] = recorded_seconds(models_df, out / "timings.jsonl", zoo)
    models_df.to_csv(out / "models.csv", index=False)
    total = time.perf_counter() - t_start
    summary = pd.DataFrame(
        [
            {
                "preset": preset.name,
                "parents": len(families),
                "derived": sum(len(f.derived) for f in families),
                "independent": len(independents),
                "references": sum(len(f.references) for f in families),
                "pairs": len(pairs),
                "lineage_pairs": int(pairs["truth"].sum()),
                "pairs_judged_now": n_new,
                "models_s": round(t_models, 1),
                "total_s": round(total, 1),
                "threads": torch.get_num_threads(),
            }
        ]
    )
    summary.to_csv(out / "zoo.csv", index=False)
    (out / "zoo.md").write_text(f"### Zoo {preset.name}\n\n{md_table(summary)}\n")
    say(md_table(summary))
    return pairs


def recorded_seconds(models_df: pd.DataFrame, path: Path, zoo: Zoo) -> pd.Series:
    """Each model's seconds to train or derive, measured now or in the run that made it (the
    zoo records training times; derivation times are kept in `path`)."""
    known = {r["id"]: r["seconds"] for r in zoo.trained()}
    known.update({r["id"]: r["seconds"] for r in read_jsonl(path)})
    for mid, sec in zip(models_df["id"], models_df["seconds"]):
        if math.isfinite(sec) and mid not in known:
            append_line(path, json.dumps({"id": mid, "seconds": sec}))
            known[mid] = sec
    return models_df["id"].map(known).astype(float)


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item()
    return str(v)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--parents", type=int, help="override the preset's number of parents")
    p.add_argument(
        "--override",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="Hydra overrides added to the preset's (e.g. data.limit=2000 model.width=0.25)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is often fastest for these small models)",
    )
    args = p.parse_args(argv)
    preset = preset_of(args.preset, args.parents, args.override)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    build(preset, args.outputs / preset.name, say=lambda s: print(s, flush=True))


def preset_of(name: str, parents: int | None = None, overrides: Sequence[str] = ()) -> Preset:
    """A copy of preset `name` with the command line's changes."""
    if name not in PRESETS:
        raise SystemExit(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    preset = copy.deepcopy(PRESETS[name])
    if parents:
        preset.parents = parents
    preset.overrides = [*preset.overrides, *overrides]
    return preset


if __name__ == "__main__":
    main()

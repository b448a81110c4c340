"""The lineage benchmark zoo: parents, derived models and independent models of one dataset and
architecture, and one judged row per (parent, model) pair.

    python -m experiments.zoo --preset digits_mlp       # a few minutes: tests and CI
    python -m experiments.zoo --preset mnist_lenet      # data at ../shared/data
    python -m experiments.zoo --preset mnist_lenet_b    # the same recipe, other parents
    python -m experiments.zoo --preset cifar10_lenet    # CIFAR-10 on a 2-core CPU
    python -m experiments.zoo --preset cifar10_device   # reduced ResNet-18: one call, one GPU

Presets are YAML files in experiments/presets/ (experiments/presets.py says what each key
means). Extra Hydra overrides go after --override (e.g. --override data.limit=2000).

Writes outputs/experiments/<preset>/:
    models.csv    one row per model: id, role, kind, parent_id, root_id, modification, ratio,
                  seed, arch, accuracy, seconds (to train or derive it, in the run that made it)
    pairs.csv     one row per (parent, model) pair (columns below)
    pairs.jsonl   the per-pair cache: an interrupted run resumes where it stopped
    zoo.{csv,md}  the counts and the time of this run (models_s, total_s)
    timings.jsonl seconds each derived model took to derive (the zoo records training)

The zoo, per parent seed s (parents_seed_offset + 0..parents-1):
- derived models: every registered modification at each ratio (chain excluded: see below),
  with short training options from the preset; the registered `chain` modification; and
  derived-of-derived models (a modification applied to a derived model);
- calibration references: seeds reference_seed(s, i), exactly as `lineage run` uses them.
  They calibrate the verdict and are never judged as suspects here.
Independent models, shared by all parents: other seeds; models trained on one half of the
training set each; models of another architecture on the same data; and a preset's
`recipes`, models trained by recipes the references never use (experiments.recipe_shift).

Ground truth comes from the lineage records: a pair is lineage when the model's root (its
parent_id chain followed to the end) is the parent. A derived-of-derived model is lineage to
the root; another parent, and another parent's derived models, are not.

pairs.csv columns: lineage.results.PAIR_COLUMNS (parent_id, model_id, kind: derived |
other_parent | other_parent_derived | independent_seed | independent_half |
independent_arch | independent_recipe, truth, is_lineage, closeness, barrier, p_value,
verdict_score = -log10 p),
then modification, ratio, model_accuracy and the rest of the verdict's evidence (p_basin,
p_closeness, p_inherited, inherited_score, decided_by, caveat, chord_barrier, ...);
per baseline b: b (score, higher = lineage, NaN when it does not apply), b_s (seconds),
b_note (why NaN).

Models are cached in the zoo store (outputs/zoo, the cache `lineage run` uses), so a rerun
only judges the pairs not yet in pairs.jsonl. Each parent is calibrated once
(lineage.calibrate) and every suspect judged against it (lineage.engine).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from experiments import presets
from experiments.common import BASELINE_NAMES, ROOT, parser
from experiments.zoo_models import Entry, build_models, kind_of, model_label, model_row, root_of
from lineage.baselines import BASELINES
from lineage.data import DataModule
from lineage.engine import Calibration, judge
from lineage.errors import LineageError
from lineage.evaluate import evidence
from lineage.pipeline import calibration_for
from lineage.report.html import md_table
from lineage.results import PAIR_COLUMNS, evidence_columns, verdict_columns
from lineage.utils import append_line, stable_hash
from lineage.zoo import Zoo, data_spec, read_jsonl

log = logging.getLogger("lineage.experiments")


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
    mod, ratio = model_label(entry.meta)
    row = {
        "parent_id": parent.id,
        "model_id": entry.id,
        "kind": kind_of(entry, parent, root),
        "truth": int(root == parent.id),
        **verdict_columns(verdict),
        "modification": mod,
        "ratio": ratio,
        "model_accuracy": entry.meta.get("accuracy"),
        **evidence_columns(verdict),
    }
    assert list(row)[: len(PAIR_COLUMNS) - 1] == PAIR_COLUMNS[1:]  # the schema, minus `job`
    return {**row, **baseline_scores(parent.model, entry.model, x, y, bcfg, seed)}


def baseline_config(preset: presets.Preset) -> dict[str, Any]:
    from lineage.baselines import config

    return config(preset.baselines)


def settings_hash(cfg: Mapping[str, Any], bcfg: Mapping[str, Any]) -> str:
    """What a cached pair row depends on beyond the two models: judge and baseline options."""
    groups = [k.group for k in evidence.kinds()] + ["verdict"]
    return stable_hash(
        {
            **{g: cfg.get(g) for g in groups},
            "baselines": bcfg,
            "data": data_spec(cfg["data"]),
        }
    )


def build(
    preset: presets.Preset,
    out: Path,
    zoo_root: Path | None = None,
    say: Callable[[str], None] = print,
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
    for f in families:
        cal = None
        for mid, entry in everyone.items():
            if mid == f.parent.id:
                continue
            key = (f.parent.id, mid)
            if key in cached:
                rows.append(cached[key])
                continue
            if cal is None:
                refs = [r.model for r in f.references]
                cal = calibration_for(cfg, dm, f.parent.model, refs, f.seed)
            row = {
                **pair_row(f.parent, entry, root_of(mid, links), cal, dm, bcfg, f.seed),
                "settings": shash,
            }
            append_line(cache_path, json.dumps(row, default=_jsonable))
            rows.append(row)
            n_new += 1
            say(
                f"pair {f.parent.id} {mid} {row['kind']} {row['modification']} "
                f"{row['ratio']}: truth {row['truth']} verdict {int(row['is_lineage'])} "
                f"p {row['p_value']:.2g}"
            )
    pairs = pd.DataFrame(rows).drop(columns=["settings"])
    pairs.to_csv(out / "pairs.csv", index=False)
    model_rows = [model_row(e, links) for e in everyone.values()]
    for f in families:
        model_rows += [model_row(r, {}, "reference") for r in f.references]
    models_df = pd.DataFrame(model_rows)
    models_df["seconds"] = recorded_seconds(models_df, out / "timings.jsonl", zoo)
    models_df.to_csv(out / "models.csv", index=False)
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
                "total_s": round(time.perf_counter() - t_start, 1),
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
    preset = presets.load(args.preset, args.parents, args.override)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    build(preset, args.outputs / preset.name, say=lambda s: print(s, flush=True))


if __name__ == "__main__":
    main()

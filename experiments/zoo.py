"""The lineage benchmark zoo: parents, derived models and independent models of one dataset and
architecture, and one judged row per (parent, model) pair.

    python -m experiments.zoo --preset digits_mlp       # a few minutes: tests and CI
    python -m experiments.zoo --preset mnist_lenet      # data at ../shared/data
    python -m experiments.zoo --preset mnist_lenet --jobs 2   # two processes, one per core
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
    zoo.{csv,md}  the counts and the time of this run (models_s, total_s, jobs, threads)
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

import argparse
import json
import logging
import math
import multiprocessing
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from experiments import presets
from experiments.common import BASELINE_NAMES, ROOT, parser
from experiments.zoo_models import (
    Entry,
    Family,
    Share,
    build_models,
    kind_of,
    model_label,
    model_row,
    root_of,
)
from lineage.baselines import BASELINES
from lineage.config import compose
from lineage.data import DataModule
from lineage.engine import Calibration, judge
from lineage.errors import LineageError
from lineage.evaluate import evidence
from lineage.pipeline import calibration_for
from lineage.report.html import md_table
from lineage.results import PAIR_COLUMNS, evidence_columns, verdict_columns
from lineage.runtime import threads_for
from lineage.text import printable
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
    jobs: int = 1,
    threads: int | None = None,
) -> pd.DataFrame:
    """Build (or resume) the zoo of `preset`; write models.csv, pairs.csv and zoo.md to `out`
    and return the pairs table. `jobs` > 1 makes the models, then judges the pairs, in that
    many processes of `threads` torch threads each (default: the cores shared out); what
    they leave in the store and in pairs.jsonl is then read back here, as a resumed run."""
    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    zoo_root = zoo_root or ROOT / "outputs" / "zoo"
    judged_before = len(read_jsonl(out / "pairs.jsonl"))
    job_threads = threads or threads_for(None, jobs)
    stages: dict[str, float] = {}
    if jobs > 1:
        compose(base_overrides(preset))  # a bad option fails here, before any job starts
        stages = in_parallel(preset, out, zoo_root, jobs, job_threads, say)
    zoo = Zoo(zoo_root)
    cfg, dm, families, independents = build_models(preset, zoo, base_overrides(preset), say)
    t_models = stages.get("models", time.perf_counter() - t_start)
    rows = judge_pairs(preset, out, cfg, dm, families, independents, say)
    pairs = pd.DataFrame(rows).drop(columns=["settings"])
    pairs.to_csv(out / "pairs.csv", index=False)
    links = links_of(families, independents)
    model_rows = [model_row(e, links) for e in everyone_of(families, independents).values()]
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
                "pairs_judged_now": len(read_jsonl(out / "pairs.jsonl")) - judged_before,
                "models_s": round(t_models, 1),
                "total_s": round(time.perf_counter() - t_start, 1),
                "jobs": jobs,
                "threads": torch.get_num_threads() if jobs == 1 else job_threads,
            }
        ]
    )
    summary.to_csv(out / "zoo.csv", index=False)
    (out / "zoo.md").write_text(f"### Zoo {preset.name}\n\n{md_table(summary)}\n")
    say(md_table(summary))
    return pairs


def base_overrides(preset: presets.Preset) -> list[str]:
    return [*preset.overrides, "logger=none", "closeness.progress=false"]


def everyone_of(families: list[Family], independents: list[Entry]) -> dict[str, Entry]:
    """Every model that is judged against a parent (the parents among them), by id."""
    everyone: dict[str, Entry] = {}
    for f in families:
        everyone.update({e.id: e for e in [f.parent, *f.derived]})
    everyone.update({e.id: e for e in independents})
    return everyone


def links_of(families: list[Family], independents: list[Entry]) -> dict[str, str | None]:
    return {mid: e.meta.get("parent_id") for mid, e in everyone_of(families, independents).items()}


def judge_pairs(
    preset: presets.Preset,
    out: Path,
    cfg: dict[str, Any],
    dm: DataModule,
    families: list[Family],
    independents: list[Entry],
    say: Callable[[str], None],
    share: Share | None = None,
) -> list[dict[str, Any]]:
    """Every (parent, model) pair's row: from pairs.jsonl when judged under these settings,
    else judged now and appended there. With `share`, only that job's part of the pairs is
    judged (whole families to a job when there are enough families to go round, else the
    pairs in turn) and the rows returned are those."""
    share = share or Share()
    bcfg = baseline_config(preset)
    shash = settings_hash(cfg, bcfg)
    everyone = everyone_of(families, independents)
    links = links_of(families, independents)
    cache_path = out / "pairs.jsonl"
    cached = {
        (r["parent_id"], r["model_id"]): r
        for r in read_jsonl(cache_path)
        if r.get("settings") == shash
    }
    by_family = len(families) >= share.n
    rows = []
    for fi, f in enumerate(families):
        cal = None
        for mid, entry in everyone.items():
            if mid == f.parent.id:
                continue
            if not (fi % share.n == share.k if by_family else share.mine()):
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
            say(
                f"pair {f.parent.id} {mid} {row['kind']} {row['modification']} "
                f"{row['ratio']}: truth {row['truth']} verdict {int(row['is_lineage'])} "
                f"p {row['p_value']:.2g}"
            )
    return rows


def in_parallel(
    preset: presets.Preset,
    out: Path,
    zoo_root: Path,
    jobs: int,
    threads: int,
    say: Callable[[str], None],
) -> dict[str, float]:
    """The zoo's models, then its pairs, made by `jobs` processes at once (each its `Share`
    of `threads` torch threads); returns each stage's wall seconds. The second stage starts
    when every model is in the store: a pair needs both of its models. An interrupted run
    keeps what each job finished."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    took = {}
    # one pool for both stages: its processes import torch and read the data once
    with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        for stage in ("models", "pairs"):
            t0 = time.perf_counter()
            done = [
                pool.submit(_job, stage, preset, out, zoo_root, Share(k, jobs), threads)
                for k in range(jobs)
            ]
            for d in done:
                d.result()  # a job's error is raised here
            took[stage] = time.perf_counter() - t0
            say(f"{stage}: {jobs} jobs of {threads} thread(s), {took[stage]:.0f} s")
    return took


def _job(
    stage: str, preset: presets.Preset, out: Path, zoo_root: Path, share: Share, threads: int
) -> None:
    """One job of `in_parallel`, in its own process."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)

    def say(s: str) -> None:
        print(f"[job {share.k + 1}/{share.n}] {s}", flush=True)

    zoo = Zoo(zoo_root)
    if stage == "models":
        _, _, families, _ = build_models(preset, zoo, base_overrides(preset), say, share)
        for e in (e for f in families for e in f.derived if math.isfinite(e.seconds)):
            # the store records training times, not derivation times: kept here for
            # models.csv, as recorded_seconds keeps one job's
            append_line(out / "timings.jsonl", json.dumps({"id": e.id, "seconds": e.seconds}))
        return
    cfg, dm, families, independents = build_models(
        preset, zoo, base_overrides(preset), lambda s: None
    )
    judge_pairs(preset, out, cfg, dm, families, independents, say, share)


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
        "--zoo",
        type=Path,
        default=None,
        help="the model store (default outputs/zoo, the one `lineage run` uses)",
    )
    add_job_options(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads or 1)
    logging.basicConfig(level=logging.WARNING)
    say = lambda s: print(s, flush=True)  # noqa: E731
    try:
        preset = presets.load(args.preset, args.parents, args.override)
        out = args.outputs / preset.name
        build(preset, out, args.zoo, say=say, jobs=args.jobs, threads=args.threads)
    except LineageError as e:  # a job's error too: it is raised again here
        print(f"error: {printable(e)}", file=sys.stderr)
        sys.exit(2)


def add_job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        choices=range(1, 65),
        metavar="N",
        help="processes that train, derive and judge at once (1..64; default 1)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        choices=range(1, 257),
        metavar="T",
        help="torch CPU threads per process (default: 1 for one job, else the cores shared "
        "out; 1 is often fastest for these small models)",
    )


if __name__ == "__main__":
    main()

"""Lineage determination benchmark: modification x ratio -> barrier, threshold, verdict.

    python benchmarks/bench_determination.py                       # digits MLP + MNIST LeNet
    python benchmarks/bench_determination.py --data-root ../shared/data --settings mnist

Parents and independent references come from the zoo (outputs/zoo, the same cache and
specs as run.py); derived models are cached there too, so reruns only re-judge. Every
suspect is judged with the threshold calibrated on all references; every reference is
judged leave-one-out (threshold from the *other* references). With --closeness the
function evidence (lineage.evaluate.closeness) joins in through verdict.combine, as in
run.py, which is what can call distilled/extracted students lineage. The last table is the cost
of one pair (11 alphas, the probe set, alignment included) with 2 and with 1 CPU threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lineage import models  # noqa: E402
from lineage.cli import compose  # noqa: E402
from lineage.data import datamodule_from_config  # noqa: E402
from lineage.evaluate.basin import determine, settings  # noqa: E402
from lineage.evaluate.calibration import calibrate  # noqa: E402
from lineage.evaluate.closeness import closeness, closeness_threshold  # noqa: E402
from lineage.evaluate.verdict import combine  # noqa: E402
from lineage.pipeline import derive_model, trained_model  # noqa: E402
from lineage.tracking import Tracker  # noqa: E402
from lineage.training import accuracy  # noqa: E402
from lineage.utils import stable_hash  # noqa: E402
from lineage.zoo import Zoo, reference_seed  # noqa: E402

SETTINGS = {"digits": ["data=digits", "model=mlp"], "mnist": ["data=mnist", "model=lenet"]}
# (modification, ratio, Hydra overrides of its group). The issue requires the first block
# to be judged lineage; distill and extraction students start from fresh weights, so only
# the function evidence (closeness) can call them lineage.
CASES: list[tuple[str, float, list[str]]] = [
    ("finetune", 0.1, []),
    ("finetune", 0.5, []),
    ("finetune", 1.0, []),
    ("pruning", 0.1, []),
    ("pruning", 0.5, []),
    ("pruning", 0.9, []),
    ("pruning", 0.5, ["modification.method=l1_structured"]),
    ("quantize", 0.0, []),
    ("quantize", 0.67, []),
    ("permute", 0.5, []),
    ("permute", 1.0, []),
    ("noise", 0.1, []),
    ("noise", 0.5, []),
    ("transfer", 0.1, []),
    ("transfer", 0.5, []),
    ("transfer", 1.0, []),
    ("chain", 0.5, []),
    ("distill", 0.0, []),
    ("distill", 0.5, []),
    ("extraction", 1.0, []),
]
REQUIRED = {"finetune", "pruning", "quantize", "permute", "noise", "transfer", "chain"}


def derived(
    cfg: dict[str, Any], dm: Any, parent: torch.nn.Module, pmeta: dict[str, Any], zoo: Zoo
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The derived model of run.py for this config, from the zoo when already there."""
    mod, ratio, seed = cfg["modification"], float(cfg["ratio"]), int(cfg["seed"])
    did = "d-" + stable_hash(
        {"parent": pmeta["id"], "modification": mod, "ratio": ratio, "seed": seed}
    )
    if zoo.path(did).exists():
        return models.load(zoo.path(did))
    d, meta, _ = derive_model(cfg, dm, parent, pmeta, zoo, Tracker())
    return d.model.eval(), meta


def row(
    name: str, ratio: float | str, r: Any, dcfg: dict[str, Any], acc: float | None, expect: str
) -> dict[str, Any]:
    fallback = None
    if r.barrier is not None:
        tau, _ = calibrate(None, (r.loss_parent, r.loss_suspect), settings(dcfg))
        fallback = "lineage" if r.barrier <= tau else "not"
    verdict = "lineage" if r.is_lineage else "not"
    ok = {"lineage": verdict == "lineage", "not": verdict == "not"}.get(expect)
    return {
        "modification": name,
        "ratio": ratio,
        "acc": acc,
        "L0": r.loss_parent,
        "L1": r.loss_suspect,
        "barrier": r.barrier,
        "rel": r.barrier_rel,
        "threshold": r.threshold,
        "verdict": verdict,
        "uncal.": fallback,
        "closeness": r.function_score,
        "close_tau": r.function_threshold,
        "method": r.method,
        "expect": expect,
        "ok": "" if ok is None else ("yes" if ok else "NO"),
        "s": r.seconds,
    }


def timing(
    parent: torch.nn.Module,
    other: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    dcfg: dict[str, Any],
) -> list[dict[str, Any]]:
    out = []
    before = torch.get_num_threads()
    for threads in (2, 1):
        torch.set_num_threads(threads)
        secs, cpu = [], []
        for _ in range(7):
            c0 = time.process_time()
            secs.append(determine(parent, other, x, y, dcfg).seconds)
            cpu.append(time.process_time() - c0)
        # CPU seconds show the work itself when other jobs share the cores (wall >> CPU).
        out.append(
            {
                "threads": threads,
                "alphas": dcfg["alphas"],
                "probe": len(y),
                "best_s": min(secs),
                "median_s": statistics.median(secs),
                "cpu_s": min(cpu),
                "load_avg_1min": os.getloadavg()[0],
            }
        )
    torch.set_num_threads(before)
    return out


def bench(setting: str, args: argparse.Namespace) -> None:
    base = [*SETTINGS[setting], f"data.root={args.data_root}", "logger=none"]
    cfg = compose(base)
    dcfg = cfg["determination"]
    dm = datamodule_from_config(cfg["data"])
    zoo = Zoo(args.zoo)
    parent, pmeta, _ = trained_model(cfg, dm, zoo, int(cfg["seed"]), "parent", Tracker())
    refs = [
        trained_model(cfg, dm, zoo, reference_seed(int(cfg["seed"]), i), "independent", Tracker())[
            0
        ]
        for i in range(args.references)
    ]
    n = int(dcfg.get("probe_points") or len(dm.test))
    x, y = dm.test.x[:n], dm.test.y[:n]
    print(
        f"\n## {setting}: {cfg['model']['name']} on {dm.name}, parent accuracy "
        f"{pmeta['accuracy']:.4f}, {len(refs)} references, {len(y)} probe points",
        flush=True,
    )
    ccfg = {**cfg["closeness"], "progress": False}

    def score(m: torch.nn.Module) -> float | None:
        """The function evidence (closeness score), only with --closeness (it is slower)."""
        if not args.closeness:
            return None
        return closeness(parent, m, dm.test.x, dm.test.y, ccfg, seed=int(cfg["seed"])).score

    ref_res = [determine(parent, r, x, y, dcfg) for r in refs]
    barriers = [r.barrier for r in ref_res]
    scores = [score(r) for r in refs]
    rows = []
    for i, r in enumerate(refs):
        # leave-one-out: each reference is judged against thresholds the others set
        loo = determine(parent, r, x, y, dcfg, [b for j, b in enumerate(barriers) if j != i])
        others = [c for j, c in enumerate(scores) if j != i and c is not None]
        loo = combine(loo, scores[i], closeness_threshold(others) if args.closeness else None)
        rows.append(row(f"independent {i}", "-", loo, dcfg, accuracy(r, x, y), "not"))
    tau_close = closeness_threshold([c for c in scores if c is not None])
    for name, ratio, over in CASES:
        if args.only and name not in args.only:
            continue
        mcfg = compose([*base, f"modification={name}", f"ratio={ratio}", *over])
        t0 = time.time()
        model, meta = derived(mcfg, dm, parent, pmeta, zoo)
        made = time.time() - t0
        res = determine(parent, model, x, y, dcfg, barriers, None, meta.get("record"))
        res = combine(res, score(model), tau_close if args.closeness else None)
        label = name + ("/" + ",".join(o.split("=")[1] for o in over) if over else "")
        acc = accuracy(model, x, y) if model.head.out_features == dm.num_classes else None
        rows.append(
            row(label, ratio, res, dcfg, acc, "lineage" if name in REQUIRED else "function?")
        )
        print(f"  {label} {ratio}: derived in {made:.1f}s, barrier {res.barrier}", flush=True)
    table = pd.DataFrame(rows)
    with pd.option_context(
        "display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4f}".format
    ):
        print(table.to_string(index=False))
    out = ROOT / "outputs" / "bench_determination"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{setting}.csv", index=False)
    if setting == "mnist":
        t = pd.DataFrame(
            timing(parent, refs[0], dm.test.x[:2000], dm.test.y[:2000], {**dcfg, "alphas": 11})
        )
        print(f"\ncost of one {cfg['model']['name']} pair (alignment included):")
        print(t.to_string(index=False, float_format="{:.3f}".format))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--zoo", default=str(ROOT / "outputs" / "zoo"))
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--references", type=int, default=3, help="independent references (>= 2)")
    p.add_argument("--only", nargs="*", help="modifications to run (default: all)")
    p.add_argument(
        "--closeness",
        action="store_true",
        help="also measure closeness and show the combined verdict",
    )
    args = p.parse_args()
    args.data_root = str(Path(args.data_root).resolve())
    os.environ.setdefault("LINEAGE_DATA", args.data_root)  # a modification's own data
    os.environ.setdefault("WANDB_MODE", "disabled")
    torch.set_num_threads(2)
    for s in args.settings:
        bench(s, args)


if __name__ == "__main__":
    main()

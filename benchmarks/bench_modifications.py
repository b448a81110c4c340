"""Every registered modification on an MNIST LeNet parent at ratios 0.1, 0.5 and 0.9:
the derived model's accuracy, its main measured effect and the seconds it took.

    python -m benchmarks.bench_modifications --data-root ../shared/data
    python -m benchmarks.bench_modifications --data-root ../shared/data --quick

The parent comes from the zoo (outputs/zoo), trained or loaded exactly as run.py does for
data=mnist model=lenet seed=0 with data.epochs=3 (`--data`, `--model` pick others), so it is
trained once. Modifications that train run `--mod-epochs` epochs (their digits-sized
defaults are longer than MNIST needs); everything else is the modification's default, except that
the chain's steps (pruning -> finetune -> quantize) all take the row's ratio.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from lineage.config import compose
from lineage.data import datamodule_from_config
from lineage.modifications import MODIFICATIONS, derive
from lineage.modifications.registry import OPTIONS
from lineage.pipeline import trained_model
from lineage.tracking import Tracker
from lineage.training import accuracy
from lineage.utils import flatten
from lineage.zoo import Zoo

# (row label, config) per modification; pruning appears once per method.
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("finetune", {"name": "finetune"}),
    ("pruning", {"name": "pruning"}),
    ("pruning[l1_structured]", {"name": "pruning", "method": "l1_structured"}),
    ("distill", {"name": "distill"}),
    ("quantize", {"name": "quantize"}),
    ("transfer", {"name": "transfer"}),
    ("adversarial", {"name": "adversarial"}),
    ("extraction", {"name": "extraction"}),
    ("noise", {"name": "noise"}),
    ("permute", {"name": "permute"}),
    # no step ratios: every step takes the row's ratio (epochs set in main)
    (
        "chain",
        {
            "name": "chain",
            "steps": [{"name": "pruning"}, {"name": "finetune"}, {"name": "quantize"}],
        },
    ),
]
# The numbers that show each modification did what its ratio asks (flattened effect keys).
MAIN = {
    "finetune": ("trainable_fraction",),
    "pruning": ("sparsity", "channels_removed"),
    "distill": ("param_ratio", "teacher_agreement"),
    "quantize": ("bits", "levels_max"),
    "transfer": ("trainable_fraction",),
    "adversarial": ("adv_fraction", "robust_accuracy"),
    "extraction": ("query_count", "test_agreement"),
    "noise": ("relative_change",),
    "permute": ("permuted_groups", "max_output_diff"),
    "chain": ("step0.sparsity", "step1.trainable_fraction", "step2.bits"),
}


def fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--zoo", default="outputs/zoo")
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--epochs", type=int, default=3, help="parent training epochs")
    ap.add_argument("--mod-epochs", type=int, default=1, help="epochs of training modifications")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    ap.add_argument("--only", nargs="*", help="row labels to run (default: all registered)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--quick", action="store_true", help="6k MNIST images, 1-epoch parent")
    ap.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs = 1
    # modifications with their own data (transfer) read the same files
    os.environ.setdefault("LINEAGE_DATA", args.data_root)
    cfg = compose(
        [f"data={args.data}", f"model={args.model}", f"data.root={Path(args.data_root).resolve()}",
         f"data.epochs={args.epochs}", "logger=none", *(["data.limit=6000"] if args.quick else []),
         *args.override]
    )  # fmt: skip
    dm = datamodule_from_config(cfg["data"])
    parent, meta, trained = trained_model(cfg, dm, Zoo(args.zoo), 0, "parent", Tracker())
    print(
        f"parent {meta['id']} ({'trained' if trained else 'from the zoo'}): "
        f"accuracy {meta['accuracy']:.4f}",
        flush=True,
    )

    rows = []
    for label, mcfg in VARIANTS:
        name = mcfg["name"]
        if name not in MODIFICATIONS or (args.only and label not in args.only):
            continue
        if "epochs" in getattr(OPTIONS.get(name), "__dataclass_fields__", {}):
            mcfg = {**mcfg, "epochs": args.mod_epochs}
        if name == "chain":
            steps = [
                {**s, "epochs": args.mod_epochs} if s["name"] == "finetune" else s
                for s in mcfg["steps"]
            ]
            mcfg = {**mcfg, "steps": steps}
        for r in args.ratios:
            t0 = time.time()
            d = derive(parent, dm, mcfg, r, 0)
            secs = time.time() - t0
            acc = d.effect.get("accuracy")
            if acc is None:
                acc = accuracy(d.model, dm.test.x, dm.test.y)
            effect = flatten(d.effect)
            shown = ", ".join(f"{k}={fmt(effect[k])}" for k in MAIN.get(name, ()) if k in effect)
            rows.append(
                {
                    "modification": label,
                    "ratio": r,
                    "accuracy": acc,
                    "effect": shown,
                    "seconds": secs,
                }
            )
            print(
                f"{label:24s} ratio {r:.1f}  accuracy {acc:.4f}  {shown}  {secs:.1f}s", flush=True
            )

    df = pd.DataFrame(rows)
    print(
        f"\n{dm.name} {cfg['model']['name']} parent {meta['id']}: accuracy {meta['accuracy']:.4f}; "
        f"training modifications: {args.mod_epochs} epoch(s); threads {args.threads}"
    )
    print(
        df.to_string(
            index=False,
            formatters={
                "ratio": "{:.1f}".format,
                "accuracy": "{:.4f}".format,
                "seconds": "{:.1f}".format,
            },
        )
    )
    print("\naccuracy by ratio (transfer: on its target task, classes 5-9)")
    print(
        df.pivot(index="modification", columns="ratio", values="accuracy")
        .reindex([v for v, _ in VARIANTS if v in set(df["modification"])])
        .to_string(float_format=lambda v: f"{v:.4f}")
    )


def smallest(tmp: Path) -> None:
    """Every variant at ratio 0.5 on a digits MLP trained for 2 epochs."""
    main(
        ["--data", "digits", "--model", "mlp", "--zoo", str(tmp / "zoo"), "--epochs", "2",
         "--ratios", "0.5", "--override", "model.hidden=[32]"]
    )  # fmt: skip


if __name__ == "__main__":
    main()

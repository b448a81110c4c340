"""Every registered modification on an MNIST LeNet parent at ratios 0.1, 0.5 and 0.9:
the derived model's accuracy, its main measured effect and the seconds it took.

    python -m benchmarks.bench_modifications --data-root ../shared/data
    python -m benchmarks.bench_modifications --data-root ../shared/data --quick

The parent comes from the zoo (outputs/zoo) under the same spec run.py uses for
data=mnist model=lenet seed=0 (3 epochs, adam 3e-3, cosine, batch 128), so it is trained
once. Modifications that train run `--mod-epochs` epochs (their digits-sized defaults are
longer than MNIST needs); everything else is the modification's default, except that
the chain's steps (pruning -> finetune -> quantize) all take the row's ratio.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import pandas as pd
import torch

from lineage import models
from lineage.data import build_datamodule
from lineage.modifications import MODIFICATIONS, derive
from lineage.modifications.registry import OPTIONS
from lineage.training import accuracy, train_classifier
from lineage.utils import flatten, seed_all
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


def parent_model(args: argparse.Namespace, dm: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    model_cfg = {"name": "lenet", "channels": [6, 16], "hidden": [120, 84]}
    train = {
        "epochs": args.epochs,
        "lr": 3e-3,
        "optimizer": "adam",
        "momentum": 0.9,
        "weight_decay": 0.0,
        "scheduler": "cosine",
    }
    data = {
        "name": "mnist",
        "classes": None,
        "limit": args.limit,
        "val_fraction": 0.1,
        "split_seed": 0,
        "batch_size": 128,
    }
    # the spec lineage.pipeline.trained_model builds for these settings (same zoo id)
    spec = {"data": data, "model": model_cfg, "train": train, "seed": 0}

    def fresh() -> tuple[torch.nn.Module, dict[str, Any]]:
        seed_all(0)
        c, h, w = dm.input_shape
        kw = {k: v for k, v in model_cfg.items() if k != "name"}
        model = models.build("lenet", dm.num_classes, c, (h, w), **kw)
        model, acc = train_classifier(model, dm, {**train, "accelerator": "auto"}, 0)
        return model, {
            "accuracy": acc,
            "seed": 0,
            "parent_id": None,
            "lineage": [],
            "data": {"name": dm.name, "classes": dm.classes},
        }

    model, meta, trained = Zoo(args.zoo).get_or_train(spec, fresh, "parent")
    print(
        f"parent {meta['id']} ({'trained' if trained else 'from the zoo'}): "
        f"accuracy {meta['accuracy']:.4f}",
        flush=True,
    )
    return model, meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--zoo", default="outputs/zoo")
    ap.add_argument("--epochs", type=int, default=3, help="parent training epochs")
    ap.add_argument("--mod-epochs", type=int, default=1, help="epochs of training modifications")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    ap.add_argument("--only", nargs="*", help="row labels to run (default: all registered)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--quick", action="store_true", help="6k MNIST images, 1-epoch parent")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.limit = 6000 if args.quick else None
    if args.quick:
        args.epochs = 1
    # modifications with their own data (transfer) read the same files
    os.environ.setdefault("LINEAGE_DATA", args.data_root)
    dm = build_datamodule("mnist", args.data_root, limit=args.limit, batch_size=128)
    parent, meta = parent_model(args, dm)

    rows = []
    for label, cfg in VARIANTS:
        name = cfg["name"]
        if name not in MODIFICATIONS or (args.only and label not in args.only):
            continue
        if "epochs" in getattr(OPTIONS.get(name), "__dataclass_fields__", {}):
            cfg = {**cfg, "epochs": args.mod_epochs}
        if name == "chain":
            steps = [
                {**s, "epochs": args.mod_epochs} if s["name"] == "finetune" else s
                for s in cfg["steps"]
            ]
            cfg = {**cfg, "steps": steps}
        for r in args.ratios:
            t0 = time.time()
            d = derive(parent, dm, cfg, r, 0)
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
        f"\nMNIST LeNet parent {meta['id']}: accuracy {meta['accuracy']:.4f}; "
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


if __name__ == "__main__":
    main()

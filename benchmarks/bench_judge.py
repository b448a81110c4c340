"""Calibrate once, judge many: the cost per suspect with a reused calibration against
calibrating for every suspect (what judging each pair on its own costs).

    python -m benchmarks.bench_judge --data-root ../shared/data          # MNIST LeNet
    python -m benchmarks.bench_judge --override experiment=smoke         # digits, seconds

One parent and its references (3 by default, trained or loaded from the zoo exactly as
run.py does), 20 suspects derived without training (pruning, noise and quantization at
several ratios), judged twice side by side in one run: with `calibration=cal`, and with
`references=` (calibrating per suspect). Both must give the same verdicts and numbers;
the table prints seconds per suspect for each and their ratio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lineage.config import compose
from lineage.data import datamodule_from_config
from lineage.engine import calibrate, judge
from lineage.modifications import derive
from lineage.pipeline import references_for, trained_model
from lineage.report.html import md_table
from lineage.tracking import Tracker
from lineage.zoo import Zoo

SUSPECTS = (
    [(m, r) for m in ("pruning", "noise") for r in (0.1, 0.3, 0.5, 0.7, 0.9)]
    + [("quantize", r) for r in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)]
    + [("pruning", 0.2), ("pruning", 0.4), ("noise", 0.2), ("noise", 0.4)]
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--references", type=int, default=3)
    p.add_argument("--zoo", default="outputs/zoo")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--override", nargs="*", default=["experiment=mnist_lenet"])
    p.add_argument("--suspects", type=int, default=len(SUSPECTS), help="the first N suspects")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = compose([*args.override, f"data.root={args.data_root}", "logger=none",
                   f"n_independent={args.references}", "closeness.progress=false"])  # fmt: skip
    dm = datamodule_from_config(cfg["data"])
    zoo = Zoo(args.zoo)
    seed = int(cfg["seed"])
    parent, _, _ = trained_model(cfg, dm, zoo, seed, "parent", Tracker())
    refs = [r[0] for r in references_for(cfg, dm, zoo, seed, Tracker())]
    suspects = [
        derive(parent, dm, {"name": m}, r, seed).model for m, r in SUSPECTS[: args.suspects]
    ]
    x, y = dm.test.x, dm.test.y
    opts = {"determination": cfg["determination"], "closeness": cfg["closeness"], "seed": seed}

    t0 = time.perf_counter()
    cal = calibrate(parent, refs, x, y, **opts)
    t_cal = time.perf_counter() - t0
    once, per = [], []
    t0 = time.perf_counter()
    for s in suspects:
        once.append(judge(parent, s, x, y, calibration=cal))
    t_once = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in suspects:
        per.append(judge(parent, s, x, y, references=refs, **opts))
    t_per = time.perf_counter() - t0
    same = all(
        a.is_lineage == b.is_lineage
        and a.evidence["closeness"].score == b.evidence["closeness"].score
        and a.evidence["basin"].barrier == b.evidence["basin"].barrier
        for a, b in zip(once, per)
    )
    n = len(suspects)
    rows = [
        {"judging": "calibrate once, then judge(calibration=cal)", "seconds/suspect":
         round(t_once / n, 3), "total_s": round(t_cal + t_once, 1)},
        {"judging": "calibrate per suspect (judge(references=...))", "seconds/suspect":
         round(t_per / n, 3), "total_s": round(t_per, 1)},
    ]  # fmt: skip
    print(f"\n{n} suspects, {len(refs)} references, {dm.name} / {cfg['model']['name']}; "
          f"calibration {t_cal:.2f} s; identical verdicts and numbers: {same}\n")  # fmt: skip
    print(md_table(__import__("pandas").DataFrame(rows)))
    print(f"\nper-suspect speed-up: {t_per / t_once:.2f}x")


def smallest(tmp: Path) -> None:
    """digits MLPs trained for 2 epochs, 2 references, 2 suspects."""
    main(
        ["--zoo", str(tmp / "zoo"), "--references", "2", "--suspects", "2", "--override",
         "experiment=smoke", "data.epochs=2", "model.hidden=[32]"]
    )  # fmt: skip


if __name__ == "__main__":
    main()

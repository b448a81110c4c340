"""Experiment 3: the sampling ablation: points attacked to reach a closeness CI, for the paper's
strategy (invalid points dropped, classes stratified) against uniform sampling.

    python -m experiments.zoo --preset mnist_lenet            # first: the zoo and its pairs
    python -m experiments.sampling --preset mnist_lenet

For a few pairs of the first parent (derived models at ratio 0.5 and an independent model),
closeness is measured with `strategy: stratified` and `strategy: uniform` at several CI
targets (closeness.ci_tol: stop once the bootstrap 95% CI half-width of the score is at most
this), up to --max-points points. Writes to outputs/experiments/<preset>/sampling/:
    runs.{csv,md}       one row per (pair, strategy, ci_tol): points attacked (n_drawn),
                        points in the score, half-width reached, score, why it stopped, seconds
    summary.{csv,md}    per (strategy, ci_tol): mean points attacked, mean half-width, the
                        share of runs that reached the target before max_points
    points_vs_ci.png    points attacked against the CI target, one line per strategy

Uniform sampling attacks every drawn point and counts the invalid ones (the source is wrong
there, or never flips) in its score; the strategy drops them and balances classes, so it
should need fewer attacked points for the same CI.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from experiments import presets
from experiments.common import (
    ROOT,
    new_figure,
    out_dir,
    parser,
    read_pairs,
    save_figure,
    write_table,
)
from lineage import models
from lineage.adapters import find_head
from lineage.config import compose
from lineage.data import datamodule_from_config
from lineage.engine import suspect_view
from lineage.evaluate.closeness import closeness
from lineage.zoo import Zoo

TOLS = (0.1, 0.05, 0.03, 0.02)
STRATEGIES = ("stratified", "uniform")
# The suspects: a spread of closeness, from near copies to an unrelated model.
PICK = (
    ("derived", "finetune"),
    ("derived", "pruning"),
    ("derived", "noise"),
    ("independent_seed", None),
)


def pick(pairs: pd.DataFrame, n: int) -> pd.DataFrame:
    p = pairs[pairs["parent_id"] == pairs["parent_id"].iloc[0]]
    rows = []
    for kind, mod in PICK:
        g = p[p["kind"] == kind]
        if mod is not None:
            g = g[(g["modification"] == mod) & (g["ratio"] == 0.5)]
        if len(g):
            rows.append(g.iloc[0])
    return pd.DataFrame(rows[:n])


def measure(
    parent: torch.nn.Module,
    suspect: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ccfg: dict[str, Any],
    tols: Sequence[float],
    max_points: int,
) -> list[dict[str, Any]]:
    view = suspect_view(parent, suspect, x, find_head(parent)).view
    rows = []
    for strategy in STRATEGIES:
        for tol in tols:
            c = closeness(
                parent,
                view,
                x,
                y,
                {**ccfg, "strategy": strategy, "ci_tol": tol, "max_points": max_points},
                seed=0,
            )
            rows.append(
                {
                    "strategy": strategy,
                    "ci_tol": tol,
                    "n_drawn": c.n_drawn,
                    "n_points": c.n_points,
                    "half_width": (c.ci_high - c.ci_low) / 2,
                    "score": c.score,
                    "stopped": c.stopped,
                    "seconds": c.seconds,
                }
            )
    return rows


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    g = runs.groupby(["strategy", "ci_tol"], sort=True)
    t = g.agg(
        runs=("n_drawn", "size"),
        points_attacked=("n_drawn", "mean"),
        half_width=("half_width", "mean"),
        seconds=("seconds", "mean"),
    ).reset_index()
    t["reached"] = g["stopped"].apply(lambda s: float((s == "ci").mean())).to_numpy()
    return t.sort_values(["ci_tol", "strategy"], ascending=[False, True])


def figure(summary: pd.DataFrame, out: Path) -> Path:
    fig = new_figure()
    ax = fig.add_subplot()
    for strategy, g in summary.groupby("strategy"):
        ax.plot(g["ci_tol"], g["points_attacked"], marker="o", label=str(strategy))
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("target CI half-width (ci_tol)")
    ax.set_ylabel("points attacked (mean over pairs)")
    ax.set_title("points needed for a closeness CI")
    ax.legend()
    return save_figure(fig, out, "points_vs_ci")


def run(
    pairs: pd.DataFrame,
    out: Path,
    overrides: Sequence[str],
    n_pairs: int = 4,
    tols: Sequence[float] = TOLS,
    max_points: int = 2000,
    zoo_root: Path | None = None,
) -> dict[str, pd.DataFrame]:
    """`overrides`: the zoo preset's Hydra overrides (its data and closeness settings)."""
    cfg = compose([*overrides, "logger=none", "closeness.progress=false"])
    dm = datamodule_from_config(cfg["data"])
    zoo = Zoo(zoo_root or ROOT / "outputs" / "zoo")
    rows = []
    for _, pr in pick(pairs, n_pairs).iterrows():
        parent, _ = models.load(zoo.path(pr["parent_id"]))
        model, meta = models.load(zoo.path(pr["model_id"]))
        suspect = model.eval()
        for r in measure(
            parent.eval(), suspect, dm.test.x, dm.test.y, cfg["closeness"], tols, max_points
        ):
            rows.append(
                {
                    "model_id": pr["model_id"],
                    "kind": pr["kind"],
                    "modification": pr["modification"],
                    **r,
                }
            )
    runs = pd.DataFrame(rows)
    tables = {"runs": runs, "summary": summarize(runs)}
    md = [
        write_table(runs, out, "runs", "Sampling runs"),
        write_table(
            tables["summary"],
            out,
            "summary",
            "Points attacked for a closeness CI: strategy vs uniform",
        ),
    ]
    (out / "sampling.md").write_text("\n".join(md))
    figure(tables["summary"], out)
    return tables


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--pairs", type=int, default=4, help="pairs measured (at most 4)")
    p.add_argument("--max-points", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = out_dir(args.preset, "sampling", args.outputs)
    run(
        read_pairs(args.preset, args.outputs),
        out,
        presets.load(args.preset).overrides,
        args.pairs,
        max_points=args.max_points,
    )
    print((out / "sampling.md").read_text())


if __name__ == "__main__":
    main()

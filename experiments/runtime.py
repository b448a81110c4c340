"""Experiment 5: runtime per stage of the zoo: training, deriving, judging, baselines.

    python -m experiments.zoo --preset mnist_lenet            # first: the zoo and its pairs
    python -m experiments.runtime --preset mnist_lenet

Reads outputs/experiments/<preset>/{models,pairs,zoo}.csv; writes to
outputs/experiments/<preset>/runtime/:
    stages.{csv,md}     per stage: count, mean and total seconds. Training and deriving
                        times are those of the run that made each model (the zoo caches
                        models across runs); judging and baseline times are per pair
    stages.png          total seconds per stage

Wall times depend on the machine and on what else runs on it: the tables say which threads
the zoo used (zoo.csv) but not the load of a shared machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.common import (
    BASELINE_NAMES,
    new_figure,
    out_dir,
    parser,
    read_pairs,
    save_figure,
    write_table,
)
from lineage.errors import LineageError
from lineage.evaluate import evidence


def _row(stage: str, secs: pd.Series) -> dict[str, object]:
    s = secs.astype(float)
    known = s[np.isfinite(s)]
    return {
        "stage": stage,
        "n": len(s),
        "timed": len(known),
        "mean_s": float(known.mean()) if len(known) else float("nan"),
        "total_s": float(known.sum()),
    }


def stages(models: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for role in ("parent", "reference", "independent_seed", "independent_half", "independent_arch"):
        m = models[models["role"] == role]
        if len(m):
            rows.append(_row(f"train {role}", m["seconds"]))
    derived = models[models["role"] == "derived"]
    for mod, g in derived.groupby("modification", sort=True):
        rows.append(_row(f"derive {mod}", g["seconds"]))
    for k in evidence.names():
        if f"{k}_s" in pairs:
            rows.append(_row(f"judge: {k}", pairs[f"{k}_s"]))
    for b in BASELINE_NAMES:
        rows.append(_row(f"baseline {b}", pairs[f"{b}_s"]))
    t = pd.DataFrame(rows)
    total = {
        "stage": "all stages",
        "n": int(t["n"].sum()),
        "timed": int(t["timed"].sum()),
        "mean_s": float("nan"),
        "total_s": float(t["total_s"].sum()),
    }
    return pd.concat([t, pd.DataFrame([total])], ignore_index=True)


def figure(t: pd.DataFrame, out: Path) -> Path:
    t = t[t["stage"] != "all stages"]
    fig = new_figure(7.0, 0.25 * len(t) + 1.5)
    ax = fig.add_subplot()
    ax.barh(t["stage"], t["total_s"], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("total seconds")
    ax.set_title("runtime per stage of the zoo")
    return save_figure(fig, out, "stages")


def run(
    models: pd.DataFrame, pairs: pd.DataFrame, out: Path, zoo_run: pd.DataFrame | None = None
) -> dict[str, pd.DataFrame]:
    t = stages(models, pairs)
    md = [write_table(t, out, "stages", "Runtime per stage")]
    if zoo_run is not None:
        md.append(write_table(zoo_run, out, "zoo_run", "The zoo run itself"))
    (out / "runtime.md").write_text("\n".join(md))
    figure(t, out)
    return {"stages": t}


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    base = args.outputs / args.preset
    if not (base / "models.csv").exists():
        raise LineageError(f"{base / 'models.csv'} is missing: build the zoo first")
    zoo_run = pd.read_csv(base / "zoo.csv") if (base / "zoo.csv").exists() else None
    out = out_dir(args.preset, "runtime", args.outputs)
    run(pd.read_csv(base / "models.csv"), read_pairs(args.preset, args.outputs), out, zoo_run)
    print((out / "runtime.md").read_text())


if __name__ == "__main__":
    main()

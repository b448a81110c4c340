"""What every experiment shares: where outputs go, reading the zoo's pairs table, and writing
one table as CSV + Markdown and one figure as PNG."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from lineage.baselines import BASELINES
from lineage.errors import LineageError
from lineage.report.html import md_table

ROOT = Path(__file__).resolve().parents[1]
# The presets' data roots resolve ${oc.env:LINEAGE_DATA} when composed: the shared root
# unless the caller says otherwise (a CIFAR-10 made with make_cifar10.py, say).
os.environ.setdefault("LINEAGE_DATA", str(ROOT.parent / "shared" / "data"))

OUTPUTS = ROOT / "outputs" / "experiments"

# The project's detectors and the peer baselines (every registered one), as score columns
# of the pairs table (higher = lineage). verdict_score is -log10 of the verdict's p-value;
# each evidence alone is its raw statistic.
PROJECT_SCORES = {  # the verdict and the paper's measures, as the tables name them
    "verdict": "verdict_score",
    "-barrier": "barrier",  # negated by project_score: a low barrier is lineage
    "closeness": "closeness",
    "inherited": "inherited.score",
}


def project_score(pairs: pd.DataFrame, label: str) -> pd.Series:
    """PROJECT_SCORES[label]'s column of `pairs`, signed so that higher = lineage."""
    col = pairs[PROJECT_SCORES[label]].astype(float)
    return -col if label.startswith("-") else col


BASELINE_NAMES = tuple(BASELINES.names())


def out_dir(preset: str, experiment: str | None = None, root: Path = OUTPUTS) -> Path:
    d = root / preset / experiment if experiment else root / preset
    d.mkdir(parents=True, exist_ok=True)
    return d


def read_pairs(preset: str, root: Path = OUTPUTS) -> pd.DataFrame:
    path = root / preset / "pairs.csv"
    if not path.exists():
        raise LineageError(
            f"{path} does not exist: build the zoo first (python -m experiments.zoo "
            f"--preset {preset})"
        )
    return pd.read_csv(path)


def write_table(df: pd.DataFrame, out: Path, name: str, title: str) -> str:
    """`name`.csv and `name`.md (a titled Markdown table); returns the Markdown."""
    df.to_csv(out / f"{name}.csv", index=False)
    md = f"### {title}\n\n{md_table(df)}\n"
    (out / f"{name}.md").write_text(md)
    return md


def save_figure(fig: Figure, out: Path, name: str) -> Path:
    path = out / f"{name}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def new_figure(width: float = 6.4, height: float = 4.2) -> Figure:
    return Figure(figsize=(width, height), dpi=100)


def parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=(doc or "").splitlines()[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--preset", default="digits_mlp", help="zoo preset: a file in experiments/presets/"
    )
    p.add_argument("--outputs", type=Path, default=OUTPUTS, help="experiments output root")
    return p


def table_main(doc: str, name: str, run: Any, argv: list[str] | None = None) -> None:
    """The command line of an experiment that reads the zoo's pairs table: run it into
    outputs/experiments/<preset>/<name>/ and print its Markdown table."""
    args = parser(doc).parse_args(argv)
    out = out_dir(args.preset, name, args.outputs)
    run(read_pairs(args.preset, args.outputs), out)
    print((out / f"{name}.md").read_text())

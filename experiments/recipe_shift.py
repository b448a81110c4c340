"""Recipe shift (issue 30): does the verdict's false-positive rate hold for independent models
trained by recipes its references never use?

    python -m experiments.recipe_shift --preset digits_mlp_recipes
    python -m experiments.recipe_shift --preset digits_mlp_recipes \\
        --null parent= --null strict=verdict.alpha=0.001

The preset's zoo (experiments.zoo_models.build_models: parents, their references and
derived models, the independent models) with its recipe independents (Preset.recipes,
`recipe_models` each: trained as the references are, but with the recipe's overrides).
Every (parent, model) pair is judged under each null: a name and the verdict overrides
that select it (Preset.nulls, or each --null NAME=OVERRIDE,OVERRIDE...; `NAME=` alone is
the preset's config as it is). Each parent is calibrated once per null. The references
are never judged here.

Writes outputs/recipe_shift/<preset>/:
    pairs.csv               one row per (null, parent, model), appended as each is judged:
                            a rerun judges only the pairs not there yet (a null whose
                            options changed loses its rows first). Columns: null, settings
                            (a hash of the null's judging options), parent, model, role
                            (derived | other_parent | other_parent_derived |
                            independent_seed | independent_half | independent_arch |
                            independent_recipe), recipe, modification, ratio, accuracy,
                            truth (1: the parent is the model's ancestor), is_lineage,
                            p_value, p_<kind> per kind of evidence, decided_by, seconds
    recipes.{csv,md}        per recipe x null: the recipe's independents, false positives
                            at the null's alpha (and the evidence that decided each), the
                            share with p <= 0.05, the smallest p, the mean accuracy
    nulls.{csv,md}          per null: FPR over every unrelated pair and over the recipe
                            independents; TPR of weight-sharing derivatives and of students
                            (a distill or extraction step); ROC AUC of -log10 p
    modifications.{csv,md}  per null x modification: lineage pairs and TPR
    tables.md               the three tables
    qq_<null>.png           the p-values of the recipe independents and of every unrelated
                            pair against the uniform (log scales): a valid null lies on or
                            under the diagonal
"""

from __future__ import annotations

import csv
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from experiments import presets
from experiments.common import ROOT, new_figure, parser, save_figure, write_table
from experiments.zoo import settings_hash
from experiments.zoo_models import Entry, build_models, kind_of, model_label, root_of
from lineage.config import compose
from lineage.engine import judge
from lineage.errors import LineageError
from lineage.evaluate import evidence
from lineage.interrupt import guard
from lineage.pipeline import calibration_for
from lineage.results import roc_auc
from lineage.utils import stable_hash
from lineage.zoo import Zoo

OUTPUTS = ROOT / "outputs" / "recipe_shift"
STUDENTS = ("distill", "extraction")  # trained from fresh weights on the parent's outputs
P_LOW = 0.05  # the share of independents below this is the second target


def columns() -> list[str]:
    kinds = [f"p_{k}" for k in evidence.names()]
    head = ["null", "settings", "parent", "model", "role", "recipe", "modification", "ratio"]
    return [*head, "accuracy", "truth", "is_lineage", "p_value", *kinds, "decided_by", "seconds"]


def parse_null(text: str) -> tuple[str, list[str]]:
    """`NAME=OVERRIDE,OVERRIDE...` -> (NAME, overrides); commas inside [] or {} belong to
    their override (`verdict.suspect_centred=[closeness,inherited]`)."""
    name, eq, rest = text.partition("=")
    if not eq:
        raise LineageError(
            f"--null {text!r}: expected NAME=OVERRIDE,... (NAME= for the config as it is)"
        )
    check_null_name(name)
    out, depth, part = [], 0, ""
    for ch in rest:
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            out.append(part)
            part = ""
        else:
            part += ch
    out.append(part)
    return name, [o for o in out if o]


def check_null_name(name: str) -> None:
    """A null's name names its QQ plot's file."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise LineageError(f"null {name!r}: a name is letters, digits, '_', '.' and '-'")


class PairsFile:
    """pairs.csv, appended one row at a time; the rows already there are the cache."""

    def __init__(self, path: Path, settings: dict[str, str]):
        self.path, self.columns = path, columns()
        self.done: set[tuple[str, str, str]] = set()
        if not path.exists() or not path.stat().st_size:
            return
        old = pd.read_csv(path, dtype={"null": str, "settings": str, "parent": str})
        if list(old.columns) != self.columns:
            raise LineageError(
                f"{path} holds other columns than this run writes (other kinds of evidence?): "
                "move it aside to start again"
            )
        # a null whose options changed: its old rows judged something else; a row an
        # interruption cut short lacks its last column
        stale = old["null"].isin(list(settings)) & (old["settings"] != old["null"].map(settings))
        drop = stale | old["seconds"].isna()
        if drop.any() or not path.read_bytes().endswith(b"\n"):
            old[~drop].to_csv(path, index=False)
        keep = old[~drop]
        self.done = set(zip(keep["null"], keep["parent"], keep["model"]))

    def append(self, row: dict[str, Any]) -> None:
        new = not self.path.exists() or not self.path.stat().st_size
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            if new:
                w.writeheader()
            w.writerow({c: row.get(c) for c in self.columns})


def pair_row(null: str, settings: str, parent: Entry, e: Entry, root: str, verdict: Any) -> dict:
    d = verdict.decision
    mod, ratio = model_label(e.meta)
    return {
        "null": null,
        "settings": settings,
        "parent": parent.id,
        "model": e.id,
        "role": kind_of(e, parent, root),
        "recipe": e.recipe,
        "modification": mod,
        "ratio": ratio,
        "accuracy": e.meta.get("accuracy"),
        "truth": int(root == parent.id),
        "is_lineage": d.is_lineage,
        "p_value": d.p_value,
        **{f"p_{k}": p for k, p in d.p.items()},
        "decided_by": d.decided_by,
    }


def run(
    preset: presets.Preset,
    out: Path,
    zoo_root: Path,
    say: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Build (or load) the zoo, judge every pair not yet in pairs.csv under each null, write
    the tables and QQ plots; return the pairs of this preset's nulls."""
    if not preset.nulls:
        raise LineageError(f"preset {preset.name}: no nulls to judge under")
    for null in preset.nulls:
        check_null_name(null)
    out.mkdir(parents=True, exist_ok=True)
    base = [*preset.overrides, "logger=none", "closeness.progress=false"]
    # every null composes before anything trains: a typo costs nothing
    cfgs = {n: compose([*base, *over]) for n, over in preset.nulls.items()}
    # what a row depends on beyond its two models: the null's judging options and how
    # many references calibrate it (their recipe is the parent's, in the parent's id)
    settings = {n: stable_hash([settings_hash(c, {}), preset.references]) for n, c in cfgs.items()}
    pairs_file = PairsFile(out / "pairs.csv", settings)
    _, dm, families, independents = build_models(preset, Zoo(zoo_root), base, say)
    x, y = dm.test.x, dm.test.y
    everyone = {e.id: e for f in families for e in [f.parent, *f.derived]}
    everyone.update({e.id: e for e in independents})
    links = {mid: e.meta.get("parent_id") for mid, e in everyone.items()}
    for null, cfg in cfgs.items():
        for f in families:
            todo = [
                e
                for e in everyone.values()
                if e.id != f.parent.id and (null, f.parent.id, e.id) not in pairs_file.done
            ]
            if not todo:
                continue
            refs = [r.model for r in f.references]
            cal = calibration_for(cfg, dm, f.parent.model, refs, f.seed)
            for e in todo:
                t0 = time.perf_counter()
                v = judge(
                    f.parent.model, e.model, x, y, calibration=cal, record=e.meta.get("record")
                )
                row = pair_row(null, settings[null], f.parent, e, root_of(e.id, links), v)
                row["seconds"] = round(time.perf_counter() - t0, 3)
                pairs_file.append(row)
                say(
                    f"{null} {f.parent.id} {e.id} {row['role']} "
                    f"{e.recipe or row['modification'] or ''}: truth {row['truth']} "
                    f"lineage {row['is_lineage']} p {row['p_value']:.3g}"
                )
    pairs = pd.read_csv(out / "pairs.csv", dtype={"recipe": object, "modification": object})
    parents = [f.parent.id for f in families]  # the preset's pairs as it is now
    pairs = pairs[pairs["null"].isin(list(cfgs)) & pairs["parent"].isin(parents)]
    pairs = pairs[pairs["model"].isin(list(everyone))]
    alphas = {n: float(c["verdict"]["alpha"]) for n, c in cfgs.items()}
    say(tables(pairs, alphas, out))
    for null in cfgs:
        qq_plot(pairs[pairs["null"] == null], null, alphas[null], out)
    return pairs


def _called(v: pd.Series) -> pd.Series:
    """is_lineage as read back from the CSV: True, False or empty (undetermined)."""
    return v.map(lambda b: str(b).strip().lower() == "true")


def recipe_table(pairs: pd.DataFrame, alphas: dict[str, float]) -> pd.DataFrame:
    rows = []
    ind = pairs[pairs["role"] == "independent_recipe"]
    for (null, recipe), g in ind.groupby(["null", "recipe"], sort=False):
        p, called = g["p_value"].astype(float), _called(g["is_lineage"])
        rows.append(
            {
                "recipe": recipe,
                "null": null,
                "n": len(g),
                "alpha": alphas[str(null)],
                "false_positives": int(called.sum()),
                f"share_p_le_{P_LOW}": float((p <= P_LOW).mean()),
                "min_p": float(p.min()),
                "accuracy": float(g["accuracy"].astype(float).mean()),
                "decided_by": ", ".join(
                    f"{k} {n}" for k, n in g.loc[called, "decided_by"].value_counts().items()
                ),
            }
        )
    return pd.DataFrame(rows)


def is_student(modification: Any) -> bool:
    return any(step in STUDENTS for step in str(modification).split(">"))


def _rate(called: pd.Series) -> float:
    return float(called.mean()) if len(called) else math.nan


def score(p: pd.Series) -> np.ndarray:
    """-log10 p, the verdict's ranking (p = 0 capped at 1e-300)."""
    return -np.log10(np.clip(p.astype(float).to_numpy(), 1e-300, 1.0))


def null_table(pairs: pd.DataFrame, alphas: dict[str, float]) -> pd.DataFrame:
    rows = []
    for null, g in pairs.groupby("null", sort=False):
        called = _called(g["is_lineage"])
        unrelated, lineage = g["truth"] == 0, g["truth"] == 1
        recipe = g["role"] == "independent_recipe"
        student = g["modification"].map(is_student)
        rows.append(
            {
                "null": null,
                "alpha": alphas[str(null)],
                "unrelated": int(unrelated.sum()),
                "false_positives": int(called[unrelated].sum()),
                "fpr": _rate(called[unrelated]),
                "fpr_recipe": _rate(called[recipe]),
                "fpr_other_independents": _rate(
                    called[unrelated & g["role"].str.startswith("independent") & ~recipe]
                ),
                "lineage": int(lineage.sum()),
                "tpr_weight_sharing": _rate(called[lineage & ~student]),
                "tpr_students": _rate(called[lineage & student]),
                "auc": roc_auc(g["truth"].tolist(), score(g["p_value"]).tolist()),
            }
        )
    return pd.DataFrame(rows)


def modification_table(pairs: pd.DataFrame) -> pd.DataFrame:
    d = pairs[pairs["truth"] == 1]
    rows = []
    for (null, mod), g in d.groupby(["null", "modification"], sort=False):
        called = _called(g["is_lineage"])
        rows.append(
            {
                "null": null,
                "modification": mod,
                "n": len(g),
                "tp": int(called.sum()),
                "tpr": _rate(called),
                "median_p": float(g["p_value"].astype(float).median()),
            }
        )
    return pd.DataFrame(rows).sort_values(["null", "modification"]) if rows else pd.DataFrame()


def tables(pairs: pd.DataFrame, alphas: dict[str, float], out: Path) -> str:
    md = [
        write_table(
            recipe_table(pairs, alphas), out, "recipes", "Recipe independents per recipe and null"
        ),
        write_table(null_table(pairs, alphas), out, "nulls", "Per null: FPR, TPR and AUC"),
        write_table(modification_table(pairs), out, "modifications", "TPR per modification"),
    ]
    text = "\n".join(md)
    (out / "tables.md").write_text(text)
    return text


def qq_plot(pairs: pd.DataFrame, null: str, alpha: float, out: Path) -> Path:
    fig = new_figure(5.0, 5.0)
    ax = fig.add_subplot()
    groups: Iterable[tuple[str, pd.DataFrame]] = (
        ("every unrelated pair", pairs[pairs["truth"] == 0]),
        ("recipe independents", pairs[pairs["role"] == "independent_recipe"]),
    )
    low = 1.0
    for label, g in groups:
        p = np.sort(np.clip(g["p_value"].astype(float).to_numpy(), 1e-300, 1.0))
        if not len(p):
            continue
        expected = (np.arange(1, len(p) + 1) - 0.5) / len(p)
        ax.plot(expected, p, marker="o", ms=3, ls="", label=f"{label} ({len(p)})")
        low = min(low, float(p.min()), float(expected.min()))
    ax.plot([low, 1], [low, 1], color="grey", lw=1, label="uniform")
    ax.axhline(alpha, color="red", lw=1, ls=":", label=f"alpha {alpha:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("expected p (uniform quantiles)")
    ax.set_ylabel("observed p")
    ax.set_title(f"null {null}: p-values of unrelated pairs")
    ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, out, f"qq_{null}")


@guard("recipe_shift")
def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.set_defaults(outputs=OUTPUTS, preset="digits_mlp_recipes")
    p.add_argument(
        "--null",
        action="append",
        default=[],
        metavar="NAME=OVERRIDE,...",
        help="a null to judge under, replacing the preset's nulls (repeat for several)",
    )
    p.add_argument("--zoo", type=Path, default=ROOT / "outputs" / "zoo", help="the zoo store")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    try:
        preset = presets.load(args.preset)
        if args.null:
            preset.nulls = dict(parse_null(n) for n in args.null)
        torch.set_num_threads(args.threads)
        logging.basicConfig(level=logging.WARNING)
        run(preset, args.outputs / preset.name, args.zoo, say=lambda s: print(s, flush=True))
    except LineageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

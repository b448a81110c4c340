"""The recipe-shift benchmark (experiments.recipe_shift) on its smallest zoo, through its real
command line: one row per (null, parent, model) with the documented columns, ground truth and
recipes as built, one table row per recipe x null, a QQ plot per null, and a rerun that
judges only what changed."""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest
from conftest import python

from experiments import presets, recipe_shift
from experiments.zoo_models import SEED_BASE
from lineage import models
from lineage.config import compose
from lineage.errors import LineageError
from lineage.zoo import Zoo

TINY = """\
overrides: [experiment=smoke, data.epochs=6, determination.probe_points=200,
            closeness.max_points=100]
parents: 1
ratios: [0.5]
modifications: [noise, finetune]
options: {finetune: {epochs: 1}}
references: 4
seeds: 1
halves: 0
recipes:
  - {name: sgd, overrides: train.optimizer=sgd train.lr=0.05}
  - {name: half, half: 0}
recipe_models: 2
nulls: {parent: [], strict: [verdict.alpha=0.001]}
"""
ROLES = {"derived": 2, "independent_seed": 1, "independent_recipe": 4}


def shift(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = ["--preset", str(tmp_path / "tiny.yaml"), "--outputs", str(tmp_path / "out")]
    cmd += ["--zoo", str(tmp_path / "zoo"), *args]
    return python("-m", "experiments.recipe_shift", *cmd)


@pytest.mark.slow
def test_recipe_shift_smallest_case_end_to_end(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    r = shift(tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "out" / "tiny"
    pairs = pd.read_csv(out / "pairs.csv")
    assert list(pairs.columns) == recipe_shift.columns()
    # 1 parent x (2 derived + 1 other seed + 2 recipes x 2 models) x 2 nulls
    assert len(pairs) == 14 and not pairs.duplicated(["null", "parent", "model"]).any()
    for null, g in pairs.groupby("null"):
        assert g["role"].value_counts().to_dict() == ROLES, null
    assert (pairs["truth"] == (pairs["role"] == "derived")).all()
    recipes = pairs[pairs["role"] == "independent_recipe"]
    assert sorted(recipes.groupby("recipe")["model"].nunique().items()) == [("half", 2), ("sgd", 2)]
    assert pairs.loc[pairs["role"] != "independent_recipe", "recipe"].isna().all()
    assert pairs["p_value"].between(0, 1).all() and (pairs["seconds"] >= 0).all()
    # a null changes the judging, not the evidence: same p-values, another alpha
    by = pairs.set_index(["null", "model"])["p_value"]
    assert by["parent"].sort_index().equals(by["strict"].sort_index())
    # the recipe models were trained as recipes: their seeds, the half models on both halves
    zoo = Zoo(tmp_path / "zoo")
    meta = {m: models.load(zoo.path(m))[1] for m in recipes["model"].unique()}
    base = SEED_BASE["independent_recipe"]
    assert sorted(m["seed"] for m in meta.values()) == [base, base + 1, base + 10, base + 11]
    halves = sorted(m["data"].get("half", -1) for m in meta.values())
    assert halves == [-1, -1, 0, 1]
    sgd = next(m for m in meta.values() if m["seed"] == base)
    assert sgd["spec"]["train"]["optimizer"] == "sgd"

    table = pd.read_csv(out / "recipes.csv")
    assert len(table) == 4  # one row per recipe x null
    assert set(zip(table["recipe"], table["null"])) == {
        (r, n) for r in ("sgd", "half") for n in ("parent", "strict")
    }
    assert (table["n"] == 2).all()
    assert dict(zip(table["null"], table["alpha"])) == {"parent": 0.005, "strict": 0.001}
    nulls = pd.read_csv(out / "nulls.csv").set_index("null")
    assert nulls.loc["parent", "unrelated"] == 5 and nulls.loc["parent", "lineage"] == 2
    called = pairs["is_lineage"].astype(str) == "True"
    fp = (called & (pairs["truth"] == 0)).groupby(pairs["null"]).sum()
    assert nulls["false_positives"].to_dict() == fp.to_dict()
    tables = (out / "tables.md").read_text()
    assert "| sgd | parent |" in tables and "| half | strict |" in tables
    for null in ("parent", "strict"):
        assert (out / f"qq_{null}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # resume: nothing new to judge
    again = shift(tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert " truth " not in again.stdout
    assert pd.read_csv(out / "pairs.csv").equals(pairs)

    # a null whose options changed loses its rows and is judged again; the other resumes
    third = shift(tmp_path, "--null", "parent=", "--null", "strict=verdict.alpha=0.002")
    assert third.returncode == 0, third.stderr[-2000:]
    judged = [line for line in third.stdout.splitlines() if " truth " in line]
    assert len(judged) == 7 and all(line.startswith("strict ") for line in judged)
    now = pd.read_csv(out / "pairs.csv")
    assert len(now) == 14
    assert now.loc[now["null"] == "parent"].equals(pairs.loc[pairs["null"] == "parent"])


@pytest.mark.parametrize(
    "null,fragment",
    [
        ("noequals", "expected NAME=OVERRIDE"),
        ("a/b=verdict.alpha=0.1", "a name is letters"),
    ],
)
def test_a_bad_null_is_one_line_and_exit_2(null, fragment, capsys):
    with pytest.raises(SystemExit) as e:
        recipe_shift.main(["--null", null])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1


def test_a_row_cut_short_is_judged_again(tmp_path):
    cols = recipe_shift.columns()
    good = {c: "1" for c in cols} | {"null": "a", "settings": "s", "parent": "p", "model": "m1"}
    path = tmp_path / "pairs.csv"
    torn = ",".join(["a", "s", "p", "m2"])  # an interruption mid-row, no newline
    path.write_text(",".join(cols) + "\n" + ",".join(good[c] for c in cols) + "\n" + torn)
    f = recipe_shift.PairsFile(path, {"a": "s"})
    assert f.done == {("a", "p", "m1")}
    f.append(good | {"model": "m2"})
    assert pd.read_csv(path)["model"].tolist() == ["m1", "m2"]
    assert recipe_shift.PairsFile(path, {"a": "other"}).done == set()  # options changed
    assert pd.read_csv(path).empty


def test_null_overrides_split_outside_brackets():
    assert recipe_shift.parse_null("parent=") == ("parent", [])
    assert recipe_shift.parse_null("s=verdict.suspect_centred=[closeness,inherited],x.y=1") == (
        "s",
        ["verdict.suspect_centred=[closeness,inherited]", "x.y=1"],
    )


@pytest.mark.parametrize("name", ["digits_mlp_recipes", "mnist_lenet_recipes"])
def test_recipe_presets_compose(name):
    p = presets.load(name)
    assert len(p.recipes) >= 7 and p.recipe_models >= 4 and p.parents >= 2
    assert set(p.nulls) == {"paper", "parent", "suspect", "default"}  # the defaults
    base = [*p.overrides, "logger=none"]
    ref = compose(base)
    specs = set()
    for r in p.recipes:
        cfg = compose([*base, *r.overrides.split()])
        spec = (str(cfg["train"]), str(cfg["model"]), cfg["data"]["batch_size"], r.half)
        assert spec != (str(ref["train"]), str(ref["model"]), ref["data"]["batch_size"], None)
        specs.add(spec)
    assert len(specs) == len(p.recipes)  # every recipe differs from the others


def test_a_preset_names_all_its_nulls(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: digits_mlp_recipes\nnulls: {strict: []}\n")
    p = presets.load(str(tmp_path / "mine.yaml"))
    assert p.name == "mine" and p.nulls == {"strict": []} and len(p.recipes) >= 7
    (tmp_path / "bad.yaml").write_text("recipes: [{name: x, overides: a=b}]\n")
    with pytest.raises(LineageError, match="overides"):
        presets.load(str(tmp_path / "bad.yaml"))

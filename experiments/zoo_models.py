"""The zoo's models: each parent with its references and derived models, and the independent
models shared by every parent. Models come from the zoo store (lineage.zoo, the cache
`lineage run` uses) or are trained or derived now, by the pipeline's own recipes."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from experiments.presets import Preset
from lineage import models
from lineage.config import compose
from lineage.data import DataModule, datamodule_from_config
from lineage.errors import LineageError
from lineage.modifications import MODIFICATIONS
from lineage.modifications.registry import options
from lineage.pipeline import derive_model, trained_model
from lineage.tracking import Tracker
from lineage.zoo import Zoo, data_spec, derived_id, reference_seed

# Seeds of the independent models: far from the parents and the references (1000+). Recipe
# i's model j has seed 400 + 10 i + j, so no two recipes share an initialisation.
SEED_BASE = {
    "independent_seed": 100,
    "independent_half": 200,
    "independent_arch": 300,
    "independent_recipe": 400,
}


@dataclasses.dataclass
class Entry:
    """A model of the zoo and what the pairs table needs to know about it."""

    model: nn.Module
    meta: dict[str, Any]
    role: str  # parent | reference | derived | independent_seed | independent_half | ...
    seconds: float  # to train or derive it now; NaN when it came from the cache
    recipe: str | None = None  # an independent_recipe model's recipe (Preset.recipes)

    @property
    def id(self) -> str:
        return str(self.meta["id"])


@dataclasses.dataclass
class Share:
    """One job's part of the zoo when several jobs build it at once (experiments.zoo
    --jobs): the models are numbered in the order the zoo lists them, and job k of n makes
    those numbered k, k + n, ... A model it needs from another job's part (a parent, the
    first step of a grandchild) it waits for under the store's lock, then loads. The
    default is the whole zoo."""

    k: int = 0
    n: int = 1
    listed: int = 0

    def mine(self) -> bool:
        """Whether the next listed model is this job's to make."""
        j, self.listed = self.listed, self.listed + 1
        return j % self.n == self.k


@dataclasses.dataclass
class Family:
    """One parent, its calibration references and everything derived from it."""

    parent: Entry
    seed: int
    references: list[Entry]
    derived: list[Entry]


def trained(
    cfg: dict[str, Any], dm: DataModule, zoo: Zoo, seed: int, role: str, half: int | None = None
) -> Entry:
    """The pipeline's parent/reference recipe (or half_model's), from the zoo or trained now."""
    t0 = time.perf_counter()
    zoo_role = "parent" if role == "parent" else "independent"  # as `lineage run` records them
    model, meta, new = trained_model(cfg, dm, zoo, seed, zoo_role, Tracker(), half)
    return Entry(model.eval(), meta, role, time.perf_counter() - t0 if new else math.nan)


def derived_entry(
    cfg: dict[str, Any], dm: DataModule, parent: Entry, mod: dict[str, Any], ratio: float, zoo: Zoo
) -> Entry:
    """derive_model's derived model, loaded from the zoo when it is already there (the id is
    the store's: parent, modification config, ratio, seed)."""
    did = derived_id(parent.id, mod, ratio, int(cfg["seed"]))
    with zoo.lock(did):  # parallel jobs derive a model once
        if zoo.path(did).exists():
            model, meta = models.load(zoo.path(did))
            return Entry(model.eval(), meta, "derived", math.nan)
        t0 = time.perf_counter()
        run_cfg = {**cfg, "modification": mod, "ratio": ratio}
        d, meta, _ = derive_model(run_cfg, dm, parent.model, parent.meta, zoo, Tracker())
    return Entry(d.model.eval(), meta, "derived", time.perf_counter() - t0)


def modification_configs(preset: Preset) -> dict[str, dict[str, Any]]:
    """Each modification's options (its dataclass defaults, what `modification=NAME`
    composes to) with the preset's changes, checked."""
    names = preset.modifications
    if names is None:
        names = [n for n in MODIFICATIONS.names() if n != "chain"]
    unused = set(preset.options) - set(names)
    if unused:
        raise LineageError(f"preset {preset.name}: options for {sorted(unused)}, not in the zoo")
    return {n: options({"name": n, **preset.options.get(n, {})}) for n in names}


def family(
    preset: Preset,
    cfg: dict[str, Any],
    dm: DataModule,
    zoo: Zoo,
    seed: int,
    mods: Mapping[str, dict[str, Any]],
    say: Callable[[str], None],
    share: Share,
) -> Family:
    pcfg = {**cfg, "seed": seed}
    parent = trained(pcfg, dm, zoo, seed, "parent") if share.mine() else None
    refs = [
        trained(pcfg, dm, zoo, reference_seed(seed, i), "reference")
        for i in range(preset.references)
        if share.mine()
    ]
    # another job's parent: by now trained, or training under its lock (this waits)
    parent = parent or trained(pcfg, dm, zoo, seed, "parent")
    say(f"parent seed {seed}: {parent.id} acc {parent.meta['accuracy']:.4f}")
    derived: list[Entry] = []

    def add(e: Entry, label: str) -> Entry:
        derived.append(e)
        took = "cached" if math.isnan(e.seconds) else f"{e.seconds:.1f}s"
        say(f"  {label}: {e.id} ({took})")
        return e

    for name, mod in mods.items():
        for r in preset.ratios:
            if share.mine():
                add(derived_entry(pcfg, dm, parent, mod, r, zoo), f"{name} {r}")
    for chain in preset.chains:
        if share.mine():
            add(derived_entry(pcfg, dm, parent, chain, 0.5, zoo), "chain")
    for (m1, r1), (m2, r2) in preset.grand:
        if not share.mine():
            continue
        first = derived_entry(pcfg, dm, parent, mods[m1], r1, zoo)
        if first.id not in {e.id for e in derived}:
            derived.append(first)  # the link from the grandchild back to the root
        add(derived_entry(pcfg, dm, first, mods[m2], r2, zoo), f"{m1} {r1} > {m2} {r2}")
    return Family(parent, seed, refs, derived)


def independents(
    preset: Preset, cfg: dict[str, Any], dm: DataModule, zoo: Zoo, base: list[str], share: Share
) -> list[Entry]:
    """Models no parent is an ancestor of: other seeds, one per half of the training set,
    and other architectures (each `cross_arch` entry: space-separated model overrides)."""
    out = [
        trained(cfg, dm, zoo, SEED_BASE["independent_seed"] + j, "independent_seed")
        for j in range(preset.seeds)
        if share.mine()
    ]
    out += [
        trained(cfg, dm, zoo, SEED_BASE["independent_half"] + h, "independent_half", half=h)
        for h in range(preset.halves)
        if share.mine()
    ]
    for j, over in enumerate(preset.cross_arch):
        if share.mine():
            acfg = compose([*base, *over.split()])
            seed = SEED_BASE["independent_arch"] + j
            out.append(trained(acfg, dm, zoo, seed, "independent_arch"))
    return out + recipe_independents(preset, cfg, dm, zoo, base, share)


def recipe_independents(
    preset: Preset,
    cfg: dict[str, Any],
    dm: DataModule,
    zoo: Zoo,
    base: list[str],
    share: Share | None = None,
) -> list[Entry]:
    """`recipe_models` models of each of the preset's recipes: trained as the references are
    but with the recipe's overrides (other epochs, optimizer, batches, regularisers, width)."""
    if preset.recipes and not 0 <= preset.recipe_models <= 10:
        raise LineageError(
            f"preset {preset.name}: recipe_models={preset.recipe_models}: at most 10 per "
            "recipe (recipe i's seeds are 400 + 10 i + j)"
        )
    share = share or Share()
    out = []
    for i, recipe in enumerate(preset.recipes):
        rcfg = compose([*base, *recipe.overrides.split()])
        # another batch size is another DataModule (its loaders); the data itself is the same
        rdm = dm if data_spec(rcfg["data"]) == data_spec(cfg["data"]) else None
        rdm = rdm or datamodule_from_config(rcfg["data"])
        for j in range(preset.recipe_models):
            if not share.mine():
                continue
            seed = SEED_BASE["independent_recipe"] + 10 * i + j
            half = None if recipe.half is None else (recipe.half + j) % 2
            e = trained(rcfg, rdm, zoo, seed, "independent_recipe", half=half)
            e.recipe = recipe.name
            out.append(e)
    return out


def build_models(
    preset: Preset,
    zoo: Zoo,
    base: list[str],
    say: Callable[[str], None] = print,
    share: Share | None = None,
) -> tuple[dict[str, Any], DataModule, list[Family], list[Entry]]:
    """The zoo's models, from the store or made now; with `share`, only that job's part is
    made (the families and independents returned are then that part)."""
    share = share or Share()
    cfg = compose(base)
    dm = datamodule_from_config(cfg["data"])
    mods = modification_configs(preset)
    families = [family(preset, cfg, dm, zoo, s, mods, say, share) for s in preset.parent_seeds]
    others = independents(preset, cfg, dm, zoo, base, share)
    for e in others:
        say(f"{e.role}{f' {e.recipe}' if e.recipe else ''}: {e.id} acc {e.meta['accuracy']:.4f}")
    return cfg, dm, families, others


def arch_name(model: nn.Module) -> str:
    return str(models.arch_of(model)["name"])


def root_of(model_id: str, parents: Mapping[str, str | None]) -> str:
    """Follow parent_id links to the model nothing was derived from."""
    seen = set()
    while parents.get(model_id) is not None:
        if model_id in seen:
            raise LineageError(f"lineage records hold a cycle through {model_id}")
        seen.add(model_id)
        model_id = str(parents[model_id])
    return model_id


def model_label(meta: Mapping[str, Any]) -> tuple[str | None, float | None]:
    """(modification, ratio) of a derived model; a derived-of-derived one is named by its
    steps, 'pruning>finetune', with the last step's ratio."""
    steps = meta.get("lineage") or []
    if not steps:
        return None, None
    return ">".join(str(s["modification"]) for s in steps), float(steps[-1]["ratio"])


def kind_of(entry: Entry, parent: Entry, root: str) -> str:
    if entry.role == "derived":
        return "derived" if root == parent.id else "other_parent_derived"
    if entry.role == "parent":
        return "other_parent"
    return entry.role


def model_row(e: Entry, links: Mapping[str, str | None], role: str | None = None) -> dict:
    mod, ratio = model_label(e.meta)
    return {
        "id": e.id,
        "role": role or e.role,
        "parent_id": e.meta.get("parent_id"),
        "root_id": root_of(e.id, links),
        "modification": mod,
        "ratio": ratio,
        "seed": e.meta.get("seed"),
        "arch": arch_name(e.model),
        "accuracy": e.meta.get("accuracy"),
        "seconds": e.seconds,
    }

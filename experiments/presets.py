"""Zoo presets: which models a zoo holds and how they are judged, one YAML file each under
experiments/presets/. A preset may name another as its `base` and change only what differs.

    name.yaml            keys of `Preset` below; unknown keys are an error
    python -m experiments.zoo --preset NAME
    python -m experiments.zoo --preset path/to/mine.yaml    # a preset file of one's own

`overrides` are Hydra overrides of the run config (data, model, train, determination,
closeness); everything else says which models the zoo holds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lineage.errors import LineageError

PRESET_DIR = Path(__file__).resolve().parent / "presets"


@dataclasses.dataclass
class Recipe:
    """Independent models trained otherwise than the references (experiments.recipe_shift)."""

    name: str = ""
    overrides: str = ""  # space-separated Hydra overrides of the preset's config
    # trained on one half of the training set: model j of the recipe on half (half + j) % 2,
    # so both halves are used; None: all of it
    half: int | None = None


@dataclasses.dataclass
class Preset:
    name: str = ""
    base: str | None = None  # another preset this one starts from
    overrides: list[str] = dataclasses.field(default_factory=list)
    parents: int = 2
    # parent seeds are offset + 0..parents-1: a second zoo of the same recipe, other parents
    parents_seed_offset: int = 0
    ratios: list[float] = dataclasses.field(default_factory=lambda: [0.1, 0.5, 0.9])
    modifications: list[str] | None = None  # None: every registered one but chain
    options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    chains: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # chain configs
    # derived-of-derived: [[modification, ratio], [modification, ratio]], first applied first
    grand: list[list[list[Any]]] = dataclasses.field(default_factory=list)
    references: int = 6  # calibration references per parent (the determination default)
    seeds: int = 2  # independent: other seeds
    halves: int = 2  # independent: one per half of the training set (0..2)
    cross_arch: list[str] = dataclasses.field(default_factory=list)  # model overrides, 1 each
    baselines: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    recipes: list[Recipe] = dataclasses.field(default_factory=list)
    recipe_models: int = 4  # independent models per recipe (at most 10: their seeds)
    # the nulls experiments.recipe_shift judges under: name -> verdict overrides. A preset's
    # `nulls` replace these (and its base's) whole: it names every null it judges under.
    nulls: dict[str, list[str]] = dataclasses.field(
        default_factory=lambda: {
            "paper": ["verdict.suspect_centred=[]", "distance.enabled=false"],  # 981c3e5's
            "parent": ["verdict.suspect_centred=[]"],  # every kind parent-centred
            "suspect": ["verdict.suspect_centred=[basin,distance,closeness,inherited]"],
            "default": [],  # the config as it is: closeness parent-centred, the rest not
        }
    )

    @property
    def parent_seeds(self) -> list[int]:
        return [self.parents_seed_offset + s for s in range(self.parents)]


def names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _path(name: str) -> Path:
    """A preset's file: NAME in PRESET_DIR, or a file given by its path (NAME.yaml)."""
    return Path(name) if name.endswith(".yaml") else PRESET_DIR / f"{name}.yaml"


def _raw(name: str, seen: tuple[str, ...] = ()) -> Any:
    path = _path(name)
    if not path.is_file():
        raise LineageError(f"unknown preset {name!r}; valid: {', '.join(names())}")
    if name in seen:
        raise LineageError(f"preset {name!r} is its own base (through {' > '.join(seen)})")
    try:
        raw = OmegaConf.load(path)
    except yaml.YAMLError as e:
        raise LineageError(f"preset {name}: {path} is not valid YAML ({e})") from None
    base = raw.get("base")
    if base is None:
        return raw
    merged = OmegaConf.merge(_raw(str(base), (*seen, name)), raw)
    if "nulls" in raw:
        merged.nulls = raw.nulls
    return merged


def load(name: str, parents: int | None = None, overrides: list[str] | None = None) -> Preset:
    """Preset `name`, with the command line's parent count and extra Hydra overrides."""
    try:
        raw = _raw(name)
        merged = OmegaConf.merge(OmegaConf.structured(Preset), raw, {"name": _path(name).stem})
        if "nulls" in raw:
            merged.nulls = raw.nulls
        preset = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise LineageError(f"preset {name}: {e.msg if hasattr(e, 'msg') else e}") from None
    assert isinstance(preset, Preset)
    if parents:
        preset.parents = parents
    preset.overrides = [*preset.overrides, *(overrides or [])]
    return preset

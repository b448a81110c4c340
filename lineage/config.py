"""The config's schemas, registered in Hydra's ConfigStore, and the checks run right after
composition.

Every component's options live in one dataclass next to its code (lineage.settings.knob:
the default and the allowed values): DataConf (lineage.data.settings), TrainConf
(lineage.training), each model's (lineage.models.<name>), each modification's
(lineage.modifications.<name>), DeterminationConf and ClosenessConf (lineage.evaluate),
and RootConf here for the top-level keys. Each YAML in conf/<group>/ starts from its
schema (`defaults: [/hydra/schema/<group>@_here_, ...]`; model and modification have one
per name) and sets only what differs, so a wrong type fails while Hydra composes the
config, naming the key, and `check_ranges` checks every range before any data is read.
The schemas sit under hydra/ so that `--help` lists only the groups a user picks from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from .data.settings import DataConf
from .errors import LineageError
from .evaluate.basin.settings import DeterminationConf
from .evaluate.closeness.settings import ClosenessConf
from .evaluate.distance import DistanceConf
from .evaluate.inherited import InheritedConf
from .evaluate.surrogate import SurrogateConf
from .evaluate.verdict import VerdictConf
from .settings import SEED_MAX, from_mapping, knob
from .training import TrainConf


@dataclass
class RootConf:
    """Top-level keys; the groups are typed by their own schemas."""

    name: str = knob("default")  # names the run or sweep folder; resume works per name
    seed: int = knob(0, lo=0, hi=SEED_MAX)  # the parent's; references add 1000 * (i + 1)
    ratio: float = knob(0.5, lo=0, hi=1)  # the one strength knob, mapped by each modification
    # independent references: the distribution the verdict's p-values are measured against
    # (lineage.evaluate.verdict: 6, as fewer floor the p-values); each is also judged,
    # leave-one-out against the others
    n_independent: int = knob(6, lo=0, hi=100)
    force: bool = knob(False)  # rerun a job whose metrics.json already holds this config
    progress: bool = knob(True)  # progress bars on a terminal (always off when not a TTY)
    # torch threads per job; null: the cores divided by the jobs that run at once (its
    # launcher's, or the lineage jobs running on this machine: lineage.runtime)
    threads: int | None = knob(None, lo=1, hi=1024)
    # modules imported before the job, for what they register (a kind of evidence, ...):
    # the user's own config names them, never a file (lineage.plugins)
    plugins: list[str] = knob([])
    data: Any = MISSING
    model: Any = MISSING
    train: Any = MISSING
    modification: Any = MISSING
    determination: Any = MISSING
    closeness: Any = MISSING
    inherited: Any = MISSING
    distance: Any = MISSING
    surrogate: Any = MISSING
    verdict: Any = MISSING
    logger: Any = MISSING
    paths: Any = MISSING


GROUPS: dict[str, type] = {
    "data": DataConf,
    "train": TrainConf,
    "determination": DeterminationConf,
    "closeness": ClosenessConf,
    "inherited": InheritedConf,
    "distance": DistanceConf,
    "surrogate": SurrogateConf,
    "verdict": VerdictConf,
}


def register_schemas() -> None:
    register_resolvers()
    from .models.registry import OPTIONS as MODEL_OPTIONS
    from .modifications import registry  # importing the package registers every one

    cs = ConfigStore.instance()
    cs.store(name="root_schema", node=RootConf)
    for group, node in GROUPS.items():
        cs.store(group="hydra/schema", name=group, node=node)
    for name, node in MODEL_OPTIONS.items():
        cs.store(group="hydra/schema/model", name=name, node=node)
    for name, node in registry.OPTIONS.items():
        cs.store(group="hydra/schema/modification", name=name, node=node)
    from .baselines import schema as baselines_schema  # one field per registered baseline

    cs.store(group="hydra/schema", name="baselines", node=baselines_schema())


def check_ranges(cfg: Mapping[str, Any]) -> None:
    """Raise LineageError naming the first key whose value is wrong: each group through
    its dataclass (types, ranges, unknown keys, which Hydra's `+` could add past the
    schema), the top-level keys through RootConf. The model and the modification are
    checked by their own registries (models.from_config, modifications.validate). A data
    `_target_`'s extra keys are its factory's, so only the data group's own are checked."""
    for group, schema in GROUPS.items():
        given = cfg.get(group)
        if not isinstance(given, Mapping):
            continue
        if group == "data" and given.get("_target_"):
            own = {f.name for f in fields(schema)}
            given = {k: v for k, v in given.items() if k in own}
        from_mapping(
            schema, {k: v for k, v in given.items() if k != "name" or v is not None}, group
        )
    check_root_keys(cfg, cfg.get("plugins"))
    from .evaluate import evidence

    for kind in evidence.kinds():  # a plug-in kind's group, through its own schema
        if kind.group not in GROUPS and isinstance(cfg.get(kind.group), Mapping):
            kind.settings(cfg[kind.group])
    roots = (
        {f.name for f in fields(RootConf)}
        - set(GROUPS)
        - {"model", "modification", "logger", "paths"}
    )
    from_mapping(RootConf, {k: cfg[k] for k in roots if k in cfg})


def check_root_keys(keys: Any, plugins: Any = ()) -> None:
    """A top-level key that RootConf does not know is a typo: `+key=value` passes Hydra's
    struct check, and the key would be silently ignored. A kind of evidence registered by
    one of the config's `plugins` brings its own group (`+agreement.points=100`)."""
    from . import plugins as plugin_modules
    from .evaluate import evidence
    from .text import shorten

    plugin_modules.load(list(plugins or []))
    known = {f.name for f in fields(RootConf)} | {k.group for k in evidence.kinds()}
    unknown = sorted(str(k) for k in keys if k not in known and k != "hydra")
    if unknown:
        raise LineageError(
            f"unknown key {shorten(repr(unknown[0]), 80)} (top-level keys: "
            f"{', '.join(sorted(known))})"
        )


def register_resolvers() -> None:
    """`${safe_dirname:...}` in conf/config.yaml: run and sweep folders named from long
    overrides stay under the file system's 255-byte name limit (utils.safe_dirname)."""
    from omegaconf import OmegaConf

    from .utils import safe_dirname

    if not OmegaConf.has_resolver("safe_dirname"):
        OmegaConf.register_new_resolver("safe_dirname", safe_dirname)


def compose(overrides: list[str]) -> dict[str, Any]:
    """The project's config with `overrides`, resolved and range-checked."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from .errors import LineageError

    register_schemas()
    try:
        with initialize_config_module("lineage.conf", version_base="1.3"):
            cfg = hydra_compose("config", overrides=[f"paths.root={Path.cwd()}", *overrides])
        out = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise LineageError(f"bad option: {e}") from None
    assert isinstance(out, dict)
    composed = {str(k): v for k, v in out.items()}
    check_ranges(composed)
    return composed

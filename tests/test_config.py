"""Config validation at composition (Hydra's compose API, no subprocess, no data, no training).

A wrong type fails while Hydra composes, an out-of-range value in `check_ranges` right
after; either way the message names the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from lineage.config import (
    check_ranges,
    register_schemas,
)
from lineage.errors import LineageError
from lineage.modifications.registry import OPTIONS

CONF = Path(__file__).resolve().parents[1] / "lineage" / "conf"
GROUPS = ["data", "model", "train", "modification", "determination", "closeness"]


@pytest.fixture(scope="module", autouse=True)
def hydra_conf():
    """One Hydra initialisation for the module: each compose then costs milliseconds."""
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def compose(*overrides: str) -> dict[str, Any]:
    cfg = hydra_compose("config", overrides=["paths.root=/nonexistent", *overrides])
    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    return out


def validated(*overrides: str) -> dict[str, Any]:
    """Compose, then every check the pipeline runs before loading data (pipeline.check)."""
    from lineage.modifications import validate

    cfg = compose(*overrides)
    check_ranges(cfg)
    validate(cfg["modification"], cfg["ratio"])
    return cfg


def group_files() -> list[Path]:
    return sorted(p for g in GROUPS for p in (CONF / g).glob("*.yaml"))


@pytest.mark.parametrize("path", group_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_group_yaml_starts_from_its_schema(path):
    group, name = path.parent.name, path.stem
    per_name = group in ("model", "modification")
    want = f"/hydra/schema/{group}/{name}@_here_" if per_name else f"/hydra/schema/{group}@_here_"
    assert yaml.safe_load(path.read_text())["defaults"] == [want, "_self_"]


MODIFICATIONS = sorted(OPTIONS)


def schema_of(group: str, name: str) -> type:
    """The dataclass that is a group option's one home of defaults (a `_target_` model's
    too: hf_vit's is lineage.models.hf.ViTConf)."""
    from lineage.config import GROUPS
    from lineage.models.registry import OPTIONS as MODELS

    if group == "model":
        return MODELS[name]
    if group == "modification":
        return OPTIONS[name]
    return GROUPS[group]


def defaults(cls: type) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cls))  # MISSING -> "???"


@pytest.mark.parametrize("path", group_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_group_option_is_its_dataclass_with_only_what_differs(path):
    """Each default lives in one place: composing a group option gives its dataclass's
    defaults, changed only by the keys its YAML sets, and no YAML key repeats a default."""
    group, name = path.parent.name, path.stem
    cls = schema_of(group, name)
    raw = yaml.safe_load(path.read_text())
    own = {k: v for k, v in raw.items() if k != "defaults"}
    base = defaults(cls)
    repeated = {k: v for k, v in own.items() if base.get(k) == v}
    assert not repeated, f"{path}: repeats the dataclass's defaults {repeated}"
    composed = compose(f"{group}={name}")[group]
    want = {**base, **own}
    for k, v in want.items():
        if isinstance(v, str) and "${" in v:
            continue  # an interpolation: resolved by composition
        assert composed[k] == v, (path, k)
    assert set(composed) == set(base)  # nothing beyond the dataclass's fields


def test_the_baselines_group_is_each_methods_dataclass_selected_by_its_yaml():
    """conf/baselines/default.yaml only selects the schema (one field per registered
    baseline, typed by its options): composing it gives lineage.baselines.config(), and a
    wrong type fails while Hydra composes, naming the key."""
    from lineage.baselines import config

    raw = yaml.safe_load((CONF / "baselines" / "default.yaml").read_text())
    assert raw == {"defaults": ["/hydra/schema/baselines@_here_", "_self_"]}
    got = OmegaConf.to_container(hydra_compose("baselines/default"))
    assert got == {"baselines": config()}
    over = hydra_compose("baselines/default", overrides=["baselines.modeldiff.eps=0.2"])
    assert over.baselines.modeldiff.eps == 0.2
    with pytest.raises(ConfigCompositionException, match="baselines.sacw.n_points=abc"):
        hydra_compose("baselines/default", overrides=["baselines.sacw.n_points=abc"])


def test_the_root_config_sets_no_top_level_default():
    from lineage.config import RootConf

    raw = yaml.safe_load((CONF / "config.yaml").read_text())
    base = defaults(RootConf)
    assert not {k for k in raw if k in base and raw[k] == base[k]}
    assert compose()["n_independent"] == RootConf().n_independent


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["experiment=smoke"],
        ["data=mnist", "model=lenet"],
        ["data=cifar10", "model=resnet18"],
        ["data=cifar10", "model=vgg11"],
        *[[f"modification={m}"] for m in MODIFICATIONS],
        ["modification=chain", "experiment=smoke"],
    ],
    ids=lambda o: ",".join(o) or "default",
)
def test_shipped_configs_pass_every_check(overrides):
    cfg = validated(*overrides)
    assert cfg["closeness"]["tol"] < cfg["closeness"]["step"]  # composed and typed


@pytest.mark.parametrize(
    "override,key,cause",
    [
        ("closeness.d_max=abc", "closeness.d_max", "could not be converted to Float"),
        ("closeness.max_points=1.5", "closeness.max_points", "could not be converted to Integer"),
        ("closeness.filter=maybe", "closeness.filter", "is not a valid bool"),
        ("closeness.batch_size=big", "closeness.batch_size", "could not be converted"),
        ("determination.alphas=eleven", "determination.alphas", "could not be converted"),
        ("determination.align=sometimes", "determination.align", "is not a valid bool"),
        ("determination.gamma=[0.25]", "determination.gamma", "Float"),
        ("closeness.typo=1", "closeness.typo", "+closeness.typo=1"),
        ("modification.lr=fast", "modification.lr", "could not be converted to Float"),
        ("modification.epochs=2.5", "modification.epochs", "could not be converted"),
        ("modification.reinit_head=perhaps", "modification.reinit_head", "not a valid bool"),
    ],
)
def test_wrong_type_fails_at_composition_naming_the_key(override, key, cause):
    with pytest.raises(ConfigCompositionException) as e:
        compose(override)
    message = f"{e.value} {e.value.__cause__}"
    assert key in message and cause in message


@pytest.mark.parametrize(
    "modification,override,key,cause",
    [
        ("pruning", "modification.finetune_epochs=two", "modification.finetune_epochs", "Integer"),
        ("quantize", "modification.bits=4.5", "modification.bits", "Integer"),
        ("adversarial", "modification.eps=big", "modification.eps", "Float"),
        ("extraction", "modification.shift=left", "modification.shift", "Integer"),
        ("distill", "modification.temperature=hot", "modification.temperature", "Float"),
        ("distill", "modification.mixup=maybe", "modification.mixup", "not a valid bool"),
        ("pruning", "modification.metod=l1_structured", "modification.metod", "append"),
        ("chain", "modification.steps=pruning", "modification.steps", "ListConfig"),
    ],
)
def test_each_modification_schema_types_its_options(modification, override, key, cause):
    with pytest.raises(ConfigCompositionException) as e:
        compose(f"modification={modification}", override)
    message = f"{e.value} {e.value.__cause__}"
    assert key in message and cause in message


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["ratio=1.5"], "ratio=1.5 is outside its range [0, 1]"),
        (["closeness.tol=0"], "closeness.tol=0.0 is outside its range (0, inf)"),
        (["closeness.tol=-1e-3"], "closeness.tol=-0.001 is outside its range (0, inf)"),
        (["closeness.d_max=0"], "closeness.d_max=0.0 is outside its range (0, inf)"),
        (["closeness.d_max=-2"], "closeness.d_max=-2.0 is outside"),
        (["closeness.d_max=inf"], "closeness.d_max=inf is outside"),
        (["closeness.d_max=nan"], "closeness.d_max=nan is outside"),
        (["closeness.step=0"], "closeness.step=0.0 is outside"),
        (["closeness.ci_tol=0"], "closeness.ci_tol=0.0 is outside its range (0, 1)"),
        (["closeness.ci_tol=1"], "closeness.ci_tol=1.0 is outside its range (0, 1)"),
        (["closeness.max_points=0"], "closeness.max_points=0 is outside its range [1, inf)"),
        (["closeness.min_points=0"], "closeness.min_points=0 is outside"),
        (["closeness.batch_points=-5"], "closeness.batch_points=-5 is outside"),
        (["closeness.n_boot=0"], "closeness.n_boot=0 is outside"),
        (["closeness.max_chunk=0"], "closeness.max_chunk=0 is outside"),
        (["closeness.batch_size=0"], "closeness.batch_size=0 is outside"),
        (["closeness.filter_pool=0"], "closeness.filter_pool=0 is outside"),
        (["closeness.search=newton"], "closeness.search='newton': valid are brent, bisection"),
        (["closeness.strategy=random"], "closeness.strategy='random': valid are stratified"),
        (["closeness.tol=0.5"], "closeness: need tol < step <= d_max, got tol=0.5, step=0.1"),
        (["closeness.tol=0.1"], "closeness: need tol < step <= d_max, got tol=0.1, step=0.1"),
        (["closeness.step=20"], "need tol < step <= d_max, got tol=1e-05, step=20.0, d_max=10.0"),
        (
            ["closeness.min_points=500", "closeness.max_points=200"],
            "closeness: min_points=500 exceeds max_points=200",
        ),
        (["+closeness.typo=1"], "closeness: unknown key(s) ['typo']; valid: d_max"),
        (["determination.alphas=1"], "determination.alphas=1 is outside its range [2, inf)"),
        (["determination.refine=-1"], "determination.refine=-1 is outside"),
        (["determination.probe_points=0"], "determination.probe_points=0 is outside"),
        (["determination.batch_size=0"], "determination.batch_size=0 is outside"),
        (["determination.bn_batches=0"], "determination.bn_batches=0 is outside"),
        (["determination.align_rounds=0"], "determination.align_rounds=0 is outside"),
        (["determination.head_steps=0"], "determination.head_steps=0 is outside"),
        (["determination.gamma=0"], "determination.gamma=0.0 is outside its range (0, inf)"),
        (["determination.fallback_rel=-0.1"], "determination.fallback_rel=-0.1 is outside"),
        (["+determination.alfa=5"], "determination: unknown key(s) ['alfa']"),
        (["train.optimizer=rmsprop"], "train.optimizer='rmsprop': valid are adam, sgd"),
        (["data.val_fraction=0.95"], "data.val_fraction=0.95 is outside its range [0, 0.9]"),
        (["data.limit=0"], "data.limit=0 is outside its range [1, inf)"),
    ],
)
def test_out_of_range_fails_right_after_composition_naming_the_key(overrides, message):
    cfg = compose(*overrides)  # the types are fine ...
    with pytest.raises(LineageError) as e:
        check_ranges(cfg)  # ... the value is not
    assert message in str(e.value)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["modification=pruning", "modification.lr=0"],
            "pruning.lr=0.0 is outside its range (0, 10]",
        ),
        (["modification=pruning", "modification.method=random"], "pruning.method='random'"),
        (
            ["modification=quantize", "modification.bits=20"],
            "quantize.bits=20 is outside its range [2, 16]",
        ),
        (["modification=adversarial", "modification.eps=2"], "adversarial.eps=2.0"),
        (["modification=extraction", "modification.query=web"], "extraction.query='web'"),
        (["modification=transfer", "modification.data=null"], "transfer.data: the target task"),
        (["modification=finetune", "+modification.epoch=3"], "finetune: unknown key(s) ['epoch']"),
    ],
)
def test_modification_ranges_fail_before_any_data(overrides, message):
    """Types come from the schema; each modification's validator polices its ranges."""
    with pytest.raises(LineageError) as e:
        validated(*overrides)
    assert message in str(e.value)


def test_check_ranges_on_a_plain_mapping():
    """Callers that build configs by hand (lineage compare, tests) get the same checks."""
    check_ranges({"closeness": {"batch_size": None, "filter_pool": None}})  # null: derived
    with pytest.raises(LineageError, match=r"closeness.d_max='10' is not a number"):
        check_ranges({"closeness": {"d_max": "10"}})
    with pytest.raises(LineageError, match=r"determination.alphas=True is not an integer"):
        check_ranges({"determination": {"alphas": True}})

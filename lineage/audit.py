"""`lineage compare`: an auditor's comparison of two model files, through the one engine.

Files come from strangers, so what their metadata says is checked before it is used: a
dataset name must be a registered one, a training recipe (`spec`, which decides how the
references are trained) must pass the same type and range checks as a config, and nothing
from a file becomes a Hydra override string or an import.

Without enough references (determination.min_references) there is no distribution to
measure the suspect against: such a comparison reports "undetermined", never a verdict.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from .errors import LineageError
from .settings import SEED_MAX
from .text import printable
from .utils import read_yaml

log = logging.getLogger("lineage")


def _dataset_name(meta: Mapping[str, Any], who: str) -> str | None:
    from .data import DATASETS

    data = meta.get("data")
    if data is None:
        return None
    name = data.get("name") if isinstance(data, Mapping) else None
    if not isinstance(name, str) or name not in DATASETS:
        raise LineageError(
            f"{who}: the file names dataset {printable(repr(name))[:80]}, which is not a "
            f"registered one ({', '.join(DATASETS.names())}); pass --data"
        )
    return next(n for n in DATASETS.names() if n == name)  # our own string, not the file's


def _classes(meta: Mapping[str, Any], who: str) -> list[int] | None:
    data = meta.get("data")
    classes = data.get("classes") if isinstance(data, Mapping) else None
    if classes is None:
        return None
    if not (
        isinstance(classes, list)
        and classes
        and all(type(c) is int and 0 <= c < 100_000 for c in classes)
    ):
        raise LineageError(f"{who}: the file's data.classes is not a list of class indices")
    return list(classes)


def _typed(schema: type, values: Any, where: str) -> dict[str, Any]:
    """`values` checked against a config dataclass's types (only its own keys)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(values, Mapping):
        raise LineageError(f"{where}: must be a mapping, not {type(values).__name__}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), dict(values))
    except (OmegaConfBaseException, RecursionError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LineageError(f"{where}: {printable(first)[:200]}") from None
    out = OmegaConf.to_container(merged)
    assert isinstance(out, dict)
    return {k: out[k] for k in values if k in out}


def recipe(pmeta: Mapping[str, Any], cfg: dict[str, Any], who: str) -> int:
    """Merge the parent file's training recipe (`spec`) into `cfg`, checked as a config is,
    so the references train as the parent did. Returns the parent's seed."""
    from .config import DataConf, TrainConf, check_ranges

    seed = pmeta.get("seed", 0)
    if seed is None:
        seed = 0
    if type(seed) is not int or not 0 <= seed <= SEED_MAX:
        raise LineageError(
            f"{who}: the file's seed {printable(repr(seed))[:40]} is not in 0..{SEED_MAX}"
        )
    spec = pmeta.get("spec")
    if spec is None:
        return seed
    if not isinstance(spec, Mapping):
        raise LineageError(f"{who}: the file's training spec is not a mapping")
    data = {k: v for k, v in (spec.get("data") or {}).items() if v is not None and k != "name"}
    if data.get("_target_") is not None:  # importing what a file names runs its code
        raise LineageError(
            f"{who}: the file's training spec names a data factory, which lineage never "
            "imports on a file's word; pass --data (and --references 0 or --reference FILE)"
        )
    data.pop("half", None)
    cfg["data"].update(_typed(DataConf, data, f"{who}: spec.data"))
    cfg["train"].update(_typed(TrainConf, spec.get("train") or {}, f"{who}: spec.train"))
    try:
        check_ranges(cfg)
    except LineageError as e:
        raise LineageError(f"{who}: the file's training spec: {e}") from None
    return seed


def _arch_config(model: nn.Module) -> dict[str, Any]:
    arch = getattr(model, "arch", None)
    if not isinstance(arch, dict):
        raise LineageError("the parent was not built by lineage: references cannot be trained")
    kw = dict(arch.get("kwargs") or {})
    if arch.get("target"):
        return {"_target_": arch["target"], **kw}
    return {"name": arch["name"], **kw}


def _reference_model(pmeta: Mapping[str, Any], parent: nn.Module) -> dict[str, Any]:
    """The references' model config. For a `_target_` parent the file's recorded one, so the
    zoo finds the references its run trained, if it names the factory the parent was built
    with (the user's --arch: a file never picks the code) and holds plain values only."""
    mine = _arch_config(parent)
    spec = pmeta.get("spec")
    model = spec.get("model") if isinstance(spec, Mapping) else None
    target = mine.get("_target_")

    def same(t: Any) -> bool:
        return isinstance(t, str) and t.replace(":", ".") == str(target).replace(":", ".")

    def plain(v: Any) -> bool:
        scalar = (int, float, str, bool, type(None))
        return isinstance(v, scalar) or (
            isinstance(v, list) and all(isinstance(i, scalar) for i in v)
        )

    if target and isinstance(model, Mapping) and same(model.get("_target_")):
        if all(isinstance(k, str) and plain(v) for k, v in model.items()):
            return dict(model)  # its own spelling of the same factory: the zoo keys on it
    return mine


def compare(args: argparse.Namespace) -> dict[str, Any]:
    from .models.files import load_model
    from .remote.cli import is_url
    from .runtime import end_job, start_job

    parent, pmeta = load_model(args.parent, args.arch)
    url = is_url(args.suspect)  # a deployed model: a black box, made once the task is known
    suspect: Any = None
    smeta: dict[str, Any] = {}
    if not url:
        suspect, smeta = load_model(args.suspect, args.suspect_arch or args.arch)
        from .evaluate.basin.route import check_record

        check_record(_record(smeta))  # a hostile record fails before any reference trains
    pname, sname = Path(args.parent).name, printable(args.suspect)
    overrides: list[str] = []
    data_yaml = args.data if args.data and args.data.endswith((".yaml", ".yml")) else None
    if args.data and not data_yaml:
        overrides.append(f"data={args.data}")
    elif args.data is None:
        name = _dataset_name(pmeta, pname)
        if name is None:
            raise LineageError(f"{pname}: the file names no dataset; pass --data")
        theirs = _dataset_name(smeta, sname)
        if theirs is not None and (theirs, _classes(smeta, sname)) != (
            name,
            _classes(pmeta, pname),
        ):
            raise LineageError(
                f"the models were trained on different tasks ({name}, {_classes(pmeta, pname)} "
                f"vs {theirs}, {_classes(smeta, sname)}); pass --data to say which task "
                "to compare them on"
            )
        overrides.append(f"data={name}")
    cfg = command_config(args, overrides)
    start_job(cfg.get("threads"))  # its share of the cores, as `run` and `tree` take
    try:
        return _audit(args, cfg, parent, pmeta, suspect, smeta, url)
    finally:
        end_job()


def _audit(
    args: argparse.Namespace,
    cfg: dict[str, Any],
    parent: nn.Module,
    pmeta: dict[str, Any],
    suspect: Any,
    smeta: dict[str, Any],
    url: bool,
) -> dict[str, Any]:
    """`compare` once the task and options are known: references, calibration, verdict."""
    from .data import datamodule_from_config
    from .engine import calibrate, judge
    from .models.files import load_model
    from .pipeline import trained_model
    from .remote.cli import remote_suspect
    from .runtime import settle_on
    from .tracking import Tracker
    from .utils import flatten
    from .zoo import Zoo, reference_seed

    pname = Path(args.parent).name
    seed = 0
    if args.data is None:
        seed = recipe(pmeta, cfg, pname)
        if pmeta.get("spec") is None and _classes(pmeta, pname):
            cfg["data"]["classes"] = _classes(pmeta, pname)
    dm = datamodule_from_config(cfg["data"])
    from .adapters import n_outputs

    if n_outputs(parent, dm.test.x) != dm.num_classes:
        raise LineageError(
            f"{pname} has {n_outputs(parent, dm.test.x)} outputs but data "
            f"{dm.name!r} has {dm.num_classes} classes"
        )
    refs = [load_model(f, args.arch)[0] for f in args.reference]
    n = args.references
    if n is None:  # references given as files are the auditor's choice: train none beside them
        trainable = pmeta.get("spec") is not None and args.data is None and not args.reference
        n = int(cfg["n_independent"]) if trainable else 0
    recipe_of_refs = "files" if args.reference else "none"
    if n:
        # --data names the task, so the file's recipe is not read (`recipe` above)
        known = pmeta.get("spec") is not None and args.data is None
        recipe_of_refs = "recorded" if known else "default"
    if recipe_of_refs == "default":
        log.warning(
            "%s: its training recipe is not known here: its %d references train with the default "
            "recipe (train.*, data.epochs), and the verdict's null assumes the parent was "
            "trained that way; pass its recipe as overrides, or --reference FILE",
            pname,
            n,
        )
    if n:
        cfg["model"] = _reference_model(pmeta, parent)
        zoo = Zoo(cfg["paths"]["zoo"])
        for i in range(n):
            s = reference_seed(seed, i)
            log.info(
                "reference %d/%d (seed %d): loading from %s or training", i + 1, n, s, zoo.root
            )
            model, meta, new = trained_model(cfg, dm, zoo, s, "independent", Tracker())
            log.info(
                "reference %d/%d: %s %s, accuracy %.4f",
                i + 1,
                n,
                meta["id"],
                "trained" if new else "loaded",
                meta["accuracy"],
            )
            refs.append(model)
    log.info("judging: determination and closeness on %d test points", len(dm.test))
    x, y = dm.test.x, dm.test.y
    if len(x):  # the judging's threads, timed on the parent (training settled its own)
        settle_on(parent, x[:256])
    cal = calibrate(parent, refs, x, y, seed=seed, head=args.head, options=cfg)
    if url:
        suspect = remote_suspect(args, dm)
    try:
        v = judge(parent, suspect, x, y, calibration=cal, record=_record(smeta))
    finally:
        if url:
            suspect.close()
    if recipe_of_refs == "default":
        assumed = (
            "the references were trained with the default recipe, the parent's being "
            "unrecorded: the p-values assume the parent was trained that way"
        )
        v.decision.caveat = "; ".join(filter(None, [v.decision.caveat, assumed]))
    out = flatten(v.to_dict())
    out["references_recipe"] = recipe_of_refs
    if url:
        drawn = max((getattr(r, "n_drawn", 0) for r in v.evidence.values() if r), default=0)
        out.update(flatten({"queries": suspect.report(drawn)}))
    out["references"] = len(refs)
    out["calibrated"] = v.calibrated
    out["verdict"] = v.decision.answer
    out["explanation"] = v.explain(cal)
    return out


def _record(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    record = meta.get("record")
    return record if isinstance(record, Mapping) else None


def command_config(args: argparse.Namespace, task: list[str]) -> dict[str, Any]:
    """The config a command on model files (compare, tree) runs with: the task's overrides,
    then the user's, --data-root and --zoo; the plugins it names loaded; a --data YAML over
    its data group."""
    from . import plugins
    from .config import compose

    overrides = [*task, *args.overrides]
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.zoo:
        overrides.append(f"paths.zoo={args.zoo}")
    cfg = compose(overrides)
    plugins.load(cfg.get("plugins") or [])
    if args.data and args.data.endswith((".yaml", ".yml")):
        cfg["data"] = _data_yaml(args.data, cfg["data"])
    return cfg


def _data_yaml(path: str, base: dict[str, Any]) -> dict[str, Any]:
    conf = read_yaml(path, "--data")
    if not isinstance(conf, dict):
        raise LineageError(f"--data {path}: must be a mapping")
    return {**base, **{str(k): v for k, v in conf.items()}}


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else str(v)


def report(r: Mapping[str, Any]) -> str:
    """The console answer: the verdict (or "undetermined", never a bare verdict without
    references) with each evidence's p-value, always saying whether it was calibrated."""
    n = r["references"]
    cal = f"calibrated on {n} references" if r["calibrated"] else f"uncalibrated: {n} references"
    lines = str(r["explanation"]).splitlines()
    lines[0] = f"determination: {lines[0]}; {cal}"
    if not r["calibrated"]:
        lines.append("  pass independent models with --reference FILE, or --references N")
    if "queries.sent" in r:
        from .remote.cli import queries_line

        lines.append(queries_line(dict(r)))
    return "\n".join(printable(line) for line in lines)

"""`lineage compare PARENT SUSPECT`: the auditor's entry point for two model files, or for
a model file and a deployed model's URL (lineage.remote); `lineage serve MODEL_FILE`.

Exit code 0 for a completed comparison, whatever the verdict; 2 with a one-line message
for bad input (missing or corrupt files, mismatched tasks, bad options).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose(overrides: list[str]) -> dict[str, Any]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from .config import check_ranges, register_schemas
    from .errors import LineageError

    register_schemas()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose("config", overrides=[f"paths.root={Path.cwd()}", *overrides])
        out = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise LineageError(f"bad option: {e}") from None
    assert isinstance(out, dict)
    composed = {str(k): v for k, v in out.items()}
    check_ranges(composed)
    return composed


def task_of(meta: dict[str, Any]) -> tuple[Any, Any]:
    d = meta.get("data") or {}
    return d.get("name"), d.get("classes")


def compare(args: argparse.Namespace) -> dict[str, Any]:
    from . import models
    from .data import datamodule_from_config
    from .errors import LineageError
    from .judge import Suspect, judge
    from .pipeline import reference_seed, trained_model
    from .tracking import Tracker
    from .zoo import Zoo

    parent, pmeta = models.load(args.parent)
    suspect, smeta = models.load(Path(args.suspect))
    if args.data is None:
        if task_of(pmeta)[0] is None:
            raise LineageError(f"{args.parent}: the file names no dataset; pass --data")
        if task_of(smeta) != task_of(pmeta):
            raise LineageError(
                f"the models were trained on different tasks ({task_of(pmeta)} vs "
                f"{task_of(smeta)}); pass --data to say which task to compare them on"
            )
    spec = pmeta.get("spec") or {}
    overrides = [f"data={args.data or task_of(pmeta)[0]}", *args.overrides]
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.zoo:
        overrides.append(f"paths.zoo={args.zoo}")
    cfg = compose(overrides)
    arch = pmeta["arch"]
    cfg["model"] = {"name": arch["name"], **arch.get("kwargs", {})}
    if spec and args.data is None:  # rebuild the parent's exact data split and training
        cfg["data"].update({k: v for k, v in spec.get("data", {}).items() if v is not None})
        cfg["train"].update(spec.get("train", {}))
    elif task_of(pmeta)[1] and args.data is None:
        cfg["data"]["classes"] = task_of(pmeta)[1]
    seed = int(pmeta.get("seed") or 0)
    dm = datamodule_from_config(cfg["data"])
    if models.head_of(parent).out_features != dm.num_classes:
        raise LineageError(
            f"{args.parent} has {models.head_of(parent).out_features} outputs but data "
            f"{dm.name!r} has {dm.num_classes} classes"
        )
    zoo = Zoo(cfg["paths"]["zoo"])
    refs = [
        trained_model(cfg, dm, zoo, reference_seed(seed, i), "independent", Tracker())[0]
        for i in range(args.references)
    ]
    verdict, _, _ = judge(
        parent, Suspect(suspect, smeta.get("record")), refs, dm.test.x, dm.test.y, cfg, seed
    )
    assert verdict is not None
    return verdict.to_dict()


def main(argv: list[str] | None = None) -> int:
    from .remote import cli as remote

    p = argparse.ArgumentParser(prog="lineage", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="is SUSPECT derived from PARENT, and how closely?")
    c.add_argument("parent", type=Path)
    c.add_argument("suspect", help="a model file, or a URL http(s)://host:port[/v2/models/NAME]")
    c.add_argument("--data", help="dataset to compare on (default: the parent's)")
    c.add_argument("--data-root", help="folder holding the dataset files")
    c.add_argument(
        "--references",
        type=int,
        default=0,
        help="train or load N independent references to calibrate thresholds",
    )
    c.add_argument("--zoo", help="zoo folder for references (default outputs/zoo)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.epilog = "Extra KEY=VALUE arguments are Hydra overrides, e.g. closeness.max_points=200."
    remote.add_remote_options(c)
    remote.add_serve_parser(sub)
    args, extra = p.parse_known_args(argv)
    if args.command == "serve":
        if extra:
            p.error(f"unrecognized arguments: {' '.join(extra)}")
        return remote.serve(args)
    args.overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    if len(args.overrides) != len(extra):
        p.error(f"unrecognized arguments: {' '.join(a for a in extra if a not in args.overrides)}")

    from .errors import LineageError
    from .utils import flatten

    if args.references < 0:
        p.error("--references must be >= 0")
    try:
        result = flatten(remote.compare_url(args) if remote.is_url(args.suspect) else compare(args))
    except LineageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, default=str))
    elif "queries.sent" in result:
        remote.print_summary(result)
    else:
        d = "lineage" if result["determination.is_lineage"] else "not lineage"
        print(
            f"determination: {d} (method {result['determination.method']}, barrier "
            f"{result['determination.barrier']}, threshold {result['determination.threshold']})"
        )
        print(
            f"closeness: {result['closeness.score']:.4f} "
            f"[{result['closeness.ci_low']:.4f}, {result['closeness.ci_high']:.4f}], "
            f"match rate {result['closeness.match_rate']:.4f}"
        )
    return 0

"""`lineage tree`: the lineage forest of model files, through `lineage.tree`.

Files are loaded as `lineage compare` loads them (lineage.models.files: never unpickled,
nothing they name imported). Their metadata is read for three things only, each checked:
the task (a registered dataset name, the same for every file that names one), the
references' training recipe (the first file recording one), and the ground truth (each
file's `parent_id`), which scores the recovered tree and never shapes it. A file's
lineage record (kept channels of a structured prune) is passed to the judge as
`lineage compare` does.

Outputs (`--out DIR`): edges.json, tree.graphml, tree.png and, with ground truth,
recovery.json; judged.jsonl, every pair judged so far, from which a rerun into the same
folder resumes (lineage.tree_journal).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import LineageError
from .text import printable, shorten

log = logging.getLogger("lineage")

MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
SAFE_ID = re.compile(r"^[A-Za-z0-9_.+=-]{1,128}$")  # ids go into JSON, XML and pictures


def model_files(paths: list[str]) -> list[Path]:
    """Each path a model file or Hugging Face folder, or a folder of model files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and not (p / "config.json").is_file():
            found = sorted(f for f in p.iterdir() if f.suffix in MODEL_SUFFIXES and f.is_file())
            if not found:
                raise LineageError(f"{shorten(p)}: a folder holding no model file")
            out += found
        else:
            out.append(p)
    if len(out) < 2:
        raise LineageError(f"a tree needs at least 2 model files, got {len(out)}")
    return out


def _id(meta: Mapping[str, Any], path: Path, taken: set[str]) -> str:
    mid = meta.get("id")
    if isinstance(mid, str) and mid in taken:
        raise LineageError(f"{shorten(path)}: model {shorten(mid)} is given twice")
    for cand in (mid, path.stem):
        if isinstance(cand, str) and SAFE_ID.match(cand) and cand not in taken:
            return cand
    return f"model{len(taken)}"


def load(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """id -> model, id -> its file's metadata (with "path")."""
    from .evaluate.basin.route import check_record
    from .models.files import load_model

    files = model_files(args.files)
    models: dict[str, Any] = {}
    metas: dict[str, dict[str, Any]] = {}
    for f in files:
        model, meta = load_model(f, args.arch)
        check_record(meta.get("record"))  # a hostile record fails before anything trains
        mid = _id(meta, f, set(models))
        models[mid], metas[mid] = model, {**meta, "path": str(f)}
    return models, metas


def task(args: argparse.Namespace, metas: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The data overrides: --data, or the one task every file that names one names."""
    from .audit import _classes, _dataset_name

    if args.data:
        return [] if args.data.endswith((".yaml", ".yml")) else [f"data={args.data}"]
    named = {}
    for mid, meta in metas.items():
        name = _dataset_name(meta, mid)
        if name is not None:
            named[mid] = (name, _classes(meta, mid))
    if not named:
        raise LineageError("no file names its dataset; pass --data")
    tasks = sorted(set(named.values()), key=str)
    if len(tasks) > 1:
        a, b = (next(m for m, t in named.items() if t == task) for task in tasks[:2])
        raise LineageError(
            f"the models were trained on different tasks ({a}: {named[a][0]}, "
            f"{named[a][1]}; {b}: {named[b][0]}, {named[b][1]}); pass --data to say which"
        )
    return [f"data={tasks[0][0]}"]


def references(
    args: argparse.Namespace,
    cfg: dict[str, Any],
    dm: Any,
    models: Mapping[str, Any],
    metas: Mapping[str, Mapping[str, Any]],
) -> tuple[list[Any], int]:
    """--reference files, and --references N trained (or loaded from the zoo) by the
    recipe of the first file recording one (the default recipe if none does, said so).
    Returns the references and the seed they were drawn from."""
    from .audit import _classes, _reference_model, recipe
    from .models.files import load_model
    from .pipeline import trained_model
    from .tracking import Tracker
    from .zoo import Zoo, reference_seed

    refs = [load_model(f, args.arch)[0] for f in args.reference]
    recorded = [m for m, meta in metas.items() if meta.get("spec") is not None]
    n = args.references
    if n is None:  # given files are the auditor's choice: train none beside them
        n = int(cfg["n_independent"]) if recorded and not args.data and not refs else 0
    least = int(cfg["verdict"]["min_references"])
    if len(refs) + n < least:
        raise LineageError(
            f"{len(refs) + n} references: the verdict needs at least {least} independent "
            "models of the task; pass --references N or --reference FILE"
        )
    if not n:
        return refs, 0
    seed, base = 0, next(iter(models))
    if recorded and not args.data:
        base = recorded[0]
        seed = recipe(metas[base], cfg, base)
        if metas[base].get("spec") is None and _classes(metas[base], base):
            cfg["data"]["classes"] = _classes(metas[base], base)
        log.info("references: trained like %s (its recorded recipe)", base)
    else:
        log.warning(
            "no file records its training recipe: the %d references train with the default "
            "recipe, and the verdict's null assumes the models were trained that way",
            n,
        )
    cfg["model"] = _reference_model(metas[base], models[base])
    zoo = Zoo(cfg["paths"]["zoo"])
    ours = {meta.get("id") for meta in metas.values()}
    found, i = 0, 0
    # a zoo's own references may be in the collection (its independents): a model cannot be
    # in its own null, so the next seeds stand in for them
    while found < n and i < n + len(models):
        model, meta, new = trained_model(
            cfg, dm, zoo, reference_seed(seed, i), "independent", Tracker()
        )
        i += 1
        if meta["id"] in ours:
            log.info("reference %s is in the collection: the next seed instead", meta["id"])
            continue
        found += 1
        how = "trained" if new else "loaded"
        log.info("reference %d/%d: %s %s", found, n, meta["id"], how)
        refs.append(model)
    return refs, seed


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load, calibrate, recover; write the outputs when --out is given."""
    from .audit import command_config
    from .runtime import end_job, start_job

    models, metas = load(args)
    cfg = command_config(args, task(args, metas))
    start_job(cfg.get("threads"))  # its share of the cores, as a run's job takes
    try:
        return _recover(args, cfg, models, metas)
    finally:
        end_job()


def _recover(
    args: argparse.Namespace,
    cfg: dict[str, Any],
    models: dict[str, Any],
    metas: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    from .data import datamodule_from_config
    from .runtime import settle_on
    from .trees import tree

    dm = datamodule_from_config(cfg["data"])
    refs, seed = references(args, cfg, dm, models, metas)
    if len(dm.test.x):  # the judging's threads, timed on a model of the collection
        settle_on(next(iter(models.values())), dm.test.x[:256])
    log.info(
        "judging %d models on %d test points, %d references", len(models), len(dm.test), len(refs)
    )
    records = {m: meta.get("record") for m, meta in metas.items()}
    t = tree(
        models, dm.test.x, dm.test.y, refs, prune=args.prune, candidates=args.candidates,
        records=records, seed=seed, options=cfg,
        journal=Path(args.out) / "judged.jsonl" if args.out else None,
    )  # fmt: skip
    truth = ground_truth(metas)
    result = {"tree": t, "edges": edges(t, metas), "truth": truth}
    result["recovery"] = t.evaluate(truth) if truth else None
    if args.out:
        write(Path(args.out), result)
    return result


def ground_truth(metas: Mapping[str, Mapping[str, Any]]) -> dict[str, str | None] | None:
    """id -> the parent id its record names (None: no parent in the record), or None when
    no file records a parent."""
    parents = {m: meta.get("parent_id") for m, meta in metas.items()}
    if not any(isinstance(p, str) for p in parents.values()):
        return None
    return {m: p if isinstance(p, str) else None for m, p in parents.items()}


def edges(t: Any, metas: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    import dataclasses

    out = []
    for e in t.edges:
        d = dataclasses.asdict(e)
        mod = metas[e.child].get("modification")
        # a file's word: shown as the plain text it is (GraphML takes no control characters)
        d["modification"] = shorten(mod, 80) if isinstance(mod, str) else None
        out.append(d)
    return out


def write(out: Path, result: Mapping[str, Any]) -> None:
    import networkx as nx

    from .tree_plot import picture
    from .utils import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    t = result["tree"]
    atomic_write(out / "edges.json", json.dumps(result["edges"], indent=1))
    g = t.graph()
    for e in result["edges"]:
        if e["modification"] is not None:
            g.edges[e["parent"], e["child"]]["modification"] = e["modification"]
    atomic_write(out / "tree.graphml", "\n".join(nx.generate_graphml(g)))
    picture(t, out / "tree.png")
    if t.unjudged:
        skipped = [{"parent": a, "child": b, "why": w} for (a, b), w in t.unjudged.items()]
        atomic_write(out / "unjudged.json", json.dumps(skipped, indent=1))
    if result["recovery"] is not None:
        atomic_write(out / "recovery.json", json.dumps(result["recovery"], indent=1))


def summary(result: Mapping[str, Any]) -> str:
    """The console answer: each edge, the roots, and the recovery against the records."""
    t = result["tree"]
    lines = []
    for e in result["edges"]:
        how = f" ({e['modification']})" if e["modification"] else ""
        lines.append(
            f"{e['parent']} -> {e['child']}{how}: score {e['score']:.3g}, p {e['p_value']:.3g}, "
            f"decided by {e['decided_by']}"
        )
    lines.append(f"roots: {', '.join(t.roots)}")
    for (a, b), why in t.unjudged.items():
        lines.append(f"not judged: {a} -> {b}: {shorten(why, 160)}")
    r = result["recovery"]
    if r is not None:

        def f(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        lines.append(
            f"against the files' lineage records: parent recovery {f(r['parent_recovery'])} "
            f"({r['children']} models), root recovery {f(r['root_recovery'])} ({r['roots']}), "
            f"direction accuracy {f(r['direction_accuracy'])} ({r['related_edges']} edges)"
        )
        for w in r["wrong"]:
            lines.append(f"  wrong: {w['model']}: recovered {w['recovered']}, recorded {w['true']}")
    return "\n".join(printable(line) for line in lines)

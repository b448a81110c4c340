"""What a label-only audit of a deployed model costs: suspect queries per verdict and wall
time, MNIST LeNet, side by side in one run on the same points:

- reference      the per-sample reference search (benchmarks/reference_closeness.py, batch 1)
                 asking the suspect for labels only;
- in-process     the batched search on the in-process black box (`LabelOnly`), with plain
                 bisection (`closeness.search=bisection`, the label search before issue 18)
                 and with the guided label search (lineage/evaluate/label_search.py);
- remote         the guided search against a real `lineage serve --labels-only` process
                 over HTTP (KServe v2 JSON), through `RemoteModel` with a fresh cache, and
                 the same audit rerun on that cache.

A verdict here is the closeness measurement of `--points` class-stratified test points
(no sampling, so every method sees the same points). Only the suspect's queries count: the
parent is the auditor's own white box.

    python -m benchmarks.bench_remote --data-root ../shared/data \\
        --parent PARENT.safetensors --suspect SUSPECT.safetensors [SUSPECT ...]
    python -m benchmarks.bench_remote --data-root ../shared/data   # trains a LeNet (zoo)

Without --parent, the parent comes from the zoo (trained on first use, as bench_closeness
does); a suspect `prune:R` is the parent with a fraction R of its weights magnitude-pruned.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.bench_closeness import BASE, compose, simple_prune, table, zoo_models
from benchmarks.reference_closeness import reference_closeness
from lineage import models
from lineage.data import datamodule_from_config
from lineage.evaluate.closeness import LabelOnly, measure_points
from lineage.evaluate.sampling import stratified_order
from lineage.remote import RemoteModel

ROOT = Path(__file__).resolve().parents[1]


class Counted(nn.Module):
    """Counts the rows (queries) and calls a model gets; `onehot` turns its labels into
    one-hot scores for code that takes an argmax (the reference search)."""

    def __init__(self, model: nn.Module, classes: int, onehot: bool = False):
        super().__init__()
        self.model, self.classes, self.onehot = model, classes, onehot
        self.rows = self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        self.calls += 1
        out = self.model(x)
        return torch.nn.functional.one_hot(out, self.classes).float() if self.onehot else out


def serve(path: Path, log: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lineage", "serve", str(path), "--port", "0", "--labels-only"],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("serving "):
        proc.kill()
        raise SystemExit(f"lineage serve did not start: {log.read_text()}")
    return proc, line.split()[-1]


def audit(name: str, parent: nn.Module, suspect: nn.Module, path: Path, x, y, tmp: Path):
    c = 10
    rows: list[dict[str, Any]] = []

    def row(method: str, queries: int, calls: int, wall: float, matched: int, **kw: Any) -> None:
        rows.append(
            {
                "suspect": name,
                "method": method,
                "queries": queries,
                "queries/point": queries / len(x),
                "calls": calls,
                "wall s": wall,
                "matched": matched,
                **kw,
            }
        )

    q = Counted(LabelOnly(suspect), c, onehot=True)
    t = time.perf_counter()
    ref = reference_closeness(parent, q, x, y)
    ref_wall = time.perf_counter() - t
    ref_matched = torch.tensor(ref.matched)
    ref_d = torch.tensor(ref.d_suspect, dtype=torch.float64)
    row("reference (batch 1)", q.rows, q.calls, ref_wall, int(ref_matched.sum()))

    def compare(p: Any) -> dict[str, Any]:
        both = p.matched & ref_matched
        err = (p.d_suspect[both] - ref_d[both]).abs()
        return {
            "same decisions": float((p.matched == ref_matched).float().mean()),
            "max |d - d_ref|": float(err.max()) if both.any() else math.nan,
        }

    runs = {}
    for method, search in (("in-process, bisection", "bisection"), ("in-process", "brent")):
        q = Counted(LabelOnly(suspect), c)
        t = time.perf_counter()
        p, _ = measure_points(parent, q, x, y, {"search": search, "progress": False})
        row(method, q.rows, q.calls, time.perf_counter() - t, int(p.matched.sum()), **compare(p))
        runs[method] = p
    proc, url = serve(path, tmp / f"{name}.log")
    try:
        for method in ("remote (HTTP)", "remote, rerun (cache)"):
            t = time.perf_counter()
            m = RemoteModel(url, labels_only=True, cache=tmp / f"{name}-cache")
            p, _ = measure_points(parent, m, x, y, {"progress": False})
            wall = time.perf_counter() - t
            k = m.counters
            same = runs["in-process"]
            agree = torch.equal(p.matched, same.matched) and torch.equal(
                p.adv_suspect, same.adv_suspect
            )
            fin = torch.isfinite(same.d_suspect)
            d_err = float((p.d_suspect[fin] - same.d_suspect[fin]).abs().max())
            row(
                method,
                k.sent,
                k.requests,
                wall,
                int(p.matched.sum()),
                **compare(p),
                **{"= in-process": f"{agree} ({d_err:.0e})", "from cache": k.cached},
            )
            m.close()
    finally:
        proc.terminate()
        proc.wait(15)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--zoo", default=str(ROOT / "outputs" / "zoo"))
    ap.add_argument("--parent", type=Path, help="parent model file (default: the zoo's LeNet)")
    ap.add_argument(
        "--suspect",
        nargs="+",
        default=["prune:0.3", "prune:0.7"],
        help="suspect model files, or prune:R (the parent magnitude-pruned by R)",
    )
    ap.add_argument("--points", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    root = f"data.root={Path(args.data_root).resolve()}"
    BASE[:] = [f"data={args.data}", f"model={args.model}", root, *args.override]
    cfg = compose()
    dm = datamodule_from_config(cfg["data"])
    if args.parent:
        parent, _ = models.load(args.parent)
    else:
        parent, _ = zoo_models(cfg, dm, Path(args.zoo), 0, "cpu")
    idx = stratified_order(dm.test.y, args.seed)[: args.points]
    x, y = dm.test.x[idx], dm.test.y[idx]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for spec in args.suspect:
            if spec.startswith("prune:"):
                suspect = simple_prune(parent, float(spec.split(":", 1)[1]))
                path = models.save(suspect, tmp / f"{spec.replace(':', '-')}.safetensors", {})
                name = spec
            else:
                path = Path(spec)
                suspect, _ = models.load(path)
                name = path.stem
            print(f"auditing {name} ...", file=sys.stderr)
            rows += audit(name, parent, suspect.eval(), path, x, y, tmp)
    print(
        f"\n## label-only audit, {dm.name} {cfg['model']['name']}, the same {len(x)} test "
        "points per method; "
        "queries = suspect rows asked (remote: sent over HTTP), calls = model calls / HTTP "
        "requests; same decisions and max |d - d_ref| against the per-sample reference; "
        "= in-process: the remote audit's match decisions and classes equal the in-process "
        "guided search's (max |d difference|)"
    )
    cols = ["suspect", "method", "queries", "queries/point", "calls", "wall s", "matched"]
    cols += ["same decisions", "max |d - d_ref|", "= in-process", "from cache"]
    print(table(rows, cols))


def smallest(tmp: Path) -> None:
    """A digits MLP trained for 2 epochs against its 30%-pruned copy, on 8 points."""
    main(
        ["--data", "digits", "--model", "mlp", "--zoo", str(tmp / "zoo"), "--points", "8",
         "--suspect", "prune:0.3", "--override", "data.epochs=2", "model.hidden=[32]"]
    )  # fmt: skip


if __name__ == "__main__":
    main()

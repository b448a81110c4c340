"""Lineage closeness benchmarks (each prints a table):

    --speed     per-sample reference vs batched search on the same points, for a 30%-pruned
                suspect and an independent one: ms/point, ratio, evaluations/point,
                agreement of match decisions and distances
    --table     closeness of pruned (0.1..0.9), 8-bit quantized and independent models
    --sampling  points the sampling strategy needs vs uniform sampling, for the same CI

    python -m benchmarks.bench_closeness --speed --table --sampling --data-root ../shared/data
    python -m benchmarks.bench_closeness --speed --device cuda --data cifar10 --model resnet18 \
        --data-root DIR --points 1000 --ref-points 200 --ref-threads 1 --override data.epochs=2

The parent and independent references come from the zoo (outputs/zoo), trained on first use
with the project's configs (lineage/conf), exactly as run.py would.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.reference_closeness import reference_closeness
from lineage.data import DataModule, datamodule_from_config
from lineage.evaluate.closeness import References, closeness, filter_points, measure_points
from lineage.pipeline import trained_model
from lineage.runtime import ieee_fp32
from lineage.tracking import Tracker
from lineage.training import accuracy
from lineage.zoo import Zoo, reference_seed

ROOT = Path(__file__).resolve().parents[1]

BASE: list[str] = []  # the Hydra overrides of this run (data, model, data.root, device)


def compose(*overrides: str) -> dict[str, Any]:
    """The config run.py composes with these overrides (Hydra, schemas and all)."""
    from lineage.config import compose as lineage_compose

    return lineage_compose([*BASE, "logger=none", *overrides])


def closeness_cfg(**over: Any) -> dict[str, Any]:
    return {**compose()["closeness"], **over}


def zoo_models(
    cfg: dict[str, Any], dm: DataModule, zoo: Path, n_refs: int, device: str, seed: int = 0
) -> tuple[nn.Module, list[nn.Module]]:
    """The parent (seed) and independent references (seeds 1000 i + seed), trained or loaded
    exactly as run.py does (lineage.pipeline.trained_model), so both share the cached models."""
    z = Zoo(zoo)

    def get(s: int, role: str) -> nn.Module:
        model, meta, _ = trained_model(cfg, dm, z, s, role, Tracker())
        print(
            f"{role} {meta['id']} (seed {s}): test accuracy {meta['accuracy']:.4f}", file=sys.stderr
        )
        return model.eval().to(device)

    parent = get(seed, "parent")
    return parent, [get(reference_seed(seed, i), "independent") for i in range(n_refs)]


def modification_cfg(name: str, **over: Any) -> dict[str, Any]:
    return {**compose(f"modification={name}")["modification"], **over}


def derive(
    parent: nn.Module,
    dm: DataModule,
    name: str,
    ratio: float,
    device: str,
    seed: int = 0,
    **over: Any,
) -> nn.Module:
    from lineage.modifications import derive as lineage_derive

    cfg = modification_cfg(name, **over)
    d = lineage_derive(copy.deepcopy(parent).cpu(), dm, cfg, ratio, seed)
    return d.model.to(device).eval()


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
        return str(v)

    cells = [cols] + [[fmt(r.get(c, "")) for c in cols] for r in rows]
    w = [max(len(r[j]) for r in cells) for j in range(len(cols))]
    lines = ["  ".join(c.rjust(w[j]) for j, c in enumerate(r)) for r in cells]
    return "\n".join([lines[0], "  ".join("-" * x for x in w), *lines[1:]])


# ---------------------------------------------------------------- --speed


def speed(
    parent: nn.Module,
    suspects: dict[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    device: str,
    segments: int = 10,
    ref_points: int | None = None,
    threads: int = 2,
    ref_threads: tuple[int, ...] = (1, 2),
) -> None:
    """Reference and batched search on the same points, timed side by side, for each
    suspect: the reference runs in `segments` slices, each right after a batched run over
    all points, so all see the same machine load (the dev machine is shared); ratios are
    medians of the pairs. The reference runs at each of `ref_threads` (PyTorch's default is
    one thread per core, but batch-1 calls are often fastest on one), the batched search at
    `threads`. A batched bracket-and-bisection run ("bisection") is the issue's ~11x
    yardstick. evals/point counts every row either model is run on (the source's gradient
    pass once), over all points."""
    cfg = closeness_cfg(progress=False)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    n = len(x)
    n_ref = min(n, ref_points or n)
    first = next(iter(suspects.values()))
    # warm every path up (allocator, kernels) on a few points
    measure_points(parent, first, x[:16], y[:16], cfg)
    reference_closeness(parent, first, x[:2], y[:2])
    load0 = os.getloadavg()[0]
    rows, checks = [], []
    for name, suspect in suspects.items():
        runs: dict[str, list[float]] = {"brent": [], "bisection": []}
        evals: dict[str, float] = {}
        refs: dict[int, list[float]] = {k: [] for k in ref_threads}
        parts = []
        bounds = [round(i * n_ref / segments) for i in range(segments + 1)]
        for a, b in zip(bounds, bounds[1:]):
            torch.set_num_threads(threads)
            for search in runs:
                sync()
                t = time.perf_counter()
                out, evals[search] = measure_points(
                    parent, suspect, x, y, {**cfg, "search": search}
                )
                sync()
                runs[search].append((time.perf_counter() - t) / n)
                if search == "brent":
                    pts = out
            for k in ref_threads:
                torch.set_num_threads(k)
                t = time.perf_counter()
                with ieee_fp32(torch.device(device)):  # the precision the batched search uses
                    part = reference_closeness(parent, suspect, x[a:b], y[a:b])
                sync()
                refs[k].append((time.perf_counter() - t) / (b - a))
            parts.append(part)
        torch.set_num_threads(threads)
        checks.append((name, pts, parts, evals["brent"], runs["brent"], refs))
        for search, label in (
            ("brent", "batched: bracket + margin root search"),
            ("bisection", "batched: bracket + bisection"),
        ):
            rows.append(
                {
                    "suspect": name,
                    "search": f"{label} ({threads} threads)",
                    "ms/point": 1e3 * _median(runs[search]),
                    "evals/point": evals[search],
                    **{
                        f"x vs ref {k}t": _median([r / c for r, c in zip(refs[k], runs[search])])
                        for k in ref_threads
                    },
                }
            )
        for k in ref_threads:
            rows.append(
                {
                    "suspect": name,
                    "search": f"reference, batch 1 ({k} thread{'s' * (k > 1)})",
                    "ms/point": 1e3 * _median(refs[k]),
                }
            )
    load1 = os.getloadavg()[0]
    print(
        f"\n## speed: {n} points ({n_ref} for the reference), device {device}, "
        f"load average {load0:.1f} -> {load1:.1f} ({os.cpu_count()} CPUs); ms/point and "
        f"speed-ups are medians of {segments} side-by-side pairs"
    )
    cols = [
        "suspect",
        "search",
        "ms/point",
        "evals/point",
        *[f"x vs ref {k}t" for k in ref_threads],
    ]
    print(table(rows, cols))
    for name, pts, parts, ev, run, refs in checks:
        agreement(name, pts, parts, n_ref, ev, run, refs)
        spent = evaluations(parent, suspects[name], x, y, cfg)
        print("  of which, per point: " + ", ".join(f"{k} {v:.2f}" for k, v in spent.items()))


def evaluations(
    parent: nn.Module, suspect: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: dict[str, Any]
) -> dict[str, float]:
    """Where measure_points' evaluations go, per point: the source's gradient pass, the
    grid points each model walks (every one before its flip, as the reference walks them,
    plus the flipped one) and each root search."""
    from lineage.evaluate.closeness.measure import (
        source_probe,
        source_side,
        suspect_probe,
        suspect_side,
    )
    from lineage.runtime import eval_mode

    n = len(x)
    with eval_mode(parent, suspect), ieee_fp32(torch.device(x.device.type)):
        src = source_probe(parent, x, y, cfg)
        sus = suspect_probe(src, suspect, "suspect", x, y, cfg)
        side = source_side(parent, src, x, y, torch.arange(n), cfg)
        pts = suspect_side(sus, side, cfg)
    at_x = int(side.valid.sum())  # the suspect's prediction at x, where the source is valid
    no_flip = {
        "source": int((side.correct & ~side.valid).sum()),
        "suspect": int((pts.suspect_correct & ~pts.d_suspect.isfinite()).sum()),
    }
    print(
        "  rays walked to d_max without a flip (all their grid points evaluated): "
        + ", ".join(f"{k} {v}" for k, v in no_flip.items())
    )
    return {
        "source gradient": 1.0,
        "source grid": src.grid_evals / n,
        "source root search": (src.evals - n - src.grid_evals) / n,
        "suspect at x": at_x / n,
        "suspect grid": sus.grid_evals / n,
        "suspect root search": (sus.evals - at_x - sus.grid_evals) / n,
    }


def _median(v: list[float]) -> float:
    return torch.tensor(v).median().item()


def agreement(
    name: str,
    pts: Any,
    parts: list[Any],
    n_ref: int,
    evals: float,
    run: list[float],
    refs: dict[int, list[float]],
) -> None:
    """The issue's acceptance on one suspect: every match decision and every distance of a
    point matched by both as the reference's, the speed-up and the evaluations."""
    ref = {
        k: [v for p in parts for v in getattr(p, k)] for k in ("d_source", "d_suspect", "matched")
    }
    d_src_ref = torch.tensor(ref["d_source"], dtype=torch.float64)
    d_sus_ref = torch.tensor(ref["d_suspect"], dtype=torch.float64)
    m_ref = torch.tensor(ref["matched"])
    mine = pts.take(torch.arange(n_ref))
    same = int((mine.matched == m_ref).sum())
    both = mine.matched & m_ref
    err_src = (mine.d_source[both] - d_src_ref[both]).abs()
    err_sus = (mine.d_suspect[both] - d_sus_ref[both]).abs()
    close = int(((err_src <= 1e-4) & (err_sus <= 1e-4)).sum())
    # against the reference at its faster thread count: the smaller ratio
    best = min(_median([r / c for r, c in zip(v, run)]) for v in refs.values())

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    print(f"\n{name}:")
    print(f"  same match decision: {same} of {n_ref} points: {verdict(same == n_ref)}")
    print(
        f"  |d - d_ref| <= 1e-4 (source and suspect): {close} of {int(both.sum())} points "
        f"matched by both: {verdict(close == int(both.sum()))}; max error source "
        f"{err_src.max().item() if both.any() else 0:.2e}, suspect "
        f"{err_sus.max().item() if both.any() else 0:.2e}"
    )
    print(f"  speed-up vs the reference at its faster thread count: {best:.1f}x (target >= 60x)")
    print(f"  evaluations per point, both models: {evals:.2f} (target <= 5)")
    valid = pts.valid
    med = torch.median(pts.d_source[valid]).item() if valid.any() else math.nan
    print(f"  median source distance {med:.4f}; valid points {int(valid.sum())} of {len(valid)}")


# ---------------------------------------------------------------- --table


def closeness_table(
    parent: nn.Module,
    refs: list[nn.Module],
    dm: DataModule,
    device: str,
    figure: Path | None = None,
    dump: Path | None = None,
) -> list[dict[str, Any]]:
    from scipy.stats import spearmanr

    x, y = dm.test.x.to(device), dm.test.y.to(device)
    cfg = closeness_cfg()
    rows = []
    suspects: dict[str, nn.Module] = {}

    def add(name: str, ratio: Any, model: nn.Module) -> dict[str, Any]:
        r = closeness(parent, model, x, y, cfg)
        suspects[f"{name} {ratio}" if ratio != "-" else name] = model
        if dump is not None and r.points is not None:
            dump.mkdir(parents=True, exist_ok=True)
            torch.save(r.points.arrays(), dump / f"{name.replace(' ', '_')}_{ratio}.pt")
        row = {
            "suspect": name,
            "ratio": ratio,
            "accuracy": accuracy(model, dm.test.x, dm.test.y),
            **{
                k: getattr(r, k)
                for k in (
                    "score",
                    "match_rate",
                    "mean_distance",
                    "signed_mean_distance",
                    "ci_low",
                    "ci_high",
                    "n_points",
                    "seconds",
                )
            },
        }
        rows.append(row)
        print(f"  {name} {ratio}: score {r.score:.3f}", file=sys.stderr)
        return row

    for ratio in (0.1, 0.3, 0.5, 0.7, 0.9):
        add("pruning", ratio, derive(parent, dm, "pruning", ratio, device))
    add("quantize (8 bit)", 0.0, derive(parent, dm, "quantize", 0.0, device))
    for i, ref in enumerate(refs):
        add(f"independent {i}", "-", ref)
    print("\n## closeness table (MNIST LeNet parent, default closeness config)")
    print(
        table(
            rows,
            [
                "suspect",
                "ratio",
                "accuracy",
                "score",
                "ci_low",
                "ci_high",
                "match_rate",
                "mean_distance",
                "signed_mean_distance",
                "n_points",
                "seconds",
            ],
        )
    )
    pr = [r for r in rows if r["suspect"] == "pruning"]
    rho = spearmanr([r["ratio"] for r in pr], [r["score"] for r in pr]).statistic
    q = next(r for r in rows if r["suspect"].startswith("quantize"))["score"]
    ind = max(r["score"] for r in rows if r["suspect"].startswith("independent"))
    print(
        f"\nSpearman(pruning ratio, score) = {rho:.3f} (target <= -0.9): "
        f"{'PASS' if rho <= -0.9 else 'FAIL'}"
    )
    print(f"8-bit quantize score = {q:.3f} (target >= 0.95): {'PASS' if q >= 0.95 else 'FAIL'}")
    print(f"max independent score = {ind:.3f} (target <= 0.3): {'PASS' if ind <= 0.3 else 'FAIL'}")
    if figure is not None:
        from lineage.plots import decision_plane

        # three test points of different classes that the parent gets right
        with torch.no_grad():
            ok = (parent(x[:200]).argmax(1) == y[:200]).nonzero().squeeze(1).tolist()
        picks: list[int] = []
        for i in ok:
            if all(int(y[i]) != int(y[j]) for j in picks):
                picks.append(i)
            if len(picks) == 3:
                break
        names = ("pruning 0.1", "pruning 0.5", "pruning 0.9", "independent 0")
        show = {"parent": parent, **{k: suspects[k] for k in names}}
        decision_plane(
            show,
            *(x[i] for i in picks),
            figure,
            resolution=200,
            title="decision regions on the plane through three MNIST test points",
        )
        print(f"decision-plane figure: {figure}")
    return rows


# ---------------------------------------------------------------- --sampling


def sampling_table(parent: nn.Module, refs: list[nn.Module], dm: DataModule, device: str) -> None:
    """Points needed for a CI half-width <= ci_tol: uniform sampling vs the strategy (drop
    invalid points, stratify by class) vs the strategy on AAAI-filtered points. The filter's
    references are models other than the suspects judged; its points are found once."""
    x, y = dm.test.x.to(device), dm.test.y.to(device)
    lineage_refs = [
        derive(parent, dm, "pruning", 0.3, device),
        derive(parent, dm, "quantize", 0.0, device),
    ]
    independent_refs, judged_ind = refs[:-1], refs[-1]
    suspects = {
        "pruning 0.5": derive(parent, dm, "pruning", 0.5, device),
        "pruning 0.9": derive(parent, dm, "pruning", 0.9, device),
        "independent": judged_ind,
    }
    base = closeness_cfg(max_points=5000, filter_pool=2000, progress=False)
    t = time.perf_counter()
    kept = filter_points(parent, x, y, References(lineage_refs, independent_refs), base)
    t_filter = time.perf_counter() - t
    rows = []
    for name, sus in suspects.items():
        for label, over, candidates in (
            ("uniform", {"strategy": "uniform"}, None),
            ("stratified, valid only", {}, None),
            ("+ AAAI filter", {}, kept),
        ):
            r = closeness(parent, sus, x, y, {**base, **over}, candidates=candidates)
            rows.append(
                {
                    "suspect": name,
                    "sampling": label,
                    "score": r.score,
                    "ci_half_width": (r.ci_high - r.ci_low) / 2,
                    "points": r.n_points,
                    "drawn": r.n_drawn,
                    "stopped": r.stopped,
                    "seconds": r.seconds,
                }
            )
            print(f"  {name} / {label}: {r.n_drawn} drawn", file=sys.stderr)
    print(
        f"\n## sampling: points drawn until the 95% CI half-width <= {base['ci_tol']} "
        f"(min {base['min_points']}, max {base['max_points']}, batches of "
        f"{base['batch_points']})"
    )
    print(
        f"AAAI filter: {len(kept)} points kept of the MNIST test set, found once in "
        f"{t_filter:.1f} s with lineage references pruning 0.3 and 8-bit quantize and "
        f"{len(independent_refs)} independent references (seeds other than the judged one)"
    )
    print(
        table(
            rows,
            [
                "suspect",
                "sampling",
                "score",
                "ci_half_width",
                "points",
                "drawn",
                "stopped",
                "seconds",
            ],
        )
    )


# ---------------------------------------------------------------- main


def simple_prune(model: nn.Module, ratio: float) -> nn.Module:
    """Global magnitude pruning of weights, for --speed when no modification is given."""
    m = copy.deepcopy(model)
    ws = [p for n, p in m.named_parameters() if n.endswith("weight") and p.dim() > 1]
    flat = torch.cat([w.detach().abs().flatten() for w in ws])
    cut = torch.kthvalue(flat.cpu(), max(1, int(ratio * len(flat)))).values.item()
    with torch.no_grad():
        for w in ws:
            w.mul_((w.abs() > cut).to(w.dtype))
    return m.eval()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--sampling", action="store_true")
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--zoo", default=str(ROOT / "outputs" / "zoo"))
    ap.add_argument("--points", type=int, default=500)
    ap.add_argument(
        "--ref-points",
        type=int,
        default=None,
        help="--speed: run the reference on the first N points only (default all)",
    )
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument(
        "--figure",
        default=str(ROOT / "outputs" / "closeness_plane.png"),
        help="--table: where to draw the decision-plane figure",
    )
    ap.add_argument(
        "--dump",
        type=Path,
        default=None,
        help="--table: save each suspect's per-point measurements here",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads (batched search)")
    ap.add_argument("--segments", type=int, default=10, help="--speed: side-by-side pairs")
    ap.add_argument(
        "--ref-threads",
        default="1,2",
        help="--speed: torch thread counts to time the per-sample reference at",
    )
    ap.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override for the composed config, e.g. data.epochs=2 (repeatable)",
    )
    ap.add_argument(
        "--suspect",
        default="pruning",
        help="--speed suspect: pruning (the modification, ratio 0.3) or simple "
        "(a magnitude-pruned copy, no modification code needed)",
    )
    args = ap.parse_args(argv)
    if not (args.speed or args.table or args.sampling):
        ap.error("choose at least one of --speed, --table, --sampling")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    BASE[:] = [
        f"data={args.data}",
        f"model={args.model}",
        f"data.root={Path(args.data_root).resolve()}",
        f"train.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
        *args.override,
    ]
    cfg = compose()
    dm = datamodule_from_config(cfg["data"])
    n_refs = 3 if (args.table or args.sampling) else 1
    parent, refs = zoo_models(cfg, dm, Path(args.zoo), n_refs, args.device)
    if args.speed:
        suspect = (
            simple_prune(parent, 0.3)
            if args.suspect == "simple"
            else derive(parent, dm, "pruning", 0.3, args.device)
        )
        x, y = dm.test.x[: args.points].to(args.device), dm.test.y[: args.points].to(args.device)
        speed(
            parent,
            {"pruned 0.3": suspect, "independent": refs[0]},
            x,
            y,
            args.device,
            segments=args.segments,
            ref_points=args.ref_points,
            threads=args.threads,
            ref_threads=tuple(int(k) for k in args.ref_threads.split(",")),
        )
    if args.table:
        closeness_table(parent, refs, dm, args.device, Path(args.figure), args.dump)
    if args.sampling:
        sampling_table(parent, refs, dm, args.device)


def smallest(tmp: Path) -> None:
    """--speed on a digits MLP trained for 2 epochs: 24 points, 6 for the reference."""
    main(
        ["--speed", "--data", "digits", "--model", "mlp", "--zoo", str(tmp / "zoo"),
         "--points", "24", "--ref-points", "6", "--segments", "2", "--threads", "1",
         "--ref-threads", "1", "--override", "data.epochs=2", "--override", "model.hidden=[32]"]
    )  # fmt: skip


if __name__ == "__main__":
    main()

"""Calibrate once, judge many: the cost per suspect with a reused calibration, each
evidence's share of it, and against calibrating for every suspect.

    python -m benchmarks.bench_judge --data-root ../shared/data --references 6   # MNIST LeNet
    python -m benchmarks.bench_judge --override experiment=smoke                 # digits, seconds
    python -m benchmarks.bench_judge ... --save before.json    # every verdict's numbers
    python -m benchmarks.bench_judge ... --check before.json   # the same numbers again?

One parent and its references (trained or loaded from the zoo exactly as run.py does),
20 suspects derived without training (pruning, noise and quantization at several ratios),
judged with `calibration=cal`; the first `--per` of them also with `references=`
(calibrating per suspect, what judging each pair on its own costs). Both must give the
same verdicts and numbers. Tables: seconds per suspect for each way, then seconds per
evidence (the parent's measurement of each kind, and `sources`: every suspect-centred
kind with each reference in the parent's place), per suspect and in the calibration.

`--save` writes every verdict (the suspects', then the references' from the calibration)
without its timings; `--check` compares a run with such a file: the p-values, statistics
and results pair for pair (floats to `--rtol`), and prints `verdicts unchanged: True`
when all agree, so a change meant to be faster can prove it answers the same.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from lineage.config import compose
from lineage.data import datamodule_from_config
from lineage.engine import Verdict, calibrate, judge
from lineage.modifications import derive
from lineage.pipeline import references_for, trained_model
from lineage.report.html import md_table
from lineage.tracking import Tracker
from lineage.zoo import Zoo

SUSPECTS = (
    [(m, r) for m in ("pruning", "noise") for r in (0.1, 0.3, 0.5, 0.7, 0.9)]
    + [("quantize", r) for r in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)]
    + [("pruning", 0.2), ("pruning", 0.4), ("noise", 0.2), ("noise", 0.4)]
)


def numbers(v: Verdict) -> dict[str, Any]:
    """A verdict's every answer, without its timings (they differ run to run)."""
    d = v.to_dict(curve=True)
    for ev in d["evidence"].values():
        ev.pop("seconds", None)
    d["against"] = v.against
    return d


def differences(a: Any, b: Any, rtol: float, where: str = "") -> list[str]:
    """Where `a` and `b` differ (floats beyond `rtol` relative, anything else at all)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a.keys() ^ b.keys())}"]
        return [x for k in a for x in differences(a[k], b[k], rtol, f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        pairs = enumerate(zip(a, b))
        return [x for i, (p, q) in pairs for x in differences(p, q, rtol, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and not isinstance(a, bool):
        if a == b or (math.isnan(a) and math.isnan(b)):
            return []
        if math.isclose(a, b, rel_tol=rtol, abs_tol=0.0):
            return []
        return [f"{where}: {a!r} vs {b!r}"]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def largest_relative(a: Any, b: Any) -> float:
    """The largest relative difference between the floats of `a` and `b` (same shape)."""
    if isinstance(a, dict):
        return max([largest_relative(a[k], b[k]) for k in a if k in b] or [0.0])
    if isinstance(a, list):
        return max([largest_relative(p, q) for p, q in zip(a, b)] or [0.0])
    if isinstance(a, float) and isinstance(b, float) and a != b and math.isfinite(a + b):
        return abs(a - b) / max(abs(a), abs(b))
    return 0.0


def shift(want: dict[str, Any], got: dict[str, Any]) -> str:
    """How far another run's answers moved: answers that changed, and each evidence's
    largest change of log10 p (what a setting that is cheaper but not the same costs)."""
    pairs = [(a["verdict"], b["verdict"]) for k in ("suspects", "references")
             for a, b in zip(want[k], got[k])]  # fmt: skip
    moved = sum(a["is_lineage"] != b["is_lineage"] for a, b in pairs)
    dlog: dict[str, float] = {}
    for a, b in pairs:
        for k, p in a["p"].items():
            q = b["p"].get(k)
            if p is not None and q is not None:
                d = abs(math.log10(max(p, 1e-300)) - math.log10(max(q, 1e-300)))
                dlog[k] = max(dlog.get(k, 0.0), d)
    each = ", ".join(f"{k} {v:.3g}" for k, v in dlog.items())
    return f"answers changed: {moved} of {len(pairs)}; largest |change of log10 p|: {each}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--references", type=int, default=3)
    p.add_argument("--zoo", default="outputs/zoo")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--override", nargs="*", default=["experiment=mnist_lenet"])
    p.add_argument("--suspects", type=int, default=len(SUSPECTS), help="the first N suspects")
    p.add_argument("--per", type=int, default=2, help="suspects also calibrated per suspect")
    p.add_argument("--save", help="write every verdict's numbers to this JSON file")
    p.add_argument("--check", help="compare every verdict's numbers with this JSON file")
    p.add_argument("--rtol", type=float, default=0.0, help="--check's relative float tolerance")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = compose([*args.override, f"data.root={args.data_root}", "logger=none",
                   f"n_independent={args.references}", "closeness.progress=false"])  # fmt: skip
    dm = datamodule_from_config(cfg["data"])
    zoo = Zoo(args.zoo)
    seed = int(cfg["seed"])
    parent, _, _ = trained_model(cfg, dm, zoo, seed, "parent", Tracker())
    refs = [r[0] for r in references_for(cfg, dm, zoo, seed, Tracker())]
    suspects = [
        derive(parent, dm, {"name": m}, r, seed).model for m, r in SUSPECTS[: args.suspects]
    ]
    x, y = dm.test.x, dm.test.y
    opts = {"determination": cfg["determination"], "closeness": cfg["closeness"], "seed": seed}

    t0, c0 = time.perf_counter(), time.process_time()
    cal = calibrate(parent, refs, x, y, **opts)
    t_cal, c_cal = time.perf_counter() - t0, time.process_time() - c0
    once, per = [], []
    t0, c0 = time.perf_counter(), time.process_time()
    for s in suspects:
        once.append(judge(parent, s, x, y, calibration=cal))
    t_once, c_once = time.perf_counter() - t0, time.process_time() - c0
    n_per = min(args.per, len(suspects))
    t0 = time.perf_counter()
    for s in suspects[:n_per]:
        per.append(judge(parent, s, x, y, references=refs, **opts))
    t_per = time.perf_counter() - t0
    same = all(not differences(numbers(a), numbers(b), 0.0) for a, b in zip(once, per))
    n = len(suspects)
    rows = [
        {"judging": "calibrate once, then judge(calibration=cal)", "seconds/suspect":
         round(t_once / n, 3), "total_s": round(t_cal + t_once, 1)},
        {"judging": f"calibrate per suspect (judge(references=...)), first {n_per}",
         "seconds/suspect": round(t_per / max(n_per, 1), 3), "total_s": round(t_per, 1)},
    ]  # fmt: skip
    print(f"\n{n} suspects, {len(refs)} references, {dm.name} / {cfg['model']['name']}; "
          f"calibration {t_cal:.2f} s; identical verdicts and numbers: {same}\n")  # fmt: skip
    # CPU seconds beside wall seconds: on a machine shared with other work the wall clock
    # counts the time this process waited for a core
    print(f"CPU seconds (this process): {c_once / n:.3f} per suspect, calibration {c_cal:.2f}\n")
    print(md_table(pd.DataFrame(rows)))
    if n_per:
        print(f"\nper-suspect speed-up: {t_per / n_per / (t_once / n):.2f}x")
    keys = sorted({k for v in once for k in v.seconds} | set(cal.seconds))
    table = [
        {"evidence": k.removesuffix("_s"),
         "s/suspect": round(sum(v.seconds.get(k, 0.0) for v in once) / n, 3),
         "calibration_s": round(cal.seconds.get(k, 0.0), 2)}
        for k in keys
    ]  # fmt: skip
    table.append({"evidence": "all", "s/suspect": round(t_once / n, 3),
                  "calibration_s": round(t_cal, 2)})  # fmt: skip
    print("\nseconds per evidence (sources: the suspect-centred kinds, each reference in the "
          "parent's place)\n")  # fmt: skip
    print(md_table(pd.DataFrame(table)))
    got = {
        "suspects": [numbers(v) for v in once],
        "references": [numbers(v) for v in cal.references],
    }
    got = json.loads(json.dumps(got))  # as a file holds it: tuples as lists
    if args.save:
        Path(args.save).write_text(json.dumps(got, indent=1))
    if args.check:
        want = json.loads(Path(args.check).read_text())
        diffs = differences(want, got, args.rtol)
        for d in diffs[:20]:
            print(f"  differs {d}")
        print(f"\nverdicts unchanged: {not diffs} ({len(got['suspects'])} suspects, "
              f"{len(got['references'])} references; largest relative float difference "
              f"{largest_relative(want, got):.3g})")  # fmt: skip
        if diffs:
            print(shift(want, got))


def smallest(tmp: Path) -> None:
    """digits MLPs trained for 2 epochs, 2 references, 2 suspects; the numbers saved and
    checked against themselves."""
    out = str(tmp / "verdicts.json")
    main(
        ["--zoo", str(tmp / "zoo"), "--references", "2", "--suspects", "2", "--per", "1",
         "--override", "experiment=smoke", "data.epochs=2", "model.hidden=[32]",
         "--save", out, "--check", out]
    )  # fmt: skip


if __name__ == "__main__":
    main()

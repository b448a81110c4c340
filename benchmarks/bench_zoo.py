"""Wall time of a zoo built from an empty store by one job and by N jobs at once
(`experiments.zoo --jobs N`), each in a fresh process and a fresh store, and whether the
two judged every pair alike.

    python -m benchmarks.bench_zoo                                   # digits_mlp, 1 vs 2 jobs
    python -m benchmarks.bench_zoo --preset mnist_lenet --data-root ../shared/data

Both builds train, derive and judge everything; the N-job build gives each job
cores // N torch threads, the one-job build 1 thread (the zoo's default). Pairs are
compared on their verdicts and p-values.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from lineage.report.html import md_table

ROOT = Path(__file__).resolve().parents[1]


def build(preset: str, jobs: int, work: Path, env: dict[str, str]) -> tuple[float, pd.DataFrame]:
    """(wall seconds, pairs table) of one build from an empty store under `work`."""
    out, store = work / f"jobs{jobs}", work / f"zoo{jobs}"
    cmd = [sys.executable, "-m", "experiments.zoo", "--preset", preset, "--jobs", str(jobs),
           "--outputs", str(out), "--zoo", str(store)]  # fmt: skip
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    name = Path(preset).stem
    pairs = pd.read_csv(out / name / "pairs.csv")
    return took, pairs.sort_values(["parent_id", "model_id"]).reset_index(drop=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="digits_mlp")
    p.add_argument("--jobs", type=int, default=2, help="the parallel build's jobs")
    p.add_argument("--data-root", help="LINEAGE_DATA for datasets read from files")
    p.add_argument("--work", type=Path, help="where the stores go (default: a temp folder)")
    args = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    if args.data_root:
        env["LINEAGE_DATA"] = str(Path(args.data_root).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        one, a = build(args.preset, 1, work, env)
        many, b = build(args.preset, args.jobs, work, env)
    same = len(a) == len(b) and bool(
        (a[["parent_id", "model_id", "is_lineage"]] == b[["parent_id", "model_id", "is_lineage"]])
        .all()
        .all()
    )
    p_diff = float((a["p_value"] - b["p_value"]).abs().max()) if same else float("nan")
    rows = [
        {"build": "1 job", "pairs": len(a), "wall_s": round(one, 1), "vs 1 job": 1.0},
        {"build": f"{args.jobs} jobs", "pairs": len(b), "wall_s": round(many, 1),
         "vs 1 job": round(many / one, 3)},
    ]  # fmt: skip
    print(f"\n## zoo {Path(args.preset).stem} from an empty store, {os.cpu_count()} cores\n")
    print(md_table(pd.DataFrame(rows)))
    print(f"\nsame verdict on every pair: {same}; largest p-value difference {p_diff:.3g}")


def smallest(tmp: Path) -> None:
    """A two-parent zoo of two modifications, one ratio, on 300 digits."""
    preset = tmp / "smallest_zoo.yaml"
    preset.write_text(
        "overrides: [experiment=smoke, data.epochs=3, data.limit=300,"
        " determination.probe_points=100, closeness.max_points=60]\n"
        "modifications: [noise, pruning]\nratios: [0.5]\nreferences: 4\n"
        "seeds: 1\nhalves: 0\ncross_arch: []\nchains: []\ngrand: []\n"
        "baselines: {agreement: {n_points: 50}, modeldiff: {n_points: 10},"
        " ipguard: {n_points: 10, steps: 5}, sacw: {n_points: 10}, akh: {n_points: 10}}\n"
    )
    main(["--preset", str(preset), "--work", str(tmp)])


if __name__ == "__main__":
    main()

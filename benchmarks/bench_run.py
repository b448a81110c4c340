"""Wall time of the main job (`python run.py`, defaults: digits + MLP) on an empty zoo and on
a cached zoo, plus the parent's accuracy. Also the 12-job joblib sweep with --sweep.

    python -m benchmarks.bench_run [--sweep] [--mnist]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# metrics.json's names for the verdict and the closeness score, newest first


def timed(args: list[str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, capture_output=True, text=True
    )
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(r.stderr[-3000:])
    return dt, {}


def verdict(m: dict) -> tuple[Any, Any]:
    """(is_lineage, closeness score) of a metrics.json."""
    return m.get("derived.verdict.is_lineage"), m.get("derived.evidence.closeness.score")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", action="store_true", help="also time the 12-job joblib sweep")
    p.add_argument("--mnist", action="store_true", help="also time data=mnist model=lenet")
    p.add_argument("--override", nargs="*", default=[], help="extra overrides of every job")
    a = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = [f"paths.zoo={tmp}/zoo", f"hydra.run.dir={tmp}/run", "force=true", *a.override]
        for label in ("empty zoo", "cached zoo"):
            dt, _ = timed(base)
            m = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
            rows.append(
                (
                    f"python run.py ({label})",
                    dt,
                    m["parent.accuracy"],
                    *verdict(m),
                )
            )
        if a.mnist:
            args = [
                "data=mnist",
                f"data.root={ROOT.parent / 'shared' / 'data'}",
                "model=lenet",
                f"paths.zoo={tmp}/zoo",
                f"hydra.run.dir={tmp}/mnist",
                "logger=none",
                *a.override,
            ]
            dt, _ = timed(args)
            m = json.loads((Path(tmp) / "mnist" / "metrics.json").read_text())
            rows.append(
                (
                    "data=mnist model=lenet (empty zoo)",
                    dt,
                    m["parent.accuracy"],
                    *verdict(m),
                )
            )
        if a.sweep:
            args = [
                "-m",
                "modification=finetune,pruning,distill,quantize",
                "ratio=0.1,0.5,0.9",
                "hydra/launcher=joblib",
                "logger=none",
                f"paths.zoo={tmp}/zoo2",
                f"hydra.sweep.dir={tmp}/sweep",
                *a.override,
            ]
            dt, _ = timed(args)
            files = list((Path(tmp) / "sweep").rglob("metrics.json"))
            rows.append((f"12-job joblib sweep ({len(files)} metrics.json)", dt, None, None, None))
    print(f"{'job':48} {'seconds':>8} {'parent acc':>10} {'lineage':>8} {'closeness':>9}")
    for name, dt, acc, lin, score in rows:
        acc_s = f"{acc:.4f}" if acc is not None else "-"
        score_s = f"{score:.3f}" if score is not None else "-"
        print(
            f"{name:48} {dt:8.1f} {acc_s:>10} {str(lin if lin is not None else '-'):>8} "
            f"{score_s:>9}"
        )


def smallest(tmp: Path) -> None:
    """The smoke experiment with 1 reference and 2 training epochs."""
    main(["--override", "experiment=smoke", "n_independent=1", "data.epochs=2", "logger=none"])


if __name__ == "__main__":
    main()

"""Threads per job: what the `threads` setting buys when jobs share the cores.

    python -m benchmarks.bench_threads            # two runs at once vs one alone
    python -m benchmarks.bench_threads --sweep    # also the 12-job joblib sweep, with and
                                                  # without thread control
    python -m benchmarks.bench_threads --load     # the default threads against 1 thread,
                                                  # quiet and beside two busy loops

Each `lineage run` here is the README's main job (digits + MLP, defaults) on an empty zoo,
so it trains its parent and references. "One alone" runs by itself; "two together" starts
two such runs at once (each in its own folder and zoo) and reports each one's wall time.
With thread control (the default, `threads=null`) a job that runs alone takes every core,
and jobs that run at once share them: those of one joblib sweep by the launcher's n_jobs,
separate runs through the running jobs' pid files (lineage.runtime); "without" gives every
job all the cores (`threads=<cores>`), which is what torch does when nothing sets it. Times
are side by side in one run of this script, so the ratios are comparable even on a noisy
machine.

`--load` asks whether the default thread count is ever the slow choice (lineage.runtime.
settle): the same run with the default and with `threads=1`, on the machine as it is and
with two CPU-burning processes beside it, in alternating order, each case's median over
`--repeats`. "vs best" is each time over the faster of the two settings in its condition.
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

SWEEP = ["modification=finetune,pruning,distill,quantize", "ratio=0.1,0.5,0.9"]


def start(args: list[str], cwd: Path) -> tuple[subprocess.Popen, float]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(WANDB_MODE="disabled", HYDRA_FULL_ERROR="0")
    # Hydra's flags (-m) go before the overrides
    cmd = [sys.executable, "-m", "lineage", "run", *args, f"paths.zoo={cwd / 'zoo'}", "logger=none"]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, time.perf_counter()


def wait(proc: subprocess.Popen, t0: float) -> float:
    _, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(err.decode()[-3000:])
    return time.perf_counter() - t0


def together(n: int, args: list[str], root: Path, label: str) -> list[float]:
    dirs = [root / f"{label}-{i}" for i in range(n)]
    for d in dirs:
        d.mkdir()
    started = [start(args, d) for d in dirs]
    return [wait(p, t0) for p, t0 in started]


def burners(n: int) -> list[subprocess.Popen]:
    """`n` processes that keep a core busy, as other work on a shared machine does."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def load_table(over: list[str], repeats: int, root: Path) -> pd.DataFrame:
    cases = {"default": [], "threads=1": ["threads=1"]}
    rows = []
    for busy in (0, 2):
        procs = burners(busy)
        try:
            times: dict[str, list[float]] = {c: [] for c in cases}
            for r in range(repeats):
                order = list(cases) if r % 2 == 0 else list(cases)[::-1]
                for c in order:
                    label = f"b{busy}-{c.replace('=', '')}-{r}"
                    (t,) = together(1, [*over, *cases[c]], root, label)
                    times[c].append(t)
        finally:
            for p in procs:
                p.kill()
                p.wait()
        med = {c: float(pd.Series(v).median()) for c, v in times.items()}
        for c in cases:
            rows.append(
                {
                    "machine": "quiet" if busy == 0 else f"{busy} busy loops beside it",
                    "threads": c,
                    "wall_s": med[c],
                    "runs": ", ".join(f"{t:.1f}" for t in times[c]),
                    "vs best": med[c] / min(med.values()),
                }
            )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", action="store_true", help="also the 12-job joblib sweep")
    p.add_argument("--load", action="store_true", help="default vs 1 thread, quiet and loaded")
    p.add_argument("--repeats", type=int, default=2, help="runs per case with --load")
    p.add_argument("--override", nargs="*", default=[], help="extra overrides of every run")
    a = p.parse_args(argv)
    over = list(a.override)
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if a.load:
            print(f"{cores} cores, load average before: {os.getloadavg()[0]:.2f}")
            print(md_table(load_table(over, a.repeats, root).round(2)))
            return
        (alone,) = together(1, over, root, "alone")
        rows.append(
            {"case": "one `lineage run` alone", "jobs": 1, "wall_s": alone, "vs alone": 1.0}
        )
        for i, t in enumerate(together(2, over, root, "pair")):
            rows.append(
                {"case": f"two at once: run {i + 1}", "jobs": 2, "wall_s": t, "vs alone": t / alone}
            )
        if a.sweep:
            for label, extra in (("with thread control", []), ("without", [f"threads={cores}"])):
                args = ["-m", *SWEEP, "hydra/launcher=joblib", *over, *extra]
                (t,) = together(1, args, root, label.replace(" ", "_"))
                rows.append({"case": f"12-job joblib sweep, {label}", "jobs": 12, "wall_s": t})
    table = pd.DataFrame(rows)
    print(f"{cores} cores, load average before: {os.getloadavg()[0]:.2f}")
    print(md_table(table.round(2)))


def smallest(tmp: Path) -> None:
    """The smoke experiment with 1 reference and 2 training epochs, alone and two at once,
    and the default against 1 thread, quiet and loaded."""
    small = ["--override", "experiment=smoke", "n_independent=1", "data.epochs=2"]
    main(small)
    main(["--load", "--repeats", "1", *small])


if __name__ == "__main__":
    main()

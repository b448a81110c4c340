"""Peak memory of `lineage.models.load` against the model file's size.

    python -m benchmarks.bench_load_memory [--sizes 10 50 200] [--compare REV]

For each size (MB) an MLP whose tensors fill about that many bytes is saved, then loaded
in a fresh process. The peak is the resident set's high-water mark during the load alone
(Linux: /proc/self/clear_refs resets VmHWM to the current RSS just before it), so the
Python and torch baseline is not counted. "warm" first loads a tiny model file in the same
process, so the one-time page-in of the loader's library code (about 6 MB, whatever the
file size) is not counted; "cold" counts it. `--compare REV` also loads each file with the
loader of git revision REV (e.g. 00e9200, before streaming), for the before/after table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import importlib.util, json, sys, time
import torch
from lineage import models
from lineage.errors import LineageError

path, old_source, warm = sys.argv[1], sys.argv[2], sys.argv[3]
load = models.load
if old_source:
    spec = importlib.util.spec_from_loader("lineage.models._old_io", loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "lineage.models"
    exec(compile(open(old_source).read(), "old_io.py", "exec"), mod.__dict__)
    load = mod.load

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

if warm:
    load(warm)
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS:")
t0 = time.perf_counter()
model, meta = load(path)
seconds = time.perf_counter() - t0
print(json.dumps({"peak": status("VmHWM:") - base, "seconds": seconds,
                  "params": sum(p.numel() for p in model.parameters())}))
"""


def make_file(mb: float, directory: Path) -> Path:
    """An MLP on 8x8 inputs whose float32 tensors total about `mb` MB."""
    import torch

    from lineage import models

    # params ~= 64 h + h^2 + 10 h for hidden=[h, h]
    target = mb * 2**20 / 4
    h = max(1, int((-(74) + (74**2 + 4 * target) ** 0.5) / 2))
    torch.manual_seed(0)
    m = models.build("mlp", 10, 1, 8, hidden=[h, h])
    return models.save(m, directory / f"mlp_{mb:g}mb.safetensors", {"id": f"bench-{mb:g}"})


def measure(path: Path, old_source: str = "", warm: str = "") -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), old_source, warm],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    if r.returncode != 0:
        raise SystemExit(f"loading {path.name} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[10, 50, 200])
    ap.add_argument("--compare", metavar="REV", help="also measure the loader of this revision")
    args = ap.parse_args(argv)
    old_source = ""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        if args.compare:
            src = subprocess.run(
                ["git", "show", f"{args.compare}:lineage/models/io.py"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            old_source = str(d / "old_io.py")
            Path(old_source).write_text(src)
        warm = str(make_file(0.01, d))
        head = "| file MB | peak MB warm | warm / file | peak MB cold | cold / file | load s |"
        rule = "| --- | --- | --- | --- | --- | --- |"
        if args.compare:
            head += f" warm MB ({args.compare}) | warm / file ({args.compare}) |"
            rule += " --- | --- |"
        print(head)
        print(rule)
        for mb in args.sizes:
            path = make_file(mb, d)
            size = path.stat().st_size
            now, cold = measure(path, "", warm), measure(path)
            row = (
                f"| {size / 2**20:.1f} | {now['peak'] / 2**20:.1f} | {now['peak'] / size:.2f} | "
                f"{cold['peak'] / 2**20:.1f} | {cold['peak'] / size:.2f} | {now['seconds']:.2f} |"
            )
            if args.compare:
                old = measure(path, old_source, warm)
                row += f" {old['peak'] / 2**20:.1f} | {old['peak'] / size:.2f} |"
            print(row, flush=True)
            path.unlink()
    return 0


def smallest(tmp: Path) -> None:
    """One 0.1 MB model file, loaded warm and cold."""
    main(["--sizes", "0.1"])


if __name__ == "__main__":
    sys.exit(main())

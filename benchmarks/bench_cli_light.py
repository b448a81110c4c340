"""Wall time and peak memory of the `lineage` commands that refuse or explain: `--help`,
`--version`, argument errors and a missing model file, each in a fresh process.

    python -m benchmarks.bench_cli_light [--repeat 3]

The parser, --help, --version and these refusals import neither torch nor Lightning (nor
Hydra), so each costs about what Python itself does; the goal (issue 25) is under 1 s and
150 MB each. Peak RSS is the child's own high-water mark (wait4's ru_maxrss); the time is
the best of `--repeat` runs, as a busy machine only adds to it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS: list[tuple[str, list[str]]] = [
    ("--help", ["--help"]),
    ("--version", ["--version"]),
    ("unknown option", ["compare", "a.safetensors", "b.safetensors", "--no-such-option"]),
    ("compare --help", ["compare", "--help"]),
    ("missing file", ["compare", "missing.safetensors", "other.safetensors"]),
]


def measure(args: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of `python -m lineage ARGS`."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [sys.executable, "-m", "lineage", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024, p.returncode


def table(repeat: int, commands: list[tuple[str, list[str]]] = COMMANDS) -> str:
    rows = ["| command | exit | wall s (best) | peak RSS MB |", "|---|---|---|---|"]
    for label, args in commands:
        runs = [measure(args) for _ in range(repeat)]
        best = min(r[0] for r in runs)
        rss = max(r[1] for r in runs)
        rows.append(f"| lineage {label} | {runs[0][2]} | {best:.2f} | {rss:.0f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    print(table(ap.parse_args().repeat))


if __name__ == "__main__":
    main()

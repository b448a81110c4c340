"""What hostile request bodies cost `lineage serve` in memory (issue 25, acceptance 2).

A real `lineage serve` process per scenario (peak RSS is the process's VmHWM, so each
scenario gets a fresh one), on 127.0.0.1, for a model of MNIST's input (1x28x28, default
--max-batch 1024, so the default body limit is what 1024 rows take as JSON numbers):

- idle          started, answered one small request;
- legal batch   the largest legal request: --max-batch rows as JSON doubles, one at a time;
- hostile xN    N clients at once, each sending a body as large as the limit allows:
                `[],` repeated (a list per 3 bytes), `0.5,` repeated (a float per 4 bytes),
                `[` repeated (nesting), and the largest legal request; then one honest
                request must still be answered exactly.

The target: peak RSS under 8 hostile clients < 2 x idle RSS + the largest legal batch
(its body's bytes).

    python -m benchmarks.bench_serve_memory [--clients 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lineage import models
from lineage.remote.limits import default_max_body

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def status(pid: int, key: str) -> int:
    """A /proc/PID/status size (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


class Serve:
    def __init__(self, path: Path, max_batch: int, log: Path):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        args = [sys.executable, "-m", "lineage", "serve", str(path), "--port", "0", "--name", "m"]
        self.proc = subprocess.Popen(
            [*args, "--max-batch", str(max_batch), "--log-level", "warning"],
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("serving "):
            self.proc.kill()
            raise SystemExit(f"lineage serve did not start: {log.read_text()}")
        self.host = line.split()[-1].split("/")[2]
        for _ in range(600):  # bound before uvicorn listens: wait for its health check
            try:
                c = http.client.HTTPConnection(self.host, timeout=5)
                c.request("GET", "/v2/health/ready")
                if c.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"lineage serve did not answer: {log.read_text()}")

    def post(self, body: bytes, timeout: float = 300) -> tuple[int, bytes]:
        c = http.client.HTTPConnection(self.host, timeout=timeout)
        try:
            c.request("POST", "/v2/models/m/infer", body=body)
            r = c.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            return 0, b""  # cut off mid-body: refused before it was read
        finally:
            c.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def request(x: np.ndarray) -> bytes:
    t = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
    t["data"] = x.astype(np.float64).ravel().tolist()
    return json.dumps({"inputs": [t]}).encode()  # json's ", " separators: the widest


def hostile(kind: str, size: int, legal: bytes) -> bytes:
    if kind == "lists":
        return b"[" + b"[]," * ((size - 4) // 3) + b"[]]"
    if kind == "floats":
        return b"[" + b"0.5," * ((size - 5) // 4) + b"0.5]"
    if kind == "deep":
        return b"[" * size
    return legal


def measure(
    path: Path, shape: tuple[int, ...], max_batch: int, clients: int, rounds: int, tmp: Path
) -> list[dict[str, Any]]:
    limit = default_max_body(shape, max_batch)
    rng = np.random.default_rng(0)
    # floats whose shortest repr is long: the widest legal body
    legal = request((rng.random((max_batch, *shape)) * 1e-7).astype(np.float32))
    small = request(np.full((2, *shape), 0.25, dtype=np.float32))
    rows: list[dict[str, Any]] = []

    def row(scenario: str, s: Serve, idle: int, statuses: str, bodies: int) -> None:
        peak = status(s.proc.pid, "VmHWM")
        bound = 2 * idle + len(legal)
        rows.append(
            {
                "scenario": scenario,
                "bodies": bodies,
                "body MiB": len(legal) / MIB if bodies == 1 else limit / MIB,
                "idle MiB": idle / MIB,
                "peak MiB": peak / MIB,
                "bound MiB": bound / MIB,
                "within": peak < bound,
                "replies": statuses,
            }
        )

    s = Serve(path, max_batch, tmp / "legal.log")
    try:
        code, raw = s.post(small)
        assert code == 200, raw
        idle = status(s.proc.pid, "VmRSS")
        code, _ = s.post(legal)
        row("legal batch", s, idle, str(code), 1)
    finally:
        s.stop()
    s = Serve(path, max_batch, tmp / "hostile.log")
    try:
        code, want = s.post(small)
        assert code == 200
        idle = status(s.proc.pid, "VmRSS")
        kinds = ["lists", "floats", "deep", "legal"]
        bodies = [hostile(kinds[i % 4], limit, legal) for i in range(clients)]
        codes: list[int] = []
        for _ in range(rounds):
            threads = [
                threading.Thread(target=lambda b=b: codes.append(s.post(b)[0])) for b in bodies
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(600)
        after, got = s.post(small)
        assert after == 200 and got == want, "the server no longer answers exactly"
        counts = {c: codes.count(c) for c in sorted(set(codes))}
        row(
            f"hostile x{clients}", s, idle, " ".join(f"{c}:{n}" for c, n in counts.items()), clients
        )
    finally:
        s.stop()
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    fmt = [lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(fmt[0](r[c]) for c in cols) + " |")
    return "\n".join(out)


def model_file(shape: tuple[int, ...], tmp: Path) -> Path:
    torch.manual_seed(0)
    m = models.build("mlp", 10, shape[0], shape[1], hidden=[64])
    return models.save(m, tmp / "model.safetensors", {"id": "bench"})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", type=int, default=28, help="input side (1 x size x size)")
    ap.add_argument("--max-batch", type=int, default=1024)
    args = ap.parse_args(argv)
    shape = (1, args.size, args.size)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = measure(
            model_file(shape, tmp), shape, args.max_batch, args.clients, args.rounds, tmp
        )
    print(
        f"\n## lineage serve, input {list(shape)}, --max-batch {args.max_batch}, default body "
        f"limit {default_max_body(shape, args.max_batch) / MIB:.1f} MiB; peak = VmHWM; "
        "bound = 2 x idle + the largest legal body; replies = status:count (0: cut off)"
    )
    print(table(rows))


if __name__ == "__main__":
    main()

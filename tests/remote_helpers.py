"""Test-only tools for the remote audit: a real `lineage serve` process, and a fault proxy
that forwards to it and breaks chosen replies (500s, delays, dropped connections, HTML
pages, truncated JSON, wrong shapes, NaN). The faults live here, in a separate process
role, so the production server has no fault switch a user could trip."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from conftest import HANG_S

ROOT = Path(__file__).resolve().parents[1]
HEADER = "inference-header-content-length"
# the answer cache's MAC key, kept out of the user's ~/.config (tests set it in-process too)
CACHE_KEY = str(Path(tempfile.mkdtemp(prefix="lineage-test-key-")) / "cache.key")
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "WANDB_MODE": "disabled",
    "HYDRA_FULL_ERROR": "0",
    "LINEAGE_CACHE_KEY": CACHE_KEY,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m lineage serve FILE ...` in a subprocess; `url` once it listens."""

    def __init__(self, model_file: Path, *args: str, log: Path, env: dict | None = None):
        self.log = log
        self.out = log.with_suffix(".out")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lineage", "serve", str(model_file), *args],
            cwd=ROOT,
            stdout=self.out.open("w"),
            stderr=log.open("w"),
            env={**ENV, **(env or {})},
        )
        self.url = ""

    def wait(self, timeout: float = HANG_S) -> Server:
        """Until the URL line is printed and the server answers its health check."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}: {self.log.read_text()}")
            line = self.out.read_text().strip()
            if line.startswith("serving "):
                self.url = line.split()[-1]
                host = self.url.split("/")[2]
                try:
                    c = http.client.HTTPConnection(host, timeout=2)
                    c.request("GET", "/v2/health/ready")
                    if c.getresponse().status == 200:
                        return self
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"serve did not start in {timeout} s: {self.log.read_text()}")

    @property
    def base(self) -> str:
        return "/".join(self.url.split("/")[:3])

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def row_hashes(body: bytes, header_length: str | None = None) -> list[str]:
    """sha256 of each input row's float32 bytes in a v2 inference request (JSON numbers,
    or the binary tensor extension's raw bytes after a JSON header)."""
    n = int(header_length) if header_length else len(body)
    t = json.loads(body[:n])["inputs"][0]
    if header_length:
        x = np.frombuffer(body[n:], dtype="<f4").reshape(t["shape"])
    else:
        x = np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
    return [hashlib.sha256(r.tobytes()).hexdigest() for r in x.reshape(len(x), -1)]


class FaultProxy:
    """An HTTP proxy to `upstream` (host:port). Each inference request takes the next fault
    from `faults` (or `always`, if set): "500", "slow" (sleeps `delay` s first), "drop"
    (closes the connection unanswered), "html", "truncate", "shape", "nan", "datatype",
    "label99", "huge" (a logit of 1e300: finite as a double only); None forwards
    untouched. `answered` logs (epoch, row hashes) of every inference request the upstream
    answered and the proxy delivered; `epoch` is the test's to bump (e.g. when it restarts
    the upstream)."""

    def __init__(self, upstream: str, delay: float = 2.0):
        self.upstream, self.delay = upstream, delay
        self.faults: deque[str | None] = deque()
        self.always: str | None = None
        self.answered: list[tuple[int, list[str]]] = []
        self.sent: list[tuple[int, list[str]]] = []
        self.epoch = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                self.forward(None)

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                self.forward(self.rfile.read(n))

            def forward(self, body):
                infer = self.path.endswith("/infer")
                fault = None
                if infer:
                    with proxy.lock:
                        fault = proxy.always or (proxy.faults.popleft() if proxy.faults else None)
                        epoch = proxy.epoch
                        rows = row_hashes(body, self.headers.get(HEADER))
                        proxy.sent.append((epoch, rows))
                if fault == "500":
                    return self.reply(500, b'{"error": "injected failure"}')
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "slow":
                    time.sleep(proxy.delay)
                if fault == "html":
                    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
                    return self.reply(200, page, "text/html")
                try:
                    c = http.client.HTTPConnection(proxy.upstream, timeout=30)
                    headers = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() in ("authorization", "x-api-key", "content-type", HEADER)
                    }
                    c.request(self.command, self.path, body=body, headers=headers)
                    r = c.getresponse()
                    status, raw = r.status, r.read()
                    ctype = r.headers.get("content-type", "application/json")
                except OSError:
                    return self.reply(502, b'{"error": "upstream unreachable"}')
                if infer and status == 200 and fault:
                    raw = self.corrupt(fault, raw)
                if self.reply(status, raw, ctype) and infer and status == 200:
                    with proxy.lock:
                        proxy.answered.append((epoch, rows))

            def corrupt(self, fault, raw):
                if fault == "truncate":
                    return raw[: len(raw) // 2]
                obj = json.loads(raw)
                out = obj["outputs"][0]
                if fault == "shape":
                    out["shape"][0] += 1
                elif fault == "nan":
                    out["data"][0] = float("nan")
                elif fault == "datatype":
                    out["datatype"] = "BYTES"
                elif fault == "label99":
                    out["data"][0] = 99
                elif fault == "huge":
                    out["data"][0] = 1e300
                return json.dumps(obj).encode()  # NaN is written as the NaN token

            def reply(self, status, raw, ctype="application/json"):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                    return True
                except OSError:  # the client gave up (timeout): not delivered
                    return False

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def rows(self, log: list[tuple[int, list[str]]], epoch: int | None = None) -> set[str]:
        with self.lock:
            return {h for e, hs in log for h in hs if epoch is None or e == epoch}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

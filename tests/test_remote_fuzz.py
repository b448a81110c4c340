"""Hostile inputs to the remote audit (issue 25): a real `lineage serve` on 127.0.0.1 sent
malformed, deep, lying-size, slow and concurrent requests; the client facing a server that
drips or answers logits beyond float32; and the answer cache with flipped, retyped and
oversized rows. Each test is bounded (a few requests, timeouts that only catch a hang)."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from conftest import HANG_S
from remote_helpers import CACHE_KEY, FaultProxy, Server

from lineage import models
from lineage.errors import LineageError
from lineage.remote import RemoteModel
from lineage.remote.cache import FILE, QueryCache

KEY = "fuzz-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
ROWS = 16  # --max-batch of the server under test


@pytest.fixture(autouse=True)
def cache_key(monkeypatch):
    monkeypatch.setenv("LINEAGE_CACHE_KEY", CACHE_KEY)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An MLP on 1x8x8 inputs whose first layer sums its inputs: 3e38 everywhere, finite
    in float32, overflows its logits to Inf."""
    d = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    m = models.build("mlp", 10, 1, 8, hidden=[16])
    with torch.no_grad():
        first = next(p for p in m.parameters() if p.dim() == 2)
        first.fill_(1.0)
    return m.eval(), models.save(m, d / "fuzz.safetensors", {"id": "fuzz"})


@pytest.fixture(scope="module")
def server(model_file):
    _, f = model_file
    s = Server(
        f,
        "--port",
        "0",
        "--name",
        "m",
        "--max-batch",
        str(ROWS),
        "--read-timeout",
        "1",
        "--max-connections",
        "6",
        log=f.parent / "serve.log",
        env={"LINEAGE_API_KEY": KEY},
    )
    try:
        yield s.wait()
    finally:
        s.stop()


def host(server) -> tuple[str, int]:
    h, p = server.base.split("//")[1].split(":")
    return h, int(p)


def request(server, method, path, body=b"", headers=None, timeout=30):
    c = http.client.HTTPConnection(*host(server), timeout=timeout)
    try:
        c.request(method, path, body=body, headers={**AUTH, **(headers or {})})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def tensor(data, shape, **over):
    t = {"name": "input", "shape": shape, "datatype": "FP32", "data": data, **over}
    return {"inputs": [t], "outputs": [{"name": "logits"}]}


def infer(server, body, headers=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return request(server, "POST", "/v2/models/m/infer", raw, headers)


def no_traceback(server) -> None:
    """Nothing a client sent made the server fail: no traceback, no internal error line."""
    log = server.log.read_text()
    assert "Traceback" not in log and "error: " not in log, log[-3000:]


# ---------------------------------------------------------------- malformed and deep


def test_malformed_deep_and_lying_requests_are_4xx_with_a_reason(server):
    n = 64  # one row's values
    ok = tensor([0.5] * n, [1, 1, 8, 8])
    cases = [
        # (body, extra headers, status, message fragment)
        (b"[" * 1000 + b"]" * 1000, None, 400, "nested deeper than"),
        (b'{"a":' * 10000 + b"1" + b"}" * 10000, None, 400, "nested deeper than"),
        (b"[]," * 20000, None, 413, "lists or objects"),
        (b"0," * 20000 + b"0", None, 413, "values in"),
        (b"\xff\xfe{", None, 400, "not JSON"),
        (json.dumps(ok).encode(), {"Inference-Header-Content-Length": "\u00b2"}, 400, "fit"),
        (json.dumps(ok).encode(), {"Inference-Header-Content-Length": "-1"}, 400, "fit"),
        (tensor([3e38] * n, [1, 1, 8, 8]), None, 422, "logits to NaN or Inf"),
        (tensor([1e300] * n, [1, 1, 8, 8]), None, 422, r"NaN or Inf \(in float32\)"),
        (tensor([10**400] + [0] * (n - 1), [1, 1, 8, 8]), None, 422, "beyond float64"),
        (tensor(["x" * 50000] + [0.5] * (n - 1), [1, 1, 8, 8]), None, 422, "numbers only"),
        (tensor([True] * n, [1, 1, 8, 8]), None, 422, "numbers only"),
        (tensor([[0.5] * 8] * 7 + [[0.5] * 9], [1, 1, 8, 8]), None, 422, "ragged"),
        (tensor({"a": 1}, [1, 1, 8, 8]), None, 422, "not a list"),
        (tensor([0.5] * n, [2**62, 1, 8, 8]), None, 413, "exceeds"),
        (tensor([0.5] * n, [True, 1, 8, 8]), None, 422, "does not match"),
    ]
    for body, headers, status, fragment in cases:
        code, raw = infer(server, body, headers)
        assert code == status, (fragment, code, raw[:300])
        assert re.search(fragment, json.loads(raw)["error"]), raw[:300]
    # lying sizes of the binary tensor extension
    head = tensor(None, [1, 1, 8, 8])
    del head["inputs"][0]["data"]
    head["inputs"][0]["parameters"] = {"binary_data_size": 10**12}
    hb = json.dumps(head).encode()
    code, raw = infer(server, hb + b"\0" * 256, {"Inference-Header-Content-Length": str(len(hb))})
    assert code == 422 and b"binary_data_size" in raw
    # the largest legal batches, flat and nested as their shape, pass the counts
    x = torch.rand(ROWS, 1, 8, 8)
    for data in (x.flatten().tolist(), x.tolist()):
        code, raw = infer(server, tensor(data, [ROWS, 1, 8, 8]))
        assert code == 200, raw[:300]
    no_traceback(server)


def test_a_422_is_not_retried(server):
    """Inputs that overflow the model's float32 logits are the request's fault (422), so
    the client says so at once instead of paying for retries."""
    m = RemoteModel(server.url, api_key=KEY, retries=3, backoff=0.01)
    with pytest.raises(LineageError, match=r"HTTP 422: these inputs drive the model's logits"):
        m(torch.full((2, 1, 8, 8), 3e38))
    assert m.counters.retried == 0 and m.counters.sent == 1  # two equal rows, one sent
    m.close()


def test_a_lying_content_length_is_refused_before_the_body(server):
    """Content-Length over the limit: 413 at once, whatever follows; under what is sent:
    the request is cut there (the rest is the next request, garbage: 400)."""
    s = socket.create_connection(host(server), timeout=30)
    try:
        s.sendall(
            b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + KEY.encode()
            + b"\r\nContent-Length: 99999999999\r\n\r\n"
        )
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413"), reply
    finally:
        s.close()
    no_traceback(server)


def test_v2_needs_the_key_health_does_not(server):
    code, raw = request(server, "GET", "/v2", headers={"Authorization": "Bearer wrong"})
    assert code == 401 and b"lineage" not in raw and b"version" not in raw
    code, raw = request(server, "GET", "/v2")
    assert code == 200 and "binary_tensor_data" in json.loads(raw)["extensions"]
    for path in ("/v2/health/live", "/v2/health/ready"):
        c = http.client.HTTPConnection(*host(server), timeout=30)
        c.request("GET", path)
        assert c.getresponse().status == 200
        c.close()


# ---------------------------------------------------------------- slow and many


def wait_closed(s: socket.socket, drip: bytes = b"") -> bytes:
    """Send `drip` a byte every 0.2 s until the server closes the connection; what it
    sent back. The socket's own timeout (30 s) only catches a server that never does."""
    got = b""
    s.settimeout(0.2)
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 60:
        try:
            chunk = s.recv(4096)
            if not chunk:
                return got
            got += chunk
        except TimeoutError:
            pass
        except ConnectionResetError:
            return got
        if drip:
            try:
                s.send(drip[i % len(drip) : i % len(drip) + 1])
            except (BrokenPipeError, ConnectionResetError):
                return got
            i += 1
    raise AssertionError(f"the server kept a slow connection open for 60 s (sent {got!r})")


def test_slow_heads_bodies_and_idle_connections_are_closed(server):
    head = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 1000
    s = socket.create_connection(host(server))
    s.sendall(b"GET /v2/heal")
    assert wait_closed(s, drip=head) == b""  # a head sent a byte at a time
    s.close()
    s = socket.create_connection(host(server))
    s.sendall(
        b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + KEY.encode()
        + b"\r\nContent-Length: 5000\r\n\r\n{"
    )
    got = wait_closed(s, drip=b"[0,")  # a body sent a byte at a time
    assert got.startswith(b"HTTP/1.1 408") and b"not received within 1 s" in got, got
    s.close()
    s = socket.create_connection(host(server))
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in wait_closed(s)  # answered, then closed once idle
    s.close()
    no_traceback(server)


def test_connections_over_the_cap_are_closed_on_arrival(server):
    """10 connections at once to a server capped at 6: at least 4 are closed unanswered
    (an admitted one left idle past --read-timeout may be too), the others are served."""
    held = [socket.create_connection(host(server), timeout=30) for _ in range(10)]
    replies = []
    try:
        for s in held:
            try:
                s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
                replies.append(s.recv(4096))
            except (BrokenPipeError, ConnectionResetError):
                replies.append(b"")
    finally:
        for s in held:
            s.close()
    assert sum(r == b"" for r in replies) >= 4, replies
    assert all(r == b"" or r.startswith(b"HTTP/1.1 200") for r in replies), [
        r[:40] for r in replies
    ]
    assert request(server, "GET", "/v2/health/ready")[0] == 200  # serving again


def test_concurrent_hostile_bodies_leave_honest_clients_exact(server, model_file):
    """8 maximal hostile bodies at once beside 3 honest audits: each hostile one is
    refused (413/503), each honest answer is the model's own (503s are retried)."""
    model, _ = model_file
    limit = 16 * 64 * 28 + 2**16  # the default body limit: --max-batch rows as JSON numbers
    hostile = [b"[]," * (limit // 3), b"0," * (limit // 2 - 1) + b"0", b"[" * (limit - 1)]
    codes: list[int] = []
    errors: list[BaseException] = []

    def attack(i: int) -> None:
        try:
            codes.append(infer(server, hostile[i % len(hostile)])[0])
        except (OSError, http.client.HTTPException):  # cut off mid-body: also refused
            codes.append(0)

    x = torch.rand(40, 1, 8, 8)
    with torch.no_grad():
        want = model(x)
    answers: list[torch.Tensor] = []

    def audit() -> None:
        try:
            m = RemoteModel(server.url, api_key=KEY, backoff=0.05, retries=20)
            answers.append(m(x))
            m.close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=attack, args=(i,)) for i in range(8)]
    threads += [threading.Thread(target=audit) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_S)
    assert not errors, errors
    assert len(answers) == 3 and all(torch.equal(a, want) for a in answers)
    assert len(codes) == 8 and all(c in (0, 400, 413, 503) for c in codes), codes
    no_traceback(server)


def test_sigterm_says_the_server_stopped(model_file, tmp_path):
    _, f = model_file
    s = Server(f, "--port", "0", log=tmp_path / "s.log").wait()
    os.kill(s.proc.pid, signal.SIGTERM)
    assert s.proc.wait(30) == 143
    err = s.log.read_text()
    assert "the server stopped" in err and "results were not written" not in err, err


# ---------------------------------------------------------------- the client


class Dripping(ThreadingHTTPServer):
    """Answers every request a byte every `gap` seconds: its head ("head") or a long body."""

    daemon_threads = True

    def __init__(self, where: str, gap: float = 0.1):
        self.where, self.gap = where, gap

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self.drip()

            def do_POST(self):
                self.drip()

            def drip(self):
                try:
                    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
                    if outer.where == "body":
                        self.wfile.write(head)
                        head = b"{" + b" " * 99999
                    for i in range(len(head)):
                        self.wfile.write(head[i : i + 1])
                        self.wfile.flush()
                        time.sleep(outer.gap)
                except OSError:
                    pass

        outer = self
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def handle_error(self, request, client_address):
        pass


@pytest.mark.parametrize("where", ["head", "body"])
def test_a_dripping_server_is_cut_off_at_the_deadline(where):
    srv = Dripping(where)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v2/models/m"
        with pytest.raises(LineageError, match=r"no complete reply within the 1\.5 s deadline"):
            RemoteModel(url, timeout=5, deadline=1.5, retries=3, binary=False)
    finally:
        srv.shutdown()
        srv.server_close()


def test_deadline_is_in_the_help(capsys):
    from lineage.cli import main

    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "--deadline" in capsys.readouterr().out


# ---------------------------------------------------------------- the cache


@pytest.fixture(scope="module")
def labels_server(model_file, tmp_path_factory):
    _, f = model_file
    s = Server(f, "--port", "0", "--labels-only", log=tmp_path_factory.mktemp("l") / "l.log")
    try:
        yield s.wait()
    finally:
        s.stop()


def test_logits_beyond_float32_are_refused_before_caching(server, tmp_path):
    p = FaultProxy(server.base.split("//")[1])
    try:
        m = RemoteModel(p.url("/v2/models/m"), api_key=KEY, cache=tmp_path, retries=0)
        x = torch.rand(5, 1, 8, 8)
        p.faults.append("huge")
        with pytest.raises(LineageError, match=r"holds NaN or Inf logits \(in float32"):
            m(x)
        assert m.cache is not None and m.cache.count() == 0  # nothing stored
        assert torch.isfinite(m(x)).all()  # the next, honest reply is used and cached
        assert m.cache.count() == 5
        m.close()
    finally:
        p.close()


def rows(path) -> list[tuple]:
    with sqlite3.connect(path / FILE) as db:
        return db.execute("SELECT row, value, mac FROM answers").fetchall()


def edit(path, sql: str, *args) -> None:
    with sqlite3.connect(path / FILE) as db:
        db.execute(sql, args)


@pytest.mark.parametrize(
    "tamper",
    [
        "flip",  # another valid label: the attack that flipped a verdict
        "integer",  # a value of 8 read as eight zero bytes
        "huge-integer",  # bytes(2**40) would allocate a terabyte
        "text",
        "oversized",
        "mac",
        "moved",  # another row's value with its valid MAC
        "short",  # a valid MAC over a value no answer has (3 bytes)
    ],
)
def test_a_tampered_cache_is_refused_and_asked_again(
    labels_server, model_file, tmp_path, tamper, caplog
):
    model, _ = model_file
    x = torch.rand(30, 1, 8, 8)
    with torch.no_grad():
        want = model(x).argmax(1)
    m = RemoteModel(labels_server.url, cache=tmp_path)
    assert torch.equal(m(x), want) and m.counters.sent == 30
    m.close()
    (row, value, mac), *_ = rows(tmp_path)
    label = int.from_bytes(value, "little")
    if tamper == "flip":
        edit(tmp_path, "UPDATE answers SET value = ?", ((label + 1) % 10).to_bytes(8, "little"))
    elif tamper == "integer":
        edit(tmp_path, "UPDATE answers SET value = 8")
    elif tamper == "huge-integer":
        edit(tmp_path, "UPDATE answers SET value = ?", 2**40)
    elif tamper == "text":
        edit(tmp_path, "UPDATE answers SET value = 'three'")
    elif tamper == "oversized":
        edit(tmp_path, "UPDATE answers SET value = zeroblob(?)", 2**24)
    elif tamper == "mac":
        edit(tmp_path, "UPDATE answers SET mac = 'x'")
    elif tamper == "moved":
        edit(tmp_path, "UPDATE answers SET value = ?, mac = ?", value, mac)
    else:
        with sqlite3.connect(tmp_path / FILE) as db:
            scope = db.execute("SELECT endpoint, model, output FROM answers").fetchone()
        c = QueryCache(tmp_path)
        c.put(scope, [(bytes(r), b"abc") for r, _, _ in rows(tmp_path)])
        c.close()
    caplog.set_level(logging.WARNING, "lineage.remote.cache")
    again = RemoteModel(labels_server.url, cache=tmp_path)
    assert torch.equal(again(x), want)  # never the tampered answers
    refused = 29 if tamper == "moved" else 30
    assert again.counters.sent == refused and again.counters.cached == 30 - refused
    warnings = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(warnings) == 1, caplog.records
    again.close()
    third = RemoteModel(labels_server.url, cache=tmp_path)  # the refused rows were replaced
    assert torch.equal(third(x), want) and third.counters.sent == 0
    third.close()


def test_the_cache_key_lives_outside_the_cache_and_is_private(tmp_path, monkeypatch):
    key = tmp_path / "config" / "lineage" / "cache.key"
    monkeypatch.delenv("LINEAGE_CACHE_KEY")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    c = QueryCache(tmp_path / "cache")
    c.close()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_text().strip()) == 64
    with pytest.raises(LineageError, match="must be kept outside the cache folder"):
        QueryCache(tmp_path / "cache", key_file=tmp_path / "cache" / "k")
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    with pytest.raises(LineageError, match="not a query cache key"):
        QueryCache(tmp_path / "other", key_file=bad)
    # a cache written under another key: every row refused (asked again), never trusted
    c = QueryCache(tmp_path / "cache")
    c.put(("e", "m", "o"), [(b"r" * 32, b"v" * 8)])
    c.close()
    key.unlink()
    c = QueryCache(tmp_path / "cache")
    assert c.get(("e", "m", "o"), [b"r" * 32]) == {} and c.refused == 1
    c.close()


# ---------------------------------------------------------------- the benchmark


@pytest.mark.slow
@pytest.mark.timeout(2 * HANG_S)
def test_bench_serve_memory_smallest_case(capsys):
    """benchmarks/bench_serve_memory.py on an 8x8 input and 16 rows, two hostile clients."""
    from benchmarks import bench_serve_memory

    bench_serve_memory.main(["--size", "8", "--max-batch", "16", "--clients", "2", "--rounds", "1"])
    lines = capsys.readouterr().out.splitlines()
    legal = next(ln for ln in lines if ln.startswith("| legal batch | 1 |"))
    hostile = next(ln for ln in lines if ln.startswith("| hostile x2 | 2 |"))
    assert legal.split(" | ")[-1] == "200 |"  # the largest legal batch is answered
    assert "200" not in hostile.split(" | ")[-1]  # no hostile body is


def test_an_older_cache_without_macs_is_dropped_not_trusted(tmp_path, caplog):
    with sqlite3.connect(tmp_path / FILE) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT INTO meta VALUES ('format', 'lineage-query-cache/1')")
        db.execute(
            "CREATE TABLE answers (endpoint TEXT, model TEXT, output TEXT, row BLOB, value BLOB)"
        )
        db.execute("INSERT INTO answers VALUES ('e', 'm', 'o', ?, ?)", (b"r" * 32, b"\0" * 8))
    caplog.set_level(logging.WARNING, "lineage.remote.cache")
    c = QueryCache(tmp_path)
    assert c.count() == 0 and c.get(("e", "m", "o"), [b"r" * 32]) == {}
    assert any("older cache without MACs" in r.getMessage() for r in caplog.records)
    c.put(("e", "m", "o"), [(b"r" * 32, b"\1" * 8)])
    assert c.get(("e", "m", "o"), [b"r" * 32]) == {b"r" * 32: b"\1" * 8}
    c.close()

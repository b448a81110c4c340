"""Auditing a deployed model (issue 18): `lineage serve` processes on 127.0.0.1 audited
through `RemoteModel` and `lineage compare PARENT URL`, against the in-process verdict, with
faults injected by a proxy (tests/remote_helpers.py), never by the server itself."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import HANG_S
from remote_helpers import CACHE_KEY, ENV, ROOT, FaultProxy, Server, free_port
from starlette.testclient import TestClient

from lineage import models
from lineage.cli import main
from lineage.errors import LineageError
from lineage.evaluate.closeness import LabelOnly, closeness, measure_points
from lineage.remote import RemoteModel, parse_url
from lineage.remote.server import Served, create_app
from lineage.training import train_classifier

KEY = "s3cret-key-0123456789"
CFG = {"min_points": 60, "batch_points": 60, "max_points": 180, "n_boot": 200, "progress": False}


def cli_closeness(**over) -> list[str]:
    """The CLI's closeness overrides: 5 batches of 40 points, so a kill lands mid-audit."""
    c = {"batch_points": 40, "min_points": 40, "max_points": 200, "n_boot": 200, "ci_tol": 0.001}
    return [f"closeness.{k}={v}" for k, v in {**c, **over}.items()]


CLI_CLOSENESS = cli_closeness()


@pytest.fixture(autouse=True)
def cache_key(monkeypatch):
    """The answer cache's MAC key in a temp folder, not the user's ~/.config."""
    monkeypatch.setenv("LINEAGE_CACHE_KEY", CACHE_KEY)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, digits_dm, fast_train):
    """A digits parent and a derived suspect (weight noise), as files and modules."""
    d = tmp_path_factory.mktemp("remote")
    torch.manual_seed(0)
    parent = train_classifier(models.build("mlp", 10, 1, 8, hidden=[32]), digits_dm, fast_train, 0)[
        0
    ]
    suspect = copy.deepcopy(parent)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in suspect.parameters():
            p.add_(0.03 * p.std() * torch.randn(p.shape, generator=g))
    meta = {"data": {"name": "digits"}}
    files = {
        "dir": d,
        "parent": models.save(parent, d / "parent.safetensors", {"id": "p", **meta}),
        "suspect": models.save(suspect, d / "suspect.safetensors", {"id": "s", **meta}),
    }
    for seed in range(1, 5):  # independent models: the references the README's audit uses
        torch.manual_seed(seed)
        ref = train_classifier(
            models.build("mlp", 10, 1, 8, hidden=[32]), digits_dm, fast_train, seed
        )[0]
        files[f"ref{seed}"] = models.save(
            ref, d / f"ref{seed}.safetensors", {"id": f"r{seed}", **meta}
        )
    return parent.eval(), suspect.eval(), files


@pytest.fixture(scope="module")
def servers(pair):
    """Two real servers: logits, and labels only behind an API key (taken from the env)."""
    _, _, f = pair
    logits = Server(f["suspect"], "--port", "0", "--name", "sus", log=f["dir"] / "logits.log")
    labels = Server(
        f["suspect"],
        "--port",
        "0",
        "--labels-only",
        "--max-batch",
        "100",
        log=f["dir"] / "labels.log",
        env={"LINEAGE_API_KEY": KEY},
    )
    try:
        yield {"logits": logits.wait(), "labels": labels.wait()}
    finally:
        logits.stop()
        labels.stop()


@pytest.fixture
def proxy(servers):
    # "slow" holds a reply 12x the client's timeout below; an honest reply takes milliseconds
    p = FaultProxy(servers["logits"].base.split("//")[1], delay=60)
    yield p
    p.close()


class Counting(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x):
        self.rows += len(x)
        return self.model(x)


# ---------------------------------------------------------------- the verdict


@pytest.mark.timeout(2 * HANG_S)
@pytest.mark.parametrize("output", ["logits", "labels"])
def test_remote_audit_equals_in_process(pair, servers, digits_dm, output):
    parent, suspect, _ = pair
    x, y = digits_dm.test.x, digits_dm.test.y
    local = Counting(suspect if output == "logits" else LabelOnly(suspect))
    want = closeness(parent, local, x, y, CFG)
    remote = RemoteModel(servers[output].url, api_key=KEY if output == "labels" else None)
    got = closeness(parent, remote, x, y, CFG)
    assert remote.output_kind == output and got.suspect_output == want.suspect_output
    w, g = want.points, got.points
    assert torch.equal(w.index, g.index)
    assert torch.equal(w.matched, g.matched) and w.matched.sum() > 100
    assert torch.equal(w.adv_suspect, g.adv_suspect)
    fin = torch.isfinite(w.d_suspect)
    assert torch.equal(fin, torch.isfinite(g.d_suspect))
    assert (w.d_suspect[fin] - g.d_suspect[fin]).abs().max() <= 1e-4
    assert abs(want.score - got.score) <= 1e-4 and want.match_rate == got.match_rate
    assert (want.n_points, want.stopped) == (got.n_points, got.stopped)
    c = remote.counters
    assert c.sent == c.answered == c.asked > 0 and c.retried == 0 and c.cached == 0
    if output == "labels":  # the same search, query for query
        assert c.asked == local.rows
        assert c.requests > c.asked / 100  # the server's --max-batch 100 was respected
    remote.close()


def test_label_search_spends_fewer_queries_for_the_same_answer(pair, digits_dm):
    """The guided label search (label_search.py) against plain bisection, in process."""
    parent, suspect, _ = pair
    x, y = digits_dm.test.x, digits_dm.test.y
    runs = {}
    for name, model, search in [
        ("bisection", suspect, "bisection"),
        ("guided", suspect, "brent"),
        ("copy", parent, "brent"),
    ]:
        m = Counting(LabelOnly(model))
        runs[name] = (*measure_points(parent, m, x, y, {"search": search}), m.rows / len(x))
    (b, _, qb), (g, _, qg), (c, _, qc) = runs["bisection"], runs["guided"], runs["copy"]
    assert torch.equal(b.matched, g.matched) and torch.equal(b.adv_suspect, g.adv_suspect)
    fin = torch.isfinite(b.d_suspect)
    assert torch.equal(fin, torch.isfinite(g.d_suspect)) and fin.sum() > 100
    assert (b.d_suspect[fin] - g.d_suspect[fin]).abs().max() <= 1e-4
    assert qg < 0.85 * qb  # a derived suspect: its flips lie near the source's
    # a copy of the source: the point, the grid up to the source's flip, 2 probes (and a
    # few while the prior learns it is a copy)
    assert torch.equal(c.matched, c.valid)
    assert (c.d_suspect[c.valid] - c.d_source[c.valid]).abs().max() <= 1e-5
    v = c.valid.float().mean().item()
    grid = torch.ceil(c.d_source[c.valid] / 0.1 - 1e-9).mean().item()
    assert qc <= v * (1 + grid + 2) + 2 and qc < 0.5 * qb


# ---------------------------------------------------------------- the server


def test_server_speaks_the_protocol_and_refuses_bad_requests(pair):
    _, suspect, _ = pair
    s = Served(suspect, "m", "v1", (1, 8, 8), 10, max_batch=4, max_body=2**16, api_key=KEY)
    tc = TestClient(create_app(s))
    auth = {"Authorization": f"Bearer {KEY}"}
    assert tc.get("/v2/health/live").json() == {"live": True}
    assert tc.get("/v2/health/ready").json() == {"ready": True}
    meta = tc.get("/v2/models/m", headers=auth).json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "label"]
    assert tc.get("/v2/models/m/ready", headers={"x-api-key": KEY}).json()["ready"] is True
    x = torch.rand(3, 1, 8, 8)

    def infer(body, headers=auth, path="/v2/models/m/infer"):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return tc.post(path, content=raw, headers=headers)

    def req(**over):
        t = {"name": "input", "shape": [3, 1, 8, 8], "datatype": "FP32"}
        t["data"] = x.double().flatten().tolist()
        return {"inputs": [{**t, **over}], "outputs": [{"name": "logits"}, {"name": "label"}]}

    r = infer(req())
    assert r.status_code == 200
    out = {o["name"]: o for o in r.json()["outputs"]}
    with torch.no_grad():
        z = suspect(x)
    assert out["logits"]["shape"] == [3, 10] and out["label"]["datatype"] == "INT64"
    assert torch.equal(torch.tensor(out["logits"]["data"], dtype=torch.float32).view(3, 10), z)
    assert out["label"]["data"] == z.argmax(1).tolist()
    assert (
        tc.get("/v2/models/m/stats", headers=auth).json()["model_stats"][0]["inference_count"] == 3
    )
    # the binary tensor extension: the JSON header, then the raw float32 rows
    raw = x.numpy().astype("<f4").tobytes()
    head = req()
    del head["inputs"][0]["data"]
    head["inputs"][0]["parameters"] = {"binary_data_size": len(raw)}
    hb = json.dumps(head).encode()
    r = infer(hb + raw, headers={**auth, "Inference-Header-Content-Length": str(len(hb))})
    assert r.json()["outputs"][0]["data"] == out["logits"]["data"]
    assert "binary_tensor_data" in tc.get("/v2", headers=auth).json()["extensions"]
    bad = [
        (infer(req(), headers={}), 401, "missing or wrong API key"),
        (infer(req(), headers={"Authorization": "Bearer nope"}), 401, "missing or wrong"),
        (infer(req(), path="/v2/models/other/infer"), 404, "unknown model 'other'"),
        (infer(b"{not json"), 400, "not JSON"),
        (infer(req(datatype="FP16")), 422, "datatype must be FP32"),
        (infer(req(shape=[3, 1, 8, 9])), 422, r"shape \[3, 1, 8, 9\] does not match"),
        (infer(req(data=[0.5] * 10)), 422, "holds 10 values"),
        (infer(req(data=["a"] * 192)), 422, "numbers only"),
        (infer(req(data=[float("nan")] * 192)), 422, "NaN or Inf"),
        (infer(req(name="pixels")), 422, "unknown input 'pixels'"),
        (infer(req(shape=[5, 1, 8, 8], data=[0.0] * 320)), 413, "limit of 4"),
        (infer(b" " * (2**16 + 1)), 413, "exceeds this server's limit of 65536 bytes"),
        (
            infer(hb + raw[:-4], headers={**auth, "Inference-Header-Content-Length": str(len(hb))}),
            422,
            "binary_data_size 768 must be the 764 bytes sent",
        ),
        (
            infer(hb + raw, headers={**auth, "Inference-Header-Content-Length": "99999"}),
            400,
            "does not fit the body",
        ),
    ]
    for r, status, fragment in bad:
        assert r.status_code == status, (fragment, r.text)
        assert re.search(fragment, r.json()["error"]), r.json()
    only = TestClient(create_app(Served(suspect, "m", "v1", (1, 8, 8), 10, labels_only=True)))
    r = only.post("/v2/models/m/infer", json={"inputs": req()["inputs"]})
    assert [o["name"] for o in r.json()["outputs"]] == ["label"]  # never logits
    r = only.post("/v2/models/m/infer", json=req())
    assert r.status_code == 422 and "labels only" in r.json()["error"]


# ---------------------------------------------------------------- the client


def test_url_forms():
    assert parse_url("http://127.0.0.1:9/v2/models/a") == ("http://127.0.0.1:9", "a")
    assert parse_url("https://Example.com") == ("https://example.com:443", None)
    for bad, fragment in [
        ("ftp://h:1", "expected http"),
        ("http://u:pw@h:1", "credentials do not belong"),
        ("http://h:1/predict", "path must be /v2/models/NAME"),
        ("http://h:99999", "bad URL"),
    ]:
        with pytest.raises(LineageError, match=fragment):
            parse_url(bad)


def test_json_and_binary_inputs_give_the_same_answers(servers, digits_dm):
    x = digits_dm.test.x[:50] + 1e-3 * torch.randn(50, 1, 8, 8)  # no round values
    got = []
    for binary in (False, True):
        m = RemoteModel(servers["logits"].url, binary=binary)
        got.append(m(x))
        m.close()
    assert torch.equal(got[0], got[1])


@pytest.mark.timeout(2 * HANG_S)
def test_500s_slow_replies_and_dropped_connections_are_retried(proxy, digits_dm, pair):
    _, suspect, _ = pair
    x = digits_dm.test.x[:7]
    with torch.no_grad():
        want = suspect(x)
    m = RemoteModel(proxy.url("/v2/models/sus"), timeout=5.0, retries=3, backoff=0.01)
    for faults in (["500", "500"], ["slow"], ["drop", "500", "slow"]):
        proxy.faults.extend(faults)
        before = m.counters.retried
        assert torch.equal(m(x), want)
        assert m.counters.retried - before == len(faults)
    assert m.counters.answered == 21 and m.counters.sent == 21 + 6 * 7
    proxy.faults.extend(["500"] * 4)
    with pytest.raises(LineageError, match=r"sus: no valid reply after 4 attempts; last: HTTP 500"):
        m(x)
    m.close()


@pytest.mark.parametrize(
    "fault,fragment",
    [
        ("html", r"the inference reply is an HTML page, not JSON \(starts '<html><body><h1>502"),
        ("truncate", r"the inference reply is truncated or malformed JSON"),
        ("shape", r"output 'logits' has shape \[8, 10\], expected \[7, 10\] for 7 rows"),
        ("nan", r"output 'logits' holds NaN or Inf logits"),
        ("datatype", r"output 'logits' has datatype 'BYTES'"),
    ],
)
def test_malformed_replies_are_one_clear_error(proxy, digits_dm, fault, fragment):
    m = RemoteModel(proxy.url("/v2/models/sus"), retries=3)
    proxy.faults.append(fault)
    with pytest.raises(LineageError) as e:
        m(digits_dm.test.x[:7])
    assert re.search(f"^http://127.0.0.1:{proxy.port}/v2/models/sus: {fragment}", str(e.value))
    assert m.counters.retried == 0 and m.counters.answered == 0  # garbage is not retried
    m.close()


def test_labels_out_of_range_are_refused(servers, digits_dm):
    p = FaultProxy(servers["labels"].base.split("//")[1])
    try:
        m = RemoteModel(p.url(), api_key=KEY)  # no model name: the repository index has one
        assert m.name == "suspect" and m.output_kind == "labels" and m.batch_rows == 100
        p.faults.append("label99")
        with pytest.raises(LineageError, match=r"holds label 99, outside 0\.\.9"):
            m(digits_dm.test.x[:5])
    finally:
        p.close()


def cli(capfd, *args: str) -> tuple[int, str, str]:
    rc = main(["compare", *map(str, args)])
    out, err = capfd.readouterr()
    return rc, out, err


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and "warn" not in ln.lower()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.timeout(2 * HANG_S)
def test_cli_malformed_replies_exit_2_with_one_line(proxy, pair, capfd):
    _, _, f = pair
    for fault, fragment in [
        ("html", "an HTML page"),
        ("truncate", "truncated or malformed JSON"),
        ("shape", "has shape"),
        ("nan", "NaN or Inf"),
    ]:
        proxy.always = fault
        rc, _, err = cli(capfd, f["parent"], proxy.url("/v2/models/sus"), "--no-cache")
        line = error_line(err)
        assert rc == 2 and line.startswith(f"error: http://127.0.0.1:{proxy.port}/v2/models/sus: ")
        assert fragment in line


@pytest.mark.timeout(2 * HANG_S)
def test_api_key_wrong_or_missing_is_a_clear_401_and_never_written(
    servers, pair, capfd, monkeypatch, tmp_path
):
    _, _, f = pair
    url = servers["labels"].url
    for key in (None, "wrong-key"):
        with pytest.raises(LineageError) as e:
            RemoteModel(url, api_key=key)
        assert re.fullmatch(
            re.escape(url) + r": HTTP 401: missing or wrong API key: send it as "
            r"'Authorization: Bearer KEY' or 'x-api-key: KEY' \(pass the right key with "
            r"--api-key or LINEAGE_API_KEY\)",
            str(e.value),
        )
    monkeypatch.setenv("LINEAGE_API_KEY", KEY)  # from the environment, not argv
    cache = tmp_path / "cache"
    args = cli_closeness(max_points=80)
    rc, out, err = cli(capfd, f["parent"], url, "--json", "--cache", cache, *args)
    assert rc == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["queries.output"] == "labels" and r["queries.answered"] > 0
    # no reference was passed, so the score stands but no verdict is claimed
    assert "evidence.basin.barrier" not in r and r["evidence.closeness.score"] > 0.8
    assert "basin: the suspect is a black box" in r["verdict.reason"]
    assert r["verdict.is_lineage"] is None and r["verdict.calibrated"] is False
    assert "0 references" in r["verdict.reason"]
    for text in (out, err, servers["labels"].log.read_text()):
        assert KEY not in text
    for p in cache.rglob("*"):
        assert KEY.encode() not in p.read_bytes()


@pytest.mark.timeout(2 * HANG_S)
def test_query_budget_stops_sampling_or_says_how_many_points_it_allowed(
    servers, pair, digits_dm, capfd
):
    parent, _, f = pair
    x, y = digits_dm.test.x, digits_dm.test.y
    m = RemoteModel(servers["labels"].url, api_key=KEY, budget=1500)
    r = closeness(parent, m, x, y, {**CFG, "min_points": 20, "batch_points": 20, "ci_tol": 1e-3})
    assert r.stopped == "budget" and r.n_points >= 20 and r.ci_low <= r.score <= r.ci_high
    assert m.counters.sent <= 1500
    m.close()
    budget = re.compile(
        r"error: the query budget of (\d+) queries allowed (\d+) valid points \((\d+) "
        r"drawn\), fewer than min_points=(\d+): "
    )
    args = [f["parent"], servers["labels"].url, "--api-key", KEY, "--no-cache"]
    rc, _, err = cli(capfd, *args, "--query-budget", "30", *CLI_CLOSENESS)
    line = error_line(err)
    g = budget.match(line)
    assert rc == 2 and g and g.group(2) == "0", line
    assert line.endswith(
        "its 30 queries did not finish the first 40 points (over 0.8 queries per point)"
    )
    m = RemoteModel(servers["labels"].url, api_key=KEY, budget=700)
    cfg = {**CFG, "min_points": 200, "batch_points": 40, "max_points": 200}
    with pytest.raises(LineageError) as e:
        closeness(parent, m, x, y, cfg)
    g = budget.match(f"error: {e.value}")
    assert g and int(g.group(2)) > 0 and g.group(4) == "200", str(e.value)
    assert re.search(r"at \d+\.\d queries per point, min_points needs about \d+$", str(e.value))
    assert m.counters.sent == 700


# ---------------------------------------------------------------- killed mid-audit


def cli_json(capfd, *args: str) -> dict:
    """`lineage compare ... --json` in this process (no interpreter start-up to wait for)."""
    rc, out, err = cli(capfd, *args, "--json")
    assert rc == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def wait_for(cond, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(2 * HANG_S)
def test_server_killed_mid_audit_and_restarted(pair, digits_dm, tmp_path):
    """The audit rides out the outage (retries) and finishes with the in-process verdict;
    rows answered before the kill are never sent to the restarted server; a rerun is free."""
    parent, suspect, f = pair
    x, y = digits_dm.test.x, digits_dm.test.y
    cfg = {**CFG, "batch_points": 30, "min_points": 30, "ci_tol": 1e-3}
    port = free_port()
    args = [f["suspect"], "--port", str(port), "--labels-only"]
    first = Server(*args, log=tmp_path / "s1.log").wait()
    proxy = FaultProxy(f"127.0.0.1:{port}")
    url, cache = proxy.url("/v2/models/suspect"), tmp_path / "cache"
    # an outage as long as the hang guard (a restart imports torch: a minute on a busy machine)
    remote = RemoteModel(url, cache=cache, retries=4 * HANG_S, backoff=0.05, max_backoff=0.25)
    out: dict = {}

    def audit() -> None:
        try:
            out["result"] = closeness(parent, remote, x, y, cfg)
        except BaseException as e:  # shown by the assertion below
            out["error"] = e

    thread = threading.Thread(target=audit)
    second = None
    try:
        thread.start()
        wait_for(lambda: len(proxy.answered) >= 10 or out, HANG_S, "10 answered requests")
        assert not out, out
        first.kill()
        proxy.epoch = 1
        second = Server(*args, log=tmp_path / "s2.log").wait()
        thread.join(HANG_S)
        assert "result" in out, out.get("error")
        got = out["result"]
        assert remote.counters.retried >= 1
        before, after = proxy.rows(proxy.answered, 0), proxy.rows(proxy.sent, 1)
        assert len(before) > 100 and len(after) > 100
        assert not before & after  # nothing answered before the kill was sent again
        want = closeness(parent, LabelOnly(suspect), x, y, cfg)
        assert torch.equal(want.points.matched, got.points.matched)
        assert (want.score, want.n_points) == (got.score, got.n_points)
        again = RemoteModel(url, cache=cache)
        assert closeness(parent, again, x, y, cfg).score == got.score
        assert again.counters.sent == 0 and again.counters.cached == again.counters.asked
    finally:
        thread.join(HANG_S)
        first.kill()
        if second:
            second.stop()
        proxy.close()


@pytest.mark.slow
@pytest.mark.timeout(2 * HANG_S)
def test_killed_audit_resumes_without_resending_answered_queries(pair, servers, tmp_path, capfd):
    _, _, f = pair
    proxy = FaultProxy(servers["logits"].base.split("//")[1])
    cache = tmp_path / "cache"

    def args(*cache_args: str) -> list[str]:
        return [str(f["parent"]), proxy.url("/v2/models/sus"), *cache_args, *CLI_CLOSENESS]

    try:
        audit = subprocess.Popen(
            [sys.executable, "-m", "lineage", "compare", *args("--cache", str(cache))],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.DEVNULL,
        )
        wait_for(lambda: len(proxy.answered) >= 12, HANG_S, "12 answered requests")
        os.kill(audit.pid, signal.SIGKILL)
        audit.wait(30)
        proxy.epoch = 1
        # what the killed audit had stored: its cache's row keys are the rows' sha256
        with sqlite3.connect(cache / "queries.sqlite") as db:
            stored = {bytes(r).hex() for (r,) in db.execute("SELECT row FROM answers")}
        assert len(stored) > 100 and stored <= proxy.rows(proxy.answered, 0)
        r = cli_json(capfd, *args("--cache", str(cache)))
        assert not stored & proxy.rows(proxy.sent, 1)  # nothing stored was sent again
        assert r["queries.cached"] >= len(stored)
        assert r["queries.sent"] == r["queries.answered"] > 0
        clean = cli_json(capfd, *args("--no-cache"))
        assert (clean["evidence.closeness.score"], clean["evidence.closeness.n_points"]) == (
            r["evidence.closeness.score"],
            r["evidence.closeness.n_points"],
        )
        assert clean["queries.asked"] == r["queries.asked"]
    finally:
        proxy.close()


# ---------------------------------------------------------------- the README


@pytest.mark.slow
@pytest.mark.timeout(2 * HANG_S)
def test_readme_commands_run_as_written(pair):
    """The two commands of the README's "Auditing a deployed model" section, run as
    written in a folder holding parent.safetensors and suspect.safetensors."""
    _, _, f = pair
    text = (ROOT / "README.md").read_text()
    section = text.split("## Auditing a deployed model\n", 1)[1].split("\n#", 1)[0]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.S).group(1)
    block = re.sub(r"\\\n\s*", " ", block)  # continuation lines
    commands = [ln.strip() for ln in block.splitlines() if ln.strip().startswith("lineage ")]
    assert [c.split()[1] for c in commands] == ["serve", "compare"]
    serve, compare = (shlex.split(c.removesuffix("&").strip()) for c in commands)
    port = re.search(r"--port (\d+)", commands[0]).group(1)
    new = str(free_port())
    serve = [new if a == port else a for a in serve]
    compare = [a.replace(f":{port}", f":{new}") for a in compare]
    d = f["dir"]
    env = {**ENV, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "lineage", *serve[1:]],
        cwd=d,
        env=env,
        stdout=(d / "readme.out").open("w"),
        stderr=(d / "readme.log").open("w"),
    )
    try:
        wait_for(lambda: "serving" in (d / "readme.out").read_text(), HANG_S, "the server")
        r = subprocess.run(
            [sys.executable, "-m", "lineage", *compare[1:]],
            cwd=d,
            env=env,
            capture_output=True,
            text=True,
            timeout=HANG_S,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert "HTTP Request" not in r.stderr  # httpx's INFO line per request is noise
        lines = r.stdout.strip().splitlines()
        # a black box: only the function evidence (closeness, inherited errors) applies
        assert lines[0].startswith("determination: lineage (p = "), lines[0]
        assert "calibrated on 4 references" in lines[0]
        assert "decided by closeness" in lines[0] or "decided by inherited" in lines[0]
        closeness = [ln for ln in lines if ln.strip().startswith("closeness: ")]
        queries = [ln for ln in lines if ln.startswith("queries: ")]
        assert len(closeness) == 1 and len(queries) == 1, lines
        sent = int(re.search(r"queries: (\d+) sent", queries[0]).group(1))
        assert 0 < sent <= int(compare[compare.index("--query-budget") + 1])
    finally:
        server.terminate()
        server.wait(HANG_S)

"""`lineage serve`: one model over the Open Inference Protocol (KServe v2 REST), as Triton,
KServe, MLServer and TorchServe speak it, for tests, demos, and owners who want to let an
auditor query a model without handing over its weights.

Endpoints (https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol):

    GET  /v2/health/live, /v2/health/ready      liveness, readiness (no key needed)
    GET  /v2                                    server metadata (key needed, if set)
    GET  /v2/models/{name}[/versions/{v}]       model metadata: input, outputs, parameters
    GET  /v2/models/{name}[/versions/{v}]/ready model readiness
    POST /v2/models/{name}[/versions/{v}]/infer inference
    GET  /v2/models/{name}/stats                rows and requests answered (statistics ext.)
    POST /v2/repository/index                   the one model served (repository ext.)

An inference request holds one input `{"name": "input", "shape": [N, C, H, W], "datatype":
"FP32", "data": [...]}` (flat row-major or nested; or, with the binary tensor extension that
Triton also speaks, `"parameters": {"binary_data_size": 4 N C H W}` and the raw
little-endian float32 bytes after the JSON, whose length the `Inference-Header-Content-Length`
header gives: 16x smaller and ~10x faster to parse than JSON numbers) and optionally the
outputs wanted:
`logits` (FP32 [N, classes]) and `label` (INT64 [N], the argmax); with `--labels-only` only
`label` exists and logits never leave the process. Errors are `{"error": "..."}` with 400
(body not JSON, or nested too deep), 401 (missing or wrong API key), 404 (unknown model or
version), 408 (body not received in time), 413 (body over --max-body-mb, more values than
the largest batch holds, or more rows than --max-batch), 422 (JSON that is not a valid
request: wrong input name, datatype or shape, non-numbers, NaN/Inf in float32, or inputs
that drive the model's logits to Inf) or 503 (busy: retry). The body is bounded before it
is read and counted before it is parsed (limits.py, request.py), and parsed with `json`
only: nothing from a request is unpickled, evaluated or logged beyond the access line
(method, path, status). The API key is compared in constant time and never logged; with a
key set, every endpoint but /v2/health needs it (the health probes stay open for
orchestrators, and say nothing but live and ready).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import re
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..errors import LineageError
from ..evaluate.boundary import run_model
from ..text import shorten
from . import limits
from .protocol import INPUT, header_int
from .request import RequestError, parse_request, split_body

MAX_BATCH = 1024  # rows per request
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Served:
    """What one `lineage serve` process exposes."""

    model: Callable[[torch.Tensor], torch.Tensor]  # a batch (N, *input_shape) -> logits
    name: str
    version: str
    input_shape: tuple[int, ...]  # one row's shape
    num_classes: int
    labels_only: bool = False
    max_batch: int = MAX_BATCH
    max_body: int = 0  # bytes; 0: what the largest batch takes as JSON numbers
    api_key: str | None = None
    read_timeout: float = limits.READ_TIMEOUT  # seconds to receive a body after its head

    def __post_init__(self) -> None:
        if not self.max_body:
            self.max_body = limits.default_max_body(self.input_shape, self.max_batch)

    @property
    def outputs(self) -> list[str]:
        return ["label"] if self.labels_only else ["logits", "label"]


def _snippet(text: str, n: int = 200) -> str:
    return " ".join(text.split())[:n]


def model_metadata(s: Served) -> dict[str, Any]:
    tensors = {
        "logits": {"name": "logits", "datatype": "FP32", "shape": [-1, s.num_classes]},
        "label": {"name": "label", "datatype": "INT64", "shape": [-1]},
    }
    return {
        "name": s.name,
        "versions": [s.version],
        "platform": "pytorch",
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, *s.input_shape]}],
        "outputs": [tensors[o] for o in s.outputs],
        "parameters": {
            "num_classes": s.num_classes,
            "max_batch": s.max_batch,
            "labels_only": s.labels_only,
        },
    }


def create_app(s: Served) -> FastAPI:
    """The FastAPI app serving `s`."""
    if not NAME.match(s.name):
        raise LineageError(f"model name {s.name!r} must match {NAME.pattern}")
    app = FastAPI(title="lineage serve", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()  # one forward pass at a time: the model's threads are its own
    stats = {"inference_count": 0, "execution_count": 0, "failure_count": 0}
    budget = limits.Budget(limits.PARSERS * s.max_body)
    parsing = asyncio.Semaphore(limits.PARSERS)

    def error(status: int, message: str) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        return error(422, f"bad request: {_snippet(str(e.errors()))}")

    def check(request: Request, name: str, version: str | None = None) -> None:
        if s.api_key is not None:
            auth = request.headers.get("authorization", "")
            given = auth[7:] if auth[:7].lower() == "bearer " else request.headers.get("x-api-key")
            if given is None or not hmac.compare_digest(given.encode(), s.api_key.encode()):
                raise RequestError(
                    401,
                    "missing or wrong API key: send it as 'Authorization: Bearer KEY' "
                    "or 'x-api-key: KEY'",
                )
        if name != s.name:
            raise RequestError(404, f"unknown model {name!r}; this server serves {s.name!r}")
        if version is not None and version != s.version:
            raise RequestError(404, f"unknown version {version!r} of {s.name!r}: {s.version!r}")

    def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
        import functools

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except RequestError as e:
                return error(e.status, str(e))
            except Exception as e:  # a bug, not the client's: one line, not a traceback
                print(
                    f"error: {fn.__name__}: {type(e).__name__}: {shorten(e, 200)}", file=sys.stderr
                )
                return error(500, "internal error")

        return wrapper

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.get("/v2")
    @guarded
    async def server_metadata(request: Request) -> Any:
        from importlib.metadata import version

        check(request, s.name)
        return {
            "name": "lineage",
            "version": version("lineage"),
            "extensions": ["binary_tensor_data", "model_repository", "statistics"],
        }

    @app.post("/v2/repository/index")
    @guarded
    async def index(request: Request) -> Any:
        check(request, s.name)
        return [{"name": s.name, "version": s.version, "state": "READY", "reason": ""}]

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    @guarded
    async def metadata(request: Request, name: str, version: str | None = None) -> Any:
        check(request, name, version)
        return model_metadata(s)

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    @guarded
    async def model_ready(request: Request, name: str, version: str | None = None) -> Any:
        check(request, name, version)
        return {"name": s.name, "ready": True}

    @app.get("/v2/models/{name}/stats")
    @guarded
    async def model_stats(request: Request, name: str) -> Any:
        check(request, name)
        return {"model_stats": [{"name": s.name, "version": s.version, **stats}]}

    def run(body: bytes, header_length: str | None) -> bytes:
        x, names, rid = parse_request(
            *split_body(body, header_length), s.input_shape, s.max_batch, s.outputs
        )
        with lock, torch.no_grad():
            z = run_model(s.model, x)  # channels-last convolutions on CPU: same values
        if not (isinstance(z, torch.Tensor) and z.shape == (len(x), s.num_classes)):
            raise RequestError(500, "the model returned an output of the wrong shape")
        if not torch.isfinite(z).all():  # finite weights (models.load) and finite inputs
            raise RequestError(422, "these inputs drive the model's logits to NaN or Inf")
        tensors = {
            "logits": lambda: {
                "name": "logits",
                "datatype": "FP32",
                "shape": [len(x), s.num_classes],
                # float32 values written as doubles: exact, so the client reads them back bit
                # for bit
                "data": z.float().numpy().astype(np.float64).ravel().tolist(),
            },
            "label": lambda: {
                "name": "label",
                "datatype": "INT64",
                "shape": [len(x)],
                "data": z.argmax(1).tolist(),
            },
        }
        reply: dict[str, Any] = {"model_name": s.name, "model_version": s.version}
        if rid is not None:
            reply["id"] = rid
        reply["outputs"] = [tensors[n]() for n in names]
        with lock:
            stats["inference_count"] += len(x)
            stats["execution_count"] += 1
        return json.dumps(reply, separators=(",", ":")).encode()

    async def read_body(request: Request, held: list[int]) -> bytes:
        """The body, within the size limit, the byte budget and the read timeout; the bytes
        taken from the budget are added to `held` (the caller gives them back)."""
        declared = header_int(request.headers.get("content-length"))
        too_big = RequestError(
            413, f"request body exceeds this server's limit of {s.max_body} bytes"
        )
        if declared is not None and declared > s.max_body:
            raise too_big
        chunks, n = [], 0
        try:
            async with asyncio.timeout(s.read_timeout):
                async for chunk in request.stream():
                    n += len(chunk)
                    if n > s.max_body:
                        raise too_big
                    if not budget.take(len(chunk)):
                        raise RequestError(503, "busy: too many request bodies at once; retry")
                    held[0] += len(chunk)
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestError(
                408, f"request body not received within {s.read_timeout:g} s"
            ) from None
        except ClientDisconnect:  # gone mid-body: nobody to answer, nothing to log
            raise RequestError(400, "the client disconnected mid-body") from None
        return b"".join(chunks)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    @guarded
    async def infer(request: Request, name: str, version: str | None = None) -> Any:
        check(request, name, version)
        held = [0]
        try:
            body = await read_body(request, held)
            async with parsing:
                content = await run_in_threadpool(
                    run, body, request.headers.get("inference-header-content-length")
                )
        except RequestError:
            with lock:
                stats["failure_count"] += 1
            raise
        finally:
            budget.give(held[0])
        return Response(content, media_type="application/json")

    return app


def served_from_file(
    path: str | Path,
    name: str | None = None,
    labels_only: bool = False,
    max_batch: int = MAX_BATCH,
    max_body_mb: float | None = None,
    api_key: str | None = None,
    read_timeout: float = limits.READ_TIMEOUT,
) -> Served:
    """A model file (lineage.models.load: safetensors, checked) ready to serve."""
    from .. import models

    path = Path(path)
    model, meta = models.load(path)
    arch = meta["arch"]
    if name is None:
        stem = re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem)
        name = stem if NAME.match(stem) else "model"
    if not NAME.match(name):
        raise LineageError(f"--name {name!r} must match {NAME.pattern}")
    if max_batch < 1:
        raise LineageError(f"--max-batch must be >= 1, got {max_batch}")
    if max_body_mb is not None and not (max_body_mb > 0 and math.isfinite(max_body_mb)):
        raise LineageError(f"--max-body-mb must be > 0, got {max_body_mb}")
    if not (read_timeout > 0 and math.isfinite(read_timeout)):
        raise LineageError(f"--read-timeout must be > 0, got {read_timeout}")
    if api_key == "":
        raise LineageError("the API key is empty")
    # the version names the weights: a client's cache never mixes answers of two models
    version = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return Served(
        model=model,
        name=name,
        version=version,
        input_shape=(int(arch["in_channels"]), *map(int, arch["input_size"])),
        num_classes=int(arch["num_classes"]),
        labels_only=labels_only,
        max_batch=max_batch,
        max_body=int(max_body_mb * 2**20) if max_body_mb else 0,
        api_key=api_key,
        read_timeout=read_timeout,
    )


def log_config() -> dict[str, Any]:
    """uvicorn's logging with the access lines on stderr (stdout carries only the URL)."""
    from uvicorn.config import LOGGING_CONFIG

    cfg = json.loads(json.dumps(LOGGING_CONFIG))
    cfg["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return cfg


def serve(
    s: Served,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    max_connections: int = limits.MAX_CONNECTIONS,
) -> None:
    """Serve until interrupted. Binds first (port 0: a free port) and prints the URL on
    stdout, so a caller can read where to connect. Bounded as limits.py says."""
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise LineageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    what = "labels only" if s.labels_only else "logits and labels"
    print(f"serving {s.name} ({what}) at http://{shown}:{bound}/v2/models/{s.name}", flush=True)
    config = uvicorn.Config(
        create_app(s),
        log_config=log_config(),
        log_level=log_level,
        http=limits.http_protocol(s.read_timeout, max_connections),
        timeout_keep_alive=int(limits.KEEP_ALIVE),
        # uvicorn answers 503 once connections reach this; ours closes those beyond the cap
        limit_concurrency=max_connections + 1,
        h11_max_incomplete_event_size=limits.MAX_HEAD,
        backlog=max_connections,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()

"""`RemoteModel`: a model behind the Open Inference Protocol (KServe v2 REST) as a plain
callable, so any function evidence (closeness, inherited errors) can query it like a local
black box: a float32 batch (N, *input_shape) in, logits (N, classes) float32 or labels (N,)
int64 out.

- **Batching**: the rows of one call go out in requests of at most `batch_rows` (and at
  most the server's advertised `max_batch`); `batch_rows` also sizes the search's passes
  (closeness reads it), so one request carries one pass of many points' probes. Inputs go
  as raw float32 bytes when the server lists the `binary_tensor_data` extension (Triton
  and `lineage serve` do; 16x smaller than JSON numbers, whose encoding dominated the
  audit's time), else as JSON numbers written as doubles, exact either way.
- **Cache** (`QueryCache`): answered rows are looked up before anything is sent and
  stored after each reply, keyed by endpoint, model, versions, output and the row's hash.
- **Deadline**: one request, its retries and their waits included, takes at most
  `deadline` seconds (deadline.py: every socket wait is cut there); `timeout` bounds each
  connect, send or read on its own.
- **Retries**: connection errors, timeouts, 5xx and 429 are retried up to `retries` times
  with exponential backoff and jitter (delay ~ backoff * 2^attempt, half of it random,
  capped; a Retry-After header is honoured up to the cap). Any other 4xx is the caller's
  problem: not retried, its message shown. A reply that arrives but is malformed is not
  retried either: a server that answers garbage once will again.
- **Validation** of every reply and every cached answer before use: JSON, the output
  asked for, its datatype, shape [rows, classes] or [rows], one class count throughout,
  labels integers in range, logits finite in float32 (what is stored), the reply's size
  bounded. Each failure is one LineageError naming the endpoint. A cached answer that fails
  its MAC or these checks is refused and asked again (cache.py).
- **Budget**: `budget` rows may be sent over the network (retries count, cached rows do
  not); the request that would cross it is cut to what is left, and `BudgetSpent` raised
  after its answers are cached. Sampling stops there (lineage.evaluate.sampling).
- **Counters** (`counters`): rows asked, sent, answered, from cache; requests, retries.
- **The API key** goes in the Authorization header only: never in a URL, a cache key, a
  counter, a repr or an error message.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch

from ..errors import BudgetSpent, LineageError
from .cache import QueryCache, decode_answer, encode_answer
from .deadline import DeadlineBackend
from .deadline import transport as deadline_transport
from .protocol import (
    API_KEY_ENV,
    BINARY,
    Bad,
    Wire,
    decode_json,
    encode_request,
    error_message,
    header_int,
    parse_url,
    read_metadata,
    read_reply,
    snippet,
)

MAX_META = 2**20  # bytes of a metadata reply


@dataclass
class Counters:
    asked: int = 0  # rows the caller asked for
    sent: int = 0  # rows sent over the network, retries included (what the budget counts)
    answered: int = 0  # rows the server answered (validly)
    cached: int = 0  # rows answered from the cache
    requests: int = 0  # inference requests answered
    retried: int = 0  # requests (any endpoint) sent again after a failure

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class RemoteModel:
    """The model at `url` (`http(s)://host:port[/v2/models/NAME]`; without a name, the
    server's one model from its repository index) as a callable; see the module docstring.
    `labels_only`: read labels even where logits are offered (the argmax, taken here if the
    server has no label output). `num_classes`: the classes answers must lie in (default:
    the server's metadata, else the first reply's). One caller at a time (any thread)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        labels_only: bool = False,
        batch_rows: int = 256,
        timeout: float = 30.0,
        deadline: float = 120.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        cache: str | Path | QueryCache | None = None,
        budget: int | None = None,
        num_classes: int | None = None,
        transport: Any = None,
        binary: bool | None = None,
    ):
        import httpx

        for key, v, low in (("batch_rows", batch_rows, 1), ("retries", retries, 0)):
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise LineageError(f"{key} must be an integer >= {low}, got {v!r}")
        if budget is not None and (not isinstance(budget, int) or budget < 1):
            raise LineageError(f"the query budget must be a positive integer, got {budget!r}")
        numbers = (("timeout", timeout), ("deadline", deadline), ("backoff", backoff))
        for key, f in (*numbers, ("max_backoff", max_backoff)):
            if not (isinstance(f, (int, float)) and math.isfinite(f) and f >= 0):
                raise LineageError(f"{key} must be a number >= 0, got {f!r}")
        if not (timeout > 0 and deadline > 0):
            raise LineageError(f"timeout and deadline must be > 0 s, got {timeout!r}, {deadline!r}")
        if api_key is not None and not re.fullmatch(r"[\x21-\x7e]+", api_key):
            # an illegal header value would make the HTTP library quote the key in its error
            raise LineageError("the API key must be printable ASCII without spaces")
        self._key = api_key
        self.base, self.name = parse_url(url)
        self.batch_rows, self.timeout, self.retries = batch_rows, float(timeout), retries
        self.deadline = float(deadline)
        self._clock = DeadlineBackend()
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.budget = budget
        self.labels_only = labels_only
        self.counters = Counters()
        self.cache = QueryCache(cache) if isinstance(cache, (str, Path)) else cache
        self._random = random.Random()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            timeout=httpx.Timeout(self.timeout),
            headers=headers,
            transport=transport or deadline_transport(self._clock),
            follow_redirects=False,
        )
        self.binary = binary  # None: if the server lists the binary_tensor_data extension
        try:
            self.wire: Wire = self._connect(num_classes)
        except BaseException:
            self._http.close()
            raise

    # ------------------------------------------------------------------ plumbing

    @property
    def endpoint(self) -> str:
        return f"{self.base}/v2/models/{self.name}" if self.name else self.base

    @property
    def output_kind(self) -> str:
        """What the caller gets: "labels" or "logits"."""
        return "labels" if self.wire.argmax_here else self.wire.kind

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.wire.input_shape

    @property
    def num_classes(self) -> int | None:
        return self.wire.num_classes

    def __repr__(self) -> str:
        return f"RemoteModel({self.endpoint!r})"

    def close(self) -> None:
        self._http.close()
        if self.cache is not None:
            self.cache.close()

    def _fail(self, why: str) -> LineageError:
        if self._key:  # a server's error text could echo the header back
            why = why.replace(self._key, "***")
        return LineageError(f"{self.endpoint}: {why}")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        d = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        d = d / 2 + self._random.uniform(0, d / 2)
        after = header_int(retry_after)
        if after is not None:
            d = max(d, min(self.max_backoff, float(after)))
        return d

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        rows: int = 0,
        cap: int = MAX_META,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """One request with retries; the reply's body (at most `cap` bytes) on a 2xx."""
        import httpx

        url = self.base + path
        last, retry_after = "", None
        if headers is None:
            headers = {"Content-Type": "application/json"} if body is not None else {}
        end = time.monotonic() + self.deadline
        self._clock.end = end
        for attempt in range(self.retries + 1):
            if attempt:
                wait = self._delay(attempt, retry_after)
                if time.monotonic() + wait >= end:
                    raise self._late(last)
                self.counters.retried += 1
                time.sleep(wait)
            if rows and self.budget is not None and self.counters.sent + rows > self.budget:
                raise self._budget_spent()
            self.counters.sent += rows
            retry_after = None
            try:
                req = self._http.build_request(method, url, content=body, headers=headers)
                resp = self._http.send(req, stream=True)
                try:
                    raw = self._read(resp, cap)
                finally:
                    resp.close()
            except httpx.TimeoutException:
                if time.monotonic() >= end:
                    raise self._late(last) from None
                last = f"no reply within the {self.timeout:g} s timeout"
                continue
            except httpx.TransportError as e:
                last = f"connection failed ({type(e).__name__}: {snippet(str(e).encode(), 80)})"
                continue
            except httpx.HTTPError as e:  # e.g. a body that fails to decompress
                raise self._fail(f"unreadable reply ({type(e).__name__})") from None
            code = resp.status_code
            if code >= 500 or code == 429:
                last = f"HTTP {code}: {error_message(raw)}"
                retry_after = resp.headers.get("retry-after")
                continue
            if code >= 400:
                hint = ""
                if code in (401, 403):
                    hint = f" (pass the right key with --api-key or {API_KEY_ENV})"
                raise self._fail(f"HTTP {code}: {error_message(raw)}{hint}")
            if code != 200:
                raise self._fail(f"unexpected HTTP {code} to {method} {path}")
            return raw
        raise self._fail(f"no valid reply after {self.retries + 1} attempts; last: {last}")

    def _late(self, last: str) -> LineageError:
        tail = f"; before that: {last}" if last else ""
        return self._fail(
            f"no complete reply within the {self.deadline:g} s deadline per request "
            f"(--deadline){tail}"
        )

    def _read(self, resp: Any, cap: int) -> bytes:
        declared = header_int(resp.headers.get("content-length"))
        if declared is not None and declared > cap:
            raise self._fail(f"the reply declares {declared} bytes, over the {cap} expected")
        chunks, n = [], 0
        for chunk in resp.iter_bytes():
            n += len(chunk)
            if n > cap:
                raise self._fail(f"the reply is over {cap} bytes, far more than its rows need")
            chunks.append(chunk)
        return b"".join(chunks)

    def _budget_spent(self) -> BudgetSpent:
        assert self.budget is not None
        c = self.counters
        return BudgetSpent(
            f"{self.endpoint}: the query budget of {self.budget} queries is spent "
            f"({c.answered} answered, {c.cached} from the cache)",
            self.budget,
        )

    # ------------------------------------------------------------------ metadata

    def _json(self, raw: bytes, what: str) -> Any:
        try:
            return decode_json(raw, what)
        except Bad as e:
            raise self._fail(str(e)) from None

    def _connect(self, num_classes: int | None) -> Wire:
        if self.binary is None:
            try:
                server = self._json(self._send("GET", "/v2"), "server metadata")
            except LineageError:  # a 4xx: a server without the endpoint speaks plain JSON
                server = {}
            ext = server.get("extensions") if isinstance(server, dict) else None
            self.binary = isinstance(ext, list) and BINARY in ext
        if self.name is None:
            index = self._json(self._send("POST", "/v2/repository/index", b"{}"), "index")
            names = [
                m["name"]
                for m in (index if isinstance(index, list) else [])
                if isinstance(m, dict) and isinstance(m.get("name"), str)
            ]
            if len(names) != 1:
                raise self._fail(
                    f"the server lists {len(names)} models {names[:10]}; name one in the URL "
                    f"({self.base}/v2/models/NAME)"
                )
            self.name = names[0]
        self._path = f"/v2/models/{quote(self.name, safe='')}"
        meta = self._json(self._send("GET", self._path), "metadata")
        try:
            wire = read_metadata(meta, self.name, self.labels_only, num_classes)
        except Bad as e:
            raise self._fail(str(e)) from None
        if wire.max_batch:
            self.batch_rows = min(self.batch_rows, wire.max_batch)
        raw = self._send("GET", self._path + "/ready")
        if raw.strip():
            ready = self._json(raw, "readiness")
            if isinstance(ready, dict) and ready.get("ready") is False:
                raise self._fail("the model is not ready")
        return wire

    # ------------------------------------------------------------------ queries

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise LineageError(f"{self!r}: expects a float tensor batch")
        rows = x.detach().to("cpu", torch.float32).contiguous()
        w = self.wire
        if tuple(rows.shape[1:]) != w.input_shape:
            raise self._fail(
                f"expects rows of shape {list(w.input_shape)}, got "
                f"{list(rows.shape[1:])} (another task's data?)"
            )
        flat = rows.reshape(len(rows), -1).numpy()
        keys = [hashlib.sha256(r.tobytes()).digest() for r in flat]
        self.counters.asked += len(keys)
        scope = (self.base, f"{self.name}@{w.versions}", f"{w.kind}:{w.output}")
        answers: dict[bytes, np.ndarray] = {}
        if self.cache is not None and keys:
            refused = []
            for k, v in self.cache.get(scope, keys).items():
                try:
                    answers[k] = decode_answer(v, w)
                except ValueError as e:  # a MAC that holds over a bad value: asked again
                    refused.append(str(e))
            if refused:
                self.cache.refuse(len(refused), refused[0])
            self.counters.cached += sum(k in answers for k in keys)
        todo = list(dict.fromkeys(k for k in keys if k not in answers))
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        pos = 0
        while pos < len(todo):
            part = todo[pos : pos + self.batch_rows]
            left = None if self.budget is None else self.budget - self.counters.sent
            if left is not None and left < len(part):
                if left <= 0:
                    raise self._budget_spent()
                part = part[:left]
            got = self._infer(flat[[first[k] for k in part]])
            for key, value in zip(part, got):
                answers[key] = value
            if self.cache is not None:
                self.cache.put(scope, [(key, encode_answer(v, w)) for key, v in zip(part, got)])
            pos += len(part)
            if left is not None and left == len(part) and pos < len(todo):
                raise self._budget_spent()
        out = np.stack([answers[k] for k in keys]) if keys else np.zeros((0,))
        if w.kind == "labels":
            return torch.from_numpy(out.astype(np.int64).reshape(len(keys)))
        z = torch.from_numpy(out.astype(np.float32).reshape(len(keys), -1))
        return z.argmax(1) if w.argmax_here else z

    def _infer(self, flat: np.ndarray) -> list[np.ndarray]:
        n, w = len(flat), self.wire
        body, headers = encode_request(
            flat, w, bool(self.binary), f"lineage-{self.counters.requests}"
        )
        per_row = 64 * (w.num_classes or 1024) if w.kind == "logits" else 64
        raw = self._send("POST", self._path + "/infer", body, n, 2**16 + n * per_row, headers)
        try:
            values = read_reply(self._json(raw, "inference"), w, n)
        except Bad as e:
            raise self._fail(str(e)) from None
        self.counters.answered += n
        self.counters.requests += 1
        return list(values)

    def report(self, points: int) -> dict[str, Any]:
        """The counters, plus the queries per point (rows asked / points drawn)."""
        c = self.counters.to_dict()
        return {
            "endpoint": self.endpoint,
            "output": self.output_kind,
            **c,
            "budget": self.budget,
            "per_point": c["asked"] / points if points else math.nan,
        }

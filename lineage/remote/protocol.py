"""The Open Inference Protocol (KServe v2 REST) as `lineage.remote` speaks it: the URL
form, the inference request (JSON numbers, or raw float32 bytes after a JSON header: the
binary tensor extension), and the checks of both sides. Pure functions of bytes and
dicts; `Bad` (client) and `RequestError` (server, with its HTTP status) carry the reason.

Client-side checks of every reply: JSON (an HTML page or truncated JSON named as such), the
output asked for, its datatype (FP* for logits, INT*/UINT* for labels), its shape [rows,
classes] or [rows], one class count throughout, numbers only, logits finite, labels
integers in 0..classes-1.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

if TYPE_CHECKING:  # torch is imported where a request is parsed: the CLI's parser stays light
    import torch

from ..errors import LineageError

FLOAT_TYPES = ("FP32", "FP64", "FP16", "BF16")
INT_TYPES = ("INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8")
INPUT = "input"  # the input's name on `lineage serve`
BINARY = "binary_tensor_data"  # the extension's name in GET /v2
HEADER_LENGTH = "Inference-Header-Content-Length"
API_KEY_ENV = "LINEAGE_API_KEY"
URL_FORM = "http(s)://host:port[/v2/models/NAME]"


class Bad(Exception):
    """A reply that breaks the protocol (the client names the endpoint)."""


@dataclass
class Wire:
    """What the client learnt from a model's metadata."""

    name: str
    input_name: str
    input_shape: tuple[int, ...]  # one row's
    output: str  # the output asked for
    kind: str  # what it holds: "logits" | "labels"
    argmax_here: bool  # labels wanted but only logits offered: the client takes the argmax
    num_classes: int | None
    versions: str
    max_batch: int | None  # the server's, if it says


def parse_url(url: str) -> tuple[str, str | None]:
    """(base URL 'scheme://host:port', model name or None) of an endpoint URL."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise LineageError(f"bad URL {url!r}: {e}; expected {URL_FORM}") from None
    if u.scheme not in ("http", "https") or not u.hostname:
        raise LineageError(f"bad URL {url!r}: expected {URL_FORM}")
    if u.username is not None or u.password is not None:
        raise LineageError(
            f"bad URL: credentials do not belong in it; pass --api-key or set {API_KEY_ENV} instead"
        )
    if u.query or u.fragment:
        raise LineageError(f"bad URL {url!r}: no query or fragment; expected {URL_FORM}")
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname.lower()
    base = f"{u.scheme}://{host}:{port or (443 if u.scheme == 'https' else 80)}"
    path = u.path.rstrip("/")
    if path in ("", "/v2"):
        return base, None
    m = re.fullmatch(r"/v2/models/([^/]+)", path)
    if not m:
        raise LineageError(f"bad URL {url!r}: the path must be /v2/models/NAME ({URL_FORM})")
    return base, m.group(1)


def is_url(s: str) -> bool:
    return str(s).startswith(("http://", "https://"))


def snippet(raw: bytes, n: int = 60) -> str:
    text = raw[:n].decode("utf-8", errors="replace")
    return re.sub(r"\s+", " ", "".join(c if c.isprintable() else "?" for c in text)).strip()


def error_message(raw: bytes) -> str:
    """A server's error message: {"error": ...} (KServe v2), {"detail": ...}, or text."""
    try:
        obj = json.loads(raw)
        if isinstance(obj, dict):
            for k in ("error", "detail", "message"):
                if isinstance(obj.get(k), str):
                    return snippet(obj[k].encode(), 300)
    except (UnicodeDecodeError, ValueError):
        pass
    return snippet(raw, 120) or "(empty body)"


def decode_json(raw: bytes, what: str) -> Any:
    """A reply's JSON, or Bad saying what came instead (HTML, truncated JSON, text)."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        start = raw.lstrip()[:1]
        if start == b"<":
            why = f"an HTML page, not JSON (starts {snippet(raw.lstrip())!r})"
        elif not raw.strip():
            why = "empty"
        elif start in (b"{", b"["):
            why = f"truncated or malformed JSON ({getattr(e, 'msg', e)} at byte "
            why += f"{getattr(e, 'pos', '?')} of {len(raw)})"
        else:
            why = f"not JSON (starts {snippet(raw)!r})"
        raise Bad(f"the {what} reply is {why}") from None


def read_metadata(meta: Any, name: str, labels_only: bool, num_classes: int | None) -> Wire:
    """Client side: what the model metadata says (KServe v2: inputs, outputs, versions,
    and our `parameters`), and which output to read: logits (FP32 [-1, classes]) unless
    `labels_only`, labels (INT64 [-1]) else (taking an argmax of logits if the model has
    no label output). `num_classes`: the classes the caller expects, checked."""
    bad = Bad
    if not isinstance(meta, dict):
        raise bad("the metadata reply is not a JSON object")
    if meta.get("name") not in (None, name):
        raise bad(f"the metadata names another model ({meta.get('name')!r})")
    versions = meta.get("versions") or []
    versions_text = ",".join(str(v) for v in versions) if isinstance(versions, list) else ""
    inputs, outputs = meta.get("inputs"), meta.get("outputs")
    if not (isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], dict)):
        raise bad("the model must take exactly one input tensor (metadata 'inputs')")
    i = inputs[0]
    shape = i.get("shape")
    if not (
        isinstance(i.get("name"), str)
        and isinstance(shape, list)
        and len(shape) >= 2
        and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        and all(d > 0 for d in shape[1:])
    ):
        raise bad(f"cannot read the input's metadata {json.dumps(i)[:200]}")
    if i.get("datatype") != "FP32":
        raise bad(f"the input's datatype is {i.get('datatype')!r}; only FP32 is supported")
    found: dict[str, list[dict[str, Any]]] = {"logits": [], "labels": []}
    for o in outputs if isinstance(outputs, list) else []:
        if not (isinstance(o, dict) and isinstance(o.get("name"), str)):
            continue
        s, dt = o.get("shape"), o.get("datatype")
        if not (isinstance(s, list) and all(isinstance(d, int) for d in s)):
            continue
        if dt in FLOAT_TYPES and len(s) == 2:
            found["logits"].append(o)
        elif dt in INT_TYPES and (len(s) == 1 or (len(s) == 2 and s[1] == 1)):
            found["labels"].append(o)
    order = ("labels", "logits") if labels_only else ("logits", "labels")
    kind = next((k for k in order if found[k]), None)
    if kind is None:
        raise bad(
            "the model offers no output this audit can read: logits (FP32 [-1, classes]) "
            "or labels (INT64 [-1])"
        )
    pick = next((o for o in found[kind] if o["name"] in ("logits", "label")), found[kind][0])
    params = meta.get("parameters")
    if not isinstance(params, dict):
        params = {}
    advertised = pick["shape"][1] if kind == "logits" else params.get("num_classes")
    if isinstance(advertised, int) and advertised > 0:
        if num_classes is not None and advertised != num_classes:
            raise bad(
                f"the model has {advertised} classes, the parent {num_classes}: "
                "they are not the same task"
            )
        num_classes = advertised
    server_max = params.get("max_batch")
    return Wire(
        name=name,
        input_name=i["name"],
        input_shape=tuple(shape[1:]),
        output=pick["name"],
        kind=kind,
        argmax_here=labels_only and kind == "logits",
        num_classes=num_classes,
        versions=versions_text,
        max_batch=server_max if isinstance(server_max, int) and server_max > 0 else None,
    )


def read_reply(reply: Any, w: Wire, n: int) -> np.ndarray:
    """Client side: the answers to `n` rows in an inference reply, checked (see the
    module docstring); logits (n, classes) float32, or labels (n,) int64. The first
    logits reply sets `w.num_classes` if the metadata did not."""
    bad = Bad
    if not isinstance(reply, dict) or not isinstance(reply.get("outputs"), list):
        raise bad("the inference reply has no 'outputs' list")
    if reply.get("model_name") not in (None, w.name):
        raise bad(f"the reply comes from another model ({reply.get('model_name')!r})")
    out = next(
        (o for o in reply["outputs"] if isinstance(o, dict) and o.get("name") == w.output),
        None,
    )
    if out is None:
        raise bad(f"the reply has no output {w.output!r}")
    dt, shape, data = out.get("datatype"), out.get("shape"), out.get("data")
    allowed = FLOAT_TYPES if w.kind == "logits" else INT_TYPES
    if dt not in allowed:
        raise bad(f"output {w.output!r} has datatype {dt!r}, expected one of {allowed}")
    if not (
        isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
    ):
        raise bad(f"output {w.output!r} has no valid shape ({shape!r})")
    if w.kind == "logits":
        ok = len(shape) == 2 and shape[0] == n and shape[1] > 0
        ok = ok and w.num_classes in (None, shape[1])
        want = f"[{n}, {w.num_classes or 'classes'}]"
    else:
        ok = shape in ([n], [n, 1])
        want = f"[{n}]"
    if not ok:
        raise bad(f"output {w.output!r} has shape {shape}, expected {want} for {n} rows")
    if not isinstance(data, list):
        raise bad(f"output {w.output!r} has no data list")
    try:
        arr = np.asarray(data)
    except ValueError:
        raise bad(f"output {w.output!r} holds ragged data") from None
    if arr.size != math.prod(shape):
        raise bad(
            f"output {w.output!r} holds {arr.size} values, its shape {shape} says "
            f"{math.prod(shape)}"
        )
    if w.kind == "logits":
        if arr.dtype.kind not in "fiu":
            raise bad(f"output {w.output!r} holds non-numbers")
        z = arr.astype(np.float64).reshape(n, -1)
        if not np.isfinite(z).all():
            raise bad(f"output {w.output!r} holds NaN or Inf logits")
        w.num_classes = z.shape[1]
        return z.astype(np.float32)
    if arr.dtype.kind not in "iu":
        raise bad(f"output {w.output!r} holds non-integer labels")
    labels = arr.astype(np.int64).reshape(n)
    c = w.num_classes
    if len(labels) and (labels.min() < 0 or (c is not None and labels.max() >= c)):
        bad_label = int(labels.min() if labels.min() < 0 else labels.max())
        raise bad(f"output {w.output!r} holds label {bad_label}, outside 0..{(c or 0) - 1}")
    return labels


def encode_request(flat: np.ndarray, w: Wire, binary: bool, rid: str) -> tuple[bytes, dict]:
    """Client side: the body and headers of an inference request for rows `flat` (n, d)."""
    tensor: dict[str, Any] = {
        "name": w.input_name,
        "shape": [len(flat), *w.input_shape],
        "datatype": "FP32",
    }
    raw = np.ascontiguousarray(flat, dtype="<f4").tobytes()
    if binary:
        tensor["parameters"] = {"binary_data_size": len(raw)}
    else:  # float32 written as doubles: exact, the server reads the same bits
        tensor["data"] = flat.astype(np.float64).ravel().tolist()
    request = {"id": rid, "inputs": [tensor], "outputs": [{"name": w.output}]}
    body = json.dumps(request, separators=(",", ":")).encode()
    if not binary:
        return body, {"Content-Type": "application/json"}
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(body))}
    return body + raw, headers


# ---------------------------------------------------------------- server side


class RequestError(Exception):
    """A request the server refuses: HTTP status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes | None]:
    """(JSON, binary tensor data or None) of a request body (binary tensor extension)."""
    if header_length is None:
        return body, None
    if not header_length.isdigit() or int(header_length) > len(body):
        raise RequestError(
            400, f"Inference-Header-Content-Length {header_length!r} does not fit the body"
        )
    n = int(header_length)
    return body[:n], body[n:]


def parse_request(
    body: bytes,
    binary: bytes | None,
    input_shape: tuple[int, ...],
    max_batch: int,
    outputs: list[str],
) -> tuple[torch.Tensor, list[str], str | None]:
    """Server side: the input batch, the outputs asked for (names in `outputs`, all by
    default) and the request id; RequestError if bad. `binary`: the bytes after the JSON
    header (binary tensor extension), if any."""
    import torch

    try:
        req = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise RequestError(400, f"request body is not JSON ({e})") from None
    if not isinstance(req, dict):
        raise RequestError(422, "request must be a JSON object with 'inputs'")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise RequestError(422, f"'inputs' must be a list of one tensor ({INPUT!r})")
    t = inputs[0]
    if t.get("name") != INPUT:
        raise RequestError(422, f"unknown input {t.get('name')!r}; this model's input is {INPUT!r}")
    if t.get("datatype") != "FP32":
        raise RequestError(422, f"input datatype must be FP32, got {t.get('datatype')!r}")
    shape = t.get("shape")
    want = [-1, *input_shape]
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or len(shape) != len(want)
        or list(shape[1:]) != want[1:]
        or shape[0] < 1
    ):
        raise RequestError(422, f"input shape {shape} does not match the model's {want}")
    if shape[0] > max_batch:
        raise RequestError(
            413, f"batch of {shape[0]} rows exceeds this server's limit of {max_batch}"
        )
    params = t.get("parameters")
    if not isinstance(params, dict):
        params = {}
    size = params.get("binary_data_size")
    if size is not None:
        if binary is None or "data" in t:
            raise RequestError(
                422,
                "binary_data_size needs the Inference-Header-Content-Length header and no 'data'",
            )
        if not isinstance(size, int) or size != len(binary) or size != 4 * math.prod(shape):
            raise RequestError(
                422,
                f"binary_data_size {size!r} must be the {len(binary)} bytes sent, "
                f"4 x {math.prod(shape)} FP32 values",
            )
        arr = np.frombuffer(binary, dtype="<f4")
    else:
        data = t.get("data")
        if not isinstance(data, list):
            raise RequestError(422, "input 'data' must be a list of numbers")
        try:
            arr = np.asarray(data)
        except ValueError:
            raise RequestError(
                422, "input 'data' is ragged (nested lists of unequal length)"
            ) from None
        if arr.dtype.kind not in "fiu":
            raise RequestError(422, "input 'data' must hold numbers only")
        if arr.size != math.prod(shape):
            raise RequestError(
                422,
                f"input 'data' holds {arr.size} values, shape {shape} needs {math.prod(shape)}",
            )
    x = torch.from_numpy(arr.astype(np.float32).reshape(shape))
    if not torch.isfinite(x).all():
        raise RequestError(422, "input 'data' holds NaN or Inf")
    outs = req.get("outputs")
    names = list(outputs)
    if outs is not None:
        if not isinstance(outs, list) or not all(isinstance(o, dict) for o in outs):
            raise RequestError(422, "'outputs' must be a list of {'name': ...}")
        names = [o.get("name") for o in outs]
        for n in names:
            if n == "logits" and "logits" not in outputs:
                raise RequestError(422, "this server answers labels only: no 'logits' output")
            if n not in outputs:
                raise RequestError(422, f"unknown output {n!r}; outputs: {outputs}")
    rid = req.get("id")
    return x, [str(n) for n in names], rid if isinstance(rid, str) else None

"""The Open Inference Protocol (KServe v2 REST) as `lineage.remote` speaks it: the URL
form, the inference request (JSON numbers, or raw float32 bytes after a JSON header: the
binary tensor extension), and the client's checks of replies (the server's of requests are
in request.py). Pure functions of bytes and dicts; `Bad` carries the reason.

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
from typing import Any
from urllib.parse import urlsplit

import numpy as np

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


def header_int(text: str | None, limit: int = 10**15) -> int | None:
    """A header's non-negative integer, or None. ASCII digits only: str.isdigit() also takes
    '²' and other Unicode digits, which int() then refuses."""
    if text is None or not re.fullmatch(r"[0-9]{1,16}", text.strip()):
        return None
    v = int(text)
    return v if v <= limit else None


def flat_numbers(data: Any, shape: list[int], integers: bool = False) -> list[Any]:
    """The values of a tensor's JSON `data`, flat row-major or nested as `shape`, each a
    JSON number (an integer if `integers`); ValueError says what is wrong. Checked in Python
    before numpy sees them: np.asarray of a list mixing one long string with numbers
    allocates the count times that string's length."""
    n = math.prod(shape)
    if not isinstance(data, list):
        raise ValueError("is not a list")
    leaves = data
    if not data or not isinstance(data[0], list):
        if len(data) != n:
            raise ValueError(f"holds {len(data)} values, shape {shape} needs {n}")
    else:
        level: list[Any] = [data]
        for d in shape:  # one level of nesting per dimension, each list of its length
            nxt: list[Any] = []
            for part in level:
                if not isinstance(part, list) or len(part) != d:
                    raise ValueError(f"is ragged: not nested as its shape {shape}")
                nxt.extend(part)
            level = nxt
        leaves = level
    kinds = (int,) if integers else (int, float)
    if not all(type(v) in kinds for v in leaves):  # bool is not a number here
        raise ValueError("must hold integers only" if integers else "must hold numbers only")
    return leaves


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
        values = flat_numbers(data, shape, integers=w.kind == "labels")
    except ValueError as e:
        why = {"must hold numbers only": "holds non-numbers"}.get(str(e), str(e))
        why = {"must hold integers only": "holds non-integer labels"}.get(why, why)
        raise bad(f"output {w.output!r} {why}") from None
    if w.kind == "logits":
        try:
            z64 = np.array(values, dtype=np.float64).reshape(n, -1)
        except OverflowError:
            raise bad(f"output {w.output!r} holds a number beyond float64's range") from None
        # checked in float32, the dtype the caller and the cache hold: 1e300 is finite as a
        # double and Inf as a float
        with np.errstate(over="ignore", invalid="ignore"):
            z = z64.astype(np.float32)
        if not np.isfinite(z).all():
            raise bad(
                f"output {w.output!r} holds NaN or Inf logits (in float32, or beyond its range)"
            )
        w.num_classes = z.shape[1]
        return z
    try:
        labels = np.array(values, dtype=np.int64).reshape(n)
    except OverflowError:
        raise bad(f"output {w.output!r} holds a label beyond int64's range") from None
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

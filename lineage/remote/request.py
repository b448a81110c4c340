"""The server's side of the Open Inference Protocol: an inference request read and checked
into a float32 batch, or `RequestError` with its HTTP status. The body's JSON is bounded
before it is parsed (depth, then its numbers, lists and objects against the largest legal
batch), its numbers checked to be numbers in Python before numpy sees them, and in float32,
the dtype the model reads."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from .protocol import INPUT, flat_numbers, header_int, snippet

SLACK = 256  # values and containers of a request besides its data (id, outputs, parameters)
DEPTH_SLACK = 32  # levels of a request besides its data's (it has 5; brackets in strings count)


class RequestError(Exception):
    """A request the server refuses: HTTP status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes | None]:
    """(JSON, binary tensor data or None) of a request body (binary tensor extension)."""
    if header_length is None:
        return body, None
    n = header_int(header_length)
    if n is None or n > len(body):
        raise RequestError(
            400, f"Inference-Header-Content-Length {header_length[:40]!r} does not fit the body"
        )
    return body[:n], body[n:]


def json_bounds(input_shape: tuple[int, ...], max_batch: int) -> tuple[int, int]:
    """(values, containers) the largest legal request holds: its numbers, and the lists
    of its data nested as its shape, plus the request's own few (SLACK)."""
    per_row = sum(math.prod(input_shape[:k]) for k in range(len(input_shape)))
    return max_batch * math.prod(input_shape) + SLACK, max_batch * (1 + per_row) + SLACK


def json_depth(body: bytes, limit: int) -> bool:
    """Whether the JSON in `body` nests lists and objects deeper than `limit`, read from
    its raw bytes (a bracket inside a string counts too) in 1 MiB pieces: json.loads would
    recurse as deep, raising RecursionError at ~1000."""
    depth, piece = 0, 2**20
    for a in range(0, len(body), piece):
        c = np.frombuffer(body, np.uint8, count=min(piece, len(body) - a), offset=a)
        step = (c == 91).astype(np.int32) + (c == 123) - (c == 93) - (c == 125)
        run = np.cumsum(step) + depth
        if run.max() > limit:
            return True
        depth = int(run[-1])
    return False


def check_json_size(body: bytes, values: int, containers: int) -> None:
    """Refuse, before parsing, a JSON body holding more numbers, lists or objects than the
    largest legal request: the parse costs ~32 bytes a number and 56-64 an empty list or
    object, so 64 MiB of `[],` parse to gigabytes. Counted on the raw bytes (a comma or
    bracket inside a string counts too, which only errs towards refusing): each element of
    a list or object after its first follows a comma, so the elements are at most the
    commas plus the containers."""
    n_containers = body.count(b"[") + body.count(b"{")
    n_commas = body.count(b",")
    if n_containers > containers or n_commas > values + containers:
        raise RequestError(
            413,
            f"request holds up to {n_commas + n_containers + 1} values in {n_containers} lists "
            f"or objects; the largest batch this model takes holds {values + containers} in "
            f"{containers}",
        )


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
    depth = len(input_shape) + DEPTH_SLACK  # a request's own levels, its data nested as its shape
    if json_depth(body, depth):
        raise RequestError(400, f"request body is JSON nested deeper than {depth} levels")
    check_json_size(body, *json_bounds(input_shape, max_batch))
    try:
        req = json.loads(body)
    except RecursionError:
        raise RequestError(400, "request body is JSON nested too deep") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise RequestError(
            400, f"request body is not JSON ({snippet(str(e).encode(), 120)})"
        ) from None
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
        try:
            arr = np.array(flat_numbers(t.get("data"), shape), dtype=np.float64)
        except ValueError as e:
            raise RequestError(422, f"input 'data' {e}") from None
        except OverflowError:
            raise RequestError(422, "input 'data' holds a number beyond float64's range") from None
    # checked in float32, the dtype the model reads: 1e300 is finite as a double only
    with np.errstate(over="ignore", invalid="ignore"):
        x = torch.from_numpy(arr.astype(np.float32).reshape(shape))
    if not torch.isfinite(x).all():
        raise RequestError(422, "input 'data' holds NaN or Inf (in float32)")
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

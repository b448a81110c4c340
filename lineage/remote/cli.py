"""The command line of the remote audit: `lineage serve` and `lineage compare PARENT URL`.

Kept apart from lineage/cli.py and lineage/audit.py, which only hook these in:
`add_serve_parser`, `add_remote_options` (the compare flags a URL suspect takes), `is_url`,
`serve`, `remote_suspect` (the black box for the engine) and `queries_line`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

from .protocol import API_KEY_ENV, URL_FORM, is_url

__all__ = [
    "add_remote_options",
    "add_serve_parser",
    "is_url",
    "queries_line",
    "remote_suspect",
    "serve",
]

DEFAULT_CACHE = "outputs/remote-cache"


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(v) and v > 0):
            raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
        return v

    return parse


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return v


def add_serve_parser(sub: Any) -> argparse.ArgumentParser:
    s = sub.add_parser(
        "serve",
        help="serve a model file over the Open Inference Protocol (KServe v2 REST)",
        description="Serve MODEL_FILE at http://HOST:PORT/v2/models/NAME (KServe v2 REST) "
        "until interrupted; the first line on stdout is that URL.",
    )
    s.add_argument("model_file", type=Path)
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=_count, default=8000, help="0: any free port (default 8000)")
    s.add_argument("--name", help="model name in the URL (default: the file's stem)")
    s.add_argument("--labels-only", action="store_true", help="answer argmax labels, never logits")
    s.add_argument(
        "--api-key",
        help=f"require this key (Authorization: Bearer KEY or x-api-key); default: ${API_KEY_ENV}",
    )
    s.add_argument("--max-batch", type=_positive(int), default=1024, help="rows per request")
    s.add_argument(
        "--max-body-mb",
        type=_positive(float),
        help="request body limit (MiB); default: what --max-batch rows of the model's input "
        "take as JSON numbers",
    )
    s.add_argument(
        "--read-timeout",
        type=_positive(float),
        default=30.0,
        help="seconds a client has to send a request's head, and again its body (default 30)",
    )
    s.add_argument(
        "--max-connections",
        type=_positive(int),
        default=64,
        help="connections open at once; more are closed on arrival (default 64)",
    )
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return s


def add_remote_options(c: argparse.ArgumentParser) -> None:
    """The `compare` flags for a suspect given as a URL."""
    g = c.add_argument_group(f"a suspect at a URL ({URL_FORM})")
    g.add_argument("--labels-only", action="store_true", help="query labels, never logits")
    g.add_argument(
        "--query-budget",
        type=_positive(int),
        help="send at most N rows; sampling stops when it is spent",
    )
    g.add_argument("--cache", default=DEFAULT_CACHE, help=f"answer cache (default {DEFAULT_CACHE})")
    g.add_argument("--no-cache", action="store_true", help="keep no answer cache")
    g.add_argument("--api-key", help=f"the endpoint's key (default: ${API_KEY_ENV})")
    g.add_argument("--batch", type=_positive(int), default=256, help="rows per request")
    g.add_argument(
        "--timeout",
        type=_positive(float),
        default=30.0,
        help="seconds to wait for each connect, send or read of a reply (default 30)",
    )
    g.add_argument(
        "--deadline",
        type=_positive(float),
        default=120.0,
        help="seconds one request may take in all, retries and their waits included: a "
        "server that drips its reply is cut off there (default 120)",
    )
    g.add_argument("--retries", type=_count, default=4, help="retries per request")


def api_key(args: argparse.Namespace) -> str | None:
    return args.api_key or os.environ.get(API_KEY_ENV) or None


def serve(args: argparse.Namespace) -> int:
    from ..errors import LineageError
    from ..interrupt import stage
    from .server import serve as run
    from .server import served_from_file

    try:
        s = served_from_file(
            args.model_file,
            args.name,
            args.labels_only,
            args.max_batch,
            args.max_body_mb,
            api_key(args),
            args.read_timeout,
        )
        with stage(f"serving {s.name}", leaves="the server stopped (it has no results)"):
            run(s, args.host, args.port, args.log_level, args.max_connections)
    except LineageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def remote_suspect(args: argparse.Namespace, dm: Any) -> Any:
    """The suspect at the URL as a black box for the parent's task `dm` (its input shape
    and classes are checked against the endpoint's metadata)."""
    from ..errors import LineageError
    from .client import RemoteModel

    remote = RemoteModel(
        args.suspect,
        api_key=api_key(args),
        labels_only=args.labels_only,
        batch_rows=args.batch,
        timeout=args.timeout,
        deadline=args.deadline,
        retries=args.retries,
        cache=None if args.no_cache else Path(args.cache),
        budget=args.query_budget,
        num_classes=dm.num_classes,
    )
    if remote.input_shape != tuple(dm.input_shape):
        remote.close()
        raise LineageError(
            f"{remote.endpoint} takes inputs of shape {list(remote.input_shape)}, "
            f"the parent's task {dm.name!r} has {list(dm.input_shape)}"
        )
    return remote


def queries_line(r: dict[str, Any]) -> str:
    """The console line of a URL comparison's queries (`r` flattened)."""
    return (
        f"queries: {r['queries.sent']} sent, {r['queries.answered']} answered, "
        f"{r['queries.cached']} from cache, {r['queries.retried']} retried, "
        f"{r['queries.per_point']:.1f} per point ({r['queries.output']})"
    )

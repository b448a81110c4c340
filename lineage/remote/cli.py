"""The command line of the remote audit: `lineage serve` and `lineage compare PARENT URL`.

Kept apart from lineage/cli.py, which only hooks these in: `add_serve_parser`,
`add_remote_options` (the compare flags a URL suspect takes), `is_url`, `serve`,
`compare_url` and `print_summary`.
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
    "compare_url",
    "is_url",
    "print_summary",
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
        "--max-body-mb", type=_positive(float), default=64.0, help="request body limit (MiB)"
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
    g.add_argument("--timeout", type=_positive(float), default=30.0, help="seconds per request")
    g.add_argument("--retries", type=_count, default=4, help="retries per request")


def api_key(args: argparse.Namespace) -> str | None:
    return args.api_key or os.environ.get(API_KEY_ENV) or None


def serve(args: argparse.Namespace) -> int:
    from ..errors import LineageError
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
        )
        run(s, args.host, args.port, args.log_level)
    except LineageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def parent_task(args: argparse.Namespace, pmeta: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The parent's task rebuilt from its metadata (config and data), as `lineage compare`
    does for two files; there is no suspect file to cross-check here."""
    from ..cli import compose, task_of
    from ..data import datamodule_from_config
    from ..errors import LineageError

    if args.data is None and task_of(pmeta)[0] is None:
        raise LineageError(f"{args.parent}: the file names no dataset; pass --data")
    overrides = [f"data={args.data or task_of(pmeta)[0]}", *args.overrides]
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.zoo:
        overrides.append(f"paths.zoo={args.zoo}")
    cfg = compose(overrides)
    arch = pmeta["arch"]
    cfg["model"] = {"name": arch["name"], **arch.get("kwargs", {})}
    spec = pmeta.get("spec") or {}
    if spec and args.data is None:  # the parent's exact data split and training
        cfg["data"].update({k: v for k, v in spec.get("data", {}).items() if v is not None})
        cfg["train"].update(spec.get("train", {}))
    elif task_of(pmeta)[1] and args.data is None:
        cfg["data"]["classes"] = task_of(pmeta)[1]
    return cfg, datamodule_from_config(cfg["data"])


def compare_url(args: argparse.Namespace) -> dict[str, Any]:
    """`lineage compare PARENT URL`: the function evidence (closeness) of the remote model
    against PARENT, thresholds calibrated on --references local references; the verdict
    of lineage.judge plus a `queries` group (the client's counters)."""
    from .. import models
    from ..errors import LineageError
    from ..judge import Suspect, judge
    from .client import RemoteModel

    parent, pmeta = models.load(args.parent)
    cfg, dm = parent_task(args, pmeta)
    if models.head_of(parent).out_features != dm.num_classes:
        raise LineageError(
            f"{args.parent} has {models.head_of(parent).out_features} outputs but data "
            f"{dm.name!r} has {dm.num_classes} classes"
        )
    remote = RemoteModel(
        args.suspect,
        api_key=api_key(args),
        labels_only=args.labels_only,
        batch_rows=args.batch,
        timeout=args.timeout,
        retries=args.retries,
        cache=None if args.no_cache else Path(args.cache),
        budget=args.query_budget,
        num_classes=dm.num_classes,
    )
    try:
        if remote.input_shape != tuple(dm.input_shape):
            raise LineageError(
                f"{remote.endpoint} takes inputs of shape {list(remote.input_shape)}, "
                f"the parent's task {dm.name!r} has {list(dm.input_shape)}"
            )
        refs = []
        if args.references:
            from ..pipeline import reference_seed, trained_model
            from ..tracking import Tracker
            from ..zoo import Zoo

            seed = int(pmeta.get("seed") or 0)
            zoo = Zoo(cfg["paths"]["zoo"])
            refs = [
                trained_model(cfg, dm, zoo, reference_seed(seed, i), "independent", Tracker())[0]
                for i in range(args.references)
            ]
        verdict, _, _ = judge(
            parent,
            Suspect(None, None, remote),
            refs,
            dm.test.x,
            dm.test.y,
            cfg,
            int(pmeta.get("seed") or 0),
        )
        assert verdict is not None
        out = verdict.to_dict()
        out["queries"] = remote.report(verdict.closeness.n_drawn)
        out["references"] = len(refs)
        return out
    finally:
        remote.close()


def print_summary(result: dict[str, Any]) -> None:
    """The console lines of a URL comparison (`result` flattened)."""
    r = result
    d = "lineage" if r["determination.is_lineage"] else "not lineage"
    n = r.get("references", 0)
    cal = f"calibrated on {n} references" if n else "uncalibrated: no references"
    print(
        f"determination: {d} (function evidence only: a black box; closeness "
        f"{r['closeness.score']:.4f} vs threshold {r['determination.function_threshold']:.4f}, "
        f"{cal})"
    )
    print(
        f"closeness: {r['closeness.score']:.4f} "
        f"[{r['closeness.ci_low']:.4f}, {r['closeness.ci_high']:.4f}], "
        f"match rate {r['closeness.match_rate']:.4f}, {r['closeness.n_points']} points, "
        f"stopped: {r['closeness.stopped']}"
    )
    print(
        f"queries: {r['queries.sent']} sent, {r['queries.answered']} answered, "
        f"{r['queries.cached']} from cache, {r['queries.retried']} retried, "
        f"{r['queries.per_point']:.1f} per point ({r['queries.output']})"
    )

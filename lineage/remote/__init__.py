"""Auditing a deployed model: the Open Inference Protocol (KServe v2 REST) server behind
`lineage serve` (server.py) and the client that queries one as a black box (client.py:
batching, cache, retries, validation, budget, counters)."""

from typing import Any

__all__ = ["RemoteModel", "is_url", "parse_url"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `lineage --help` builds its parser from lineage.remote.cli
    # without loading torch (the client's).
    if name == "RemoteModel":
        from .client import RemoteModel

        return RemoteModel
    if name in ("is_url", "parse_url"):
        from . import protocol

        return getattr(protocol, name)
    raise AttributeError(f"module 'lineage.remote' has no attribute {name!r}")

"""Auditing a deployed model: the Open Inference Protocol (KServe v2 REST) server behind
`lineage serve` (server.py) and the client that queries one as a black box (client.py:
batching, cache, retries, validation, budget, counters)."""

from .client import RemoteModel
from .protocol import is_url, parse_url

__all__ = ["RemoteModel", "is_url", "parse_url"]

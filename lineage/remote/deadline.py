"""A total deadline for one request of the client (issue 25). httpx's timeouts bound each
connect, write and read on its own, so a server sending a byte a second never trips
them and held an audit for minutes. Here every socket operation waits at most until the
request's deadline (`DeadlineBackend.end`), whatever the per-operation timeout says, and
one past it fails as a timeout at once."""

from __future__ import annotations

import math
import time
from typing import Any

import httpcore
import httpx


class DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self.inner = httpcore.SyncBackend()
        self.end = math.inf  # time.monotonic() by which the request must be done

    def left(self, timeout: float | None, late: type[Exception] = httpcore.ReadTimeout) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise late("the request's deadline passed")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        t = self.left(timeout, httpcore.ConnectTimeout)
        return Stream(self, self.inner.connect_tcp(host, port, t, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        t = self.left(timeout, httpcore.ConnectTimeout)
        return Stream(self, self.inner.connect_unix_socket(path, t, socket_options))

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class Stream(httpcore.NetworkStream):
    def __init__(self, backend: DeadlineBackend, inner: httpcore.NetworkStream):
        self.backend, self.inner = backend, inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, self.backend.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, self.backend.left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        t = self.backend.left(timeout, httpcore.ConnectTimeout)
        return Stream(self.backend, self.inner.start_tls(ssl_context, server_hostname, t))

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


def transport(backend: DeadlineBackend) -> httpx.HTTPTransport:
    """httpx's own transport over `backend` (httpx has no public way to name the network
    backend of its connection pool; the attribute is checked so an upgrade fails loudly)."""
    t = httpx.HTTPTransport()
    pool = t._pool
    if not hasattr(pool, "_network_backend"):  # pragma: no cover - a changed httpcore
        raise RuntimeError("httpcore's ConnectionPool no longer takes a network backend")
    pool._network_backend = backend
    return t

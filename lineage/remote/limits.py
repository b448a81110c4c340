"""What bounds `lineage serve` against hostile or merely slow clients (issue 25):

- **memory**: request bodies are held against one byte budget (`Budget`) shared by all
  requests; a body that would cross it is answered 503 (retried by clients) instead of
  being buffered, and at most `parsers` bodies are parsed at once. With the JSON checks
  before parsing (protocol.check_json_size), 8 clients sending the largest bodies cost
  about 2 x that body plus 2 parses of the largest legal batch
  (benchmarks/bench_serve_memory.py);
- **time**: a request's head must arrive within `read_timeout` seconds of the connection
  (or of the previous reply), its body within `read_timeout` of its head (the app's
  deadline), and an idle keep-alive connection is closed after `KEEP_ALIVE` seconds.
  uvicorn's own keep-alive timer stops at the first byte of the next request, so a client
  sending its head a byte a second was kept forever; a head is at most `MAX_HEAD` bytes;
- **connections**: beyond `max_connections` open at once, a new one is closed on arrival;
  one answered before its body ended is closed after the reply.
"""

from __future__ import annotations

from typing import Any

KEEP_ALIVE = 5.0  # seconds an idle keep-alive connection is kept
READ_TIMEOUT = 30.0  # seconds to send a request's head, and again its body
MAX_CONNECTIONS = 64
MAX_HEAD = 2**14  # bytes of a request's head (h11 refuses a longer one with 400)
PARSERS = 2  # request bodies parsed at once (and held at their largest)
BYTES_PER_NUMBER = 28  # a float32 written as a JSON double: 24 characters, a separator, brackets
HEAD_ROOM = 2**16  # the JSON of a request besides its numbers


def default_max_body(input_shape: tuple[int, ...], max_batch: int) -> int:
    """The body limit that fits the largest legal batch sent as JSON numbers."""
    n = max_batch
    for d in input_shape:
        n *= d
    return n * BYTES_PER_NUMBER + HEAD_ROOM


class Budget:
    """Bytes of request bodies held at once, across requests (one event loop, no lock)."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held -= n


def http_protocol(read_timeout: float, max_connections: int) -> type:
    """uvicorn's h11 protocol with a deadline on each request's head and a connection cap."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Bounded(H11Protocol):
        _head: Any = None  # the timer that closes a connection whose head is late

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:  # never counted, never served
                self.transport = transport  # what connection_lost closes
                transport.close()
                return
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # the head is in
                self._disarm()

        def on_response_complete(self) -> None:
            if self.conn.their_state is h11.SEND_BODY:
                # answered before its body ended (413, 408, 503): reading on would wait
                # on the client's pace, so the connection ends with the reply
                self.transport.close()
                return
            self._arm()  # for the next head; a pipelined one already here disarms it
            super().on_response_complete()

        def _arm(self) -> None:
            self._disarm()
            self._head = self.loop.call_later(read_timeout, self._late)

        def _disarm(self) -> None:
            if self._head is not None:
                self._head.cancel()
                self._head = None

        def _late(self) -> None:
            self._head = None
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self.transport.close()

    return Bounded

"""A lean unary server running in a background thread on its own uvloop, and a raw HTTP/2 client.

The conformance tests use grpcio's client (what most users call with) and a raw libnghttp2 client
(ngh2) to see the frames themselves: SETTINGS, PING, GOAWAY, HTTP status and trailers.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import ngh2

from envoykit.core.unary import Limits, UnaryMethod, UnaryServer, new_event_loop


class ServerThread:
    """``UnaryServer`` with ``methods`` on a free port, served from a daemon thread."""

    def __init__(
        self,
        methods: list[UnaryMethod],
        *,
        limits: Limits | None = None,
        address: str = "127.0.0.1:0",
        service: str = "test.Echo",
    ) -> None:
        self.loop = new_event_loop()
        self.server = UnaryServer("test", address, limits=limits)
        self.server.add_service(service, methods)
        self.port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self.port = self.call(self.server.start())
        return self

    def call(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, grace: float = 1.0) -> None:
        if self.loop.is_running():
            self.call(self.server.stop(grace), timeout=grace + 10)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class RawClient:
    """A blocking HTTP/2 client over a socket, driven by ngh2, for frame-level checks."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.h2 = ngh2.Connection(ngh2.Role.CLIENT)
        self.h2.initiate_connection()
        self.events: list[Any] = []
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def read_until(self, done: Callable[[list[Any]], bool], timeout: float = 5) -> list[Any]:
        """Read and collect events until ``done(events)`` or the peer closes; returns all events."""
        deadline = time.monotonic() + timeout
        while not done(self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no such events after {timeout}s: {self.events}")
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                self.events.append("EOF")
                break
            self.h2.receive_data(data)
            self.events.extend(self.h2.events())
            self.flush()
        return self.events

    def request(self, path: str, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> int:
        hdrs = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", b"test"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *(headers or []),
        ]
        sid = self.h2.send_request(hdrs)
        self.h2.send_data(sid, body, end_stream=True)
        self.flush()
        return sid

    def close(self) -> None:
        self.sock.close()


def stream_done(sid: int) -> Callable[[list[Any]], bool]:
    """True once stream ``sid`` has ended (trailers, or a response with END_STREAM)."""

    def done(events: list[Any]) -> bool:
        for e in events:
            if getattr(e, "stream_id", None) != sid:
                continue
            if isinstance(e, ngh2.TrailersReceived | ngh2.StreamReset):
                return True
            if isinstance(e, ngh2.ResponseReceived) and e.end_stream:
                return True
        return False

    return done


def headers_of(events: list[Any], sid: int) -> dict[bytes, bytes]:
    """Every header and trailer field received on stream ``sid``, merged."""
    out: dict[bytes, bytes] = {}
    for e in events:
        if getattr(e, "stream_id", None) == sid and isinstance(
            e, ngh2.ResponseReceived | ngh2.TrailersReceived
        ):
            out.update(dict(e.headers))
    return out

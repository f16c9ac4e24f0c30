"""A scripted HTTP/1.1 upstream for the differential check: answers exactly what it is told.

It adds no ``Date`` or ``Server`` header and sends ``content-length`` last, so the response Envoy
hands to the filter is the one the host builds (:meth:`HttpResponse.envoy_headers`).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from envoykit.wasmhost.exchange import HttpResponse


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server: ScriptedUpstream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            body = self._read_chunked()  # Envoy sends a body chunked when a filter dropped its length
        else:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
        self.server.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": [(k.lower(), v) for k, v in self.headers.items()],
                "body": body,
            }
        )
        answer = self.server.answer
        if answer.delay_ms:
            time.sleep(answer.delay_ms / 1000)
        self.send_response_only(answer.status)
        for k, v in answer.headers:
            if k != "content-length":
                self.send_header(k, v)
        self.send_header("content-length", str(len(answer.body)))
        try:
            self.end_headers()
            self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # Envoy reset the request (e.g. the filter sent a local reply): nobody reads this

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(body)
            body += self.rfile.read(size)
            self.rfile.readline()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve


class ScriptedUpstream(ThreadingHTTPServer):
    """Serves ``answer`` to every request on a free loopback port; records what it received."""

    daemon_threads = True

    def __init__(self, answer: HttpResponse | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer or HttpResponse()
        self.requests: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.server_address[1])

    def __enter__(self) -> ScriptedUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

"""An echo HTTP upstream for tests: answers every request with JSON describing what it received.

Chunked request bodies (Envoy forwards a body whose length may change that way) are decoded and
reported with ``chunked: true``. Request headers that steer it: ``x-echo-status`` (response status), ``x-echo-delay-ms`` (sleep first),
``x-echo-body-size`` (answer with that many bytes instead of JSON).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EchoServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> tuple[bytes, bool]:
        if self.headers.get("transfer-encoding", "").lower() != "chunked":
            length = int(self.headers.get("content-length") or 0)
            return (self.rfile.read(length) if length else b""), False
        out = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(out), True
            out += self.rfile.read(size)
            self.rfile.readline()

    def _serve(self) -> None:
        body, chunked = self._read_body()
        record = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode(errors="replace"),
            "body_len": len(body),
            "chunked": chunked,
        }
        self.server.requests.append(record)
        delay = int(self.headers.get("x-echo-delay-ms") or 0)
        if delay:
            time.sleep(delay / 1000)
        status = int(self.headers.get("x-echo-status") or 200)
        size = self.headers.get("x-echo-body-size")
        out = b"x" * int(size) if size else json.dumps(record).encode()
        self.send_response(status)
        self.send_header("content-type", "application/octet-stream" if size else "application/json")
        self.send_header("content-length", str(len(out)))
        self.send_header("x-upstream", self.server.label)
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve


class EchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, label: str = "echo") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.label = label
        self.requests: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

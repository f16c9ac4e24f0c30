"""What both sample apps share: a threaded stdlib HTTP server that answers JSON, and graceful SIGTERM."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (status, extra response headers, JSON body)
Reply = tuple[int, dict[str, str], Any]
# (method, path, lower-cased headers, body) -> Reply
Handler = Callable[[str, str, dict[str, str], bytes], Reply]


def serve(name: str, port: int, handle: Handler) -> None:
    """Serve ``handle`` on 127.0.0.1:``port`` until SIGTERM or SIGINT; ``/healthz`` always answers 200."""

    class _H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body leave in separate writes: without TCP_NODELAY, Nagle and delayed ACKs
        # hold each response ~40 ms on a kept-alive connection
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the sidecar's access log and the telemetry already record every request

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path == "/healthz":
                status, headers, doc = 200, {}, {"service": name, "status": "ok"}
            else:
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                status, headers, doc = handle(self.command, self.path, hdrs, body)
            out = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    server = ThreadingHTTPServer(("127.0.0.1", port), _H)
    server.daemon_threads = True

    def _stop(*_: object) -> None:
        # shutdown() blocks until serve_forever returns, so it must run off the main thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(json.dumps({"event": "serving", "service": name, "port": port}), file=sys.stderr, flush=True)
    server.serve_forever()
    server.server_close()
    print(json.dumps({"event": "stopped", "service": name}), file=sys.stderr, flush=True)


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--port`` (required)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    return p

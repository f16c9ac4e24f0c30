"""Sample app ``frontend``: answers by calling ``backend`` through its own sidecar.

Run: ``python examples/apps/frontend.py --port 9000 --backend http://127.0.0.1:15001 --backend-host backend``.
The frontend speaks plain HTTP to its sidecar's outbound listener (``--backend``) with the ``Host`` of
the backend service; the sidecars add mTLS, authz, telemetry and the canary split. It forwards the
method, path, body and tracing headers, and answers with the backend's status and JSON.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import Reply, parser, serve

# headers worth carrying from the inbound request to the outbound call
PROPAGATE = ("x-request-id", "traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled")


def make_handler(backend: str, backend_host: str, timeout_s: float) -> Any:
    """The request handler of a frontend that calls ``backend`` (base URL) with ``Host: backend_host``.

    Each server thread keeps one kept-alive connection to the sidecar (a connection per call would
    cost a TCP handshake each time).
    """
    url = urllib.parse.urlsplit(backend)
    local = threading.local()

    def call(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
        # a kept-alive connection the sidecar closed meanwhile fails at once: retry idempotent calls once
        attempts = (1, 2) if method in ("GET", "HEAD", "PUT", "DELETE") else (2,)
        for attempt in attempts:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout_s)
            try:
                conn.request(method, path, body=body or None, headers=headers)
                r = conn.getresponse()
                return r.status, r.read(), r.getheader("x-backend-version", "")
            except (http.client.HTTPException, OSError):
                conn.close()
                local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        out_headers = {k: v for k, v in headers.items() if k in PROPAGATE}
        out_headers["host"] = backend_host
        try:
            status, raw, version = call(method, url.path + path, out_headers, body)
        except (http.client.HTTPException, OSError) as err:
            return 502, {}, {"service": "frontend", "error": f"backend unreachable: {err}"}
        try:
            answer: Any = json.loads(raw)
        except ValueError:
            answer = raw.decode(errors="replace")
        extra = {"x-backend-version": version} if version else {}
        return status, extra, {"service": "frontend", "backend_status": status, "backend": answer}

    return handle


def main() -> None:
    p = parser("envoykit sample frontend")
    p.add_argument("--backend", required=True, help="base URL of the sidecar's outbound listener")
    p.add_argument("--backend-host", default="backend", help="Host header naming the backend service")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the backend")
    args = p.parse_args()
    serve("frontend", args.port, make_handler(args.backend.rstrip("/"), args.backend_host, args.timeout))


if __name__ == "__main__":
    main()

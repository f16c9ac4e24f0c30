"""Sample app ``frontend``: answers by calling ``backend`` through its own sidecar.

Run: ``python examples/apps/frontend.py --port 9000 --backend http://127.0.0.1:15001 --backend-host backend``.
The frontend speaks plain HTTP to its sidecar's outbound listener (``--backend``) with the ``Host`` of
the backend service; the sidecars add mTLS, authz, telemetry and the canary split. It forwards the path
and the tracing and ``authorization`` headers, and answers with the backend's status and JSON.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import Reply, parser, serve

# headers worth carrying from the inbound request to the outbound call
PROPAGATE = ("x-request-id", "traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled")


def make_handler(backend: str, backend_host: str, timeout_s: float) -> Any:
    """The request handler of a frontend that calls ``backend`` (base URL) with ``Host: backend_host``."""

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        out_headers = {k: v for k, v in headers.items() if k in PROPAGATE}
        out_headers["host"] = backend_host
        req = urllib.request.Request(backend + path, data=body or None, method=method, headers=out_headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as r:
                status, raw, version = r.status, r.read(), r.headers.get("x-backend-version", "")
        except urllib.error.HTTPError as err:
            status, raw, version = err.code, err.read(), err.headers.get("x-backend-version", "")
        except OSError as err:
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

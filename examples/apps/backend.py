"""Sample app ``backend``: reports its version and echoes the identity its sidecar passed on.

Run: ``python examples/apps/backend.py --port 9001 --version v1``. Every path answers JSON with the
service, its version, the request path and method, the identity headers it received (the client
certificate details Envoy forwards in ``x-forwarded-client-cert``, and the ``x-envoykit-*`` /
``x-auth-*`` headers the authz server injects) and all request headers. ``/status/NNN`` answers that
status, for trying retries and error rates.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import Reply, parser, serve

IDENTITY_PREFIXES = ("x-forwarded-client-cert", "x-envoykit-", "x-auth-", "x-jwt-", "x-spiffe")


def make_handler(version: str) -> Any:
    """The request handler of a backend reporting ``version``."""

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        status = 200
        if path.startswith("/status/"):
            code = path.split("/")[2].split("?")[0]
            status = int(code) if code.isdigit() and 200 <= int(code) <= 599 else 400
        identity = {k: v for k, v in headers.items() if k.startswith(IDENTITY_PREFIXES)}
        doc = {
            "service": "backend",
            "version": version,
            "method": method,
            "path": path,
            "identity": identity,
            "headers": headers,
            "body_len": len(body),
        }
        return status, {"x-backend-version": version}, doc

    return handle


def main() -> None:
    p = parser("envoykit sample backend")
    p.add_argument("--version", default="v1", help="version label it reports (v1, v2)")
    args = p.parse_args()
    serve("backend", args.port, make_handler(args.version))


if __name__ == "__main__":
    main()

"""The metrics port every server exposes: Prometheus ``/metrics`` and health probes.

- ``/metrics``: the Prometheus text format (``prometheus_client``'s exposition, with its content
  negotiation).
- ``/healthz``: liveness — 200 while the process serves, 503 once it drains (SIGTERM).
- ``/readyz``, and ``/healthcheck`` as envoyproxy/ratelimit names it: readiness — 200 only while the
  process serves and every readiness check passes (a rate-limit store that answers, ...); 503 with the
  reason otherwise, so a load balancer or a Kubernetes probe takes the process out while it drains
  or cannot decide.
- read-only JSON routes a server adds by path prefix (the control plane's ``/status`` and
  ``/config/<node>``, which the dashboard reads): GET answers the route's JSON, other methods 405.
- anything else: 404.
"""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

from envoykit.core.bind import AddressInUse

ReadinessCheck = Callable[[], str | None]
"""Returns None when ready, else why not (one line)."""

JsonRoute = Callable[[str], tuple[int, Any]]
"""Called with the path after its prefix; returns (HTTP status, a JSON-serialisable value)."""

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class Health:
    """What the health endpoints answer: draining (set on SIGTERM) and named readiness checks."""

    def __init__(self) -> None:
        self.draining = False
        self._checks: dict[str, ReadinessCheck] = {}

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        """Add a readiness check (called on every ``/readyz`` and ``/healthcheck``; keep it bounded)."""
        self._checks[name] = check

    def live(self) -> str | None:
        """None while serving, ``"draining"`` once the server drains."""
        return "draining" if self.draining else None

    def ready(self) -> str | None:
        """None when serving and every check passes, else the first reason."""
        if self.draining:
            return "draining"
        for name, check in self._checks.items():
            try:
                problem = check()
            except Exception as exc:  # a failing check means not ready, never a crashed probe
                problem = f"{type(exc).__name__}: {exc}"
            if problem:
                return f"{name}: {problem}"
        return None


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no access log
        pass


def _json(
    route: JsonRoute, rest: str, environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
        status, value = 405, {"error": "read-only: GET only"}
    else:
        try:
            status, value = route(rest)
        except Exception as exc:  # a broken route answers 500; metrics and probes keep serving
            status, value = 500, {"error": f"{type(exc).__name__}: {exc}"}
    body = json.dumps(value, default=str).encode()
    start_response(
        f"{status} {_REASONS.get(status, 'Error')}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _app(
    registry: CollectorRegistry, health: Health, routes: dict[str, JsonRoute]
) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)
    ordered = sorted(routes.items(), key=lambda kv: len(kv[0]), reverse=True)  # longest prefix first
    probes: dict[str, Callable[[], str | None]] = {
        "/healthz": health.live,
        "/readyz": health.ready,
        "/healthcheck": health.ready,
    }

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        probe = probes.get(path)
        if probe is None:
            for prefix, route in ordered:
                if path.startswith(prefix):
                    return _json(route, path[len(prefix) :], environ, start_response)
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: /metrics, /healthz, /readyz, /healthcheck\n"]
        problem = probe()
        status = "200 OK" if problem is None else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain")])
        return [b"OK\n" if problem is None else f"{problem}\n".encode()]

    return app


def start_metrics_server(
    port: int,
    host: str = "127.0.0.1",
    registry: CollectorRegistry = REGISTRY,
    health: Health | None = None,
    routes: dict[str, JsonRoute] | None = None,
) -> tuple[WSGIServer, threading.Thread, int]:
    """Serve ``/metrics`` (``registry``) and the health probes on ``http://host:port`` in a thread.

    Args:
        port: TCP port; 0 picks a free one. Bound exclusively (``SO_REUSEADDR`` only).
        health: what the probes answer (default: always serving, no checks).
        routes: read-only JSON routes by path prefix (``/status``); see :data:`JsonRoute`.

    Returns:
        ``(server, thread, port)``; call ``server.shutdown()`` to stop it. ``port`` is the bound one.

    Raises:
        AddressInUse: another process serves ``host:port``.
    """
    try:
        server = make_server(
            host, port, _app(registry, health or Health(), routes or {}), _Server, _QuietHandler
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(f"{host}:{port}") from None
        raise
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="metrics")
    thread.start()
    return server, thread, int(server.server_port)

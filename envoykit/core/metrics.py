"""The Prometheus ``/metrics`` endpoint every server exposes."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server


def start_metrics_server(
    port: int, host: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY
) -> tuple[WSGIServer, threading.Thread, int]:
    """Serve ``registry`` in Prometheus text format on ``http://host:port/metrics`` in a thread.

    Args:
        port: TCP port; 0 picks a free one.

    Returns:
        ``(server, thread, port)``; call ``server.shutdown()`` to stop it. ``port`` is the bound one.
    """
    server, thread = start_http_server(port, addr=host, registry=registry)
    return server, thread, int(server.server_port)

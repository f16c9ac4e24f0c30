"""Envoy configs that call ``envoykit ratelimit serve`` (started by the ``ratelimit`` fixture)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tests.envoycfg import bootstrap, cluster, http_listener

ENVOYKIT = str(Path(sys.executable).parent / "envoykit")


def ratelimit_filter(
    domain: str, *, failure_mode_deny: bool = False, timeout_ms: int = 2000
) -> dict[str, Any]:
    """The HTTP ``envoy.filters.http.ratelimit`` filter calling the ``ratelimit`` cluster over gRPC."""
    return {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": domain,
            "failure_mode_deny": failure_mode_deny,
            "timeout": f"{timeout_ms / 1000}s",
            "rate_limit_service": {
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": "ratelimit"}},
            },
        },
    }


# Route rate_limits: descriptor (client = x-client header) and (path = :path).
RATE_LIMITS = [
    {"actions": [{"request_headers": {"header_name": "x-client", "descriptor_key": "client"}}]},
]


def rate_limited_route(upstream: str = "echo") -> dict[str, Any]:
    return {"match": {"prefix": "/"}, "route": {"cluster": upstream, "rate_limits": RATE_LIMITS}}


def envoy_config(
    listeners: list[tuple[int, bool]], rl_ports: list[int], upstream_port: int, domain: str = "web"
) -> dict[str, Any]:
    """One listener per ``(port, failure_mode_deny)``, all rate limited in ``domain``, proxying to echo."""
    ls = [
        http_listener(
            port,
            [rate_limited_route()],
            [ratelimit_filter(domain, failure_mode_deny=deny)],
            name=f"l{port}",
        )
        for port, deny in listeners
    ]
    rl = cluster("ratelimit", rl_ports[0], http2=True)
    rl["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in rl_ports
    ]
    return bootstrap(ls, [cluster("echo", upstream_port), rl])

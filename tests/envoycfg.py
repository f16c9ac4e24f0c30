"""Small builders for static Envoy bootstraps used by the tests (JSON form of the v3 protos)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from envoykit.core import free_port

ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def socket_address(port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def cluster(name: str, port: int, *, http2: bool = False, timeout_s: float = 1.0) -> dict[str, Any]:
    """A STATIC cluster with one loopback endpoint; ``http2`` for gRPC services."""
    c: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": f"{timeout_s}s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(port)}}]}],
        },
    }
    if http2:
        c["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return c


def route_to(cluster_name: str, prefix: str = "/", **extra: Any) -> dict[str, Any]:
    return {
        "match": {"prefix": prefix},
        "route": {"cluster": cluster_name, **extra.pop("route", {})},
        **extra,
    }


def direct_response(status: int = 200, body: str = "ok", prefix: str = "/") -> dict[str, Any]:
    return {
        "match": {"prefix": prefix},
        "direct_response": {"status": status, "body": {"inline_string": body}},
    }


def http_listener(
    port: int,
    routes: list[dict[str, Any]],
    http_filters: list[dict[str, Any]] | None = None,
    *,
    name: str = "ingress",
    transport_socket: dict[str, Any] | None = None,
    hcm_extra: dict[str, Any] | None = None,
    vhost_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An HTTP listener: HCM with ``http_filters`` (router appended) and one catch-all virtual host."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": name,
        "codec_type": "AUTO",
        "route_config": {
            "name": f"{name}_routes",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes, **(vhost_extra or {})}],
        },
        "http_filters": [*(http_filters or []), ROUTER],
        **(hcm_extra or {}),
    }
    chain: dict[str, Any] = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
    }
    if transport_socket:
        chain["transport_socket"] = transport_socket
    return {"name": name, "address": socket_address(port), "filter_chains": [chain]}


def bootstrap(listeners: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "admin": {"address": socket_address(0)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def shipped(path: Path, cluster_ports: dict[str, int]) -> tuple[dict[str, Any], int]:
    """A ready config of ``envoy/`` as shipped, with only its fixed ports moved to free ones.

    Returns the config (listener 0 on a free port, admin on port 0, each named cluster's one endpoint
    on ``cluster_ports[name]``) and the listener's port.

    Raises:
        KeyError: the config has a cluster ``cluster_ports`` does not name.
    """
    cfg = yaml.safe_load(path.read_text())
    port = free_port()
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = port
    cfg["admin"]["address"]["socket_address"]["port_value"] = 0
    for c in cfg["static_resources"]["clusters"]:
        ep = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ep["address"]["socket_address"]["port_value"] = cluster_ports[c["name"]]
    return cfg, port

"""Fixtures for authz tests: the authz server as a real process, and Envoy configs that call it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.envoycfg import bootstrap, cluster, http_listener, route_to
from tests.serverproc import ServerProcess, StartServer


@pytest.fixture
def authz_server(server_process: StartServer) -> Callable[..., ServerProcess]:
    """``authz_server(policy_dir, *extra)``: ``envoykit authz serve`` (tests/serverproc.py), ready when its
    gRPC health says SERVING; its decision log is ``srv.log_path.with_suffix(".decisions")``."""

    def start(policy_dir: Path, *extra: str) -> ServerProcess:
        return server_process(
            "authz", "--policy-dir", str(policy_dir), "--decision-log", "{log}.decisions", *extra, health=True
        )

    return start


def ext_authz_filter(cluster_name: str = "authz", **extra: Any) -> dict[str, Any]:
    """The ext_authz HTTP filter as envoy/authz.yaml configures it (gRPC, fail closed)."""
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "grpc_service": {"envoy_grpc": {"cluster_name": cluster_name}, "timeout": "1s"},
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "include_peer_certificate": True,
            "encode_raw_headers": True,
            **extra,
        },
    }


def authz_envoy_config(
    listen_port: int, upstream_port: int, authz_port: int, **filter_extra: Any
) -> dict[str, Any]:
    return bootstrap(
        [http_listener(listen_port, [route_to("echo")], [ext_authz_filter(**filter_extra)])],
        [cluster("echo", upstream_port), cluster("authz", authz_port, http2=True)],
    )

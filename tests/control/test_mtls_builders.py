"""Unit tests of the mTLS builders: message shapes, and Envoy accepting them (``envoy --mode validate``)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers the type)
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401  (registers the type)
    http_connection_manager_pb2,
)
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.message import Message

from envoykit.control.translate.tls import (
    TLS_INSPECTOR,
    inbound_filter_chains,
    inbound_listener_filters,
    inbound_tls_context,
    outbound_tls_context,
    tls_transport_socket,
)
from envoykit.core import free_port, validate_envoy_config
from envoykit.core.spiffe import InvalidSpiffeId
from tests.envoycfg import cluster, http_listener, route_to

TD = "mesh.local"


def as_dict(msg: Message) -> dict[str, Any]:
    return MessageToDict(msg, preserving_proto_field_name=True)


def test_inbound_context_requires_mesh_client_certificates() -> None:
    ctx = as_dict(inbound_tls_context(TD))
    assert ctx["require_client_certificate"] is True
    common = ctx["common_tls_context"]
    ads = {"ads": {}, "resource_api_version": "V3"}
    assert common["tls_certificate_sds_secret_configs"] == [{"name": "default", "sds_config": ads}]
    combined = common["combined_validation_context"]
    assert combined["validation_context_sds_secret_config"] == {"name": "ROOTCA", "sds_config": ads}
    assert combined["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"prefix": "spiffe://mesh.local/"}}
    ]
    with pytest.raises(InvalidSpiffeId):
        inbound_tls_context("Bad Domain")


def test_outbound_context_verifies_the_exact_server_id() -> None:
    sid = "spiffe://mesh.local/ns/default/sa/b"
    ctx = as_dict(outbound_tls_context(sid, sni="b.default", alpn=("h2",)))
    assert ctx["sni"] == "b.default"
    common = ctx["common_tls_context"]
    assert common["alpn_protocols"] == ["h2"]
    assert common["tls_certificate_sds_secret_configs"][0]["name"] == "default"
    matchers = common["combined_validation_context"]["default_validation_context"][
        "match_typed_subject_alt_names"
    ]
    assert matchers == [{"san_type": "URI", "matcher": {"exact": sid}}]
    socket = tls_transport_socket(outbound_tls_context(sid))
    assert socket.name == "envoy.transport_sockets.tls"
    assert socket.typed_config.type_url.endswith(
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    )
    with pytest.raises(InvalidSpiffeId):
        outbound_tls_context("spiffe://mesh.local/ns/default/sa/")


def test_modes_build_the_right_chains() -> None:
    hcm = http_listener(1, [route_to("x")])["filter_chains"][0]["filters"][0]
    f = ParseDict(hcm, listener_components_pb2.Filter())
    strict = inbound_filter_chains([f], TD, "STRICT")
    assert len(strict) == 1 and strict[0].transport_socket.name == "envoy.transport_sockets.tls"
    assert not strict[0].HasField("filter_chain_match")
    permissive = inbound_filter_chains([f], TD, "PERMISSIVE")
    assert [c.filter_chain_match.transport_protocol for c in permissive] == ["tls", ""]
    assert not permissive[1].HasField("transport_socket")
    assert [lf.name for lf in inbound_listener_filters("PERMISSIVE")] == [TLS_INSPECTOR]
    assert inbound_listener_filters("STRICT") == []
    disabled = inbound_filter_chains([f], TD, "DISABLE")
    assert len(disabled) == 1 and not disabled[0].HasField("transport_socket")
    with pytest.raises(ValueError, match="unknown mTLS mode"):
        inbound_filter_chains([f], TD, "OPTIONAL")  # type: ignore[arg-type]


@pytest.mark.envoy
@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE", "DISABLE"])
def test_envoy_accepts_the_built_listener(mode: str) -> None:
    listener = http_listener(free_port(), [route_to("b")])
    f = ParseDict(listener["filter_chains"][0]["filters"][0], listener_components_pb2.Filter())
    listener["filter_chains"] = [as_dict(c) for c in inbound_filter_chains([f], TD, mode)]  # type: ignore[arg-type]
    listener["listener_filters"] = [as_dict(lf) for lf in inbound_listener_filters(mode)]  # type: ignore[arg-type]
    # A static cluster using SDS over ADS crashes Envoy (envoyproxy/envoy#15517, #19618): clusters with
    # mesh mTLS come over CDS, and are tested through a running Envoy in test_mtls_envoy.py.
    b = cluster("b", free_port())
    cfg = {
        "node": {"id": "n", "cluster": "c"},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
            }
        },
        "static_resources": {
            "listeners": [listener],
            "clusters": [b, cluster("xds", free_port(), http2=True)],
        },
    }
    assert "OK" in validate_envoy_config(cfg)


def test_spiffe_mesh_tls_follows_the_mesh_model() -> None:
    from envoykit.control.model.mesh import Mesh
    from envoykit.control.translate.mtls import SpiffeMeshTls

    mesh = Mesh.model_validate(
        {
            "trust_domain": "corp.example",
            "namespace": "shop",
            "services": [
                {
                    "name": "orders",
                    "protocol": "grpc",
                    "service_account": "orders-sa",
                    "workloads": [{"name": "orders-v1", "address": "127.0.0.1:1"}],
                },
                {"name": "web", "workloads": [{"name": "web-v1", "address": "127.0.0.1:2"}]},
            ],
        }
    )
    orders, web = mesh.services
    tls = SpiffeMeshTls()

    def unpack(socket: Any, cls: Any) -> dict[str, Any]:
        msg = cls()
        assert socket.typed_config.Unpack(msg)
        return as_dict(msg)

    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    up = unpack(tls.upstream(mesh, orders), tls_pb2.UpstreamTlsContext)["common_tls_context"]
    assert up["alpn_protocols"] == ["h2"]
    assert up["combined_validation_context"]["default_validation_context"][
        "match_typed_subject_alt_names"
    ] == [{"san_type": "URI", "matcher": {"exact": "spiffe://corp.example/ns/shop/sa/orders-sa"}}]
    up_web = unpack(tls.upstream(mesh, web), tls_pb2.UpstreamTlsContext)["common_tls_context"]
    assert "alpn_protocols" not in up_web  # HTTP/1.1 towards an http service: no ALPN needed
    assert "spiffe://corp.example/ns/shop/sa/web" in str(up_web)
    down = unpack(tls.downstream(mesh, web), tls_pb2.DownstreamTlsContext)
    assert down["require_client_certificate"] is True
    assert "spiffe://corp.example/" in str(down["common_tls_context"]["combined_validation_context"])

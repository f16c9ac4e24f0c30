"""Telemetry labels from attributes (no Envoy): reporter, peers, principals, cardinality bound."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from envoykit.core.peer import format_peer, parse_peer, spiffe_parts
from envoykit.extproc import LABELS, Exchange, Telemetry
from envoykit.extproc.headers import Headers

ME = {"workload": "backend-v1", "app": "backend", "version": "v1", "namespace": "shop"}


def exchange(
    attrs: dict[str, object], response_headers: list[tuple[str, str]] | None = None, /, **md: str
) -> Exchange:
    ex = Exchange(md)
    ex.attributes = {**{f"xds.node.metadata.{k}": v for k, v in ME.items()}, **attrs}
    ex.response_headers = Headers.of(response_headers or [(":status", "200")])
    return ex


def labels(t: Telemetry, ex: Exchange) -> dict[str, str]:
    return dict(zip(LABELS, t.labels(ex), strict=True))


def test_inbound_mtls_takes_principal_from_certificate_and_peer_from_header() -> None:
    t = Telemetry(CollectorRegistry())
    peer = format_peer(
        {"workload": "fe-v1", "app": "fe", "version": "v1", "principal": "spiffe://x/ns/a/sa/liar"}
    )
    ex = exchange(
        {
            "xds.listener_direction": 1.0,
            "connection.mtls": True,
            "connection.uri_san_peer_certificate": "spiffe://td/ns/web/sa/fe",
            "request.headers['x-envoykit-peer']": peer,
            "request.headers['content-type']": "application/grpc",
            "response.code": 200.0,
            "request.protocol": "HTTP/2",
        }
    )
    ex.response_trailers = Headers.of([("grpc-status", "7")])
    got = labels(t, ex)
    assert got["reporter"] == "destination"
    assert got["source_principal"] == "spiffe://td/ns/web/sa/fe"  # never the header's claim
    assert got["source_workload_namespace"] == "web"  # from the SPIFFE ID when the header has none
    assert (got["source_workload"], got["destination_workload"]) == ("fe-v1", "backend-v1")
    assert got["connection_security_policy"] == "mutual_tls"
    assert (got["request_protocol"], got["grpc_response_status"]) == ("grpc", "7")


def test_outbound_reads_the_response_peer_header_and_falls_back_to_cluster() -> None:
    t = Telemetry(CollectorRegistry())
    ex = exchange(
        {"xds.listener_direction": 2.0, "xds.cluster_name": "payments", "response.code": 503.0},
        [(":status", "503"), ("x-envoykit-peer", "workload=pay-v3,app=pay,version=v3")],
    )
    got = labels(t, ex)
    assert got["reporter"] == "source"
    assert (got["source_workload"], got["destination_workload"], got["destination_service"]) == (
        "backend-v1",
        "pay-v3",
        "pay",
    )
    assert got["connection_security_policy"] == "unknown"
    ex2 = exchange({"xds.listener_direction": 2.0, "xds.cluster_name": "payments"}, [(":status", "200")])
    assert labels(t, ex2)["destination_service"] == "payments"


def test_reporter_from_grpc_metadata_when_direction_unspecified() -> None:
    t = Telemetry(CollectorRegistry())
    assert labels(t, exchange({}, **{"x-envoykit-reporter": "source"}))["reporter"] == "source"
    assert labels(t, exchange({"xds.listener_direction": 0.0}))["reporter"] == "unknown"
    assert labels(t, exchange({}))["response_code"] == "200"  # from :status when the attribute is absent


def test_cardinality_is_bounded() -> None:
    t = Telemetry(CollectorRegistry(), max_values=3)
    seen = set()
    for i in range(10):
        ex = exchange({"xds.listener_direction": 1.0, "request.headers['x-envoykit-peer']": f"workload=w{i}"})
        seen.add(labels(t, ex)["source_workload"])
    assert seen == {"w0", "w1", "w2", "unknown"}


def test_peer_and_spiffe_parsing() -> None:
    assert parse_peer("workload=a, app=b,junk,evil=x,version=") == {"workload": "a", "app": "b"}
    assert parse_peer(format_peer({"app": "z", "namespace": "n"})) == {"app": "z", "namespace": "n"}
    assert spiffe_parts("spiffe://td/ns/shop/sa/web") == ("shop", "web")
    assert spiffe_parts("https://nope") == ("", "")

"""Telemetry through real Envoys: exact counts, labels, sizes and latency buckets on /metrics."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from envoykit.core import AioGrpcServer, free_port
from envoykit.core.peer import format_peer
from tests.certs import Pair, TestCA
from tests.envoycfg import bootstrap, cluster, http_listener, route_to
from tests.extproc.helpers import telemetry_filter
from tests.extproc.proc import start_extproc
from tests.serverproc import ServerProcess, StartServer
from tests.telemetry.helpers import BACKEND, FRONTEND

TELEMETRY_FILTER = telemetry_filter()


@pytest.fixture
def server(server_process: StartServer) -> Iterator[ServerProcess]:
    with start_extproc(server_process) as srv:
        yield srv


def samples(metrics_text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for fam in text_string_to_metric_families(metrics_text):
        for s in fam.samples:
            if s.name == name:
                out.append((s.labels, s.value))
    return out


def total(metrics_text: str, name: str, **match: str) -> float:
    return sum(v for lbl, v in samples(metrics_text, name) if all(lbl.get(k) == x for k, x in match.items()))


def wait_count(srv: ServerProcess, expected: int, timeout: float = 15.0) -> str:
    """Scrape until istio_requests_total adds up to ``expected`` (messages arrive asynchronously)."""
    deadline = time.monotonic() + timeout
    text = srv.metrics()
    while total(text, "istio_requests_total") < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        text = srv.metrics()
    time.sleep(0.3)  # anything extra would show up now
    return srv.metrics()


def sidecars(echo_port: int, extproc_port: int) -> tuple[dict[str, Any], dict[str, Any], int]:
    """A client-side (OUTBOUND) Envoy in front of a server-side (INBOUND) Envoy in front of echo."""
    out_port, in_port = free_port(), free_port()
    inbound = http_listener(
        in_port,
        [route_to("app", route={"timeout": "10s"})],
        [TELEMETRY_FILTER],
        name="inbound",
        vhost_extra={
            "response_headers_to_add": [{"header": {"key": "x-envoykit-peer", "value": format_peer(BACKEND)}}]
        },
    )
    inbound["traffic_direction"] = "INBOUND"
    outbound = http_listener(
        out_port,
        [route_to("backend", route={"timeout": "10s"})],
        [TELEMETRY_FILTER],
        name="outbound",
        vhost_extra={
            "request_headers_to_add": [{"header": {"key": "x-envoykit-peer", "value": format_peer(FRONTEND)}}]
        },
    )
    outbound["traffic_direction"] = "OUTBOUND"
    access_log = {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": "{path}",
            "log_format": {"text_format_source": {"inline_string": "%CEL(request.total_size)%\n"}},
        },
    }
    extproc = cluster("extproc", extproc_port, http2=True)
    server_cfg = bootstrap([inbound], [cluster("app", echo_port), extproc])
    server_cfg["node"] = {"id": "backend-v2", "cluster": "backend", "metadata": BACKEND}
    client_cfg = bootstrap([outbound], [cluster("backend", in_port), copy.deepcopy(extproc)])
    client_cfg["node"] = {"id": "frontend-v1", "cluster": "frontend", "metadata": FRONTEND}
    for cfg in (server_cfg, client_cfg):
        lst = cfg["static_resources"]["listeners"][0]
        hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["access_log"] = [copy.deepcopy(access_log)]
    return client_cfg, server_cfg, out_port


def test_counts_labels_sizes_and_buckets_are_exact(envoy, echo, server, tmp_path) -> None:
    client_cfg, server_cfg, port = sidecars(echo.port, server.port)
    for name, cfg in (("server", server_cfg), ("client", client_cfg)):
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["access_log"][0]["typed_config"]["path"] = str(tmp_path / f"{name}.access.log")
    envoy(server_cfg, name="backend-sidecar")
    envoy(client_cfg, name="frontend-sidecar")

    plan = [  # (count, status, response body bytes, delay ms, request body bytes)
        (7, 200, 50, 0, 0),
        (4, 503, 2000, 0, 300),
        (3, 200, 10, 300, 0),
    ]
    n = sum(p[0] for p in plan)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for count, status, size, delay, req_size in plan:
            for _ in range(count):
                r = c.post(
                    "/items",
                    content=b"q" * req_size,
                    headers={
                        "x-echo-status": str(status),
                        "x-echo-body-size": str(size),
                        "x-echo-delay-ms": str(delay),
                    },
                )
                assert r.status_code == status and len(r.content) == size

    text = wait_count(server, 2 * n)
    assert total(text, "istio_requests_total") == 2 * n  # one per reporter, nothing else
    for reporter in ("source", "destination"):
        common = {
            "reporter": reporter,
            "source_workload": "frontend-v1",
            "source_app": "frontend",
            "source_version": "v1",
            "source_workload_namespace": "shop",
            "destination_workload": "backend-v2",
            "destination_app": "backend",
            "destination_version": "v2",
            "destination_workload_namespace": "shop",
            "destination_service": "backend",
            "request_protocol": "http",
            "grpc_response_status": "",
        }
        assert total(text, "istio_requests_total", **common) == n
        assert total(text, "istio_requests_total", response_code="200", **common) == 10
        assert total(text, "istio_requests_total", response_code="503", **common) == 4
        # response sizes: 50 or 10 (+ headers, under 450 B) ≤ 500, 2000 (+ headers) in (1000, 2500]
        assert total(text, "istio_response_bytes_bucket", le="250.0", **common) == 0
        assert total(text, "istio_response_bytes_bucket", le="500.0", **common) == 10
        assert total(text, "istio_response_bytes_bucket", le="1000.0", **common) == 10
        assert total(text, "istio_response_bytes_bucket", le="2500.0", **common) == n
        body_sum = 7 * 50 + 4 * 2000 + 3 * 10
        rb_sum = total(text, "istio_response_bytes_sum", **common)
        assert body_sum + n * 60 < rb_sum < body_sum + n * 450  # headers count too
        # durations: the 3 delayed requests are above 250 ms, all below 10 s (slack for a loaded host)
        assert total(text, "istio_request_duration_milliseconds_bucket", le="250.0", **common) == n - 3
        assert total(text, "istio_request_duration_milliseconds_bucket", le="10000.0", **common) == n
        assert total(text, "istio_request_duration_milliseconds_count", **common) == n

    # request sizes equal Envoy's own request.total_size, byte for byte
    for name, reporter in (("server", "destination"), ("client", "source")):
        log = tmp_path / f"{name}.access.log"
        deadline = time.monotonic() + 15  # Envoy flushes access logs about once a second
        while len(log.read_text().split()) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        logged = [float(x) for x in log.read_text().split()]
        assert len(logged) == n
        assert total(text, "istio_request_bytes_sum", reporter=reporter) == sum(logged)
    assert total(text, "istio_requests_total", reporter="source", connection_security_policy="unknown") == n
    assert total(text, "istio_requests_total", reporter="destination", connection_security_policy="none") == n


def tls_socket(kind: str, ca: Path, pair: Pair) -> dict[str, Any]:
    common = {
        "tls_certificates": [
            {"certificate_chain": {"filename": str(pair.cert)}, "private_key": {"filename": str(pair.key)}}
        ],
        "validation_context": {"trusted_ca": {"filename": str(ca)}},
    }
    if kind == "downstream":
        ctx = {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": common,
        }
    else:
        ctx = {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": common,
        }
    return {"name": "envoy.transport_sockets.tls", "typed_config": ctx}


def test_mtls_principals_come_from_the_certificates(envoy, echo, server, tmp_path) -> None:
    ca = TestCA(tmp_path / "pki")
    front = ca.issue("frontend", uris=[FRONTEND["principal"]])
    back = ca.issue("backend", uris=[BACKEND["principal"]], server=True)
    client_cfg, server_cfg, port = sidecars(echo.port, server.port)
    for cfg in (server_cfg, client_cfg):
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["access_log"] = []
    server_cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = tls_socket(
        "downstream", ca.path, back
    )
    client_cfg["static_resources"]["clusters"][0]["transport_socket"] = tls_socket("upstream", ca.path, front)
    # peer headers without principals: those must come from the certificates
    for cfg, key, meta in (
        (server_cfg, "response_headers_to_add", BACKEND),
        (client_cfg, "request_headers_to_add", FRONTEND),
    ):
        vhost = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        vhost = vhost["route_config"]["virtual_hosts"][0]
        no_principal = {k: v for k, v in meta.items() if k != "principal"}
        vhost[key] = [{"header": {"key": "x-envoykit-peer", "value": format_peer(no_principal)}}]
    envoy(server_cfg, name="backend-sidecar")
    envoy(client_cfg, name="frontend-sidecar")
    for _ in range(3):
        assert httpx.get(f"http://127.0.0.1:{port}/secure").status_code == 200
    text = wait_count(server, 6)
    assert total(text, "istio_requests_total") == 6
    inbound = {
        "reporter": "destination",
        "source_principal": FRONTEND["principal"],
        "destination_principal": BACKEND["principal"],
        "connection_security_policy": "mutual_tls",
        "source_workload": "frontend-v1",
    }
    assert total(text, "istio_requests_total", **inbound) == 3
    outbound = {
        "reporter": "source",
        "source_principal": FRONTEND["principal"],
        "destination_principal": BACKEND["principal"],  # from the upstream certificate
        "destination_workload": "backend-v2",
    }
    assert total(text, "istio_requests_total", **outbound) == 3


def test_grpc_requests_get_protocol_and_status_from_the_trailers(envoy, server) -> None:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def start_upstream() -> tuple[AioGrpcServer, int]:
        srv = AioGrpcServer("grpc-upstream", "127.0.0.1:0")  # serves grpc.health.v1.Health
        return srv, await srv.start()

    upstream, up_port = asyncio.run_coroutine_threadsafe(start_upstream(), loop).result(10)
    try:
        port = free_port()
        lst = http_listener(port, [route_to("app")], [TELEMETRY_FILTER], name="inbound")
        lst["traffic_direction"] = "INBOUND"
        cfg = bootstrap(
            [lst], [cluster("app", up_port, http2=True), cluster("extproc", server.port, http2=True)]
        )
        cfg["node"] = {"id": "backend-v2", "cluster": "backend", "metadata": BACKEND}
        envoy(cfg)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            for _ in range(4):
                stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as err:
                    stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
        text = wait_count(server, 7)
    finally:
        asyncio.run_coroutine_threadsafe(upstream.stop(0.1), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
    assert total(text, "istio_requests_total") == 7
    grpc_labels = {"reporter": "destination", "request_protocol": "grpc", "response_code": "200"}
    assert total(text, "istio_requests_total", grpc_response_status="0", **grpc_labels) == 4
    assert total(text, "istio_requests_total", grpc_response_status="5", **grpc_labels) == 3


def test_streamed_response_bodies_are_counted_chunk_by_chunk(envoy, echo, server) -> None:
    port = free_port()
    streamed = copy.deepcopy(TELEMETRY_FILTER)
    streamed["typed_config"]["processing_mode"]["response_body_mode"] = "STREAMED"
    lst = http_listener(port, [route_to("app")], [streamed], name="inbound")
    lst["traffic_direction"] = "INBOUND"
    cfg = bootstrap([lst], [cluster("app", echo.port), cluster("extproc", server.port, http2=True)])
    cfg["node"] = {"id": "backend-v2", "cluster": "backend", "metadata": BACKEND}
    envoy(cfg)
    for size in (5000, 5000, 200000):
        r = httpx.get(f"http://127.0.0.1:{port}/", headers={"x-echo-body-size": str(size)})
        assert len(r.content) == size
    text = wait_count(server, 3)
    assert total(text, "istio_requests_total") == 3
    assert total(text, "istio_response_bytes_bucket", le="5000.0") == 0  # body + headers > 5000
    assert total(text, "istio_response_bytes_bucket", le="10000.0") == 2
    assert total(text, "istio_response_bytes_bucket", le="300000.0") == 3
    assert 210000 < total(text, "istio_response_bytes_sum") < 210000 + 3 * 400

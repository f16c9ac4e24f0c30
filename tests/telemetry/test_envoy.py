"""Telemetry through real Envoys: exact counts and labels on both reporters, JSON lines, gRPC, TCP."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from envoykit.core import AioGrpcServer, free_port
from tests.certs import TestCA
from tests.envoycfg import bootstrap, cluster, http_listener, route_to
from tests.extproc.test_telemetry_envoy import tls_socket
from tests.serverproc import StartServer
from tests.telemetry.helpers import (
    BACKEND,
    BACKEND_SERVICE,
    FRONTEND,
    TcpEcho,
    access_logs,
    assert_http_plan_metrics,
    http_sidecars,
    read_lines,
    send_http_plan,
    start_telemetry,
    tcp_exchange,
    tcp_listener,
    total,
    wait_total,
)


def test_http_requests_counted_exactly_on_both_reporters_with_istio_labels(
    envoy, echo, tmp_path: Path, server_process: StartServer
) -> None:
    log = tmp_path / "access.log"
    with start_telemetry(server_process, log) as srv:
        ca = TestCA(tmp_path / "pki")
        front = ca.issue("frontend", uris=[FRONTEND["principal"]])
        back = ca.issue("backend", uris=[BACKEND["principal"]], server=True)
        client_cfg, server_cfg, port = http_sidecars(echo.port, srv.port)
        server_cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = tls_socket(
            "downstream", ca.path, back
        )
        client_cfg["static_resources"]["clusters"][0]["transport_socket"] = tls_socket(
            "upstream", ca.path, front
        )
        envoy(server_cfg, name="backend-sidecar")
        envoy(client_cfg, name="frontend-sidecar")

        n_app, n_down = send_http_plan(port)

        text = wait_total(srv, "istio_requests_total", 2 * n_app + n_down)
    assert_http_plan_metrics(text, n_app, n_down)

    lines = read_lines(log)
    assert len(lines) == 2 * n_app + n_down
    by_reporter = Counter(x["reporter"] for x in lines)
    assert by_reporter == {"source": n_app + n_down, "destination": n_app}
    for x in lines:
        assert x["@timestamp"].endswith("Z") and x["request_id"]
        assert x["kind"] == "http" and x["method"] in ("POST", "GET")
        assert x["source_workload"] == "frontend-v1" and x["source_principal"] == FRONTEND["principal"]
    app_lines = [x for x in lines if x["path"] == "/items"]
    assert all(x["destination_principal"] == BACKEND["principal"] for x in app_lines)
    assert all(x["destination_service"] == BACKEND_SERVICE for x in app_lines)
    assert Counter(x["status"] for x in app_lines) == {200: 24, 404: 10, 503: 8}
    assert all(x["request_bytes"] > 100 and x["response_bytes"] > 0 for x in app_lines)
    assert sum(1 for x in app_lines if x["duration_ms"] >= 300) == 6
    assert [x["response_flags"] for x in lines if x["path"] == "/down"] == ["UF"] * n_down
    for reporter in ("source", "destination"):  # one line per request on each side
        ids = [x["request_id"] for x in lines if x["reporter"] == reporter]
        assert len(set(ids)) == len(ids)


def test_grpc_status_comes_from_the_trailers(envoy, tmp_path: Path, server_process: StartServer) -> None:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def start_upstream() -> tuple[AioGrpcServer, int]:
        srv = AioGrpcServer("grpc-upstream", "127.0.0.1:0")  # serves grpc.health.v1.Health
        return srv, await srv.start()

    upstream, up_port = asyncio.run_coroutine_threadsafe(start_upstream(), loop).result(10)
    try:
        with start_telemetry(server_process, tmp_path / "access.log") as srv:
            port = free_port()
            lst = http_listener(
                port,
                [route_to("app")],
                name="inbound",
                hcm_extra={"access_log": access_logs(srv.port, "destination")},
            )
            cfg = bootstrap(
                [lst],
                [cluster("app", up_port, http2=True), cluster("envoykit_telemetry", srv.port, http2=True)],
            )
            cfg["node"] = {"id": "sidecar~backend-v2", "cluster": "backend", "metadata": BACKEND}
            envoy(cfg)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = health_pb2_grpc.HealthStub(ch)
                for _ in range(4):
                    stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                for _ in range(3):
                    try:
                        stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
                    except grpc.RpcError as err:
                        assert err.code() == grpc.StatusCode.NOT_FOUND
            text = wait_total(srv, "istio_requests_total", 7)
    finally:
        asyncio.run_coroutine_threadsafe(upstream.stop(0.1), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
    assert total(text, "istio_requests_total") == 7
    grpc_labels = {"reporter": "destination", "request_protocol": "grpc", "response_code": "200"}
    assert total(text, "istio_requests_total", grpc_response_status="0", **grpc_labels) == 4
    assert total(text, "istio_requests_total", grpc_response_status="5", **grpc_labels) == 3
    assert total(text, "istio_requests_total", source_workload="unknown") == 7  # no peer header sent


def test_tcp_bytes_and_connections_on_both_reporters(
    envoy, tmp_path: Path, server_process: StartServer
) -> None:
    with TcpEcho() as app, start_telemetry(server_process, tmp_path / "access.log") as srv:
        in_port, out_port = free_port(), free_port()
        als = cluster("envoykit_telemetry", srv.port, http2=True)
        server_cfg = bootstrap(
            [tcp_listener("inbound", in_port, "inbound|9000||", srv.port, "destination")],
            [cluster("inbound|9000||", app.port), als],
        )
        server_cfg["node"] = {"id": "sidecar~db-v1", "cluster": "db", "metadata": {**BACKEND, "app": "db"}}
        client_cfg = bootstrap(
            [tcp_listener("outbound_tcp|db", out_port, "outbound|9000||db.shop", srv.port, "source")],
            [cluster("outbound|9000||db.shop", in_port), dict(als)],
        )
        client_cfg["node"] = {"id": "sidecar~frontend-v1", "cluster": "frontend", "metadata": FRONTEND}
        envoy(server_cfg, name="db-sidecar")
        envoy(client_cfg, name="frontend-sidecar")
        sizes = [10, 2000, 70000, 5]
        for size in sizes:
            assert tcp_exchange(out_port, b"x" * size) == b"x" * size
        text = wait_total(srv, "istio_tcp_connections_closed_total", 2 * len(sizes))
        lines = read_lines(tmp_path / "access.log")
    for reporter in ("source", "destination"):
        labels = {
            "reporter": reporter,
            "request_protocol": "tcp",
            "destination_service": "db.shop.svc.cluster.local",
            "source_workload": "frontend-v1" if reporter == "source" else "unknown",
        }
        assert total(text, "istio_tcp_connections_opened_total", **labels) == len(sizes)
        assert total(text, "istio_tcp_connections_closed_total", **labels) == len(sizes)
        assert total(text, "istio_tcp_received_bytes_total", **labels) == sum(sizes)
        assert total(text, "istio_tcp_sent_bytes_total", **labels) == sum(sizes)
    assert sorted(
        x["received_bytes"] for x in lines if x["kind"] == "tcp" and x["reporter"] == "source"
    ) == sorted(sizes)

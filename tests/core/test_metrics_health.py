"""core: the metrics port — Prometheus /metrics, liveness and readiness probes that fail while draining
or while a readiness check fails, 404 elsewhere, and an exclusive bind."""

from __future__ import annotations

import httpx
import pytest

from envoykit.core import AddressInUse, Health, SyncGrpcServer, start_metrics_server


def _get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5, trust_env=False)


def test_probes_follow_draining_and_checks() -> None:
    health = Health()
    problem: list[str] = []
    health.add_check("store", lambda: problem[0] if problem else None)
    server, _, port = start_metrics_server(0, health=health)
    try:
        assert [_get(port, p).status_code for p in ("/healthz", "/readyz", "/healthcheck")] == [200] * 3
        m = _get(port, "/metrics")
        assert m.status_code == 200 and "# TYPE" in m.text
        for path in ("/", "/json", "/healthcheck/x", "/metricsx"):
            assert _get(port, path).status_code == 404, path
        problem.append("redis: connection refused")
        r = _get(port, "/healthcheck")
        assert r.status_code == 503 and r.text == "store: redis: connection refused\n"
        assert _get(port, "/readyz").status_code == 503
        assert _get(port, "/healthz").status_code == 200  # alive: a store outage is no reason to restart
        problem.clear()
        health.draining = True
        assert [_get(port, p).text for p in ("/healthz", "/readyz", "/healthcheck")] == ["draining\n"] * 3
        assert _get(port, "/metrics").status_code == 200
        with pytest.raises(AddressInUse, match=f"address in use: 127.0.0.1:{port}"):
            start_metrics_server(port)
    finally:
        server.shutdown()


def test_a_check_that_raises_means_not_ready() -> None:
    health = Health()
    health.add_check("config", lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    assert health.ready() == "config: ZeroDivisionError: division by zero"


def test_grpc_server_serves_probes_and_drains_them() -> None:
    srv = SyncGrpcServer("probe-test", "127.0.0.1:0", metrics_port=0)
    srv.start()
    assert srv.metrics_port is not None
    port = srv.metrics_port
    assert _get(port, "/readyz").status_code == 200
    srv.health.add_check("store", lambda: "down")
    assert _get(port, "/readyz").text == "store: down\n"
    srv.stop(0)
    assert srv.health.live() == "draining"
    with pytest.raises(httpx.ConnectError):  # the port closes once drained
        _get(port, "/healthz")

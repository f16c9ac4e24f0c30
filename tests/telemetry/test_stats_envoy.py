"""The stats transport through real Envoys: each Envoy counts into its own stats
(``envoy.access_loggers.stats``), the server reads them from the admins and labels them as Istio does;
Envoy's file logger writes the JSON lines. Exact counts on both reporters, a server restart mid-traffic
loses and doubles nothing, and a label set past the scope's bound shows as a gap."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from envoykit.core import free_port
from tests.certs import TestCA
from tests.extproc.test_telemetry_envoy import tls_socket
from tests.serverproc import ServerProcess, StartServer
from tests.telemetry.helpers import (
    BACKEND,
    BACKEND_ID,
    FRONTEND,
    FRONTEND_ID,
    assert_http_plan_metrics,
    http_sidecars,
    read_lines,
    send_http_plan,
    start_telemetry,
    total,
    wait_total,
)

#: Envoy writes its file loggers' buffers this often (its default is 10 s; envoykit up sets 1 s)
FLUSH = ["--file-flush-interval-msec", "500"]


def _mtls_sidecars(tmp_path: Path, app_port: int, als_port: int, **kw: Any) -> tuple[dict, dict, int, tuple]:
    admins = (free_port(), free_port())
    ca = TestCA(tmp_path / "pki")
    front = ca.issue("frontend", uris=[FRONTEND["principal"]])
    back = ca.issue("backend", uris=[BACKEND["principal"]], server=True)
    client_cfg, server_cfg, port = http_sidecars(
        app_port, als_port, admin_ports=admins, transport="stats", **kw
    )
    server_cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = tls_socket(
        "downstream", ca.path, back
    )
    client_cfg["static_resources"]["clusters"][0]["transport_socket"] = tls_socket("upstream", ca.path, front)
    for cfg in (client_cfg, server_cfg):
        cfg["stats_flush_interval"] = "1s"  # histograms merged each second (Envoy's default: 5 s)
    return client_cfg, server_cfg, port, admins


def _admin_args(admins: tuple[int, ...]) -> list[str]:
    return [a for p in admins for a in ("--envoy-admin", f"http://127.0.0.1:{p}")]


def _wait_lines(path: Path, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    lines = read_lines(path)
    while len(lines) < n and time.monotonic() < deadline:
        time.sleep(0.2)
        lines = read_lines(path)
    time.sleep(1.0)  # Envoy flushes its file buffer every 0.5 s (FLUSH): nothing more may come
    return read_lines(path)


def test_envoy_counts_every_request_on_both_reporters_and_writes_json_lines(
    envoy, echo, tmp_path: Path, server_process: StartServer
) -> None:
    als_port = free_port()  # TCP only (none here): nothing listens, nothing is needed
    json_log = tmp_path / "envoy-{node}.json"
    client_cfg, server_cfg, port, admins = _mtls_sidecars(
        tmp_path, echo.port, als_port, json_log=str(json_log)
    )
    envoy(server_cfg, name="backend-sidecar", extra_args=FLUSH)
    envoy(client_cfg, name="frontend-sidecar", extra_args=FLUSH)
    srv = start_telemetry(server_process, None, *_admin_args(admins))

    n_app, n_down = send_http_plan(port)

    # every figure comes from Envoy's histograms, merged at its stats flush
    text = wait_total(srv, "istio_requests_total", 2 * n_app + n_down)
    assert_http_plan_metrics(text, n_app, n_down)
    # Envoy's own request counts beside them: no gap
    assert total(text, "envoykit_telemetry_envoy_requests_total", reporter="destination") == n_app
    assert total(text, "envoykit_telemetry_envoy_requests_total", reporter="source") == n_app + n_down

    inbound = _wait_lines(Path(str(json_log).replace("{node}", BACKEND_ID)), n_app)
    outbound = _wait_lines(Path(str(json_log).replace("{node}", FRONTEND_ID)), n_app + n_down)
    assert len(inbound) == n_app and len(outbound) == n_app + n_down
    for x in inbound + outbound:
        assert x["@timestamp"].endswith("Z") and x["request_id"] and x["kind"] == "http"
        assert x["method"] in ("POST", "GET") and isinstance(x["status"], int)
    assert {x["reporter"] for x in inbound} == {"destination"}
    assert all(x["source_principal"] == FRONTEND["principal"] for x in inbound)
    assert all("workload=frontend-v1" in x["source_peer"] for x in inbound)
    assert all(x["destination_workload"] == "backend-v2" for x in inbound)
    assert all(x["source_workload"] == "frontend-v1" for x in outbound)
    app = [x for x in outbound if x["path"] == "/items"]
    assert all(x["destination_principal"] == BACKEND["principal"] for x in app)
    assert Counter(x["status"] for x in inbound) == {200: 12, 404: 5, 503: 4}
    assert Counter(x["status"] for x in app) == {200: 12, 404: 5, 503: 4}
    assert all(x["request_bytes"] > 100 and x["response_bytes"] > 0 for x in app)
    assert sum(1 for x in inbound if x["duration_ms"] >= 300) == 3
    assert [x["response_flags"] for x in outbound if x["path"] == "/down"] == ["UF"] * n_down
    ids = [x["request_id"] for x in inbound]
    assert len(set(ids)) == len(ids)


def test_server_restart_mid_traffic_loses_and_doubles_nothing(
    envoy, echo, tmp_path: Path, server_process: StartServer
) -> None:
    client_cfg, server_cfg, port, admins = _mtls_sidecars(tmp_path, echo.port, free_port())
    envoy(server_cfg, name="backend-sidecar", extra_args=FLUSH)
    envoy(client_cfg, name="frontend-sidecar", extra_args=FLUSH)
    args = ["--log-level", "warning", *_admin_args(admins)]
    srv = ServerProcess("telemetry", args, tmp_path).start()
    sent = 0
    stop = threading.Event()

    def traffic() -> None:
        nonlocal sent
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            while not stop.is_set():
                assert c.get("/items").status_code == 200
                sent += 1

    t = threading.Thread(target=traffic)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while total(srv.metrics(), "istio_requests_total") == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert total(srv.metrics(), "istio_requests_total") > 0
        srv.stop()  # down mid-traffic: Envoy keeps counting
        time.sleep(1.0)
        srv = ServerProcess("telemetry", args, tmp_path, port=srv.port, metrics_port=srv.metrics_port).start()
        time.sleep(1.5)
    finally:
        stop.set()
        t.join()
        try:
            text = wait_total(srv, "istio_requests_total", 2 * sent)
            envoy_counts = total(text, "envoykit_telemetry_envoy_requests_total")
            up = [v for lbl, v in _samples(text, "envoykit_telemetry_envoy_up")]
        finally:
            srv.stop()
    assert sent > 0
    assert total(text, "istio_requests_total", reporter="destination") == sent
    assert total(text, "istio_requests_total", reporter="source") == sent
    assert envoy_counts == 2 * sent
    assert up == [1.0, 1.0]


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    from tests.telemetry.helpers import samples

    return samples(text, name)


def test_label_sets_past_the_scope_bound_show_as_a_gap(
    envoy, echo, tmp_path: Path, server_process: StartServer
) -> None:
    """``max_series: 2``: the third distinct response code is not counted by Envoy; the server shows
    Envoy's request count beside what it could read."""
    from envoykit.control.model.mesh import AccessLogServer
    from envoykit.control.model.types import Address
    from envoykit.control.translate.accesslog import logger_dict, stats_logger

    client_cfg, server_cfg, port, admins = _mtls_sidecars(tmp_path, echo.port, free_port())
    small = AccessLogServer(address=Address(port=1), max_series=2)
    hcm = server_cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["access_log"] = [logger_dict(stats_logger(small, "destination"))]
    envoy(server_cfg, name="backend-sidecar", extra_args=FLUSH)
    envoy(client_cfg, name="frontend-sidecar", extra_args=FLUSH)
    srv = start_telemetry(server_process, None, *_admin_args(admins))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for status in (200, 200, 404, 503, 503, 200):
            assert c.get("/items", headers={"x-echo-status": str(status)}).status_code == status
    wait_total(srv, "envoykit_telemetry_envoy_requests_total", 12)
    text = wait_total(srv, "istio_requests_total", 10)  # after Envoy's stats flush
    assert total(text, "istio_requests_total", reporter="source") == 6
    dest = total(text, "istio_requests_total", reporter="destination")
    assert dest == 4  # 200 and 404 counted; 503 was a third label set
    assert total(text, "envoykit_telemetry_envoy_requests_total", reporter="destination") == 6


def test_envoys_json_lines_share_the_servers_file_which_rotates_without_losing_one(
    envoy, echo, tmp_path: Path, server_process: StartServer
) -> None:
    """As ``envoykit up`` runs them: both Envoys append to the server's access-log file; the server
    rotates it by size and has them reopen it (``/reopen_logs``): every line is in one of the files."""
    log = tmp_path / "logs" / "access.json"
    log.parent.mkdir()
    client_cfg, server_cfg, port, admins = _mtls_sidecars(tmp_path, echo.port, free_port(), json_log=str(log))
    envoy(server_cfg, name="backend-sidecar", extra_args=FLUSH)
    envoy(client_cfg, name="frontend-sidecar", extra_args=FLUSH)
    srv = start_telemetry(
        server_process,
        log,
        "--access-log-max-bytes",
        "20000",
        "--access-log-backups",
        "50",
        *_admin_args(admins),
    )
    n = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for _ in range(5):
            for _ in range(20):
                assert c.get("/items").status_code == 200
                n += 1
            time.sleep(2.5)  # Envoy flushes every 0.5 s, the server checks the size every 2 s
    wait_total(srv, "istio_requests_total", 2 * n)
    time.sleep(2.5)
    files = sorted(log.parent.glob("access.json*"))
    lines = [json.loads(x) for f in files for x in f.read_text().splitlines() if x.strip()]
    assert len(files) > 2  # rotated, and the Envoys kept writing after each rotation
    assert Counter(x["reporter"] for x in lines) == {"destination": n, "source": n}
    assert len({x["request_id"] for x in lines if x["reporter"] == "destination"}) == n

"""The Grafana dashboard against a real Prometheus scraping the telemetry server fed by real Envoys (HTTP
over the stats transport, TCP over the access-log stream):
every panel's query runs and returns series (HTTP on both reporters, TCP, the workload view, the
access-log pipeline)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from envoykit.core import free_port, wait_for_port
from tests.envoycfg import bootstrap, cluster
from tests.extproc.test_prometheus_grafana import DASHBOARD, PROMETHEUS, query
from tests.serverproc import StartServer
from tests.telemetry.helpers import (
    BACKEND,
    TcpEcho,
    http_sidecars,
    start_telemetry,
    tcp_exchange,
    tcp_listener,
)

SUBSTITUTE = {
    "$__rate_interval": "30s",
    "$reporter": "destination",
    "$service": ".*",
    "$workload": "frontend-v1|backend-v2",
}


def panel_queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            expr = t["expr"]
            for k, v in SUBSTITUTE.items():
                expr = expr.replace(k, v)
            out.append((p["title"], expr))
    return out


def _may_be_empty(key: str) -> bool:
    # no gRPC is sent here, and no authz server or native gate runs (their panel's series are tested
    # through a real Envoy in tests/authz/test_gate_decision_log.py); every query still runs
    return "grpc" in key.lower() or "envoykit_authz" in key


def test_every_panel_has_data_from_the_telemetry_server(
    envoy, echo, tmp_path: Path, server_process: StartServer
) -> None:
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    admins = (free_port(), free_port(), free_port())
    args = [a for p in admins for a in ("--envoy-admin", f"http://127.0.0.1:{p}")]
    prom_port = free_port()
    with TcpEcho() as db, start_telemetry(server_process, tmp_path / "access.json", *args) as srv:
        # HTTP through the mesh's default, the stats transport; TCP over the access-log stream
        client_cfg, server_cfg, port = http_sidecars(
            echo.port, srv.port, admin_ports=admins[:2], transport="stats"
        )
        envoy(server_cfg, name="backend-sidecar")
        envoy(client_cfg, name="frontend-sidecar")
        tcp_port = free_port()
        db_cfg = bootstrap(
            [tcp_listener("inbound", tcp_port, "inbound|9000||", srv.port, "destination")],
            [cluster("inbound|9000||", db.port), cluster("envoykit_telemetry", srv.port, http2=True)],
        )
        db_cfg["node"] = {"id": "sidecar~db-v1", "cluster": "db", "metadata": {**BACKEND, "app": "db"}}
        db_cfg["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admins[2]}}}
        envoy(db_cfg, name="db-sidecar")
        config = {
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [
                {"job_name": "telemetry", "static_configs": [{"targets": [f"127.0.0.1:{srv.metrics_port}"]}]}
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            stderr=subprocess.DEVNULL,
        )
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
                while not stop.is_set():
                    c.get("/", headers={"x-echo-status": "404"} if time.monotonic() % 1 < 0.2 else {})
                    c.get("/down")  # 503 UF on the client side
                    tcp_exchange(tcp_port, b"x" * 100)
                    time.sleep(0.02)

        t = threading.Thread(target=traffic, daemon=True)
        try:
            wait_for_port(prom_port, timeout=30)
            ready_by = time.monotonic() + 30
            while time.monotonic() < ready_by:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/-/ready", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                time.sleep(0.2)
            t.start()
            dash = json.loads(DASHBOARD.read_text())
            queries = panel_queries(dash)
            deadline = time.monotonic() + 60
            results: dict[str, list[Any]] = {}
            while time.monotonic() < deadline:
                results = {title + " | " + expr: query(prom_port, expr) for title, expr in queries}
                if all(series for key, series in results.items() if not _may_be_empty(key)):
                    break
                time.sleep(1)
        finally:
            stop.set()
            prom.terminate()
            prom.wait(10)
    empty = [key for key, series in results.items() if not series and not _may_be_empty(key)]
    assert empty == []

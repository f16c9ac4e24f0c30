"""compose/prometheus.yml and the Grafana dashboard, checked against a real Prometheus scraping real
telemetry: every panel's query runs, and the main ones return series for the service that got traffic."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from envoykit.core import free_port, wait_for_port
from tests.extproc.helpers import proxy_config
from tests.extproc.proc import start_extproc
from tests.extproc.test_telemetry_envoy import BACKEND, TELEMETRY_FILTER
from tests.serverproc import StartServer

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
DASHBOARD = COMPOSE / "grafana" / "dashboards" / "mesh.json"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def panel_queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, Grafana variables replaced by concrete values."""
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            expr = t["expr"].replace("$__rate_interval", "30s")
            expr = expr.replace("$reporter", "destination").replace("$service", ".*")
            expr = expr.replace("$workload", "backend-v2")
            out.append((p["title"], expr))
    return out


def test_provisioning_files_are_well_formed() -> None:
    if Path(PROMTOOL).exists():
        out = subprocess.run(
            [PROMTOOL, "check", "config", str(COMPOSE / "prometheus.yml")], capture_output=True
        )
        assert out.returncode == 0, out.stderr.decode()
    ds = yaml.safe_load((COMPOSE / "grafana" / "datasources" / "prometheus.yaml").read_text())
    uid = ds["datasources"][0]["uid"]
    provider = yaml.safe_load((COMPOSE / "grafana" / "dashboards" / "envoykit.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/provisioning/dashboards"
    dash = json.loads(DASHBOARD.read_text())
    (var,) = [v for v in dash["templating"]["list"] if v["name"] == "datasource"]
    assert var["type"] == "datasource" and var["query"] == "prometheus" and var["current"]["value"] == uid
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for needed in ("volume", "success rate", "duration", "request size", "response size"):
        assert needed in titles
    exprs = " ".join(e for _, e in panel_queries(dash))
    for q in ("0.5,", "0.9,", "0.99,"):
        assert f"histogram_quantile({q}" in exprs


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    yield free_port(), tmp_path


def query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def test_dashboard_queries_work_on_real_prometheus(
    envoy, echo, prometheus, server_process: StartServer
) -> None:
    prom_port, tmp = prometheus
    with start_extproc(server_process) as srv:
        port = free_port()
        cfg = proxy_config(
            port,
            echo.port,
            srv.port,
            [TELEMETRY_FILTER],
            listener_extra={"traffic_direction": "INBOUND"},
            node={"id": "backend-v2", "cluster": "backend", "metadata": BACKEND},
        )
        envoy(cfg)
        config = {
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [
                {"job_name": "telemetry", "static_configs": [{"targets": [f"127.0.0.1:{srv.metrics_port}"]}]}
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            stderr=subprocess.DEVNULL,
        )
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
                while not stop.is_set():
                    c.get("/", headers={"x-echo-status": "503"} if time.monotonic() % 1 < 0.2 else {})
                    time.sleep(0.01)

        t = threading.Thread(target=traffic, daemon=True)
        try:
            wait_for_port(prom_port, timeout=30)
            ready_by = time.monotonic() + 30
            while time.monotonic() < ready_by:  # the port opens before the query API is ready
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/-/ready", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                time.sleep(0.2)
            t.start()
            deadline = time.monotonic() + 40
            main = 'sum by (destination_service) (rate(istio_requests_total{reporter="destination"}[30s]))'
            while time.monotonic() < deadline and not query(prom_port, main):
                time.sleep(0.5)
            stop.set()
            dash = json.loads(DASHBOARD.read_text())
            results = {title + " | " + expr: query(prom_port, expr) for title, expr in panel_queries(dash)}
            assert [s["metric"] for s in query(prom_port, main)] == [{"destination_service": "backend"}]
            for key, series in results.items():
                # no 4xx was sent; TCP, gRPC, the workload view and the access-log pipeline are the
                # telemetry server's (tests/telemetry/test_dashboard.py), not this ext_proc's; no authz
                # runs here (the gate's counts: tests/authz/test_gate_decision_log.py)
                skip = (
                    "4xx",
                    "tcp_",
                    "grpc",
                    "$workload",
                    "envoykit_telemetry",
                    "response_flags",
                    "envoykit_authz",
                )
                if not any(k in key for k in skip):
                    assert series, f"no data for {key}"
            p99 = query(
                prom_port,
                "histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket[30s])))",
            )
            assert 0 < float(p99[0]["value"][1]) < 1000
        finally:
            stop.set()
            prom.terminate()
            prom.wait(10)

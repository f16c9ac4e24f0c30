"""`envoykit envoy inject --telemetry`: an injected Envoy reports like a control-plane one (Istio's metrics
and JSON lines for HTTP, bytes for TCP), through a real Envoy: with the stats transport (Envoy counts,
the server reads its admin; Envoy writes the JSON lines) and with the gRPC access-log stream."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from envoykit.cli import main
from envoykit.core.net import free_port
from tests.control.apps import Echo
from tests.control.test_inject import USER
from tests.serverproc import StartServer
from tests.telemetry.helpers import TcpEcho, read_lines, start_telemetry, tcp_exchange, total, wait_total


def _tcp_listener(port: int, cluster: str) -> dict[str, Any]:
    proxy = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "db",
        "cluster": cluster,
    }
    return {
        "name": "db",
        "traffic_direction": "INBOUND",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}]}],
    }


def inject(*args: Any) -> Any:
    return CliRunner().invoke(main, ["envoy", "inject", *map(str, args)], catch_exceptions=False)


@pytest.mark.parametrize("transport", ["stats", "grpc"])
def test_injected_envoy_reports_http_and_tcp_telemetry(
    tmp_path: Path, envoy: Any, server_process: StartServer, transport: str
) -> None:
    admin = free_port()
    admin_arg = ["--envoy-admin", f"http://127.0.0.1:{admin}"] if transport == "stats" else []
    log = tmp_path / "access.log"
    with Echo("app") as app, TcpEcho() as db, start_telemetry(server_process, log, *admin_arg) as srv:
        port, tcp_port = free_port(), free_port()
        doc = yaml.safe_load(USER.format(port=port, app=app.port))
        doc["static_resources"]["listeners"].append(_tcp_listener(tcp_port, "db"))
        db_cluster = dict(doc["static_resources"]["clusters"][0], name="db")
        db_cluster["load_assignment"] = {
            "cluster_name": "db",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": "127.0.0.1", "port_value": db.port}}
                            }
                        }
                    ]
                }
            ],
        }
        doc["static_resources"]["clusters"].append(db_cluster)
        src, out = tmp_path / "in.yaml", tmp_path / "out.yaml"
        src.write_text(yaml.safe_dump(doc))
        identity = [
            "--workload",
            "shop-v1",
            "--app",
            "shop",
            "--namespace",
            "store",
            "--service-account",
            "shop",
        ]
        via = ["--telemetry-transport", transport, *(["--json-log", log] if transport == "stats" else [])]
        r = inject(src, "-o", out, "--telemetry", f"127.0.0.1:{srv.port}", *via, *identity)
        assert r.exit_code == 0 and "validate: ok" in r.output, r.output
        again = inject(out, "-o", tmp_path / "twice.yaml", "--telemetry", f"127.0.0.1:{srv.port}")
        assert again.exit_code != 0 and "--replace" in again.output  # never a second logger silently
        replaced = inject(out, "-o", out, "--telemetry", f"127.0.0.1:{srv.port}", *via, "--replace")
        assert replaced.exit_code == 0, replaced.output
        cfg = yaml.safe_load(out.read_text())
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        assert len(hcm["access_log"]) == (2 if transport == "stats" else 1)  # stats: and the JSON file
        cfg["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}}
        envoy(cfg, name="injected", extra_args=["--file-flush-interval-msec", "500"])

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            for status in (200, 200, 200, 404, 503):
                assert c.get("/x", headers={"x-echo-status": str(status)}).status_code == status
        assert tcp_exchange(tcp_port, b"z" * 4321) == b"z" * 4321
        text = wait_total(srv, "istio_requests_total", 5)
        text = wait_total(srv, "istio_tcp_connections_closed_total", 1)
        deadline = time.monotonic() + 15  # Envoy's file logger flushes every --file-flush-interval-msec
        while len(read_lines(log)) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        lines = read_lines(log)
    http = {"reporter": "source", "source_workload": "shop-v1", "source_workload_namespace": "store"}
    assert total(text, "istio_requests_total", **http) == 5  # no traffic_direction: a source (a gateway)
    assert total(text, "istio_requests_total", response_code="200", **http) == 3
    assert total(text, "istio_requests_total", response_code="503", **http) == 1
    tcp = {"reporter": "destination", "destination_workload": "shop-v1", "request_protocol": "tcp"}
    assert total(text, "istio_tcp_received_bytes_total", **tcp) == 4321  # INBOUND: the destination
    assert total(text, "istio_tcp_sent_bytes_total", **tcp) == 4321
    assert total(text, "istio_tcp_connections_opened_total", **tcp) == 1
    assert sorted(x["kind"] for x in lines) == ["http"] * 5 + ["tcp"]
    assert all(x["source_workload"] == "shop-v1" for x in lines if x["kind"] == "http")

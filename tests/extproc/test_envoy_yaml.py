"""envoy/extproc.yaml: valid for Envoy, in step with the telemetry processor, and working as written."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from envoykit.core import free_port, validate_envoy_config
from envoykit.extproc import RESPONSE_ATTRIBUTES
from tests.extproc.proc import start_extproc
from tests.extproc.test_telemetry_envoy import total
from tests.serverproc import StartServer

CONFIG = Path(__file__).resolve().parents[2] / "envoy" / "extproc.yaml"


def filters(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return list(hcm["http_filters"])


@pytest.mark.envoy
def test_validates_and_asks_for_every_attribute_telemetry_reads() -> None:
    assert "OK" in validate_envoy_config(CONFIG)
    telemetry = filters(yaml.safe_load(CONFIG.read_text()))[0]["typed_config"]
    assert telemetry["observability_mode"] is True
    assert telemetry["response_attributes"] == list(RESPONSE_ATTRIBUTES)


def test_runs_as_written(envoy, echo, server_process: StartServer) -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    with start_extproc(server_process, "--processor", "envoykit.extproc.examples:stamp") as srv:
        port = free_port()
        res = cfg["static_resources"]
        res["listeners"][0]["address"]["socket_address"]["port_value"] = port
        cfg["admin"]["address"]["socket_address"]["port_value"] = 0
        ports = {"app": echo.port, "extproc": srv.port}
        for c in res["clusters"]:
            c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"][
                "port_value"
            ] = ports[c["name"]]
        envoy(cfg)
        ok = httpx.get(f"http://127.0.0.1:{port}/hello")
        blocked = httpx.get(f"http://127.0.0.1:{port}/blocked")
        assert ok.status_code == 200 and ok.json()["headers"]["x-processed-by"] == "envoykit"
        assert blocked.status_code == 403
        deadline = time.monotonic() + 10
        while total(srv.metrics(), "istio_requests_total") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        text = srv.metrics()
    labels = {
        "reporter": "destination",
        "destination_workload": "backend-v1",
        "destination_service": "backend",
    }
    assert total(text, "istio_requests_total", response_code="200", **labels) == 1
    assert total(text, "istio_requests_total", response_code="403", **labels) == 1  # local reply counted too

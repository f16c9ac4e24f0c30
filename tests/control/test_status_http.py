"""The control plane's read-only HTTP views on its metrics port (what the dashboard reads), with a real
Envoy connected: ``/status`` (streams, last push, topology), ``/config/<node>`` (no secrets), errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.control.apps import Echo
from tests.control.test_traffic_envoy import gateway, gateway_mesh, to

pytestmark = pytest.mark.envoy


def test_status_and_config_over_http(envoy: Any, tmp_path: Path) -> None:
    with Echo("v1") as v1, Echo("v2") as v2:
        mesh = gateway_mesh(
            [("backend-v1", "v1", v1.port), ("backend-v2", "v2", v2.port)],
            [{"name": "split", "route": [to(subset="v1", weight=75), to(subset="v2", weight=25)]}],
            dr={
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ]
            },
        )
        with gateway(envoy, tmp_path, mesh, metrics_port=0) as (cpt, _url, _proc):
            base = f"http://127.0.0.1:{cpt.cp.server.metrics_port}"
            status = httpx.get(f"{base}/status", timeout=10).json()
            (stream,) = status["streams"]
            assert stream["node"] == "ingress~ingress" and stream["last_push"] > status["applied_at"] - 1
            assert set(stream["acked"]) >= {"CDS", "LDS", "RDS"} and status["nacks"] == []
            topo = status["topology"]
            assert [n["id"] for n in topo["nodes"]] == ["ingress~ingress"]
            assert topo["services"] == [
                {
                    "name": "backend",
                    "mtls": "DISABLE",
                    "workloads": [
                        {"name": "backend-v1", "version": "v1"},
                        {"name": "backend-v2", "version": "v2"},
                    ],
                }
            ]
            (route,) = topo["routes"]
            assert [(d["version"], d["weight"]) for d in route["destinations"]] == [("v1", 75), ("v2", 25)]

            r = httpx.get(f"{base}/config/ingress~ingress", timeout=10)
            assert r.status_code == 200
            res = r.json()["resources"]
            assert set(res) == {"LDS", "RDS", "CDS", "EDS"}  # never SDS: secrets stay in the control plane
            (rc,) = res["RDS"].values()
            (vh,) = rc["virtualHosts"]
            weighted = vh["routes"][0]["route"]["weightedClusters"]["clusters"]
            assert [c["weight"] for c in weighted] == [75, 25]
            assert any("backend" in name for name in res["CDS"])

            missing = httpx.get(f"{base}/config/sidecar~nope", timeout=10)
            assert missing.status_code == 404 and "sidecar~nope" in missing.json()["error"]
            assert httpx.post(f"{base}/status", timeout=10).status_code == 405
            # every other path is still Prometheus' exposition
            metrics = httpx.get(f"{base}/metrics", timeout=10).text
            assert 'envoykit_xds_pushes_total{type="RDS"}' in metrics

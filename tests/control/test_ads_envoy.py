"""Through real Envoys fed by the control plane: ingress → sidecar → app, and the sidecar's outbound side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.control.apps import Echo
from tests.control.meshkit import addr, control_plane, get, start_nodes, workload, write_mesh
from tests.upstream import EchoServer

pytestmark = pytest.mark.envoy


def basic_mesh(backend: EchoServer, frontend: EchoServer) -> dict[str, Any]:
    return {
        "api_version": "envoykit/v1",
        "mesh_id": "test",
        "trust_domain": "test.local",
        "services": [
            {"name": "backend", "mtls": "DISABLE", "workloads": [workload("backend-v1", "v1", backend.port)]},
            {
                "name": "frontend",
                "mtls": "DISABLE",
                "workloads": [workload("frontend-v1", "v1", frontend.port)],
            },
        ],
        "gateways": [{"name": "ingress", "kind": "ingress", "address": addr(), "admin": addr()}],
        "virtual_services": [
            {
                "name": "ingress-routes",
                "hosts": ["*"],
                "gateways": ["ingress"],
                "http": [
                    {
                        "match": [{"uri": {"prefix": "/backend"}}],
                        "route": [{"destination": {"host": "backend"}}],
                    },
                    {"route": [{"destination": {"host": "frontend"}}]},
                ],
            }
        ],
    }


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_ingress_to_sidecar_to_app(envoy: Any, tmp_path: Path, delta: bool) -> None:
    with Echo("backend-v1") as backend, Echo("frontend-v1") as frontend:
        mesh = basic_mesh(backend, frontend)
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        with control_plane(path) as cpt:
            start_nodes(
                envoy, cpt, "ingress~ingress", "sidecar~backend-v1", "sidecar~frontend-v1", delta=delta
            )
            ingress = f"http://{mesh['gateways'][0]['address']}"
            r = get(f"{ingress}/backend/x")
            assert r.status_code == 200, r.text
            assert r.headers["x-upstream"] == "backend-v1"
            assert r.json()["path"] == "/backend/x"
            r = get(f"{ingress}/other")
            assert r.headers["x-upstream"] == "frontend-v1"
            # the frontend app calls backend through its sidecar's outbound listener by service name
            out = mesh["services"][1]["workloads"][0]["sidecar"]["outbound"]
            r = get(f"http://{out}/hello", host="backend")
            assert r.status_code == 200 and r.headers["x-upstream"] == "backend-v1"
            # unknown hosts are refused (REGISTRY_ONLY)
            r = get(f"http://{out}/hello", host="nope.example.com")
            assert r.status_code == 502
            status = cpt.cp.status()
            assert {s["delta"] for s in status["streams"]} == {delta}
            assert {s["node"] for s in status["streams"]} == {
                "ingress~ingress",
                "sidecar~backend-v1",
                "sidecar~frontend-v1",
            }
            assert status["nacks"] == []


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_mtls_strict_between_sidecars(envoy: Any, tmp_path: Path, delta: bool) -> None:
    """frontend's sidecar → backend's sidecar over mTLS with SDS certificates from the mesh CA; backend's
    app sees frontend's SPIFFE ID; a plaintext client is refused by backend's STRICT inbound."""
    with Echo("backend-v1") as backend, Echo("frontend-v1") as frontend:
        mesh = basic_mesh(backend, frontend)
        for svc in mesh["services"]:
            svc["mtls"] = "STRICT"
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        with control_plane(path) as cpt:
            start_nodes(
                envoy, cpt, "ingress~ingress", "sidecar~backend-v1", "sidecar~frontend-v1", delta=delta
            )
            out = mesh["services"][1]["workloads"][0]["sidecar"]["outbound"]
            r = get(f"http://{out}/who", host="backend")
            assert r.status_code == 200, r.text
            xfcc = r.json()["headers"]["x-forwarded-client-cert"]
            assert "URI=spiffe://test.local/ns/default/sa/frontend" in xfcc
            # the ingress gateway is a mesh client too (its own identity)
            ingress = mesh["gateways"][0]["address"]
            r = get(f"http://{ingress}/backend/x")
            assert r.status_code == 200
            assert "sa/ingress" in r.json()["headers"]["x-forwarded-client-cert"]
            # outside the mesh: plaintext straight to backend's inbound port fails the handshake
            inbound = mesh["services"][0]["workloads"][0]["sidecar"]["inbound"]
            with pytest.raises(httpx.HTTPError):
                get(f"http://{inbound}/x")


def test_tcp_service_over_mtls(envoy: Any, tmp_path: Path) -> None:
    """A tcp service: the caller's sidecar listens on its outbound_tcp address and proxies the bytes
    over mTLS to the service's sidecar (tcp_proxy both sides)."""
    with Echo("db") as db, Echo("frontend-v1") as frontend:
        local_db = addr()
        front = workload("frontend-v1", "v1", frontend.port)
        front["sidecar"]["outbound_tcp"] = {"db": local_db}
        mesh: dict[str, Any] = {
            "trust_domain": "test.local",
            "services": [
                {
                    "name": "db",
                    "protocol": "tcp",
                    "mtls": "STRICT",
                    "workloads": [workload("db-v1", "v1", db.port)],
                },
                {"name": "frontend", "mtls": "STRICT", "workloads": [front]},
            ],
        }
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        with control_plane(path) as cpt:
            start_nodes(envoy, cpt, "sidecar~db-v1", "sidecar~frontend-v1")
            r = get(f"http://{local_db}/rows")  # HTTP is just bytes to tcp_proxy
            assert r.status_code == 200 and r.headers["x-upstream"] == "db"
            assert "x-forwarded-client-cert" not in r.json()["headers"]  # no HTTP processing on the way
            inbound = mesh["services"][0]["workloads"][0]["sidecar"]["inbound"]
            with pytest.raises(httpx.HTTPError):
                get(f"http://{inbound}/rows")  # STRICT: plaintext refused

"""Mesh mTLS end to end: mesh.yaml → the control plane (ADS + SDS from the CA) → real sidecar Envoys.

frontend and backend are STRICT services; legacy is PERMISSIVE. The control plane serves each node's
``default`` and ``ROOTCA`` secrets from :class:`SecretProvider` and checks every stream's node token.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from envoykit.cli import main as cli
from envoykit.control.pki.ca import CertificateAuthority
from envoykit.control.pki.sds import SecretProvider
from envoykit.control.translate.mtls import SpiffeMeshTls
from envoykit.core import EnvoyProcess
from tests.control.meshkit import (
    ControlPlaneThread,
    get,
    node_bootstrap,
    start_nodes,
    wait_until,
    workload,
    write_mesh,
)
from tests.upstream import EchoServer

pytestmark = pytest.mark.envoy

TD = "test.local"
FRONTEND = f"spiffe://{TD}/ns/default/sa/frontend"


@dataclass
class MtlsMesh:
    mesh: dict[str, Any]
    cpt: ControlPlaneThread
    ca: CertificateAuthority
    provider: SecretProvider
    backend: EchoServer
    legacy: EchoServer
    proxies: dict[str, EnvoyProcess]

    def sidecar(self, svc: int, key: str) -> str:
        return str(self.mesh["services"][svc]["workloads"][0]["sidecar"][key])

    def from_frontend(self, host: str, path: str = "/") -> httpx.Response:
        return get(f"http://{self.sidecar(0, 'outbound')}{path}", host=host)


@pytest.fixture
def mtls_mesh(tmp_path: Path, envoy: Callable[..., EnvoyProcess]) -> Iterator[MtlsMesh]:
    with EchoServer("frontend") as fe, EchoServer("backend") as be, EchoServer("legacy") as lg:
        mesh = {
            "api_version": "envoykit/v1",
            "mesh_id": "mtls",
            "trust_domain": TD,
            "services": [
                {"name": "frontend", "mtls": "STRICT", "workloads": [workload("frontend-v1", "v1", fe.port)]},
                {"name": "backend", "mtls": "STRICT", "workloads": [workload("backend-v1", "v1", be.port)]},
                {"name": "legacy", "mtls": "PERMISSIVE", "workloads": [workload("legacy-v1", "v1", lg.port)]},
            ],
        }
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        ca = CertificateAuthority(tmp_path / "state", TD)
        provider = SecretProvider(ca)
        cpt = ControlPlaneThread(path, tls=SpiffeMeshTls(), secrets=provider)

        # what `envoykit control` wires: renewals and rotations re-push the node's secrets
        def push(node_id: str) -> None:
            cpt.loop.call_soon_threadsafe(cpt.cp.refresh_secrets, node_id)

        provider.on_change = push
        refresher = asyncio.run_coroutine_threadsafe(provider.run(max_interval=0.3), cpt.loop)
        try:
            ids = ["sidecar~frontend-v1", "sidecar~backend-v1", "sidecar~legacy-v1"]
            proxies = dict(zip(ids, start_nodes(envoy, cpt, *ids), strict=True))
            yield MtlsMesh(mesh, cpt, ca, provider, be, lg, proxies)
        finally:
            refresher.cancel()
            cpt.stop()


def _lacks_root(proxy: Any, serial_hex: str) -> bool:
    """Whether ``proxy``'s /certs no longer lists the certificate with serial ``serial_hex``."""
    return serial_hex not in proxy.admin("/certs").lower()


def test_frontend_to_backend_over_mtls(mtls_mesh: MtlsMesh) -> None:
    m = mtls_mesh
    r = m.from_frontend("backend", "/hello")
    assert r.status_code == 200, r.text
    assert r.headers["x-upstream"] == "backend"
    xfcc = m.backend.requests[-1]["headers"]["x-forwarded-client-cert"]
    assert f"URI={FRONTEND}" in xfcc  # the backend sees the frontend's SPIFFE ID
    backend_proxy = m.proxies["sidecar~backend-v1"]
    stats = backend_proxy.stats("listener.")
    assert sum(v for k, v in stats.items() if k.endswith(".ssl.handshake")) >= 1
    assert m.cpt.cp.status()["nacks"] == []


def test_strict_refuses_plaintext_permissive_accepts_it(mtls_mesh: MtlsMesh) -> None:
    m = mtls_mesh
    with pytest.raises(httpx.TransportError):
        get(f"http://{m.sidecar(1, 'inbound')}/direct", host="backend")
    r = get(f"http://{m.sidecar(2, 'inbound')}/direct", host="legacy")
    assert r.status_code == 200 and r.headers["x-upstream"] == "legacy"
    assert "URI=" not in m.legacy.requests[-1]["headers"].get("x-forwarded-client-cert", "")
    r = m.from_frontend("legacy", "/via-mesh")
    assert r.status_code == 200
    assert f"URI={FRONTEND}" in m.legacy.requests[-1]["headers"]["x-forwarded-client-cert"]


def test_node_cannot_obtain_another_service_accounts_certificate(
    mtls_mesh: MtlsMesh, envoy: Callable[..., EnvoyProcess]
) -> None:
    m = mtls_mesh
    # the frontend's Envoy (holding the frontend's token) claims to be the backend's node
    cfg = node_bootstrap(m.cpt, "sidecar~backend-v1")
    grpc_service = cfg["dynamic_resources"]["ads_config"]["grpc_services"][0]
    grpc_service["initial_metadata"][0]["value"] = m.cpt.cp.tokens.token_for("sidecar~frontend-v1")  # type: ignore[union-attr]
    cfg["admin"]["address"]["socket_address"]["port_value"] = 0
    for source in ("cds_config", "lds_config"):
        cfg["dynamic_resources"][source]["initial_fetch_timeout"] = "0.5s"
    impostor = envoy(cfg, name="impostor")
    wait_until(
        lambda: impostor.stats("control_plane.connected_state").get("control_plane.connected_state") == 0
    )
    time.sleep(1)  # a few retries of the refused stream
    assert json.loads(impostor.admin("/certs")).get("certificates", []) == []
    assert (
        impostor.stats("cluster_manager.cds.update_success").get("cluster_manager.cds.update_success", 0) == 0
    )
    nodes = [s["node"] for s in m.cpt.cp.status()["streams"]]
    assert nodes.count("sidecar~backend-v1") == 1  # only the real backend is connected
    # without any token the stream is refused too
    del grpc_service["initial_metadata"]
    anonymous = envoy(cfg, name="anonymous")
    assert json.loads(anonymous.admin("/certs")).get("certificates", []) == []
    assert m.from_frontend("backend").status_code == 200


def test_root_rotation_by_the_cli_while_traffic_flows(mtls_mesh: MtlsMesh) -> None:
    m = mtls_mesh
    old_root = m.ca.root_certificate()
    stop = threading.Event()
    results: list[int | str] = []

    def traffic() -> None:
        while not stop.is_set():
            try:
                results.append(m.from_frontend("backend", "/t").status_code)
            except httpx.HTTPError as exc:
                results.append(repr(exc))
            time.sleep(0.03)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        time.sleep(1)
        # another process rotates the root through the state directory
        state = str(m.ca.dir.parent)
        args = ["ca", "rotate", "--state-dir", state, "--overlap-hours", str(4 / 3600)]
        out = CliRunner().invoke(cli, [*args, "--activate-after-seconds", "1"])
        assert out.exit_code == 0, out.output
        new_root = CertificateAuthority.load(state).root_certificate()
        wait_until(lambda: len(m.ca.trusted_roots()) == 1 and m.ca.generation == 2, timeout=30)
        for proxy in m.proxies.values():  # every sidecar ends with the new root only
            wait_until(partial(_lacks_root, proxy, f"{old_root.serial_number:x}"), timeout=20)
            assert f"{new_root.serial_number:x}" in proxy.admin("/certs").lower()
        time.sleep(0.5)
    finally:
        stop.set()
        t.join()
    assert len(results) > 30
    assert [r for r in results if r != 200] == []
    assert m.cpt.cp.status()["nacks"] == []
    # new connections handshake with the new certificates
    r = get(f"http://{m.sidecar(0, 'outbound')}/after", host="legacy")
    assert r.status_code == 200

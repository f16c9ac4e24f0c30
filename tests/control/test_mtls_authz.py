"""The identity proved over mTLS is the source principal of the backend's authz policy.

mesh.yaml → control plane (ADS + SDS) → sidecars of frontend, intruder and backend (all STRICT); the
backend's sidecar runs ext_authz against a real `envoykit authz serve` process whose Istio-style policy
allows only the frontend's service account.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from envoykit.control.pki.ca import CertificateAuthority
from envoykit.control.pki.sds import SecretProvider
from envoykit.control.translate.mtls import SpiffeMeshTls
from envoykit.core import EnvoyProcess, free_port, wait_for_port
from tests.control.meshkit import ControlPlaneThread, get, start_nodes, workload, write_mesh
from tests.upstream import EchoServer

pytestmark = pytest.mark.envoy

TD = "test.local"
POLICY = f"""\
kind: AuthorizationPolicy
metadata: {{name: backend-callers}}
spec:
  action: ALLOW
  rules:
    - from:
        - source: {{principals: [{TD}/ns/default/sa/frontend]}}
"""


def test_authz_policy_sees_the_mtls_peer_as_source_principal(
    tmp_path: Path, envoy: Callable[..., EnvoyProcess]
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "backend.yaml").write_text(POLICY)
    authz_port = free_port()
    decisions = tmp_path / "decisions.jsonl"
    authz = subprocess.Popen(
        [
            *(sys.executable, "-m", "envoykit.cli", "authz", "serve"),
            *("--policy-dir", str(policies), "--address", f"127.0.0.1:{authz_port}"),
            *("--decision-log", str(decisions)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "authz.log", "wb"),  # noqa: SIM115  (closed with the process)
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        wait_for_port(authz_port, timeout=30)
        with EchoServer("frontend") as fe, EchoServer("intruder") as intr, EchoServer("backend") as be:
            mesh = {
                "api_version": "envoykit/v1",
                "mesh_id": "authz",
                "trust_domain": TD,
                "extensions": {"authz": {"address": f"127.0.0.1:{authz_port}", "timeout": 2}},
                "services": [
                    {
                        "name": "frontend",
                        "mtls": "STRICT",
                        "workloads": [workload("frontend-v1", "v1", fe.port)],
                    },
                    {
                        "name": "intruder",
                        "mtls": "STRICT",
                        "workloads": [workload("intruder-v1", "v1", intr.port)],
                    },
                    {
                        "name": "backend",
                        "mtls": "STRICT",
                        "extensions": {"authz": {}},
                        "workloads": [workload("backend-v1", "v1", be.port)],
                    },
                ],
            }
            path = write_mesh(tmp_path / "mesh.yaml", mesh)
            provider = SecretProvider(CertificateAuthority(tmp_path / "state", TD))
            cpt = ControlPlaneThread(path, tls=SpiffeMeshTls(), secrets=provider)

            def push(nid: str) -> None:
                cpt.loop.call_soon_threadsafe(cpt.cp.refresh_secrets, nid)

            provider.on_change = push
            refresher = asyncio.run_coroutine_threadsafe(provider.run(), cpt.loop)
            try:
                start_nodes(envoy, cpt, "sidecar~frontend-v1", "sidecar~intruder-v1", "sidecar~backend-v1")

                def call_from(svc: int) -> int:
                    out = mesh["services"][svc]["workloads"][0]["sidecar"]["outbound"]  # type: ignore[index]
                    return get(f"http://{out}/orders", host="backend").status_code

                assert call_from(0) == 200  # frontend: allowed by the policy
                assert call_from(1) == 403  # intruder: a valid mesh identity, but not the allowed one
                assert [r["path"] for r in be.requests] == ["/orders"]
            finally:
                refresher.cancel()
                cpt.stop()
    finally:
        authz.terminate()
        authz.wait(10)
    lines = [json.loads(line) for line in decisions.read_text().splitlines()]
    principals = {(d["principal"], d["result"]) for d in lines}
    assert principals == {
        (f"spiffe://{TD}/ns/default/sa/frontend", "allow"),
        (f"spiffe://{TD}/ns/default/sa/intruder", "deny"),
    }, lines

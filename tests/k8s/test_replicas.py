"""Several control-plane replicas, as `envoykit k8s render` runs them: two `envoykit control serve
--discovery kubernetes` processes with the same model, the same CA and the same node-token key (the
envoykit-ca Secret, copied here into each replica's state directory), both watching one API server.
Real Envoys (an ingress and a STRICT mTLS sidecar) know both; one replica is killed under traffic and
no request fails; the other keeps serving changes and certificates."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.json_format import MessageToDict

from envoykit.control.model.loader import load_mesh
from envoykit.control.model.nodes import mesh_nodes
from envoykit.control.model.types import Address
from envoykit.control.pki.ca import CertificateAuthority
from envoykit.control.translate.bootstrap import bootstrap
from envoykit.control.xds.tokens import NodeTokens
from envoykit.core.net import wait_for_port
from tests.control.apps import Echo
from tests.control.meshkit import addr, wait_until, workload, write_mesh
from tests.k8s.fakeapi import FakeApi
from tests.k8s.helpers import Traffic

pytestmark = pytest.mark.envoy
NS = "default"
TD = "replicas.local"


def kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": url}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "c", "context": {"cluster": "fake", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


def streams(state: Path) -> set[str]:
    try:
        status = json.loads((state / "control-status.json").read_text())
    except (OSError, ValueError):
        return set()
    return {s["node"] for s in status.get("streams", [])}


def test_kill_one_replica_under_traffic(envoy: Any, tmp_path: Path) -> None:
    with FakeApi() as api, Echo("v1") as app1, Echo("v2") as app2:
        w1, w2 = workload("backend-v1", "v1", app1.port), workload("backend-v2", "v2", app2.port)
        ingress = addr()
        mesh = {
            "trust_domain": TD,
            "services": [{"name": "backend", "mtls": "STRICT", "workloads": [w1, w2]}],
            "gateways": [{"name": "ingress", "kind": "ingress", "address": ingress, "admin": addr()}],
            "virtual_services": [
                {
                    "name": "in",
                    "hosts": ["*"],
                    "gateways": ["ingress"],
                    "http": [{"route": [{"destination": {"host": "backend"}}]}],
                }
            ],
        }
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        # the envoykit-ca Secret: one CA and one node-token key, the same files in every replica
        first = tmp_path / "state-1"
        CertificateAuthority(first, TD)
        NodeTokens(first).token_for("x")
        second = tmp_path / "state-2"
        shutil.copytree(first, second)
        api.put_pod(NS, "backend-v1-a", {"envoykit.io/workload": "backend-v1"})
        # one slice per target port (the sidecar's inbound), as the EndpointSlice controller makes them
        inbound = [int(w["sidecar"]["inbound"].rsplit(":", 1)[1]) for w in (w1, w2)]
        api.put_slice(NS, "backend-1", "backend", [("127.0.0.1", "backend-v1-a", True)], inbound[0])
        kc = kubeconfig(tmp_path / "kubeconfig", api.url)
        replicas: list[tuple[subprocess.Popen[bytes], Address, Path]] = []
        for state in (first, second):
            port = Address.model_validate(addr())
            log = open(tmp_path / f"{state.name}.log", "wb")  # noqa: SIM115 (kept open for the process)
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "envoykit.cli",
                    "control",
                    "serve",
                    str(path),
                    "--address",
                    str(port),
                    "--state-dir",
                    str(state),
                    "--no-envoy-validate",
                    "--discovery",
                    "kubernetes",
                    "--kubeconfig",
                    str(kc),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            replicas.append((proc, port, state))
        try:
            for _, port, _ in replicas:
                wait_for_port(port.port, timeout=60)
            loaded = load_mesh(path).mesh
            nodes = mesh_nodes(loaded)
            tokens = NodeTokens(first)
            xds = [p for _, p, _ in replicas]
            procs = {}
            for nid in ("sidecar~backend-v1", "sidecar~backend-v2", "ingress~ingress"):
                boot = MessageToDict(
                    bootstrap(nodes[nid], xds, tokens.token_for(nid)), preserving_proto_field_name=True
                )
                procs[nid] = envoy(boot, name=nid.replace("~", "-"))
            url = f"http://{ingress}/"
            with Traffic(url) as traffic:
                seen, failures = traffic.seen, traffic.failures
                wait_until(lambda: seen["v1"] > 20, 20)
                # kill the replica that serves most nodes, without warning
                wait_until(lambda: len(streams(first) | streams(second)) == 3, 20)
                victim = max(replicas, key=lambda r: len(streams(r[2])))
                survivor = next(r for r in replicas if r is not victim)
                assert len(streams(victim[2])) >= 2
                victim[0].send_signal(signal.SIGKILL)
                victim[0].wait(10)
                # every Envoy reconnects to the survivor (its token verifies there; its certificate is renewed
                # from the same CA and still chains to the root every peer trusts)
                wait_until(lambda: streams(survivor[2]) == set(procs), 30)
                n = sum(seen.values())
                time.sleep(2)
                assert sum(seen.values()) > n
                # the survivor keeps serving changes: a second pod becomes an endpoint
                api.put_pod(NS, "backend-v2-b", {"envoykit.io/workload": "backend-v2"})
                api.put_slice(NS, "backend-2", "backend", [("127.0.0.1", "backend-v2-b", True)], inbound[1])
                wait_until(lambda: seen["v2"] > 20, 20)
            assert failures == []
            assert sum(seen.values()) > 100
        finally:
            for proc, _, _ in replicas:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(10)

"""The control plane gives every gated connection manager the gate's decision logger
(``extensions.authz.decision_log``): with the authz server writing the same file, it holds one line
per decision — Envoy's for what its gate decided, the server's for the rest — at the ingress and at
the sidecar, through real Envoys."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from envoykit.control.model.loader import load_mesh
from envoykit.control.translate.translation import translate
from envoykit.control.xds.type_urls import LISTENER
from envoykit.core.errors import ConfigError
from tests.control.apps import Echo
from tests.control.meshkit import control_plane, get, start_nodes, write_mesh
from tests.control.test_authz_gate import _policy, _publish, gate_mesh
from tests.serverproc import ServerProcess


def _gate_log_paths(node: Any) -> list[str]:
    """The files of the gate decision loggers on ``node``'s connection managers."""
    out = []
    for lst in node.resources(LISTENER).values():
        for chain in lst.filter_chains:
            for f in chain.filters:
                if f.name != "envoy.filters.network.http_connection_manager":
                    continue
                conf = hcm.HttpConnectionManager()
                f.typed_config.Unpack(conf)
                for log in conf.access_log:
                    fl = file_pb2.FileAccessLog()
                    if (
                        log.typed_config.Unpack(fl)
                        and fl.log_format.json_format.fields["decided_by"].string_value
                    ):
                        out.append(fl.path)
    return out


def test_translation_adds_the_logger_where_the_gate_is(tmp_path: Path) -> None:
    _policy(tmp_path)
    _publish(tmp_path)
    loaded = load_mesh(write_mesh(tmp_path / "mesh.yaml", gate_mesh(9, 10, "DISABLE", decision_log="d.log")))
    nodes = translate(loaded.mesh, loaded.base_dir).nodes
    # relative to mesh.yaml; three loggers (DENY filter's denies, ALLOW filter's, allows) on the one
    # gated connection manager of each: the sidecar's outbound side has no gate
    want = [str(tmp_path / "d.log")] * 3
    assert _gate_log_paths(nodes["ingress~ingress"]) == want
    assert _gate_log_paths(nodes["sidecar~frontend-v1"]) == want
    for mesh in (
        gate_mesh(9, 10, "DISABLE", decision_log="d.log", native_gate=False),  # no gate, no logger
        gate_mesh(9, 10, "DISABLE", decision_log="d.log", decision_log_sample_allow=0.0),  # allows: 0
        gate_mesh(9, 10, "DISABLE"),  # no decision_log
    ):
        loaded = load_mesh(write_mesh(tmp_path / "mesh.yaml", mesh))
        paths = [
            p for n in translate(loaded.mesh, loaded.base_dir).nodes.values() for p in _gate_log_paths(n)
        ]
        sampled_out = mesh["extensions"]["authz"].get("decision_log_sample_allow") == 0.0
        assert paths == (want[:2] * 2 if sampled_out else [])  # no allows' logger; or none at all
    path = write_mesh(tmp_path / "mesh.yaml", gate_mesh(9, 10, "DISABLE", decision_log="nowhere/d.log"))
    with pytest.raises(ConfigError, match=r"extensions.authz.decision_log: no such directory: .*nowhere"):
        load_mesh(path)
    path = write_mesh(tmp_path / "mesh.yaml", gate_mesh(9, 10, "DISABLE", decision_log_sample_allow=2))
    with pytest.raises(ConfigError, match="decision_log_sample_allow"):
        load_mesh(path)


@pytest.mark.envoy
@pytest.mark.server
def test_one_log_holds_every_decision_of_the_mesh(envoy: Any, tmp_path: Path) -> None:
    _policy(tmp_path)
    decisions = tmp_path / "decisions.log"
    gate_file = tmp_path / "served-gate.json"
    args = ["--policy-dir", str(tmp_path / "policy"), "--gate-file", str(gate_file)]
    srv = ServerProcess("authz", [*args, "--decision-log", str(decisions)], tmp_path, health=True)
    with Echo("frontend-v1") as app:
        mesh = gate_mesh(app.port, srv.port, gate=str(gate_file), decision_log=str(decisions))
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        srv.start()
        try:
            with control_plane(path) as cpt:
                start_nodes(envoy, cpt, "ingress~ingress", "sidecar~frontend-v1")
                url = f"http://{mesh['gateways'][0]['address']}"
                assert get(f"{url}/hello").status_code == 200  # native at the ingress and the sidecar
                assert get(f"{url}/blocked").status_code == 403  # native at the ingress
                assert get(f"{url}/orders/1").status_code == 403  # the server, asked by the ingress
                assert get(f"{url}/orders/1", headers={"x-customer": "c"}).status_code == 200  # both ask
                assert get(f"{url}/public-page").status_code == 200  # unchecked: no decision
                want = [
                    ("envoy", "ingress~ingress", "/hello", "allow"),
                    ("envoy", "sidecar~frontend-v1", "/hello", "allow"),
                    ("envoy", "ingress~ingress", "/blocked", "deny"),
                    ("server", None, "/orders/1", "deny"),
                    ("server", None, "/orders/1", "allow"),
                    ("server", None, "/orders/1", "allow"),
                ]
                deadline = time.monotonic() + 10
                while len(decisions.read_text().splitlines()) < len(want) and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(1.2)  # one more flush of Envoy's file logs: nothing else arrives
                lines = [json.loads(x) for x in decisions.read_text().splitlines()]
                got = sorted((x["decided_by"], x.get("node"), x["path"], x["result"]) for x in lines)
                assert got == sorted(want), lines
                blocked = next(x for x in lines if x["path"] == "/blocked")
                assert blocked["rule"] == "blocked[0]" and blocked["status"] == 403
                hello = next(x for x in lines if x["path"] == "/hello" and x["node"] == "sidecar~frontend-v1")
                assert hello["rule"] == "known-paths[0]"
                # the sidecar is under STRICT mTLS: its line names the ingress's certificate
                assert hello["principal"].startswith("spiffe://test.local/")
        finally:
            srv.stop()

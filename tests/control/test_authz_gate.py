"""The control plane wires the authz native gate from the document ``envoykit authz serve`` publishes:
sidecars and the ingress decide natively what no Python rule applies to, call the server for the rest,
keep per-route disables, follow the server's policy reloads (and only those it accepts), drop the
gate when the document cannot be read, and fail closed only for what needs Python when the server is
down."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from envoykit.authz import load_policy
from envoykit.authz.gate import DENY_FILTER, GATE_FILTERS, gate_document
from envoykit.control.model.loader import load_mesh
from envoykit.control.translate.translation import translate
from envoykit.control.xds.type_urls import LISTENER, ROUTE
from envoykit.core.authzgate import read_document, write_document
from envoykit.core.errors import ConfigError
from tests.control.apps import Echo
from tests.control.meshkit import addr, control_plane, get, start_nodes, workload, write_mesh
from tests.serverproc import ServerProcess

POLICY = """
kind: AuthorizationPolicy
metadata: {name: known-paths}
spec:
  rules: [{to: [{operation: {paths: ["/hello*", "/orders/*"]}}]}]
---
kind: AuthorizationPolicy
metadata: {name: blocked}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/blocked*"]}}]}]
"""

RULES = """
from envoykit.authz import deny_rule

@deny_rule(paths=["/orders/*"])
def orders_need_a_customer(req):
    return req.headers.get("x-customer") is None
"""


def gate_mesh(app_port: int, authz_port: int, mtls: str = "STRICT", **authz: Any) -> dict[str, Any]:
    return {
        "trust_domain": "test.local",
        "extensions": {
            "authz": {
                "address": f"127.0.0.1:{authz_port}",
                "policy_dir": "policy",
                "gate": "gate.json",
                **authz,
            }
        },
        "services": [
            {
                "name": "frontend",
                "mtls": mtls,
                "extensions": {"authz": {"skip_paths": ["/public"]}},
                "workloads": [workload("frontend-v1", "v1", app_port)],
            }
        ],
        "gateways": [
            {
                "name": "ingress",
                "kind": "ingress",
                "address": addr(),
                "admin": addr(),
                "extensions": {"authz": {}},
            }
        ],
        "virtual_services": [
            {
                "name": "ingress",
                "hosts": ["*"],
                "gateways": ["ingress"],
                "http": [
                    {
                        "match": [{"uri": {"prefix": "/public"}}],
                        "route": [{"destination": {"host": "frontend"}}],
                        "authz": {"disabled": True},
                    },
                    {"route": [{"destination": {"host": "frontend"}}]},
                ],
            }
        ],
    }


def _policy(tmp_path: Path, rules: str = RULES) -> None:
    d = tmp_path / "policy"
    d.mkdir(exist_ok=True)
    (d / "policy.yaml").write_text(POLICY)
    (d / "rules.py").write_text(rules)


def _publish(tmp_path: Path) -> None:
    """What ``envoykit authz serve --gate-file gate.json`` writes for the policy directory."""
    write_document(gate_document(load_policy(tmp_path / "policy")), tmp_path / "gate.json")


def _ext_authz(node: Any) -> ext_authz_pb2.ExtAuthz:
    """The ext_authz filter of ``node``'s HTTP listener that has one (the inbound side of a sidecar)."""
    conf = ext_authz_pb2.ExtAuthz()
    for lst in node.resources(LISTENER).values():
        h = hcm.HttpConnectionManager()
        lst.filter_chains[0].filters[0].typed_config.Unpack(h)
        for f in h.http_filters:
            if f.name == "envoy.filters.http.ext_authz":
                f.typed_config.Unpack(conf)
                return conf
    raise AssertionError("no ext_authz filter")


def _http_filters(node: Any) -> list[str]:
    names = []
    for lst in node.resources(LISTENER).values():
        for chain in lst.filter_chains:
            for f in chain.filters:
                if f.name == "envoy.filters.network.http_connection_manager":
                    conf = hcm.HttpConnectionManager()
                    f.typed_config.Unpack(conf)
                    names.append([h.name for h in conf.http_filters])
    return names[0] if names else []


def test_translation_wires_the_gate_and_its_off_switches(tmp_path: Path) -> None:
    _policy(tmp_path)
    _publish(tmp_path)
    path = write_mesh(tmp_path / "mesh.yaml", gate_mesh(9, 10, "DISABLE"))
    loaded = load_mesh(path)
    assert tmp_path / "gate.json" in loaded.files  # the control plane follows the published gate
    assert tmp_path / "policy" not in loaded.files  # and never reads the policy itself
    translation = translate(loaded.mesh, loaded.base_dir)
    assert translation.gate_digest is not None
    nodes = translation.nodes
    ingress = nodes["ingress~ingress"]
    assert _http_filters(ingress)[:3] == [*GATE_FILTERS, "envoy.filters.http.ext_authz"]
    assert _ext_authz(ingress).HasField("filter_enabled_metadata")
    routes = next(iter(ingress.resources(ROUTE).values()))
    public = routes.virtual_hosts[0].routes[0]
    assert set(GATE_FILTERS) <= set(public.typed_per_filter_config)  # off where ext_authz is off
    sidecar = nodes["sidecar~frontend-v1"]
    assert DENY_FILTER in _http_filters(sidecar)

    def no_gate(mesh: dict[str, Any]) -> None:
        loaded = load_mesh(write_mesh(tmp_path / "mesh.yaml", mesh))
        for node in translate(loaded.mesh, loaded.base_dir).nodes.values():
            assert not set(GATE_FILTERS) & set(_http_filters(node))
            assert not _ext_authz(node).HasField("filter_enabled_metadata")  # every request to the server

    no_gate(gate_mesh(9, 10, "DISABLE", native_gate=False))  # the off switch
    no_gate(
        {
            **gate_mesh(9, 10, "DISABLE"),
            "extensions": {"authz": {"address": "127.0.0.1:10", "policy_dir": "policy"}},
        }
    )
    # fail closed: a document that cannot be read or checked gives no gate, never the last one
    text = (tmp_path / "gate.json").read_text()
    (tmp_path / "gate.json").write_text(text.replace("blocked", "blockex"))  # digest breaks
    no_gate(gate_mesh(9, 10, "DISABLE"))
    (tmp_path / "gate.json").write_text(text[: len(text) // 2])  # torn
    no_gate(gate_mesh(9, 10, "DISABLE"))
    (tmp_path / "gate.json").unlink()  # not written yet
    no_gate(gate_mesh(9, 10, "DISABLE"))
    no_gate(gate_mesh(9, 10, "DISABLE", gate="http://127.0.0.1:1/gate"))  # unreachable
    # a Python rule that applies to everything: the published document says so, no gate
    _policy(tmp_path, "from envoykit.authz import allow_rule\n@allow_rule()\ndef a(req): return True\n")
    _publish(tmp_path)
    no_gate(gate_mesh(9, 10, "DISABLE"))
    path = write_mesh(tmp_path / "mesh.yaml", gate_mesh(9, 10, "DISABLE", policy_dir="nowhere"))
    with pytest.raises(ConfigError, match=r"extensions.authz.policy_dir: no such directory: nowhere"):
        load_mesh(path)


def _wait_for(what: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.envoy
@pytest.mark.server
@pytest.mark.parametrize("source", ["file", "url"])
def test_gate_through_the_ingress_and_a_sidecar(envoy: Any, tmp_path: Path, source: str) -> None:
    _policy(tmp_path)
    gate_file = tmp_path / "served-gate.json"
    args = ["--policy-dir", str(tmp_path / "policy"), "--settle-ms", "50", "--gate-file", str(gate_file)]
    # started once the config naming its port is written
    srv = ServerProcess("authz", args, tmp_path, health=True)
    gate = str(gate_file) if source == "file" else f"http://127.0.0.1:{srv.metrics_port}/gate"
    with Echo("frontend-v1") as app:
        mesh = gate_mesh(app.port, srv.port, gate=gate)
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        srv.start()
        try:
            with control_plane(path) as cpt:
                ingress, sidecar = start_nodes(envoy, cpt, "ingress~ingress", "sidecar~frontend-v1")
                url = f"http://{mesh['gateways'][0]['address']}"

                def checks() -> tuple[int, int]:
                    calls = disabled = 0
                    for proxy in (ingress, sidecar):
                        stats = proxy.stats("http.")
                        calls += sum(
                            v for k, v in stats.items() if k.endswith((".ext_authz.ok", ".ext_authz.denied"))
                        )
                        disabled += sum(v for k, v in stats.items() if k.endswith(".ext_authz.disabled"))
                    return calls, disabled

                assert get(f"{url}/hello").status_code == 200
                assert checks() == (0, 2)  # decided natively at the ingress and at the sidecar
                r = get(f"{url}/blocked")
                assert (r.status_code, r.text) == (403, "RBAC: access denied")
                assert get(f"{url}/nothing").status_code == 403
                assert checks() == (0, 2)
                assert get(f"{url}/orders/1").status_code == 403  # the Python rule, at the ingress
                assert checks() == (1, 2)
                assert get(f"{url}/orders/1", headers={"x-customer": "c"}).status_code == 200
                assert checks() == (3, 2)  # the ingress and the sidecar both asked the server
                # ext_authz off on this route (ingress) and skip_paths (sidecar): the gate is off too
                assert get(f"{url}/public-page").status_code == 200
                assert checks() == (3, 2)
                # a policy change: the server reloads and publishes, the control plane pushes the new gate
                assert get(f"{url}/hello/admin").status_code == 200
                first = gate_file.read_text()
                (tmp_path / "policy" / "admin.yaml").write_text(
                    "kind: AuthorizationPolicy\nmetadata: {name: no-admin}\nspec:\n  action: DENY\n"
                    '  rules: [{to: [{operation: {paths: ["/hello/admin*"]}}]}]\n'
                )
                _wait_for(lambda: get(f"{url}/hello/admin").status_code == 403)
                calls = checks()
                r = get(f"{url}/hello/admin")
                assert (r.status_code, r.text) == (403, "RBAC: access denied")  # natively, by the new gate
                assert checks()[0] == calls[0]
                assert get(f"{url}/hello").status_code == 200
                assert gate_file.read_text() != first
                # `envoykit control status` names the gate document the pushed version was built from
                assert cpt.cp.status()["authz_gate"] == read_document(str(gate_file)).digest
                # a reload the server refuses changes neither the server nor the gate
                second = gate_file.read_text()
                (tmp_path / "policy" / "broken.yaml").write_text("kind: AuthorizationPolicy\nmetadata: [\n")
                _wait_for(
                    lambda: "refused" in srv.log_path.read_text() or "rejected" in srv.log_path.read_text()
                )
                time.sleep(1.5)  # a poll and a push would have happened by now
                assert gate_file.read_text() == second
                assert get(f"{url}/hello/admin").status_code == 403
                assert get(f"{url}/hello").status_code == 200
                assert checks()[0] == calls[0]  # still decided natively: no call reached the server
                srv.stop()  # what needs Python fails closed; the rest does not need the server
                assert get(f"{url}/orders/1", headers={"x-customer": "c"}).status_code == 403
                assert get(f"{url}/blocked").status_code == 403
                if source == "file":  # the published document stays: natively decided requests go on
                    assert get(f"{url}/hello").status_code == 200
                else:  # /gate is gone with the server: the control plane drops the gate (fail closed)
                    _wait_for(lambda: get(f"{url}/hello").status_code == 403)
        finally:
            srv.stop()

"""The control plane wires the authz native gate: sidecars and the ingress decide natively what no
Python rule applies to, call ``envoykit authz serve`` for the rest, keep per-route disables, and fail
closed only for what needs Python when the server is down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from envoykit.authz.gate import DENY_FILTER, GATE_FILTERS
from envoykit.control.model.loader import load_mesh
from envoykit.control.translate.translation import translate
from envoykit.control.xds.type_urls import LISTENER, ROUTE
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
        "extensions": {"authz": {"address": f"127.0.0.1:{authz_port}", "policy_dir": "policy", **authz}},
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
    path = write_mesh(tmp_path / "mesh.yaml", gate_mesh(9, 10, "DISABLE"))
    loaded = load_mesh(path)
    assert tmp_path / "policy" in loaded.files  # the control plane follows the policy directory
    nodes = translate(loaded.mesh, loaded.base_dir).nodes
    ingress = nodes["ingress~ingress"]
    assert _http_filters(ingress)[:3] == [*GATE_FILTERS, "envoy.filters.http.ext_authz"]
    routes = next(iter(ingress.resources(ROUTE).values()))
    public = routes.virtual_hosts[0].routes[0]
    assert set(GATE_FILTERS) <= set(public.typed_per_filter_config)  # off where ext_authz is off
    sidecar = nodes["sidecar~frontend-v1"]
    assert DENY_FILTER in _http_filters(sidecar)
    # off switch: native_gate false keeps plain ext_authz, without filter_enabled_metadata
    path = write_mesh(tmp_path / "mesh.yaml", gate_mesh(9, 10, "DISABLE", native_gate=False))
    loaded = load_mesh(path)
    for node in translate(loaded.mesh, loaded.base_dir).nodes.values():
        assert not set(GATE_FILTERS) & set(_http_filters(node))
    # a Python rule that applies to everything: no gate, every request to ext_authz
    _policy(tmp_path, "from envoykit.authz import allow_rule\n@allow_rule()\ndef a(req): return True\n")
    path = write_mesh(tmp_path / "mesh.yaml", gate_mesh(9, 10, "DISABLE"))
    loaded = load_mesh(path)
    ingress = translate(loaded.mesh, loaded.base_dir).nodes["ingress~ingress"]
    assert _http_filters(ingress)[0] == "envoy.filters.http.ext_authz"
    conf = ext_authz_pb2.ExtAuthz()  # and ext_authz carries no metadata matcher
    for lst in ingress.resources(LISTENER).values():
        f = lst.filter_chains[0].filters[0]
        h = hcm.HttpConnectionManager()
        f.typed_config.Unpack(h)
        h.http_filters[0].typed_config.Unpack(conf)
    assert not conf.HasField("filter_enabled_metadata")
    # a policy emptied between versions is refused, as the server refuses it
    (tmp_path / "policy" / "rules.py").write_text("")
    with pytest.raises(ConfigError, match=r"rules\.py: this file had 1 rule"):
        translate(loaded.mesh, loaded.base_dir)
    path = write_mesh(tmp_path / "mesh.yaml", gate_mesh(9, 10, "DISABLE", policy_dir="nowhere"))
    with pytest.raises(ConfigError, match=r"extensions.authz.policy_dir: no such directory: nowhere"):
        load_mesh(path)


@pytest.mark.envoy
@pytest.mark.server
def test_gate_through_the_ingress_and_a_sidecar(envoy: Any, tmp_path: Path) -> None:
    _policy(tmp_path)
    # started once the config naming its port is written
    srv = ServerProcess("authz", ["--policy-dir", str(tmp_path / "policy")], tmp_path, health=True)
    with Echo("frontend-v1") as app:
        mesh = gate_mesh(app.port, srv.port)
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
                srv.stop()  # what needs Python fails closed; the rest does not need the server
                assert get(f"{url}/orders/1", headers={"x-customer": "c"}).status_code == 403
                assert get(f"{url}/hello").status_code == 200
                assert get(f"{url}/blocked").status_code == 403
        finally:
            srv.stop()

"""The endpoint-only road of a mesh.yaml edit (ControlPlane reload → recompile_endpoints): which edits
take it, and that what it serves is exactly what the full road would serve, with every untouched
node keeping its served snapshot object (so nothing is pushed to it). The control planes are built
inside a test's event loop (gRPC's aio server needs one) but not started: reloads run in the test."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from envoykit.control.model.diff import endpoint_changes
from envoykit.control.model.loader import parse_mesh
from envoykit.control.server import ControlPlane, build_snapshots
from envoykit.control.translate.mtls import SpiffeMeshTls
from envoykit.control.translate.translation import translate
from envoykit.control.xds.type_urls import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.control.meshkit import addr, sidecar, write_mesh


def mesh_doc(tmp: Path) -> dict[str, Any]:
    """Sidecar'd services (one with a v2 canary, subsets and a 90/10 split), a service without a
    sidecar, and an ingress gateway terminating TLS from files (so a file change can be tested)."""
    (tmp / "gw.crt").write_text("cert v1\n")
    (tmp / "gw.key").write_text("key v1\n")

    def wl(name: str, version: str = "v1", with_sidecar: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "version": version, "address": addr()}
        if with_sidecar:
            out["sidecar"] = sidecar()
        return out

    return {
        "services": [
            {"name": "alpha", "mtls": "STRICT", "workloads": [wl("alpha-v1"), wl("alpha-v2", "v2")]},
            {"name": "beta", "mtls": "STRICT", "workloads": [wl("beta-v1")]},
            {"name": "legacy", "mtls": "DISABLE", "workloads": [wl("legacy-v1", with_sidecar=False)]},
        ],
        "gateways": [
            {
                "name": "ingress",
                "kind": "ingress",
                "address": addr(),
                "admin": addr(),
                "tls": {"cert_file": "gw.crt", "key_file": "gw.key"},
            }
        ],
        "virtual_services": [
            {
                "name": "alpha",
                "hosts": ["alpha"],
                "http": [
                    {
                        "route": [
                            {"destination": {"host": "alpha", "subset": "v1"}, "weight": 90},
                            {"destination": {"host": "alpha", "subset": "v2"}, "weight": 10},
                        ]
                    }
                ],
            },
            {
                "name": "ingress",
                "hosts": ["*"],
                "gateways": ["ingress"],
                "http": [{"route": [{"destination": {"host": "beta"}}]}],
            },
        ],
        "destination_rules": [
            {
                "name": "alpha",
                "host": "alpha",
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
            }
        ],
    }


def wire(snapshots: dict[str, Any]) -> dict[str, dict[str, dict[str, bytes]]]:
    """node → type → resource name → serialized resource."""
    return {
        nid: {
            t: {n: a.value for n, (_v, a) in snap.get(t).entries().items()}
            for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE)
        }
        for nid, snap in snapshots.items()
    }


def edit_app_address(doc: dict[str, Any]) -> set[str]:
    doc["services"][1]["workloads"][0]["address"] = addr()  # beta's app moved behind its sidecar
    return {"sidecar~beta-v1"}


def edit_sidecar_inbound(doc: dict[str, Any]) -> set[str]:
    doc["services"][0]["workloads"][1]["sidecar"]["inbound"] = addr()  # alpha v2's endpoint moved
    return {"sidecar~alpha-v2"}


def edit_plain_endpoint(doc: dict[str, Any]) -> set[str]:
    doc["services"][2]["workloads"][0]["address"] = addr()  # legacy has no sidecar: EDS only
    return set()


@pytest.mark.parametrize("edit", [edit_app_address, edit_sidecar_inbound, edit_plain_endpoint])
async def test_an_address_edit_takes_the_endpoint_road_and_serves_what_the_full_road_would(
    tmp_path: Path, edit: Any
) -> None:
    doc = mesh_doc(tmp_path)
    path = write_mesh(tmp_path / "mesh.yaml", doc)
    cp = ControlPlane(path, address="127.0.0.1:0", state_dir=tmp_path / "state", watch=False)
    before = cp.current
    assert before.road == "full"
    changed_nodes = edit(doc)
    write_mesh(path, doc)
    assert cp.reload(), cp.config.last_error
    after = cp.current
    assert after.road == "endpoints"
    assert after.loaded.mesh == parse_mesh(path.read_text())
    full = translate(after.loaded.mesh, after.loaded.base_dir, SpiffeMeshTls())
    assert wire(after.snapshots) == wire(build_snapshots(full))  # byte for byte, every node, every type
    for nid, snap in after.snapshots.items():
        for t in (CLUSTER, LISTENER, ROUTE):
            if nid not in changed_nodes:  # untouched: the very same type set, so nothing is pushed
                assert snap.get(t) is before.snapshots[nid].get(t), (nid, t)
    eds_changed = {
        n
        for n, (_v, a) in after.snapshots["ingress~ingress"].get(ENDPOINT).entries().items()
        if before.snapshots["ingress~ingress"].get(ENDPOINT).entries()[n][1].value != a.value
    }
    assert len(eds_changed) == (0 if edit is edit_app_address else 2 if edit is edit_sidecar_inbound else 1)
    # the status view follows the new mesh
    assert after.translation.nodes["ingress~ingress"].node.gateway is after.loaded.mesh.gateways[0]


async def test_other_edits_take_the_full_road(tmp_path: Path) -> None:
    doc = mesh_doc(tmp_path)
    path = write_mesh(tmp_path / "mesh.yaml", doc)
    cp = ControlPlane(path, address="127.0.0.1:0", state_dir=tmp_path / "state", watch=False)
    served = cp.current
    # a route weight: full road, but untouched resources keep their served parts (no push)
    doc["virtual_services"][0]["http"][0]["route"][0]["weight"] = 80
    doc["virtual_services"][0]["http"][0]["route"][1]["weight"] = 20
    write_mesh(path, doc)
    assert cp.reload() and cp.current.road == "full"
    for nid, snap in cp.current.snapshots.items():
        for t in (CLUSTER, ENDPOINT, LISTENER):  # same version (not pushed), the served parts reused
            new, old = snap.get(t), served.snapshots[nid].get(t)
            assert new.version == old.version and all(
                a is b for a, b in zip(new.parts, old.parts, strict=True)
            )
    outbound = [snap.get(ROUTE).version for snap in cp.current.snapshots.values()]
    assert outbound != [snap.get(ROUTE).version for snap in served.snapshots.values()]
    # an endpoint edit together with a change of a referenced file: the full road (the file counts)
    (tmp_path / "gw.crt").write_text("cert v2\n")
    edit_plain_endpoint(doc)
    write_mesh(path, doc)
    assert cp.reload() and cp.current.road == "full"
    # a file change alone, mesh.yaml untouched: the full road too
    (tmp_path / "gw.key").write_text("key v2\n")
    assert cp.reload() and cp.current.road == "full"


def test_endpoint_changes_names_what_moved_and_refuses_the_rest(tmp_path: Path) -> None:
    doc = mesh_doc(tmp_path)
    old = parse_mesh(write_mesh(tmp_path / "a.yaml", doc).read_text())
    assert endpoint_changes(old, old) is not None and endpoint_changes(old, old).services == set()  # type: ignore[union-attr]
    moved = copy.deepcopy(doc)
    edit_sidecar_inbound(moved)
    edit_plain_endpoint(moved)
    found = endpoint_changes(old, parse_mesh(write_mesh(tmp_path / "b.yaml", moved).read_text()))
    assert found is not None
    assert found.services == {"alpha", "legacy"} and found.nodes == {"sidecar~alpha-v2"}
    for change in (
        lambda d: (
            d["services"][0]["workloads"][0]["labels"].update(x="y")
            if "labels" in d["services"][0]["workloads"][0]
            else d["services"][0]["workloads"][0].update(labels={"x": "y"})
        ),
        lambda d: d["services"][1]["workloads"][0]["sidecar"].update(outbound=addr()),
        lambda d: d["services"][1].update(mtls="PERMISSIVE"),
        lambda d: d["services"].append({"name": "gamma", "workloads": [{"name": "g", "address": addr()}]}),
        lambda d: d["gateways"][0].update(admin=addr()),
    ):
        other = copy.deepcopy(doc)
        change(other)
        assert endpoint_changes(old, parse_mesh(write_mesh(tmp_path / "c.yaml", other).read_text())) is None


async def test_a_new_gate_document_takes_the_full_road(tmp_path: Path) -> None:
    """The authz gate served over HTTP is no file the mesh names: an endpoint edit made while the
    published gate changed must still translate the new gate (and the endpoint road must not)."""
    import http.server
    import threading

    from tests.control.test_authz_gate import _policy, _publish, gate_mesh

    _policy(tmp_path)
    _publish(tmp_path)

    class Gate(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (tmp_path / "gate.json").read_bytes()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gate)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        doc = gate_mesh(9, 10, "DISABLE", gate=f"http://127.0.0.1:{srv.server_address[1]}/gate")
        path = write_mesh(tmp_path / "mesh.yaml", doc)
        cp = ControlPlane(path, address="127.0.0.1:0", state_dir=tmp_path / "state", watch=False)
        first = cp.current.translation.gate_digest
        assert first is not None
        doc["services"][0]["workloads"][0]["address"] = addr()  # an endpoint edit alone: the short road
        write_mesh(path, doc)
        assert cp.reload() and cp.current.road == "endpoints"
        assert cp.current.translation.gate_digest == first
        _policy(tmp_path, "")  # the authz server publishes another gate
        _publish(tmp_path)
        doc["services"][0]["workloads"][0]["address"] = addr()
        write_mesh(path, doc)
        assert cp.reload() and cp.current.road == "full"
        assert cp.current.translation.gate_digest not in (None, first)
    finally:
        srv.shutdown()

"""The endpoint-only road (ControlPlane.update_endpoints) through a real Envoy, SotW and delta: two
services behind an ingress under traffic; one service's endpoints move; the other keeps its endpoints
although its assignment is not resent, nothing is translated again, and no request fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from envoykit.control.model.mesh import Mesh, Service
from envoykit.control.model.types import Address
from envoykit.control.translate.clusters import model_endpoints
from tests.control.apps import Echo
from tests.control.meshkit import addr, control_plane, start_nodes, wait_until, write_mesh
from tests.k8s.helpers import Traffic


class MovableEndpoints:
    """The model's endpoints, except services whose addresses were moved (as discovery would)."""

    def __init__(self) -> None:
        self.moved: dict[str, list[Address]] = {}

    def __call__(self, mesh: Mesh, svc: Service, subset: str) -> list[Address]:
        return self.moved.get(svc.name) or model_endpoints(mesh, svc, subset)


def two_services(a: int, b: int) -> dict[str, Any]:
    def svc(name: str, port: int) -> dict[str, Any]:
        wl = {"name": f"{name}-v1", "version": "v1", "address": f"127.0.0.1:{port}"}
        return {"name": name, "mtls": "DISABLE", "workloads": [wl]}

    def route(name: str) -> dict[str, Any]:
        return {"match": [{"uri": {"prefix": f"/{name}"}}], "route": [{"destination": {"host": name}}]}

    return {
        "services": [svc("alpha", a), svc("beta", b)],
        "gateways": [{"name": "ingress", "kind": "ingress", "address": addr(), "admin": addr()}],
        "virtual_services": [
            {
                "name": "ingress",
                "hosts": ["*"],
                "gateways": ["ingress"],
                "http": [route("alpha"), route("beta")],
            }
        ],
    }


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_an_endpoint_change_moves_one_service_and_leaves_the_other(
    envoy: Any, tmp_path: Path, delta: bool
) -> None:
    source = MovableEndpoints()
    with Echo("a") as a, Echo("b1") as b1, Echo("b2") as b2:
        mesh = two_services(a.port, b1.port)
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        with control_plane(path, endpoints=source) as cpt:
            (proc,) = start_nodes(envoy, cpt, "ingress~ingress", delta=delta)
            url = f"http://{mesh['gateways'][0]['address']}"
            translation = cpt.cp.current.translation
            with Traffic(f"{url}/alpha") as ta, Traffic(f"{url}/beta") as tb:
                wait_until(lambda: ta.seen["a"] > 20 and tb.seen["b1"] > 20, 10)
                assert cpt.cp.update_endpoints(["alpha", "beta"]) == 0  # nothing moved: nothing sent
                source.moved["beta"] = [Address(host="127.0.0.1", port=b2.port)]
                assert cpt.cp.update_endpoints(["beta"]) == 1  # one assignment repacked
                wait_until(lambda: tb.seen["b2"] > 20, 10)
                before = tb.seen["b1"]
                a_before = ta.seen["a"]
                wait_until(lambda: ta.seen["a"] > a_before + 50, 10)  # alpha kept its endpoints
                assert tb.seen["b1"] <= before + 2  # at most what was in flight at the switch
            assert ta.failures == [] and tb.failures == []
            assert set(ta.seen) == {"a"}
            assert cpt.cp.current.translation is translation  # nothing was translated again
            stats = proc.stats()
            assert stats.get("cluster.outbound|80||alpha.default.membership_total") == 1
            assert stats.get("cluster.outbound|80||beta.default.membership_total") == 1

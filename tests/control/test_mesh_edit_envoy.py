"""mesh.yaml edits through real Envoys, SotW and delta: each edit pushes only what it changed.

An ingress routes ``/alpha`` to a service without a sidecar and ``/beta`` to a service behind its
sidecar, both Envoys fed by the control plane, traffic on both paths throughout. Envoy's own xDS
counters (``update_success`` of CDS, LDS, every RDS config and every EDS cluster) show what each
Envoy received:

* alpha's endpoint moved (the endpoint-only road): both Envoys get alpha's assignment, nothing else;
* beta's app moved behind its sidecar: only that sidecar gets its clusters again, the ingress nothing;
* a route edit (the full road): the ingress gets its routes, nothing else, and the sidecar nothing.

No request fails at any step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from envoykit.core.envoy import EnvoyProcess
from tests.control.apps import Echo
from tests.control.meshkit import addr, control_plane, sidecar, start_nodes, wait_until, write_mesh
from tests.k8s.helpers import Traffic

ALPHA = "outbound|80||alpha.default"
BETA = "outbound|80||beta.default"


def mesh_doc(a: int, b: int) -> dict[str, Any]:
    return {
        "services": [
            {
                "name": "alpha",
                "mtls": "DISABLE",
                "workloads": [{"name": "alpha-v1", "address": f"127.0.0.1:{a}"}],
            },
            {
                "name": "beta",
                "mtls": "DISABLE",
                "workloads": [{"name": "beta-v1", "address": f"127.0.0.1:{b}", "sidecar": sidecar()}],
            },
        ],
        "gateways": [{"name": "ingress", "kind": "ingress", "address": addr(), "admin": addr()}],
        "virtual_services": [
            {
                "name": "ingress",
                "hosts": ["*"],
                "gateways": ["ingress"],
                "http": [
                    {"match": [{"uri": {"prefix": "/alpha"}}], "route": [{"destination": {"host": "alpha"}}]},
                    {"match": [{"uri": {"prefix": "/beta"}}], "route": [{"destination": {"host": "beta"}}]},
                ],
            }
        ],
    }


def received(proc: EnvoyProcess) -> dict[str, int]:
    """Updates Envoy accepted, by xDS: CDS, LDS, RDS (every route config) and EDS per mesh cluster."""
    stats = proc.stats()
    return {
        "CDS": stats.get("cluster_manager.cds.update_success", 0),
        "LDS": stats.get("listener_manager.lds.update_success", 0),
        "RDS": sum(v for k, v in stats.items() if ".rds." in k and k.endswith(".update_success")),
        "EDS alpha": stats.get(f"cluster.{ALPHA}.update_success", 0),
        "EDS beta": stats.get(f"cluster.{BETA}.update_success", 0),
    }


def settle(procs: list[EnvoyProcess], seconds: float = 1.5) -> list[dict[str, int]]:
    """The counters once no update arrived for ``seconds`` (a push still under way would show)."""
    last = [received(p) for p in procs]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(seconds)
        now = [received(p) for p in procs]
        if now == last:
            return now
        last = now
    raise AssertionError(f"xDS updates never settled: {last}")


def grew(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {k for k in after if after[k] != before[k]}


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_mesh_edits_push_only_what_they_changed(envoy: Any, tmp_path: Path, delta: bool) -> None:
    with Echo("a1") as a1, Echo("a2") as a2, Echo("b1") as b1, Echo("b2") as b2:
        doc = mesh_doc(a1.port, b1.port)
        path = write_mesh(tmp_path / "mesh.yaml", doc)
        with control_plane(path) as cpt:
            procs = start_nodes(envoy, cpt, "ingress~ingress", "sidecar~beta-v1", delta=delta)
            url = f"http://{doc['gateways'][0]['address']}"
            with Traffic(f"{url}/alpha") as ta, Traffic(f"{url}/beta") as tb:
                wait_until(lambda: ta.seen["a1"] > 20 and tb.seen["b1"] > 20, 15)
                ingress0, sidecar0 = settle(procs)
                for counters in (ingress0, sidecar0):  # every counter is live (a renamed stat would read 0)
                    assert all(v > 0 for v in counters.values()), counters

                # 1. alpha's endpoint moves: the endpoint-only road, one assignment to each Envoy
                doc["services"][0]["workloads"][0]["address"] = f"127.0.0.1:{a2.port}"
                write_mesh(path, doc)
                assert cpt.reload() and cpt.cp.current.road == "endpoints"
                wait_until(lambda: ta.seen["a2"] > 20, 15)
                ingress1, sidecar1 = settle(procs)
                assert grew(ingress0, ingress1) == {"EDS alpha"}, (ingress0, ingress1)
                assert grew(sidecar0, sidecar1) == {"EDS alpha"}, (sidecar0, sidecar1)

                # 2. beta's app moves behind its sidecar: that sidecar's clusters, nothing else
                doc["services"][1]["workloads"][0]["address"] = f"127.0.0.1:{b2.port}"
                write_mesh(path, doc)
                assert cpt.reload() and cpt.cp.current.road == "endpoints"
                wait_until(lambda: tb.seen["b2"] > 20, 15)
                ingress2, sidecar2 = settle(procs)
                assert grew(ingress1, ingress2) == set(), (ingress1, ingress2)
                assert grew(sidecar1, sidecar2) == {"CDS"}, (sidecar1, sidecar2)

                # 3. a route edit: the full road; only the ingress's routes change
                doc["virtual_services"][0]["http"][0]["timeout"] = "7s"
                write_mesh(path, doc)
                assert cpt.reload() and cpt.cp.current.road == "full"
                ingress3, sidecar3 = settle(procs)
                assert grew(ingress2, ingress3) == {"RDS"}, (ingress2, ingress3)
                assert grew(sidecar2, sidecar3) == set(), (sidecar2, sidecar3)
                a_now, b_now = ta.seen["a2"], tb.seen["b2"]
                wait_until(lambda: ta.seen["a2"] > a_now + 20 and tb.seen["b2"] > b_now + 20, 15)
            assert ta.failures == [] and tb.failures == []

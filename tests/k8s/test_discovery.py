"""Discovery from the Kubernetes API: the official `kubernetes` client against a server that speaks the
API's list and watch (tests/k8s/fakeapi.py), feeding the control plane's EDS, with a real Envoy in
front of two upstreams: endpoints added and removed under traffic without a failed request; watches
resume from their resourceVersion, relist on 410 Gone, and an API outage keeps the last endpoints."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client

from envoykit.control.model.loader import parse_mesh
from envoykit.k8s.discovery import KubernetesEndpoints
from tests.control.apps import Echo
from tests.control.meshkit import control_plane, start_nodes, wait_until, write_mesh
from tests.control.test_traffic_envoy import gateway_mesh, to
from tests.k8s.fakeapi import FakeApi
from tests.k8s.helpers import Traffic

NS = "default"
SLICE = "endpointslices"


def api_client(api: FakeApi) -> Any:
    cfg = k8s_client.Configuration(host=api.url)
    return k8s_client.ApiClient(cfg)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi() as a:
        yield a


def source(api: FakeApi, **kw: Any) -> KubernetesEndpoints:
    src = KubernetesEndpoints(api_client(api), [NS], backoff=0.1, **kw)
    src.start()
    assert src.wait_synced(10)
    return src


MESH = parse_mesh(
    """
services:
  - name: backend
    mtls: DISABLE
    workloads:
      - {name: backend-v1, version: v1, address: 127.0.0.1:7001}
      - {name: backend-v2, version: v2, address: 127.0.0.1:7002}
"""
)


def addrs(src: KubernetesEndpoints, subset: str = "") -> list[str]:
    svc = MESH.service("backend")
    assert svc is not None
    return [str(a) for a in src(MESH, svc, subset)]


def test_list_watch_resume_410_and_outage(api: FakeApi) -> None:
    api.put_pod(NS, "backend-v1-aaa", {"envoykit.io/workload": "backend-v1"})
    api.put_slice(NS, "backend-x1", "backend", [("10.0.0.1", "backend-v1-aaa", True)], 8080)
    src = source(api, watch_timeout=1)
    try:
        # the pod names the workload: the model's port, not the slice's
        assert (
            addrs(src) == ["10.0.0.1:7001"]
            and addrs(src, "v1") == ["10.0.0.1:7001"]
            and addrs(src, "v2") == []
        )
        api.put_pod(NS, "backend-v2-bbb", {"envoykit.io/workload": "backend-v2"})
        api.put_slice(
            NS,
            "backend-x1",
            "backend",
            [
                ("10.0.0.1", "backend-v1-aaa", True),
                ("10.0.0.2", "backend-v2-bbb", True),
                ("10.0.0.3", "unknown-pod", True),
            ],
            8080,
        )
        # pods and slices are separate watches: until the pod's event arrives, its endpoint keeps the
        # slice's port and belongs to no subset
        wait_until(lambda: addrs(src) == ["10.0.0.1:7001", "10.0.0.2:7002", "10.0.0.3:8080"], 10)
        assert addrs(src, "v2") == ["10.0.0.2:7002"]
        # watches end every second and resume from the last resourceVersion they saw, without a new list
        lists = api.lists(SLICE)
        wait_until(lambda: len(api.watches(SLICE)) >= 3, 10)
        last = api.watches(SLICE)[-1]["resourceVersion"]
        assert int(last) >= int(api.objects[(SLICE, NS, "backend-x1")]["metadata"]["resourceVersion"])
        assert api.lists(SLICE) == lists
        # compaction past the slices' last version: their next watch gets 410 Gone → one new list
        api.put_pod(NS, "other", {"envoykit.io/workload": "x"})
        api.compact()
        wait_until(lambda: api.lists(SLICE) == lists + 1, 10)
        api.put_slice(
            NS,
            "backend-x1",
            "backend",
            [("10.0.0.2", "backend-v2-bbb", True), ("10.0.0.1", "backend-v1-aaa", False)],
            8080,
        )
        wait_until(lambda: addrs(src) == ["10.0.0.2:7002"], 10)  # not ready: gone
        # an outage keeps every endpoint; when the API is back, watches resume
        api.outage(True)
        wait_until(lambda: any(s.errors for s in src.status), 10)
        time.sleep(0.5)
        assert addrs(src) == ["10.0.0.2:7002"]
        api.outage(False)
        api.delete(SLICE, NS, "backend-x1")
        wait_until(lambda: addrs(src) == [], 10)
    finally:
        src.stop()


def test_endpoints_follow_the_api_under_traffic(envoy: Any, api: FakeApi, tmp_path: Path) -> None:
    with Echo("a") as a, Echo("b") as b:
        mesh = gateway_mesh([("backend-v1", "v1", a.port), ("backend-v2", "v2", b.port)], [{"route": [to()]}])
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        api.put_pod(NS, "backend-v1-aaa", {"envoykit.io/workload": "backend-v1"})
        # one slice per target port, as the EndpointSlice controller groups them; the port is the pod's
        api.put_slice(NS, "backend-a", "backend", [("127.0.0.1", "backend-v1-aaa", True)], a.port)
        src = source(api, watch_timeout=2)
        try:
            with control_plane(path, endpoints=src) as cpt:
                # the endpoint-only road, as `control serve --discovery kubernetes` wires it

                def endpoints_changed() -> None:
                    cpt.cp.update_endpoints(src.take_changed())

                src.on_change = endpoints_changed
                translation = cpt.cp.current.translation
                (proc,) = start_nodes(envoy, cpt, "ingress~ingress")
                url = f"http://{mesh['gateways'][0]['address']}/"
                with Traffic(url) as traffic:
                    seen, failures = traffic.seen, traffic.failures
                    wait_until(lambda: seen["a"] > 20, 10)
                    assert seen["b"] == 0
                    # a second pod becomes ready: traffic reaches it
                    api.put_pod(NS, "backend-v2-bbb", {"envoykit.io/workload": "backend-v2"})
                    api.put_slice(NS, "backend-b", "backend", [("127.0.0.1", "backend-v2-bbb", True)], b.port)
                    wait_until(lambda: seen["b"] > 20, 10)
                    # the first one terminates (not ready, still serving): it stops getting requests
                    api.put_slice(
                        NS, "backend-a", "backend", [("127.0.0.1", "backend-v1-aaa", False)], a.port
                    )
                    time.sleep(1.5)
                    before = seen["a"]
                    time.sleep(1.0)
                    assert seen["a"] == before
                    api.delete("pods", NS, "backend-v1-aaa")
                    # the API goes away: Envoy keeps the last endpoints, requests keep succeeding
                    api.outage(True)
                    n = seen["b"]
                    time.sleep(1.5)
                    assert seen["b"] > n and cpt.cp.current.translation is not None
                    api.outage(False)
                    # back, with a compacted history: relist, and the first pod returns
                    api.compact()
                    api.put_pod(NS, "backend-v1-ccc", {"envoykit.io/workload": "backend-v1"})
                    api.put_slice(NS, "backend-a", "backend", [("127.0.0.1", "backend-v1-ccc", True)], a.port)
                    a_before = seen["a"]
                    wait_until(lambda: seen["a"] > a_before + 20, 15)
                assert failures == []
                assert sum(seen.values()) > 200 and set(seen) == {"a", "b"}
                assert proc.stats().get("cluster.outbound|80||backend.default.upstream_rq_5xx", 0) == 0
                assert cpt.cp.current.translation is translation  # no change was translated again
        finally:
            src.stop()

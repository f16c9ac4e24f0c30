"""Traffic management through a real ingress Envoy fed by the control plane, with real requests.

Upstreams are reached without sidecars (``mtls: DISABLE``) so each test needs one Envoy only.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from envoykit.core.envoy import EnvoyProcess
from tests.control.apps import Echo, FlakyServer, self_signed
from tests.control.meshkit import ControlPlaneThread, addr, control_plane, start_nodes, wait_until, write_mesh

pytestmark = pytest.mark.envoy


def gateway_mesh(
    backends: list[tuple[str, str, int]], http: list[dict[str, Any]], dr: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Service ``backend`` with workloads ``(name, version, port)`` (no sidecars) behind an ingress."""
    mesh: dict[str, Any] = {
        "services": [
            {
                "name": "backend",
                "mtls": "DISABLE",
                "workloads": [{"name": n, "version": v, "address": f"127.0.0.1:{p}"} for n, v, p in backends],
            }
        ],
        "gateways": [{"name": "ingress", "kind": "ingress", "address": addr(), "admin": addr()}],
        "virtual_services": [{"name": "ingress", "hosts": ["*"], "gateways": ["ingress"], "http": http}],
    }
    if dr is not None:
        mesh["destination_rules"] = [{"name": "backend", "host": "backend", **dr}]
    return mesh


@contextmanager
def gateway(
    envoy: Any, tmp_path: Path, mesh: dict[str, Any], **kw: Any
) -> Iterator[tuple[ControlPlaneThread, str, EnvoyProcess]]:
    """Control plane + ingress Envoy for ``mesh``; yields (control plane, ingress base URL, Envoy)."""
    path = write_mesh(tmp_path / "mesh.yaml", mesh)
    with control_plane(path, **kw) as cpt:
        (proc,) = start_nodes(envoy, cpt, "ingress~ingress")
        yield cpt, f"http://{mesh['gateways'][0]['address']}", proc


def client() -> httpx.Client:
    return httpx.Client(timeout=10, trust_env=False)


def to(host: str = "backend", subset: str | None = None, weight: int | None = None) -> dict[str, Any]:
    dest: dict[str, Any] = {"destination": {"host": host, **({"subset": subset} if subset else {})}}
    if weight is not None:
        dest["weight"] = weight
    return dest


def test_weighted_split_holds_over_1000_requests(envoy: Any, tmp_path: Path) -> None:
    with Echo("v1") as v1, Echo("v2") as v2:
        mesh = gateway_mesh(
            [("backend-v1", "v1", v1.port), ("backend-v2", "v2", v2.port)],
            [{"route": [to(subset="v1", weight=80), to(subset="v2", weight=20)]}],
        )
        with gateway(envoy, tmp_path, mesh) as (_, url, _), client() as c:
            seen = Counter(c.get(f"{url}/split").headers["x-upstream"] for _ in range(1000))
    assert seen["v1"] + seen["v2"] == 1000
    assert abs(seen["v2"] / 1000 - 0.20) < 0.04, seen


def test_matches_header_rewrites_and_direct_response(envoy: Any, tmp_path: Path) -> None:
    with Echo("v1") as v1, Echo("v2") as v2:
        mesh = gateway_mesh(
            [("backend-v1", "v1", v1.port), ("backend-v2", "v2", v2.port)],
            [
                {"match": [{"headers": {"x-canary": {"exact": "yes"}}}], "route": [to(subset="v2")]},
                {"match": [{"query_params": {"beta": {"exact": "1"}}}], "route": [to(subset="v2")]},
                {"match": [{"uri": {"regex": "/items/[0-9]+"}}], "route": [to(subset="v2")]},
                {"match": [{"uri": {"exact": "/ping"}}], "direct_response": {"status": 204}},
                {
                    "match": [{"uri": {"prefix": "/api/"}}],
                    "rewrite": {"uri": "/v2/", "authority": "backend.internal"},
                    "headers": {
                        "request": {"set": {"x-mesh": "envoykit"}, "remove": ["x-drop"]},
                        "response": {"add": {"x-served-by": "mesh"}},
                    },
                    "route": [to(subset="v1")],
                },
                {"route": [to(subset="v1")]},
            ],
        )
        with gateway(envoy, tmp_path, mesh) as (_, url, _), client() as c:
            assert c.get(f"{url}/x", headers={"x-canary": "yes"}).headers["x-upstream"] == "v2"
            assert c.get(f"{url}/x", params={"beta": "1"}).headers["x-upstream"] == "v2"
            assert c.get(f"{url}/items/42").headers["x-upstream"] == "v2"
            assert c.get(f"{url}/items/abc").headers["x-upstream"] == "v1"
            assert c.get(f"{url}/ping").status_code == 204
            r = c.get(f"{url}/api/users", headers={"x-drop": "1"})
            seen = r.json()
            assert seen["path"] == "/v2/users"
            assert seen["headers"]["host"] == "backend.internal"
            assert seen["headers"]["x-mesh"] == "envoykit" and "x-drop" not in seen["headers"]
            assert r.headers["x-served-by"] == "mesh"


def test_retry_turns_one_failure_into_success(envoy: Any, tmp_path: Path) -> None:
    with FlakyServer("flaky", fail_first=1) as flaky:
        mesh = gateway_mesh(
            [("backend-v1", "v1", flaky.port)],
            [
                {
                    "match": [{"uri": {"prefix": "/retry"}}],
                    "route": [to()],
                    "retries": {"attempts": 2, "retry_on": "5xx", "backoff": {"base_interval": "10ms"}},
                },
                {"route": [to()]},
            ],
        )
        with gateway(envoy, tmp_path, mesh) as (_, url, _), client() as c:
            r = c.get(f"{url}/retry", headers={"x-test-id": "a"})
            assert r.status_code == 200 and flaky.seen["a"] == 2
            r = c.get(f"{url}/no-retry", headers={"x-test-id": "b"})
            assert r.status_code == 503 and flaky.seen["b"] == 1


def test_timeout_cuts_a_slow_upstream(envoy: Any, tmp_path: Path) -> None:
    with Echo("slow") as slow:
        mesh = gateway_mesh([("backend-v1", "v1", slow.port)], [{"route": [to()], "timeout": "300ms"}])
        with gateway(envoy, tmp_path, mesh) as (_, url, _), client() as c:
            start = time.monotonic()
            r = c.get(f"{url}/slow", headers={"x-echo-delay-ms": "3000"})
            elapsed = time.monotonic() - start
            assert r.status_code == 504
            assert 0.25 < elapsed < 2.0
            assert c.get(f"{url}/fast").status_code == 200


def test_fault_abort_and_delay_percentages(envoy: Any, tmp_path: Path) -> None:
    with Echo("v1") as v1:
        mesh = gateway_mesh(
            [("backend-v1", "v1", v1.port)],
            [
                {
                    "match": [{"uri": {"prefix": "/abort"}}],
                    "route": [to()],
                    "fault": {"abort": {"http_status": 418, "percentage": 30}},
                },
                {
                    "match": [{"uri": {"prefix": "/delay"}}],
                    "route": [to()],
                    "fault": {"delay": {"fixed_delay": "200ms", "percentage": 100}},
                },
            ],
        )
        with gateway(envoy, tmp_path, mesh) as (_, url, proc), client() as c:
            codes = Counter(c.get(f"{url}/abort").status_code for _ in range(500))
            assert set(codes) == {200, 418}
            assert abs(codes[418] / 500 - 0.30) < 0.07, codes
            for _ in range(3):
                start = time.monotonic()
                assert c.get(f"{url}/delay").status_code == 200
                assert time.monotonic() - start >= 0.19  # Envoy's timer may fire a hair early
            faults = proc.stats("http.ingress.fault.")
            assert faults["http.ingress.fault.delays_injected"] == 3
            assert faults["http.ingress.fault.aborts_injected"] == codes[418]


def test_circuit_breaking_rejects_over_the_limit(envoy: Any, tmp_path: Path) -> None:
    with Echo("v1") as v1:
        mesh = gateway_mesh(
            [("backend-v1", "v1", v1.port)],
            [{"route": [to()]}],
            dr={
                "traffic_policy": {
                    "connection_pool": {
                        "tcp": {"max_connections": 1},
                        "http": {"http1_max_pending_requests": 1},
                    }
                }
            },
        )
        with gateway(envoy, tmp_path, mesh) as (_, url, proc):

            def call(_: int) -> httpx.Response:
                with client() as c:
                    return c.get(f"{url}/cb", headers={"x-echo-delay-ms": "800"})

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                responses = list(pool.map(call, range(8)))
            codes = Counter(r.status_code for r in responses)
            overloaded = [r for r in responses if r.status_code == 503]
            assert codes[200] >= 1 and overloaded, codes
            assert all(r.headers.get("x-envoy-overloaded") == "true" for r in overloaded)
            stats = proc.stats("cluster.outbound|80||backend.default.upstream_rq_pending_overflow")
            assert sum(stats.values()) >= len(overloaded)


def test_outlier_detection_ejects_a_failing_endpoint(envoy: Any, tmp_path: Path) -> None:
    with Echo("good") as good, FlakyServer("bad", always_fail=True) as bad:
        mesh = gateway_mesh(
            [("backend-v1", "v1", good.port), ("backend-v1b", "v1", bad.port)],
            [{"route": [to()]}],
            dr={
                "traffic_policy": {
                    "outlier_detection": {
                        "consecutive_5xx_errors": 2,
                        "interval": "200ms",
                        "base_ejection_time": "60s",
                        "max_ejection_percent": 50,
                    }
                }
            },
        )
        with gateway(envoy, tmp_path, mesh) as (_, url, proc), client() as c:
            for _ in range(10):
                c.get(f"{url}/x")
            wait_until(
                lambda: (
                    proc.stats("cluster.outbound|80||backend.default.outlier_detection.ejections_active").get(
                        "cluster.outbound|80||backend.default.outlier_detection.ejections_active", 0
                    )
                    == 1
                )
            )
            after = Counter(c.get(f"{url}/x").headers["x-upstream"] for _ in range(20))
            assert after == {"good": 20}


def test_mirror_consistent_hash_and_active_health_check(envoy: Any, tmp_path: Path) -> None:
    with (
        Echo("a") as a,
        Echo("b") as b,
        Echo("shadow") as shadow,
        FlakyServer("sick", always_fail=True) as sick,
    ):
        mesh = gateway_mesh(
            [
                ("api-a", "v1", a.port),
                ("api-b", "v1", b.port),
                ("api-sick", "v1", sick.port),
                ("api-shadow", "v2", shadow.port),
            ],
            [
                {
                    "match": [{"uri": {"prefix": "/mirror"}}],
                    "route": [to(subset="v1")],
                    "mirror": {"host": "backend", "subset": "v2"},
                    "mirror_percentage": 100,
                },
                {"route": [to(subset="v1")]},
            ],
            dr={
                "traffic_policy": {
                    "load_balancer": {"consistent_hash": {"http_header_name": "x-user"}},
                    "health_check": {
                        "path": "/healthz",
                        "interval": "200ms",
                        "timeout": "500ms",
                        "unhealthy_threshold": 1,
                    },
                }
            },
        )
        with gateway(envoy, tmp_path, mesh) as (_, url, _), client() as c:
            # the sick endpoint fails its health check and gets no traffic
            wait_until(lambda: sick.seen[""] >= 2)
            users = {
                f"user-{i}": {
                    c.get(f"{url}/x", headers={"x-user": f"user-{i}"}).headers["x-upstream"] for _ in range(5)
                }
                for i in range(20)
            }
            assert all(len(seen) == 1 for seen in users.values()), users  # one upstream per user
            assert {u for seen in users.values() for u in seen} <= {"a", "b"}
            assert len({u for seen in users.values() for u in seen}) == 2  # users spread over both
            before = len(shadow.requests)
            assert c.get(f"{url}/mirror/1").status_code == 200
            wait_until(lambda: len(shadow.requests) == before + 1)
            assert shadow.requests[-1]["path"] == "/mirror/1"
            assert shadow.requests[-1]["headers"]["host"].endswith("-shadow")  # Envoy marks mirrored requests


def test_ingress_terminates_tls_with_a_given_certificate(envoy: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "demo.local")
    with Echo("v1") as v1:
        mesh = gateway_mesh([("backend-v1", "v1", v1.port)], [{"route": [to()]}])
        mesh["gateways"][0]["tls"] = {"cert_file": str(cert), "key_file": str(key)}
        with gateway(envoy, tmp_path, mesh) as (_, url, _):
            https = url.replace("http://", "https://")
            with httpx.Client(verify=False, trust_env=False, timeout=10) as c:
                r = c.get(f"{https}/secure")
            assert r.status_code == 200 and r.headers["x-upstream"] == "v1"
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"{url}/plain", trust_env=False, timeout=5)  # plaintext is not served

"""Rules marked ``blocking=True`` on the lean server: they run on handler threads, so a rule that waits
does not stall other requests, and their time stays bounded (through a real Envoy)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from envoykit.core import free_port
from tests.authz.conftest import authz_envoy_config

POLICY = """
import time
from envoykit.authz import allow_rule, deny_rule

@deny_rule(paths=["/lookup/*"], blocking=True)
def remote_blocklist(req):
    time.sleep(float(req.headers.get("x-sleep", "0")))  # stands for a call to another service
    return req.headers.get("x-user") == "mallory"

@allow_rule()
def known_users(req):
    return req.headers.get("x-user") in ("alice", "bob", "mallory")
"""


def test_a_waiting_rule_does_not_stall_other_requests(tmp_path: Path, envoy, echo, authz_server) -> None:  # type: ignore[no-untyped-def]
    pol = tmp_path / "p"
    pol.mkdir()
    (pol / "r.py").write_text(POLICY)
    srv = authz_server(pol, "--rule-budget-ms", "6000")
    port = free_port()
    envoy(
        authz_envoy_config(
            port,
            echo.port,
            srv.port,
            **{"grpc_service": {"envoy_grpc": {"cluster_name": "authz"}, "timeout": "9s"}},
        )
    )
    base = f"http://127.0.0.1:{port}"
    slow: list[int] = []
    t = threading.Thread(
        target=lambda: slow.append(
            httpx.get(
                f"{base}/lookup/x", headers={"x-user": "alice", "x-sleep": "3.0"}, timeout=10
            ).status_code
        )
    )
    t.start()
    time.sleep(0.2)
    fast = [
        httpx.get(f"{base}/api/{i}", headers={"x-user": "bob"}, timeout=10).status_code for i in range(10)
    ]
    still_waiting = t.is_alive()
    t.join(10)
    assert fast == [200] * 10
    assert still_waiting  # all ten were answered while the blocking rule slept
    assert slow == [200]
    assert httpx.get(f"{base}/lookup/y", headers={"x-user": "mallory"}, timeout=10).status_code == 403


def test_a_blocking_rule_past_its_budget_denies(tmp_path: Path, envoy, echo, authz_server) -> None:  # type: ignore[no-untyped-def]
    pol = tmp_path / "p"
    pol.mkdir()
    (pol / "r.py").write_text(POLICY)
    srv = authz_server(pol, "--rule-budget-ms", "100")
    port = free_port()
    envoy(
        authz_envoy_config(
            port,
            echo.port,
            srv.port,
            **{"grpc_service": {"envoy_grpc": {"cluster_name": "authz"}, "timeout": "5s"}},
        )
    )
    start = time.monotonic()
    r = httpx.get(
        f"http://127.0.0.1:{port}/lookup/z", headers={"x-user": "alice", "x-sleep": "3"}, timeout=10
    )
    assert r.status_code == 403  # failure_status: the rule overran, the request is denied
    assert time.monotonic() - start < 2.0  # bounded by the budget, not by the 3 s sleep
    assert (
        httpx.get(f"http://127.0.0.1:{port}/api/ok", headers={"x-user": "bob"}, timeout=10).status_code == 200
    )

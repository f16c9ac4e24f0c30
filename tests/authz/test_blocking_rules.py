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


def _start(tmp_path: Path, envoy, echo, authz_server, budget_ms: str, timeout: str) -> int:  # type: ignore[no-untyped-def]
    """POLICY served with ``--rule-budget-ms budget_ms`` behind an Envoy whose ext_authz times out after
    ``timeout``; returns the Envoy listener's port."""
    pol = tmp_path / "p"
    pol.mkdir()
    (pol / "r.py").write_text(POLICY)
    srv = authz_server(pol, "--rule-budget-ms", budget_ms)
    port = free_port()
    envoy(
        authz_envoy_config(
            port,
            echo.port,
            srv.port,
            **{"grpc_service": {"envoy_grpc": {"cluster_name": "authz"}, "timeout": timeout}},
        )
    )
    return port


def test_a_waiting_rule_does_not_stall_other_requests(tmp_path: Path, envoy, echo, authz_server) -> None:  # type: ignore[no-untyped-def]
    port = _start(tmp_path, envoy, echo, authz_server, "6000", "9s")
    base = f"http://127.0.0.1:{port}"
    slow: list[tuple[int, float]] = []

    def lookup() -> None:
        r = httpx.get(f"{base}/lookup/x", headers={"x-user": "alice", "x-sleep": "3.0"}, timeout=10)
        slow.append((r.status_code, time.monotonic()))

    t = threading.Thread(target=lookup)
    t.start()
    time.sleep(0.3)
    fast: list[tuple[int, float]] = []
    with httpx.Client() as c:
        while t.is_alive() and len(fast) < 200:
            fast.append(
                (c.get(f"{base}/api/x", headers={"x-user": "bob"}, timeout=10).status_code, time.monotonic())
            )
    t.join(10)
    assert slow and slow[0][0] == 200
    assert {code for code, _ in fast} == {200}
    # a stalled loop would answer nothing until the rule returns; here calls kept being answered
    during = [at for _, at in fast if at < slow[0][1] - 0.5]
    assert len(during) >= 3, (len(fast), len(during))
    assert httpx.get(f"{base}/lookup/y", headers={"x-user": "mallory"}, timeout=10).status_code == 403


def test_a_blocking_rule_past_its_budget_denies(tmp_path: Path, envoy, echo, authz_server) -> None:  # type: ignore[no-untyped-def]
    port = _start(tmp_path, envoy, echo, authz_server, "100", "5s")
    start = time.monotonic()
    r = httpx.get(
        f"http://127.0.0.1:{port}/lookup/z", headers={"x-user": "alice", "x-sleep": "3"}, timeout=10
    )
    assert r.status_code == 403  # failure_status: the rule overran, the request is denied
    assert time.monotonic() - start < 2.0  # bounded by the budget, not by the 3 s sleep
    assert (
        httpx.get(f"http://127.0.0.1:{port}/api/ok", headers={"x-user": "bob"}, timeout=10).status_code == 200
    )

"""The lean unary server behind a real Envoy: its envoy_grpc client for ext_authz, gRPC health checks,
deadlines from ext_authz's timeout, many streams on one connection, and a drain under traffic."""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as ea
from google.rpc import status_pb2

from envoykit.core import free_port
from envoykit.core.unary import UnaryMethod
from tests.core.unaryhelpers import ServerThread
from tests.envoycfg import bootstrap, cluster, direct_response, http_listener

pytestmark = pytest.mark.envoy

CHECK = "/envoy.service.auth.v3.Authorization/Check"
OK = ea.CheckResponse(status=status_pb2.Status(code=0), ok_response=ea.OkHttpResponse()).SerializeToString()


class Policy:
    """Allows paths under /ok, denies the rest; /slow/<s> waits s seconds on the loop's timer first."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = 0

    def check(self, req: ea.CheckRequest) -> Any:
        self.calls += 1
        path = req.attributes.request.http.path
        if path.startswith("/slow/"):
            return self._slow(float(path.rsplit("/", 1)[1]))
        if path.startswith("/ok"):
            return OK
        return ea.CheckResponse(status=status_pb2.Status(code=7, message="no"))

    async def _slow(self, seconds: float) -> bytes:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return OK


def _config(listen: int, authz: int, timeout: str = "1s") -> dict[str, Any]:
    filt = {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "grpc_service": {"envoy_grpc": {"cluster_name": "authz"}, "timeout": timeout},
            "transport_api_version": "V3",
            "failure_mode_allow": False,
        },
    }
    c = cluster("authz", authz, http2=True)
    c["health_checks"] = [
        {
            "timeout": "1s",
            "interval": "0.2s",
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
            "grpc_health_check": {"service_name": "envoy.service.auth.v3.Authorization"},
        }
    ]
    return bootstrap([http_listener(listen, [direct_response(200, "ok")], [filt])], [c])


def _wrk(url: str) -> tuple[int, int]:
    """``(requests, non-2xx)`` of 2 s of wrk with 32 connections."""
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", "32", "-d", "2s", url], capture_output=True, text=True, check=True
    ).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return total, int(non2xx.group(1)) if non2xx else 0


def _healthy(env: Any) -> bool:
    return "health_flags::healthy" in env.admin("/clusters")


def _wait(cond: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_envoy_ext_authz_health_and_many_streams(envoy) -> None:  # type: ignore[no-untyped-def]
    policy = Policy()
    with ServerThread(
        [UnaryMethod(CHECK, ea.CheckRequest, policy.check)], service="envoy.service.auth.v3.Authorization"
    ) as st:
        port = free_port()
        env = envoy(_config(port, st.port))
        _wait(lambda: _healthy(env))  # Envoy's gRPC health checker got SERVING
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/ok/1").status_code == 200
        assert httpx.get(f"{base}/nope").status_code == 403

        # load from another process (wrk, 32 connections): in-process client threads would starve
        # the server's loop of the GIL and measure the test, not the server
        ok = _wrk(f"{base}/ok/x")
        no = _wrk(f"{base}/no/x")
        assert ok[0] > 100 and ok[1] == 0, ok  # every one allowed
        assert no[0] > 100 and no[1] == no[0], no  # every one denied
        assert policy.calls >= ok[0] + no[0]
        assert st.server.connections <= 2  # Envoy multiplexes the calls over its connection(s)


def test_envoy_timeout_becomes_a_deadline_and_a_deny(envoy) -> None:  # type: ignore[no-untyped-def]
    policy = Policy()
    with ServerThread(
        [UnaryMethod(CHECK, ea.CheckRequest, policy.check)], service="envoy.service.auth.v3.Authorization"
    ) as st:
        port = free_port()
        envoy(_config(port, st.port, timeout="0.2s"))
        start = time.monotonic()
        r = httpx.get(f"http://127.0.0.1:{port}/slow/2", timeout=10)
        assert r.status_code == 403  # fail closed on the timeout
        assert time.monotonic() - start < 1.5
        _wait(lambda: policy.cancelled == 1)  # the call was ended on the server too, not left waiting
        assert httpx.get(f"http://127.0.0.1:{port}/ok").status_code == 200


def test_drain_under_envoy_finishes_calls_in_flight(envoy) -> None:  # type: ignore[no-untyped-def]
    policy = Policy()
    st = ServerThread(
        [UnaryMethod(CHECK, ea.CheckRequest, policy.check)], service="envoy.service.auth.v3.Authorization"
    ).__enter__()
    try:
        port = free_port()
        envoy(_config(port, st.port, timeout="3s"))
        result: list[int] = []
        t = threading.Thread(
            target=lambda: result.append(
                httpx.get(f"http://127.0.0.1:{port}/slow/0.6", timeout=10).status_code
            )
        )
        t.start()
        _wait(lambda: policy.calls >= 1)
        st.stop(grace=3.0)  # NOT_SERVING, GOAWAY, listener closed; the call in flight finishes
        t.join(10)
        assert result == [200]
        assert httpx.get(f"http://127.0.0.1:{port}/ok", timeout=10).status_code == 403  # nobody serves
    finally:
        st.__exit__(None, None, None)

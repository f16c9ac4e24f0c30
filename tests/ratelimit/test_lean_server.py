"""The ratelimit process on the lean unary server: the store timeout bounds every call, even when
Redis stops answering and every store thread is stuck; ``--server grpcio`` still serves."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from tests.ratelimit.helpers import descriptor, request
from tests.ratelimit.redisproc import have_redis

LIMITS = (
    "domain: web\ndescriptors:\n  - key: client\n    rate_limit: {unit: minute, requests_per_unit: 1000}\n"
)


def _config(tmp_path: Path) -> Path:
    d = tmp_path / "limits"
    d.mkdir()
    (d / "web.yaml").write_text(LIMITS)
    return d


def _call(port: int, timeout: float = 10) -> tuple[str, float]:
    start = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            r = rls_pb2_grpc.RateLimitServiceStub(ch).ShouldRateLimit(
                request("web", descriptor(("client", "c"))), timeout=timeout
            )
            code = rls_pb2.RateLimitResponse.Code.Name(r.overall_code)
        except grpc.RpcError as exc:
            code = exc.code().name
    return code, time.monotonic() - start


@pytest.mark.redis
@pytest.mark.skipif(not have_redis(), reason="redis-server not installed")
def test_paused_redis_answers_unavailable_within_the_store_timeout(
    tmp_path: Path, redis_server, ratelimit
) -> None:  # type: ignore[no-untyped-def]
    rl = ratelimit(
        _config(tmp_path), "--redis-url", redis_server.url, "--store-timeout-ms", "300", "--threads", "2"
    )
    assert _call(rl.port)[0] == "OK"
    redis_server.cli("CLIENT", "PAUSE", "4000", "ALL")
    try:
        with ThreadPoolExecutor(24) as pool:
            results = list(pool.map(lambda _: _call(rl.port), range(24)))
    finally:
        redis_server.cli("CLIENT", "UNPAUSE")
    worst = max(t for _, t in results)
    print(f"24 calls against a paused Redis, 2 store threads: slowest answer {worst * 1000:.0f} ms")
    assert {c for c, _ in results} == {"UNAVAILABLE"}
    assert worst < 1.5  # 300 ms store timeout plus channel setup on a loaded machine; never the 4 s pause
    deadline = time.monotonic() + 10
    while _call(rl.port)[0] != "OK":  # Redis answers again: so does the server
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_grpcio_fallback_serves_and_memory_store_counts(tmp_path: Path, ratelimit) -> None:  # type: ignore[no-untyped-def]
    cfg = _config(tmp_path)
    (cfg / "web.yaml").write_text(LIMITS.replace("1000", "3").replace("minute", "day"))
    for server in ("grpcio", "lean"):
        rl = ratelimit(cfg, "--server", server)
        codes = [_call(rl.port)[0] for _ in range(5)]
        assert codes == ["OK", "OK", "OK", "OVER_LIMIT", "OVER_LIMIT"], server
        assert rl.stop() == 0

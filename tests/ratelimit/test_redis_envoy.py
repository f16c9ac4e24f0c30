"""Redis and Redis Cluster through a real Envoy: shared counters, Redis outages, cluster slots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from envoykit.core import free_port
from envoykit.ratelimit.algorithms import Algorithm, Hit
from tests.ratelimit.redisproc import RedisCluster, RedisServer
from tests.ratelimit.rlproc import envoy_config

pytestmark = [pytest.mark.envoy, pytest.mark.redis]


def _limits(tmp_path: Path, rpu: int) -> Path:
    d = tmp_path / "limits"
    d.mkdir(exist_ok=True)
    (d / "web.yaml").write_text(
        f"domain: web\ndescriptors:\n  - key: client\n    rate_limit: {{unit: hour, requests_per_unit: {rpu}}}\n"
    )
    return d


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


async def _burst(port: int, client: str, total: int, concurrency: int) -> list[int]:
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:

        async def one() -> int:
            async with sem:
                r = await http.get(f"http://127.0.0.1:{port}/x", headers={"x-client": client})
                return r.status_code

        return list(await asyncio.gather(*(one() for _ in range(total))))


def test_two_servers_sharing_redis_never_over_admit(
    tmp_path: Path,
    envoy,  # type: ignore[no-untyped-def]
    echo,
    ratelimit,
    redis_server: RedisServer,
) -> None:
    limit = 60
    cfg = _limits(tmp_path, limit)
    a = ratelimit(cfg, "--redis-url", redis_server.url)
    b = ratelimit(cfg, "--redis-url", redis_server.url)
    port = free_port()
    envoy(envoy_config([(port, True)], [a.port, b.port], echo.port))  # round robin over both servers
    for _ in range(2):  # a new hourly window inside the burst would double the budget: retry once
        hour = int(time.time()) // 3600
        codes = asyncio.run(_burst(port, f"shared-{time.monotonic_ns()}", total=200, concurrency=24))
        if int(time.time()) // 3600 == hour:
            break
    admitted = codes.count(200)
    assert admitted == limit, f"admitted {admitted} of 200 with limit {limit}"
    assert codes.count(429) == 200 - limit
    # both servers answered, and together they saw every request
    hits = [
        _metric(srv.metrics(), 'envoykit_ratelimit_hits_total{domain="web",key="client"}') for srv in (a, b)
    ]
    assert all(h > 0 for h in hits) and sum(hits) >= 200, hits


def test_redis_outage_follows_failure_mode_and_recovers(
    tmp_path: Path,
    envoy,  # type: ignore[no-untyped-def]
    echo,
    ratelimit,
    redis_server: RedisServer,
) -> None:
    rl = ratelimit(_limits(tmp_path, 1000), "--redis-url", redis_server.url, "--response-headers")
    deny, allow = free_port(), free_port()
    envoy(envoy_config([(deny, True), (allow, False)], [rl.port], echo.port))

    def get(port: int) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{port}/x", headers={"x-client": "out"}, timeout=10)

    assert get(deny).status_code == 200 and get(allow).status_code == 200
    redis_server.stop()
    t0 = time.monotonic()
    r = get(deny)
    elapsed = time.monotonic() - t0
    assert r.status_code == 500, r.text  # failure_mode_deny: true → refused
    assert elapsed < 3.0, f"error took {elapsed:.2f}s"
    assert get(allow).status_code == 200  # failure_mode_deny: false → let through
    assert _metric(rl.metrics(), 'envoykit_ratelimit_store_errors_total{store="redis"}') >= 1
    redis_server.start()  # same port, empty

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = get(deny)
        if r.status_code == 200:
            break
        time.sleep(0.2)
    assert r.status_code == 200, "service did not resume after Redis came back"
    assert int(r.headers["ratelimit-remaining"]) >= 990  # counting again, in the fresh Redis


@pytest.fixture(scope="module")
def cluster(redis_cluster: RedisCluster) -> RedisCluster:
    return redis_cluster


def test_cluster_store_spreads_slots_in_one_request(cluster: RedisCluster) -> None:
    from envoykit.ratelimit.stores.redis import RedisClusterStore

    st = RedisClusterStore(cluster.url)
    try:
        now = int(time.time() * 1000)
        hits = [
            Hit(f"ekrl:{{t{time.monotonic_ns()}-{i}}}|f60", 1, 3, 60_000, Algorithm.FIXED_WINDOW)
            for i in range(8)
        ]
        from redis.crc import key_slot

        assert len({key_slot(h.key.encode()) for h in hits}) > 1
        for expected in (1, 2, 3, 4):
            counts = st.apply(hits, now)
            assert [c.after for c in counts] == [expected] * 8
        sliding = [Hit(f"ekrl:{{s{time.monotonic_ns()}}}|s1", 1, 2, 1000, Algorithm.SLIDING_WINDOW)]
        assert [st.apply(sliding, now)[0].after for _ in range(3)] == [1, 2, 3]
    finally:
        st.close()


def test_cluster_through_envoy(
    tmp_path: Path,
    envoy,  # type: ignore[no-untyped-def]
    echo,
    ratelimit,
    cluster: RedisCluster,
) -> None:
    rl = ratelimit(_limits(tmp_path, 3), "--redis-cluster-url", cluster.url)
    port = free_port()
    envoy(envoy_config([(port, True)], [rl.port], echo.port))

    def codes(client: str) -> list[int]:
        return [
            httpx.get(f"http://127.0.0.1:{port}/x", headers={"x-client": client}, timeout=10).status_code
            for _ in range(4)
        ]

    run: Callable[[], list[int]] = lambda: codes(f"cl-{time.monotonic_ns()}")  # noqa: E731
    got = run()
    if got != [200, 200, 200, 429]:  # an hour boundary inside the run: once more
        got = run()
    assert got == [200, 200, 200, 429]

"""The Redis store on the event loop (``RedisStore.apply_async``, the lean server's path) against a real
redis-server: concurrent calls are exact and share script calls; a paused Redis fails every call
within the store timeout, later calls fail at once, and the store comes back by itself."""

from __future__ import annotations

import asyncio
import time

import pytest

from envoykit.ratelimit.algorithms import Algorithm, Hit
from envoykit.ratelimit.stores import StoreError
from envoykit.ratelimit.stores.redis import RedisStore
from tests.ratelimit.redisproc import RedisServer

pytestmark = pytest.mark.redis

TIMEOUT_S = 0.3


def _evalsha_calls(redis: RedisServer) -> int:
    for line in redis.cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_concurrent_calls_are_exact_and_batched(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, timeout_s=TIMEOUT_S)
    try:
        hit = Hit("ekrl:{t|client=a}|f60", 1, 100, 60_000, Algorithm.FIXED_WINDOW)
        now = int(time.time() * 1000)
        await store.apply_async([hit], now)  # loads the script
        calls_before = _evalsha_calls(redis_server)
        counts = await asyncio.gather(*[store.apply_async([hit], now) for _ in range(150)])
        afters = sorted(c[0].after for c in counts)
        assert afters == list(range(2, 152))  # every hit counted once, none lost or doubled
        assert sum(c[0].after > 100 for c in counts) == 51  # over the limit past 100, exactly
        script_calls = _evalsha_calls(redis_server) - calls_before
        assert 1 <= script_calls < 150, script_calls  # calls that met went out together
    finally:
        await store.aclose()
        store.close()


async def test_paused_redis_fails_within_the_timeout_then_recovers(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, timeout_s=TIMEOUT_S)
    hit = Hit("ekrl:{t|client=p}|f60", 1, 10**6, 60_000, Algorithm.FIXED_WINDOW)
    try:
        await store.apply_async([hit], int(time.time() * 1000))
        redis_server.cli("CLIENT", "PAUSE", "1500", "ALL")
        t0 = time.monotonic()
        results = await asyncio.gather(
            *[store.apply_async([hit], int(time.time() * 1000)) for _ in range(20)], return_exceptions=True
        )
        waited = time.monotonic() - t0
        assert all(isinstance(r, StoreError) for r in results), results
        assert waited <= TIMEOUT_S + 0.3, waited  # the margin of test_redis_faults (a busy 2-core machine)
        assert store.health() is not None  # down: readiness says so
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="unavailable"):
            await store.apply_async([hit], int(time.time() * 1000))
        assert time.monotonic() - t0 < 0.1  # fails at once while down (no round trip)
        deadline = time.monotonic() + 10
        while True:  # the probe brings it back once the pause ends
            try:
                counts = await store.apply_async([hit], int(time.time() * 1000))
                break
            except StoreError:
                assert time.monotonic() < deadline, "store did not recover"
                await asyncio.sleep(0.1)
        assert counts[0].after >= 2
    finally:
        await store.aclose()
        store.close()

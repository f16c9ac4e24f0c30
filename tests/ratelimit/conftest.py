"""Fixtures for the ratelimit tests: real Redis servers (skipped when missing) and ratelimit processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.ratelimit.redisproc import RedisCluster, RedisServer, have_redis
from tests.ratelimit.rlproc import RateLimitProcess


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server on a free port."""
    if not have_redis():
        pytest.skip("redis-server not installed (.ci/run installs it)")
    srv = RedisServer(tmp_path / "redis").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A three-master Redis Cluster, shared by the tests of one module."""
    if not have_redis():
        pytest.skip("redis-server not installed (.ci/run installs it)")
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


StartRL = Callable[..., RateLimitProcess]


@pytest.fixture
def ratelimit(tmp_path: Path) -> Iterator[StartRL]:
    """Start ``envoykit ratelimit serve`` processes: ``ratelimit(config_dir, *args)``; SIGTERM at teardown."""
    started: list[RateLimitProcess] = []

    def start(config_dir: Path, *args: str) -> RateLimitProcess:
        p = RateLimitProcess(config_dir, tmp_path, *args).start()
        started.append(p)
        return p

    yield start
    for p in started:
        if p.proc is not None:
            code = p.stop()
            assert code == 0, f"ratelimit exited {code} on SIGTERM:\n{p.log()[-3000:]}"

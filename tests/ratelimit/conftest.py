"""Fixtures for the ratelimit tests: real Redis servers (skipped when missing) and ratelimit processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.ratelimit.redisproc import RedisCluster, RedisServer, have_redis
from tests.serverproc import ServerProcess, StartServer


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


@pytest.fixture
def ratelimit(server_process: StartServer) -> Callable[..., ServerProcess]:
    """``ratelimit(config_dir, *args)``: ``envoykit ratelimit serve`` (tests/serverproc.py); at teardown
    it gets SIGTERM and must exit 0."""

    def start(config_dir: Path, *args: str) -> ServerProcess:
        return server_process("ratelimit", "--config-dir", str(config_dir), *args)

    return start

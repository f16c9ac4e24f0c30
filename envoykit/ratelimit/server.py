"""The ratelimit process: config watcher, store, servicer and a threaded gRPC server, wired together.

It runs on envoykit.core's thread-pool runner (:class:`~envoykit.core.server.SyncGrpcServer`): measured through Envoy on the 2-core dev machine, a grpc
server with a small thread pool answers ShouldRateLimit 30-100 % faster than grpc.aio (per-call CPU
in grpc.aio's poller/event-loop hand-off dominates a ~17 µs decision), and blocking Redis calls run
in parallel threads. The runner gives grpc health and reflection, Prometheus ``/metrics`` and a drain
on SIGTERM/SIGINT (health NOT_SERVING, refuse new calls, ``grace_s`` for calls in flight); the config
reloads keep-last-good (``WatchedConfig``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from envoykit.core import WatchedConfig, get_logger
from envoykit.core.server import SyncGrpcServer, termination_signal, wait_for_termination_signal
from envoykit.ratelimit.config import RateLimitConfig, dump, load_config_dir
from envoykit.ratelimit.metrics import StatsRegistry
from envoykit.ratelimit.service import RateLimitService, ServiceSettings
from envoykit.ratelimit.stores.base import Store
from envoykit.ratelimit.stores.memory import MemoryStore

SERVICE_NAME = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name


@dataclass
class ServerOptions:
    """Everything ``envoykit ratelimit serve`` takes.

    Attributes:
        config_dir: directory of rate-limit YAML files (or one file); watched and reloaded.
        address: ``host:port`` for gRPC (port 0: any free port).
        metrics_port: Prometheus ``/metrics`` port (0: any free port; None: off).
        redis_url / redis_cluster_url: use Redis / Redis Cluster instead of memory (at most one).
        redis_pool_size: bound of the Redis connection pool (per node on a cluster).
        store_timeout_s: connect and socket timeout of the store, in seconds.
        merge_domains: let several files add to one domain (MERGE_DOMAIN_CONFIG).
        max_stats_keys: bound on distinct stats keys (see :mod:`envoykit.ratelimit.metrics`).
        threads: gRPC worker threads.
        grace_s: drain time on SIGTERM, in seconds.
    """

    config_dir: Path
    address: str = "127.0.0.1:8081"
    metrics_port: int | None = None
    redis_url: str | None = None
    redis_cluster_url: str | None = None
    redis_pool_size: int = 16
    store_timeout_s: float = 0.5
    merge_domains: bool = False
    max_stats_keys: int = 10_000
    threads: int = 4
    grace_s: float = 5.0
    settings: ServiceSettings = field(default_factory=ServiceSettings)


def make_store(opts: ServerOptions) -> Store:
    """The store the options ask for (memory by default).

    Raises:
        ValueError: both Redis URLs given.
    """
    if opts.redis_url and opts.redis_cluster_url:
        raise ValueError("give --redis-url or --redis-cluster-url, not both")
    if opts.redis_url:
        from envoykit.ratelimit.stores.redis import RedisStore

        return RedisStore(
            opts.redis_url, max_connections=opts.redis_pool_size, timeout_s=opts.store_timeout_s
        )
    if opts.redis_cluster_url:
        from envoykit.ratelimit.stores.redis import RedisClusterStore

        return RedisClusterStore(
            opts.redis_cluster_url, max_connections=opts.redis_pool_size, timeout_s=opts.store_timeout_s
        )
    return MemoryStore()


class RateLimitServer:
    """The whole process, startable in a test: ``start()`` → ``port``; ``stop()`` drains.

    Raises (from the constructor):
        ConfigError: the config directory does not load; the server must not start without one.
    """

    def __init__(self, opts: ServerOptions) -> None:
        self.opts = opts
        self._log = get_logger("ratelimit")
        stats = StatsRegistry(opts.max_stats_keys)

        def loader(path: Path) -> RateLimitConfig:
            return load_config_dir(path, merge_domains=opts.merge_domains, stats=stats)

        self.watched = WatchedConfig("ratelimit", opts.config_dir, loader, on_change=self._loaded)
        self._loaded(self.watched.current)
        self.store = make_store(opts)
        self.service = RateLimitService(lambda: self.watched.current, self.store, opts.settings)
        self._server = SyncGrpcServer(
            "ratelimit", opts.address, threads=opts.threads, metrics_port=opts.metrics_port
        )
        self._server.add_service(
            rls_pb2_grpc.add_RateLimitServiceServicer_to_server, self.service, SERVICE_NAME
        )
        self._stop_watch = threading.Event()
        self._server.on_stop(self._stop_watch.set)
        self._server.on_stop(self.store.close)
        self._server.health.add_check("store", self.store.health)  # /readyz, /healthcheck
        self.port = 0
        self.metrics_port: int | None = None

    def _loaded(self, cfg: RateLimitConfig) -> None:
        self._log.info("rate limits loaded", domains=sorted(cfg.domains), rules=len(dump(cfg)))

    def start(self) -> int:
        """Bind, serve, mark SERVING, start metrics and the config watcher; return the gRPC port.

        Raises:
            OSError: the address cannot be bound.
        """
        self.port = self._server.start()
        self.metrics_port = self._server.metrics_port
        self.watched.watch_in_thread(self._stop_watch)
        self._log.info(
            "rate-limit service ready",
            store=self.store.name,
            threads=self.opts.threads,
            shadow_mode=self.opts.settings.shadow_mode,
        )
        return self.port

    def stop(self) -> None:
        """Drain: NOT_SERVING, refuse new calls, wait ``grace_s`` for calls in flight; close the store."""
        self._server.stop(self.opts.grace_s)


def run(opts: ServerOptions) -> None:
    """Serve until SIGTERM/SIGINT, then drain and return."""
    server = RateLimitServer(opts)
    stopping = termination_signal()  # before the port answers: an early SIGTERM still drains
    server.start()
    wait_for_termination_signal(stopping)
    server.stop()

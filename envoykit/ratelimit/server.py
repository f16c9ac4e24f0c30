"""The ratelimit process: config watcher, store, servicer and a gRPC server, wired together.

By default it runs on the lean unary server (:mod:`envoykit.core.unary`, one event loop): with the
memory store a call is decided inline; with one Redis the script call is awaited on the same loop
(redis-py's asyncio client; the calls that meet while one is in flight go out together), bounded by
``store_timeout_s`` (:mod:`envoykit.ratelimit.stores.loopsender`); with Redis Cluster the blocking
redis-py call runs on ``threads`` handler threads, and the event loop answers UNAVAILABLE once
``store_timeout_s`` has passed without an answer, so the store timeout bounds a call's time even
when the threads are all stuck. ``server="grpcio"`` keeps the thread-pool
grpcio runner (:class:`~envoykit.core.server.SyncGrpcServer`, with reflection). Both give gRPC
health, Prometheus ``/metrics`` and a drain on SIGTERM/SIGINT (health NOT_SERVING, refuse new
calls, ``grace_s`` for calls in flight); the config reloads keep-last-good (``WatchedConfig``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from envoykit.core import WatchedConfig, get_logger
from envoykit.core.server import SyncGrpcServer, termination_signal, wait_for_termination_signal
from envoykit.core.unary import UnaryMethod, UnaryServer, serve_unary_forever
from envoykit.ratelimit.config import RateLimitConfig, dump, load_config_dir
from envoykit.ratelimit.metrics import StatsRegistry
from envoykit.ratelimit.service import RateLimitService, ServiceSettings
from envoykit.ratelimit.stores.base import Store, StoreError
from envoykit.ratelimit.stores.memory import MemoryStore

SERVICE_NAME = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name
SHOULD_RATE_LIMIT = f"/{SERVICE_NAME}/ShouldRateLimit"


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
        threads: gRPC worker threads (grpcio) or store threads (lean, Redis Cluster).
        grace_s: drain time on SIGTERM, in seconds.
        server: ``lean`` (default) or ``grpcio``.
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
    server: str = "lean"


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
    """The whole process: config, store and servicer, served by :meth:`lean` or :meth:`grpcio`.

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
        self._stop_watch = threading.Event()

    def _loaded(self, cfg: RateLimitConfig) -> None:
        self._log.info("rate limits loaded", domains=sorted(cfg.domains), rules=len(dump(cfg)))

    def _ready(self, port: int) -> None:
        self.watched.watch_in_thread(self._stop_watch)
        self._log.info(
            "rate-limit service ready",
            port=port,
            store=self.store.name,
            server=self.opts.server,
            threads=self.opts.threads,
            shadow_mode=self.opts.settings.shadow_mode,
        )

    def _handler(self) -> Callable[[rls_pb2.RateLimitRequest], Any]:
        service = self.service
        if isinstance(self.store, MemoryStore):
            return service.fast_path(self.store)  # no I/O: decided inline on the event loop
        apply_async = getattr(self.store, "apply_async", None)
        if apply_async is not None:  # the store completes on the event loop: no thread hop

            def on_loop(request: rls_pb2.RateLimitRequest) -> Awaitable[rls_pb2.RateLimitResponse]:
                return service.answer_async(request, apply_async)

            return on_loop
        pool = ThreadPoolExecutor(max_workers=max(1, self.opts.threads), thread_name_prefix="ratelimit-store")
        bound = self.opts.store_timeout_s
        self._on_stop_pool = pool

        async def offloaded(request: rls_pb2.RateLimitRequest) -> rls_pb2.RateLimitResponse:
            fut = asyncio.get_running_loop().run_in_executor(pool, service.answer, request)
            try:
                return await asyncio.wait_for(fut, bound)
            except TimeoutError:
                raise service.store_failed(StoreError(f"no answer within {bound * 1000:.0f} ms")) from None

        return offloaded

    def lean(self) -> UnaryServer:
        """The lean unary server for this process (build it inside the loop that serves)."""
        server = UnaryServer("ratelimit", self.opts.address, metrics_port=self.opts.metrics_port)
        handler = self._handler()
        request_type = getattr(handler, "request_type", rls_pb2.RateLimitRequest)  # the fast path's: bytes
        server.add_service(SERVICE_NAME, [UnaryMethod(SHOULD_RATE_LIMIT, request_type, handler)])
        aclose = getattr(self.store, "aclose", None)
        if aclose is not None:
            server.on_stop(aclose)  # awaited on the loop, before close() ends the rest
        server.on_stop(self.close)
        server.health.add_check("store", self.store.health)  # /readyz, /healthcheck
        return server

    def grpcio(self) -> SyncGrpcServer:
        """The thread-pool grpcio server for this process (``--server grpcio``)."""
        server = SyncGrpcServer(
            "ratelimit", self.opts.address, threads=self.opts.threads, metrics_port=self.opts.metrics_port
        )
        server.add_service(rls_pb2_grpc.add_RateLimitServiceServicer_to_server, self.service, SERVICE_NAME)
        server.on_stop(self.close)
        server.health.add_check("store", self.store.health)  # /readyz, /healthcheck
        return server

    def close(self) -> None:
        """Stop the config watcher, the store threads and the store (after the drain)."""
        self._stop_watch.set()
        pool = getattr(self, "_on_stop_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()


def run(opts: ServerOptions) -> None:
    """Serve until SIGTERM/SIGINT, then drain and return.

    Raises:
        ConfigError: the config does not load.
        AddressInUse: another process serves the address.
    """
    rl = RateLimitServer(opts)
    if opts.server == "grpcio":
        server = rl.grpcio()
        stopping = termination_signal()  # before the port answers: an early SIGTERM still drains
        rl._ready(server.start())
        wait_for_termination_signal(stopping)
        server.stop(opts.grace_s)
        return
    serve_unary_forever(rl.lean, opts.grace_s, on_ready=lambda s: rl._ready(s.port))

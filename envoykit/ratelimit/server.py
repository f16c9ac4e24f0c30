"""The ratelimit process: config watcher, store, servicer and the shared gRPC runner, wired together."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from envoykit.core import GrpcServer, WatchedConfig, get_logger, serve_forever
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
        store_timeout_s: connect/socket/call deadline of the store, in seconds.
        merge_domains: let several files add to one domain (MERGE_DOMAIN_CONFIG).
        max_stats_keys: bound on distinct stats keys (see :mod:`envoykit.ratelimit.metrics`).
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
    grace_s: float = 5.0
    settings: ServiceSettings = field(default_factory=ServiceSettings)


def make_store(opts: ServerOptions) -> Store:
    """The store the options ask for (memory by default)."""
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


def build(opts: ServerOptions) -> tuple[GrpcServer, WatchedConfig[RateLimitConfig], Store]:
    """Load the config (raising ConfigError if it is bad), make the store, the servicer and the server."""
    log = get_logger("ratelimit")
    stats = StatsRegistry(opts.max_stats_keys)

    def loader(path: Path) -> RateLimitConfig:
        return load_config_dir(path, merge_domains=opts.merge_domains, stats=stats)

    def on_change(cfg: RateLimitConfig) -> None:
        log.info("rate limits loaded", domains=sorted(cfg.domains), rules=len(dump(cfg)))

    watched = WatchedConfig("ratelimit", opts.config_dir, loader, on_change=on_change)
    on_change(watched.current)
    store = make_store(opts)
    service = RateLimitService(lambda: watched.current, store, opts.settings)
    server = GrpcServer("ratelimit", opts.address, metrics_port=opts.metrics_port)
    server.add_service(rls_pb2_grpc.add_RateLimitServiceServicer_to_server, service, SERVICE_NAME)
    return server, watched, store


async def run(opts: ServerOptions) -> None:
    """Serve until SIGTERM/SIGINT, reloading the config on change; then drain and close the store."""
    server, watched, store = build(opts)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # its per-change info lines are not JSON
    stop = asyncio.Event()
    watcher = asyncio.create_task(watched.watch(stop))

    async def shutdown() -> None:
        stop.set()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await store.close()

    server.on_stop(shutdown)
    get_logger("ratelimit").info(
        "starting", store=store.name, config_dir=str(opts.config_dir), shadow_mode=opts.settings.shadow_mode
    )
    await serve_forever(server, grace=opts.grace_s)

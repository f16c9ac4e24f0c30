"""``envoykit ratelimit``: ``serve`` the RateLimitService, ``check`` a config directory."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from envoykit.core import ConfigError, configure_logging
from envoykit.ratelimit.service import ServiceSettings


@click.group()
def ratelimit() -> None:
    """Global rate limiting for Envoy (envoyproxy/ratelimit's config format)."""


@ratelimit.command()
@click.option(
    "--config-dir",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="YAML files, one domain each.",
)
@click.option("--address", default="127.0.0.1:8081", show_default=True, help="gRPC listen address host:port.")
@click.option(
    "--metrics-port", type=int, default=None, help="Serve Prometheus /metrics here (0: any free port)."
)
@click.option("--redis-url", default=None, help="Share counters in Redis: redis://127.0.0.1:6379/0.")
@click.option(
    "--redis-cluster-url", default=None, help="Share counters in a Redis Cluster: redis://node:port."
)
@click.option("--redis-pool-size", default=16, show_default=True, help="Redis connections (per node).")
@click.option("--store-timeout-ms", default=500, show_default=True, help="Store deadline per call, in ms.")
@click.option("--response-headers", is_flag=True, help="Add RateLimit-Limit/-Remaining/-Reset headers.")
@click.option(
    "--response-dynamic-metadata", is_flag=True, help="Return dynamic metadata (domain, descriptors)."
)
@click.option("--shadow-mode", is_flag=True, help="Global shadow mode: count, never answer OVER_LIMIT.")
@click.option("--quota-mode", is_flag=True, help="Treat every rule as quota mode.")
@click.option("--stop-when-over-limit", is_flag=True, help="Increment no counter once one hit is over limit.")
@click.option("--merge-domains", is_flag=True, help="Let several files add descriptors to one domain.")
@click.option(
    "--near-limit-ratio", default=0.8, show_default=True, help="Near-limit threshold (share of limit)."
)
@click.option("--cache-key-prefix", default="ekrl:", show_default=True, help="Prefix of every counter key.")
@click.option("--max-stats-keys", default=10_000, show_default=True, help="Bound on distinct stats keys.")
@click.option("--threads", default=4, show_default=True, help="gRPC worker threads.")
@click.option("--log-level", default="info", show_default=True, help="debug, info, warning or error.")
def serve(
    config_dir: Path,
    address: str,
    metrics_port: int | None,
    redis_url: str | None,
    redis_cluster_url: str | None,
    redis_pool_size: int,
    store_timeout_ms: int,
    response_headers: bool,
    response_dynamic_metadata: bool,
    shadow_mode: bool,
    quota_mode: bool,
    stop_when_over_limit: bool,
    merge_domains: bool,
    near_limit_ratio: float,
    cache_key_prefix: str,
    max_stats_keys: int,
    threads: int,
    log_level: str,
) -> None:
    """Serve envoy.service.ratelimit.v3.RateLimitService with health, reflection and metrics."""
    from envoykit.ratelimit.server import ServerOptions, run

    configure_logging(log_level)
    settings = ServiceSettings(
        shadow_mode=shadow_mode,
        quota_mode=quota_mode,
        response_headers=response_headers,
        response_dynamic_metadata=response_dynamic_metadata,
        stop_when_over=stop_when_over_limit,
        near_limit_ratio=near_limit_ratio,
        cache_key_prefix=cache_key_prefix,
    )
    opts = ServerOptions(
        config_dir=config_dir,
        address=address,
        metrics_port=metrics_port,
        redis_url=redis_url,
        redis_cluster_url=redis_cluster_url,
        redis_pool_size=redis_pool_size,
        store_timeout_s=store_timeout_ms / 1000,
        merge_domains=merge_domains,
        max_stats_keys=max_stats_keys,
        threads=threads,
        settings=settings,
    )
    try:
        run(opts)
    except (ConfigError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@ratelimit.command()
@click.argument("config_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--merge-domains", is_flag=True, help="Let several files add descriptors to one domain.")
def check(config_dir: Path, merge_domains: bool) -> None:
    """Validate CONFIG_DIR and print every rule; exit 1 naming the file, line and field on error."""
    from envoykit.ratelimit.config import dump, load_config_dir

    try:
        cfg = load_config_dir(config_dir, merge_domains=merge_domains)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    for line in dump(cfg):
        click.echo(line)
    click.echo(f"ok: {len(cfg.files)} file(s), {len(cfg.domains)} domain(s)", err=True)

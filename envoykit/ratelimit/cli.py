"""``envoykit ratelimit``: ``serve`` the RateLimitService, ``check`` a config directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from envoykit.core import ConfigError, configure_logging, get_logger
from envoykit.core.output import emit, error_doc, output_option
from envoykit.ratelimit.service import ServiceSettings


@click.group()
def ratelimit() -> None:
    """Global rate limiting for Envoy (envoyproxy/ratelimit's config format)."""


@ratelimit.command()
@click.option(
    "--config-dir",
    default=None,
    type=click.Path(path_type=Path),
    help="YAML files, one domain each [env: RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/config].",
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
@click.option(
    "--threads",
    default=4,
    show_default=True,
    help="Store threads (lean, Redis Cluster) or gRPC threads (grpcio).",
)
@click.option(
    "--server",
    type=click.Choice(["lean", "grpcio"]),
    default="lean",
    show_default=True,
    help="lean: one event loop; grpcio: thread-pool grpcio server (reflection).",
)
@click.option("--log-level", default="info", show_default=True, help="debug, info, warning or error.")
@click.option(
    "--metric-names",
    type=click.Choice(["envoykit", "ratelimit"]),
    default="envoykit",
    show_default=True,
    help="Per-rule metric names: envoykit's, or envoyproxy/ratelimit's (ratelimit_service_rate_limit_*).",
)
@click.option(
    "--no-env", is_flag=True, help="Ignore envoyproxy/ratelimit's environment variables (REDIS_URL, ...)."
)
@click.pass_context
def serve(ctx: click.Context, **params: Any) -> None:
    """Serve envoy.service.ratelimit.v3.RateLimitService with health, reflection and metrics.

    envoyproxy/ratelimit's environment variables (REDIS_URL, REDIS_TYPE, RUNTIME_ROOT, GRPC_PORT,
    LOG_LEVEL, SHADOW_MODE, ...) are read too; a flag on the command line wins over its variable,
    and a variable envoykit cannot honour stops the start with a message naming it (docs/ratelimit.md).
    """
    from envoykit.ratelimit.envsettings import EnvSettings, from_environ
    from envoykit.ratelimit.metrics import use_metric_names
    from envoykit.ratelimit.server import ServerOptions, run

    env = EnvSettings()
    if not params["no_env"]:
        try:
            given = frozenset(n for n in params if ctx.get_parameter_source(n) is not ParameterSource.DEFAULT)
            env = from_environ(os.environ, given)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
    p = dict(params)
    taken: dict[str, str] = {}
    for name, value in env.values.items():
        if name in p and ctx.get_parameter_source(name) is ParameterSource.DEFAULT:
            p[name] = value
            taken[name] = env.sources[name]
    config_dir: Path | None = p["config_dir"]
    if config_dir is None:
        raise click.UsageError("give --config-dir (or RUNTIME_ROOT, as envoyproxy/ratelimit reads it)")
    if not config_dir.exists():
        raise click.UsageError(f"config dir {config_dir} does not exist")
    configure_logging(p["log_level"])
    if taken:
        get_logger("ratelimit").info("settings from the environment", **taken)
    use_metric_names(p["metric_names"])
    settings = ServiceSettings(
        shadow_mode=p["shadow_mode"],
        quota_mode=p["quota_mode"],
        response_headers=p["response_headers"],
        header_names=env.values.get("header_names", ServiceSettings.header_names),
        response_dynamic_metadata=p["response_dynamic_metadata"],
        stop_when_over=p["stop_when_over_limit"],
        near_limit_ratio=p["near_limit_ratio"],
        cache_key_prefix=p["cache_key_prefix"],
    )
    opts = ServerOptions(
        config_dir=config_dir,
        address=p["address"],
        metrics_port=p["metrics_port"],
        redis_url=p["redis_url"],
        redis_cluster_url=p["redis_cluster_url"],
        redis_pool_size=p["redis_pool_size"],
        store_timeout_s=p["store_timeout_ms"] / 1000,
        merge_domains=p["merge_domains"],
        max_stats_keys=p["max_stats_keys"],
        threads=p["threads"],
        settings=settings,
        server=p["server"],
    )
    try:
        run(opts)
    except (ConfigError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@ratelimit.command()
@click.argument("config_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--merge-domains", is_flag=True, help="Let several files add descriptors to one domain.")
@output_option()
def check(config_dir: Path, merge_domains: bool, output: str) -> None:
    """Validate CONFIG_DIR and print every rule; exit 1 naming the file, line and field on error.

    ``-o json|yaml``: ``{ok, files, domains, rules: [...], error}`` (see
    :func:`envoykit.ratelimit.config.rules`; unlimited rules have no unit).
    """
    from envoykit.ratelimit.config import dump, load_config_dir, rules

    try:
        cfg = load_config_dir(config_dir, merge_domains=merge_domains)
    except ConfigError as exc:
        if output == "text":
            click.echo(f"error: {exc}", err=True)
        else:
            emit({"ok": False, "error": error_doc(exc)}, output)
        sys.exit(1)
    if output != "text":
        doc = {
            "ok": True,
            "files": [str(f) for f in cfg.files],
            "domains": sorted(cfg.domains),
            "rules": rules(cfg),
        }
        emit(doc, output)
        return
    for line in dump(cfg):
        click.echo(line)
    click.echo(f"ok: {len(cfg.files)} file(s), {len(cfg.domains)} domain(s)", err=True)

"""``envoykit telemetry``: run the access-log telemetry server."""

from __future__ import annotations

import asyncio
import os

import click

from envoykit.core import configure_logging, get_logger
from envoykit.core.options import process_options
from envoykit.telemetry.server import DEFAULT_ADDRESS


@click.group()
def telemetry() -> None:
    """Telemetry from Envoy's gRPC access-log stream: Istio's metrics and JSON access logs."""


@telemetry.command()
@click.option("--address", default=DEFAULT_ADDRESS, show_default=True, help="gRPC host:port (port 0: any).")
@click.option(
    "--metrics-port", type=int, default=0, show_default=True, help="Prometheus /metrics port (0: any)."
)
@click.option(
    "--max-label-values",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Distinct values a label may take; later new ones become 'unknown'.",
)
@click.option(
    "--access-log", metavar="FILE|-", default=None, help="Write JSON access logs here (- for stdout)."
)
@click.option(
    "--access-log-max-bytes",
    type=click.IntRange(min=0),
    default=100 * 1024 * 1024,
    show_default=True,
    help="Rotate the access-log file at this size (0: never).",
)
@click.option(
    "--access-log-backups",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Rotated files kept.",
)
@click.option(
    "--envoy-admin",
    "envoy_admins",
    multiple=True,
    metavar="URL",
    help="An Envoy admin URL whose access-log counters (written, dropped) are exported; repeat.",
)
@process_options("Lower the CPU priority of the server (0-19): telemetry yields the CPU to Envoy.")
def serve(
    address: str,
    metrics_port: int,
    max_label_values: int,
    access_log: str | None,
    access_log_max_bytes: int,
    access_log_backups: int,
    envoy_admins: tuple[str, ...],
    grace: float,
    nice: int,
    log_level: str,
) -> None:
    """Serve envoy.service.accesslog.v3.AccessLogService with health, reflection and /metrics."""
    if nice:
        os.nice(nice)
    from envoykit.telemetry.server import serve as run

    configure_logging(log_level)
    try:
        asyncio.run(
            run(
                address,
                grace=grace,
                metrics_port=metrics_port,
                max_label_values=max_label_values,
                access_log=access_log,
                access_log_max_bytes=access_log_max_bytes,
                access_log_backups=access_log_backups,
                envoy_admins=envoy_admins,
            )
        )
    except OSError as exc:
        get_logger("telemetry").error("cannot start", error=str(exc))
        raise click.ClickException(str(exc)) from exc

"""``envoykit extproc``: run the ext_proc server."""

from __future__ import annotations

import asyncio
import os
import sys

import click

from envoykit.core import ConfigError, configure_logging, get_logger
from envoykit.core.options import process_options
from envoykit.extproc.server import DEFAULT_ADDRESS


@click.group()
def extproc() -> None:
    """External processing (Envoy ext_proc): telemetry and Python processors."""


@extproc.command()
@click.option("--address", default=DEFAULT_ADDRESS, show_default=True, help="gRPC host:port (port 0: any).")
@click.option(
    "--metrics-port", type=int, default=0, show_default=True, help="Prometheus /metrics port (0: any)."
)
@click.option(
    "--processor",
    "processors",
    multiple=True,
    metavar="MODULE:OBJECT",
    help="Load processors from a module path; repeat for a chain (runs in the order given).",
)
@click.option("--telemetry/--no-telemetry", default=True, show_default=True, help="Istio-standard metrics.")
@process_options("Lower the CPU priority of the whole server (0-19): telemetry yields the CPU to Envoy.")
def serve(
    address: str,
    metrics_port: int,
    processors: tuple[str, ...],
    telemetry: bool,
    grace: float,
    nice: int,
    log_level: str,
) -> None:
    """Serve envoy.service.ext_proc.v3.ExternalProcessor with health, reflection and /metrics."""
    if nice:
        os.nice(nice)  # before gRPC starts its threads, so every thread inherits it
    from envoykit.extproc.server import serve as run

    configure_logging(log_level)
    sys.path.insert(0, ".")  # processors named relative to the working directory
    try:
        asyncio.run(
            run(address, processors=processors, telemetry=telemetry, metrics_port=metrics_port, grace=grace)
        )
    except ConfigError as exc:
        get_logger("extproc").error("cannot start", error=str(exc))
        raise click.ClickException(str(exc)) from exc

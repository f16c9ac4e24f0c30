"""The ext_proc server process: processors loaded, telemetry on or off, served by the core runner."""

from __future__ import annotations

from collections.abc import Sequence

from envoykit.core import AioGrpcServer, serve_forever
from envoykit.extproc.processor import Chain, Processor, load_processors
from envoykit.extproc.service import ExternalProcessorService, add_to_server
from envoykit.extproc.telemetry import Telemetry

DEFAULT_ADDRESS = "127.0.0.1:9292"


def build_server(
    address: str = DEFAULT_ADDRESS,
    *,
    processors: Sequence[str | Processor] = (),
    telemetry: bool = True,
    metrics_port: int | None = 0,
) -> tuple[AioGrpcServer, ExternalProcessorService]:
    """A ready-to-start gRPC server with the ``ExternalProcessor`` service, health and reflection.

    Args:
        address: ``host:port`` to listen on (port 0: any free port).
        processors: ``module.path:object`` specs or Processor objects, in chain order.
        telemetry: put the built-in :class:`~envoykit.extproc.telemetry.Telemetry` first.
        metrics_port: Prometheus ``/metrics`` port (0: any free port, None: none).

    Raises:
        ConfigError: a processor spec cannot be loaded or the chain is invalid.
    """
    loaded: list[Processor] = [Telemetry()] if telemetry else []
    for spec in processors:
        loaded.extend(load_processors(spec) if isinstance(spec, str) else [spec])
    Chain(loaded)  # validate names and failure modes before binding anything
    service = ExternalProcessorService(loaded)
    server = AioGrpcServer("extproc", address, metrics_port=metrics_port)
    add_to_server(server, service)
    return server, service


async def serve(
    address: str = DEFAULT_ADDRESS,
    *,
    processors: Sequence[str | Processor] = (),
    telemetry: bool = True,
    metrics_port: int | None = 0,
    grace: float = 5.0,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain for ``grace`` seconds (see :func:`build_server`)."""
    server, _ = build_server(address, processors=processors, telemetry=telemetry, metrics_port=metrics_port)
    await serve_forever(server, grace)

"""The telemetry server process: the access-log service, Istio's metrics, JSON access logs, Envoy's gap."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry

from envoykit.core import AioGrpcServer, get_logger, serve_forever
from envoykit.telemetry.accesslog import AccessLogWriter
from envoykit.telemetry.envoystats import EnvoyStatsReader
from envoykit.telemetry.gap import EnvoyLogStats
from envoykit.telemetry.labels import LabelGuard
from envoykit.telemetry.metrics import IstioMetrics, ServerMetrics
from envoykit.telemetry.record import Recorder
from envoykit.telemetry.service import AccessLogService, add_to_server

DEFAULT_ADDRESS = "127.0.0.1:9293"
_log = get_logger("telemetry")


def build_server(
    address: str = DEFAULT_ADDRESS,
    *,
    metrics_port: int | None = 0,
    max_label_values: int = 100,
    access_log: str | Path | None = None,
    access_log_max_bytes: int = 100 * 1024 * 1024,
    access_log_backups: int = 5,
    envoy_admins: Sequence[str] = (),
    registry: CollectorRegistry = REGISTRY,
) -> tuple[AioGrpcServer, AccessLogService]:
    """A ready-to-start gRPC server with ``AccessLogService``, health, reflection and ``/metrics``.

    Args:
        address: ``host:port`` to listen on (port 0: any free port).
        metrics_port: Prometheus ``/metrics`` port (0: any free port, None: none).
        max_label_values: the most distinct values one label may take (then ``unknown``).
        access_log: JSON access-log file, ``-`` for stdout, None for no access log.
        access_log_max_bytes: rotate the file at this size (bytes; 0: never).
        access_log_backups: rotated files kept.
        envoy_admins: Envoy admin URLs: their stats transport's series are read at each scrape
            (:mod:`envoykit.telemetry.envoystats`) and their access-log counters exported beside ours.
        registry: where the metrics are registered and served from.

    Raises:
        ValueError: ``max_label_values`` below 1.
        OSError: the access-log file cannot be opened.
    """
    metrics = IstioMetrics()
    guard = LabelGuard(max_label_values)
    if envoy_admins:  # the stats transport's series, read from each Envoy at scrape time
        reader = EnvoyStatsReader(envoy_admins, guard)
        metrics.http_sources.append(reader.http_series)
        registry.register(metrics)
        registry.register(EnvoyLogStats(envoy_admins, reader=reader))
    else:
        registry.register(metrics)
    writer = AccessLogWriter(access_log, access_log_max_bytes, access_log_backups) if access_log else None
    recorder = Recorder(metrics, ServerMetrics(registry), guard, writer)
    service = AccessLogService(recorder)
    server = AioGrpcServer("telemetry", address, metrics_port=metrics_port, registry=registry)
    add_to_server(server, service)
    if writer is not None:
        rotation = threading.Event()
        if writer.path is not None and writer.max_bytes:
            writer.on_rotate.append(lambda: reopen_logs(envoy_admins))
            threading.Thread(target=_rotate_loop, args=(writer, rotation), daemon=True).start()

        async def close() -> None:
            rotation.set()
            writer.close()

        server.on_stop(close)
    return server, service


def reopen_logs(admins: Sequence[str], timeout: float = 2.0) -> None:
    """``POST /reopen_logs`` on each Envoy admin: its file access loggers reopen their files (after a
    rotation). An admin that does not answer is logged and skipped."""
    for admin in admins:
        req = urllib.request.Request(f"{admin.rstrip('/')}/reopen_logs", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout):
                pass
        except OSError as exc:
            _log.warning("envoy did not reopen its logs", admin=admin, error=str(exc))


def _rotate_loop(writer: AccessLogWriter, stop: threading.Event, every: float = 2.0) -> None:
    """Rotate ``writer``'s file by its size on disk every ``every`` seconds until ``stop``."""
    while not stop.wait(every):
        try:
            writer.rotate_if_large()
        except OSError as exc:
            _log.error("access log rotation failed", error=str(exc))


async def serve(address: str = DEFAULT_ADDRESS, *, grace: float = 5.0, **kwargs: object) -> None:
    """Serve until SIGTERM/SIGINT, then drain for ``grace`` seconds (arguments: :func:`build_server`)."""
    server, _ = build_server(address, **kwargs)  # type: ignore[arg-type]
    await serve_forever(server, grace)

"""Telemetry from Envoy's batched gRPC access-log stream (``envoy.service.accesslog.v3``).

Envoy's ``envoy.access_loggers.http_grpc`` / ``tcp_grpc`` loggers buffer entries and stream them in
batches; this server computes Istio's standard metrics from them and writes JSON access logs. No call
per request: telemetry is off the request path.

Public names::

    from envoykit.telemetry import (
        build_server, serve, AccessLogService, Recorder, IstioMetrics, LabelGuard,
        HTTP_LABELS, TCP_LABELS, AccessLogWriter,
    )
"""

from envoykit.telemetry.accesslog import AccessLogWriter
from envoykit.telemetry.labels import HTTP_LABELS, TCP_LABELS, LabelGuard
from envoykit.telemetry.metrics import ENVOY_BUCKETS, IstioMetrics
from envoykit.telemetry.record import Recorder
from envoykit.telemetry.server import build_server, serve
from envoykit.telemetry.service import AccessLogService

__all__ = [
    "ENVOY_BUCKETS",
    "HTTP_LABELS",
    "TCP_LABELS",
    "AccessLogService",
    "AccessLogWriter",
    "IstioMetrics",
    "LabelGuard",
    "Recorder",
    "build_server",
    "serve",
]

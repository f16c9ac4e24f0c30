"""Telemetry wiring: Envoy's gRPC access loggers towards the telemetry server.

Every sidecar's inbound side (``reporter=destination``), its outbound side and the gateways
(``reporter=source``) stream their entries to ``extensions.access_log`` with
``envoy.access_loggers.http_grpc`` (HTTP connection managers) and ``envoy.access_loggers.tcp_grpc``
(``tcp_proxy``), with the log names and, for HTTP, the ``custom_tags`` of :mod:`envoykit.core.accesslog`
(the entry's facts formatted by Envoy, so the server reads a few strings per entry). Envoy
buffers entries and flushes them every ``buffer_flush_interval`` or when ``buffer_size_bytes`` is
reached; both are written out explicitly. ``tcp_proxy`` also logs when the upstream connects
(``flush_access_log_on_connected``), so a connection is counted as opened while it lives.

Sources: ``envoy.extensions.access_loggers.grpc.v3`` (``CommonGrpcAccessLogConfig``,
``HttpGrpcAccessLogConfig``, ``TcpGrpcAccessLogConfig``), ``TcpProxy.access_log_options``.
"""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2

from envoykit.control.model.mesh import AccessLogServer
from envoykit.control.translate.pb import duration, envoy_grpc, pack
from envoykit.core.accesslog import (
    LOG_NAMES,
    REQUEST_HEADERS,
    RESPONSE_HEADERS,
    RESPONSE_TRAILERS,
    TAG,
    TAG_FORMATS,
)

#: The telemetry server's cluster (HTTP/2, static).
ACCESS_LOG_CLUSTER = "envoykit_telemetry"
HTTP_GRPC = "envoy.access_loggers.http_grpc"
TCP_GRPC = "envoy.access_loggers.tcp_grpc"


def _common(srv: AccessLogServer, reporter: str) -> als_pb2.CommonGrpcAccessLogConfig:
    conf = als_pb2.CommonGrpcAccessLogConfig(
        log_name=LOG_NAMES[reporter],
        grpc_service=envoy_grpc(ACCESS_LOG_CLUSTER),
        transport_api_version=config_source_pb2.V3,
        buffer_flush_interval=duration(srv.buffer_flush_interval),
    )
    conf.buffer_size_bytes.value = srv.buffer_size_bytes
    return conf


def http_access_logs(
    srv: AccessLogServer, reporter: str, *, tagged: bool = True
) -> list[accesslog_pb2.AccessLog]:
    """The ``access_log`` list of an HTTP connection manager reporting as ``reporter``
    (``destination`` or ``source``); empty when ``srv.enabled`` is false.

    ``tagged``: the entry's facts formatted by Envoy into the tag of :mod:`envoykit.core.accesslog`
    (``CustomTag.value``, Envoy ≥ 1.37: the Envoys envoykit runs); False for Envoys of unknown
    version (Istio's proxies): the headers the server then reads instead.
    """
    if not srv.enabled:
        return []
    common = _common(srv, reporter)
    if tagged:
        common.custom_tags.add(tag=TAG, value=TAG_FORMATS[reporter])
        conf = als_pb2.HttpGrpcAccessLogConfig(common_config=common)
    else:
        conf = als_pb2.HttpGrpcAccessLogConfig(
            common_config=common,
            additional_request_headers_to_log=list(REQUEST_HEADERS),
            additional_response_headers_to_log=list(RESPONSE_HEADERS),
            additional_response_trailers_to_log=list(RESPONSE_TRAILERS),
        )
    return [accesslog_pb2.AccessLog(name=HTTP_GRPC, typed_config=pack(conf))]


def tcp_access_logs(srv: AccessLogServer, reporter: str) -> list[accesslog_pb2.AccessLog]:
    """The ``access_log`` list of a ``tcp_proxy`` reporting as ``reporter``; empty when disabled."""
    if not srv.enabled:
        return []
    conf = als_pb2.TcpGrpcAccessLogConfig(common_config=_common(srv, reporter))
    return [accesslog_pb2.AccessLog(name=TCP_GRPC, typed_config=pack(conf))]

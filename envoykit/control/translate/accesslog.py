"""Telemetry wiring: Envoy's gRPC access loggers towards the telemetry server.

Every sidecar's inbound side (``reporter=destination``), its outbound side and the gateways
(``reporter=source``) stream their entries to ``extensions.access_log`` with
``envoy.access_loggers.http_grpc`` (HTTP connection managers) and ``envoy.access_loggers.tcp_grpc``
(``tcp_proxy``), with the log names and, for HTTP, the ``custom_tags`` of :mod:`envoykit.core.accesslog`
(the entry's facts formatted by Envoy, so the server reads a few strings per entry). Envoy
buffers entries and flushes them every ``buffer_flush_interval`` or when ``buffer_size_bytes`` is
reached; both are written out explicitly. ``tcp_proxy`` also logs when the upstream connects
(``flush_access_log_on_connected``), so a connection is counted as opened while it lives.

With ``transport: stats`` (the default) an HTTP connection manager instead counts each request into
Envoy's own stats (``envoy.access_loggers.stats``: three histograms per reporter, tagged
with :data:`envoykit.core.accesslog.STATS_TAG_FORMATS`, in a scope bounded by ``max_series``), which the
server reads from Envoy's admin; with ``json_log`` Envoy's file access logger also writes each
request's JSON line (``envoy.access_loggers.file``, ``json_format``).

Sources: ``envoy.extensions.access_loggers.stats.v3.Config`` (``stats_scope``: ``type.v3.Scope``),
``envoy.extensions.access_loggers.file.v3.FileAccessLog``, ``envoy.extensions.access_loggers.grpc.v3`` (``CommonGrpcAccessLogConfig``,
``HttpGrpcAccessLogConfig``, ``TcpGrpcAccessLogConfig``), ``TcpProxy.access_log_options``.
"""

from __future__ import annotations

import json
from typing import Any

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.access_loggers.stats.v3 import stats_pb2
from google.protobuf import any_pb2
from google.protobuf.internal import decoder as _decoder
from google.protobuf.internal import encoder as _encoder
from google.protobuf.json_format import MessageToDict
from google.protobuf.unknown_fields import UnknownFieldSet

from envoykit.control.model.mesh import AccessLogServer
from envoykit.control.translate.pb import duration, envoy_grpc, pack
from envoykit.core.accesslog import (
    LOG_NAMES,
    REQUEST_HEADERS,
    RESPONSE_HEADERS,
    RESPONSE_TRAILERS,
    STATS_HISTOGRAMS,
    STATS_PREFIXES,
    STATS_TAG,
    STATS_TAG_FORMATS,
    TAG,
    TAG_FORMATS,
    json_log_format,
)

#: The telemetry server's cluster (HTTP/2, static).
ACCESS_LOG_CLUSTER = "envoykit_telemetry"
HTTP_GRPC = "envoy.access_loggers.http_grpc"
TCP_GRPC = "envoy.access_loggers.tcp_grpc"
STATS = "envoy.access_loggers.stats"
FILE = "envoy.access_loggers.file"
_STATS_CONFIG = "type.googleapis.com/envoy.extensions.access_loggers.stats.v3.Config"


def _common(srv: AccessLogServer, reporter: str) -> als_pb2.CommonGrpcAccessLogConfig:
    conf = als_pb2.CommonGrpcAccessLogConfig(
        log_name=LOG_NAMES[reporter],
        grpc_service=envoy_grpc(ACCESS_LOG_CLUSTER),
        transport_api_version=config_source_pb2.V3,
        buffer_flush_interval=duration(srv.buffer_flush_interval),
    )
    conf.buffer_size_bytes.value = srv.buffer_size_bytes
    return conf


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _encoder._VarintBytes(number << 3 | 2) + _encoder._VarintBytes(len(payload)) + payload


def _uint32_value(number: int, value: int) -> bytes:
    """A ``google.protobuf.UInt32Value`` field."""
    return _field(number, _encoder._VarintBytes(1 << 3) + _encoder._VarintBytes(value))


def stats_logger(srv: AccessLogServer, reporter: str) -> accesslog_pb2.AccessLog:
    """The ``envoy.access_loggers.stats`` logger of a connection manager reporting as ``reporter``:
    the histograms of :data:`~envoykit.core.accesslog.STATS_HISTOGRAMS` (the duration's count is the
    request count), each tagged with :data:`~envoykit.core.accesslog.STATS_TAG_FORMATS`, in a scope of
    at most ``srv.max_series`` label sets (``max_histograms``: that many of each histogram).

    ``stats_scope`` (field 6, ``type.v3.Scope``: ``max_histograms`` 3, ``prefix`` 5; Envoy ≥ 1.39) is
    newer than the ``xds-protos`` descriptors, so it is appended as encoded bytes; protobuf merges them
    into the message Envoy parses.
    """
    conf = stats_pb2.Config()
    tags = [stats_pb2.Config.Tag(name=STATS_TAG, value_format=STATS_TAG_FORMATS[reporter])]
    for name, (unit, fmt) in STATS_HISTOGRAMS.items():
        conf.histograms.add(
            stat=stats_pb2.Config.Stat(name=name, tags=tags),
            unit=stats_pb2.Config.Histogram.Unit.Value(unit),
            value_format=fmt,
        )
    scope = _uint32_value(3, srv.max_series * len(STATS_HISTOGRAMS)) + _field(
        5, STATS_PREFIXES[reporter].encode()
    )
    packed = any_pb2.Any(type_url=_STATS_CONFIG, value=conf.SerializeToString() + _field(6, scope))
    return accesslog_pb2.AccessLog(name=STATS, typed_config=packed)


def logger_dict(log: accesslog_pb2.AccessLog) -> dict[str, Any]:
    """An access logger as bootstrap JSON (``MessageToDict``), with the stats logger's ``stats_scope``
    (encoded bytes the descriptors do not know, see :func:`stats_logger`) written out by name."""
    out: dict[str, Any] = json.loads(json.dumps(MessageToDict(log, preserving_proto_field_name=True)))
    if log.name == STATS:
        conf = stats_pb2.Config()
        log.typed_config.Unpack(conf)
        for f in UnknownFieldSet(conf):
            if f.field_number == 6:
                out["typed_config"]["stats_scope"] = _scope_dict(f.data)
    return out


def restore_stats_scopes(obj: Any) -> Any:
    """Give every stats logger in ``obj`` (a config turned into JSON by ``MessageToDict``, which drops
    the ``stats_scope`` bytes) a ``stats_scope`` with its reporter's prefix, read back from its tags;
    without limits. For ``envoy --mode validate``, which needs a prefix or a scope. Returns ``obj``."""
    if isinstance(obj, dict):
        tc = obj.get("typed_config")
        if obj.get("name") == STATS and isinstance(tc, dict) and "stats_scope" not in tc:
            fmts = [
                t.get("value_format", "") for h in tc.get("histograms", []) for t in h["stat"].get("tags", [])
            ]
            reporter = "destination" if STATS_TAG_FORMATS["destination"] in fmts else "source"
            tc["stats_scope"] = {"prefix": STATS_PREFIXES[reporter]}
        for v in obj.values():
            restore_stats_scopes(v)
    elif isinstance(obj, list):
        for v in obj:
            restore_stats_scopes(v)
    return obj


def _scope_dict(data: bytes) -> dict[str, Any]:
    names = {1: "max_counters", 3: "max_histograms", 5: "prefix"}
    scope: dict[str, Any] = {}
    pos = 0
    while pos < len(data):
        key, pos = _decoder._DecodeVarint(data, pos)
        size, pos = _decoder._DecodeVarint(data, pos)
        chunk, pos = data[pos : pos + size], pos + size
        name = names.get(key >> 3)
        if name == "prefix":
            scope[name] = chunk.decode()
        elif name is not None:
            scope[name] = _decoder._DecodeVarint(chunk, 1)[0] if chunk else 0
    return scope


def json_file_logger(path: str, reporter: str, node: dict[str, str]) -> accesslog_pb2.AccessLog:
    """Envoy's file access logger writing each request's JSON line to ``path`` (``{node}``: the node
    id), fields of :func:`envoykit.core.accesslog.json_log_format`."""
    conf = file_pb2.FileAccessLog(path=path.replace("{node}", node.get("id", "")))
    conf.log_format.json_format.update(json_log_format(reporter, node))
    return accesslog_pb2.AccessLog(name=FILE, typed_config=pack(conf))


def http_access_logs(
    srv: AccessLogServer,
    reporter: str,
    *,
    tagged: bool = True,
    transport: str | None = None,
    node: dict[str, str] | None = None,
) -> list[accesslog_pb2.AccessLog]:
    """The ``access_log`` list of an HTTP connection manager reporting as ``reporter``
    (``destination`` or ``source``); empty when ``srv.enabled`` is false.

    ``transport``: ``stats`` or ``grpc`` (default: ``srv.transport``). With ``stats``, the stats
    logger (:func:`stats_logger`) and, when ``srv.json_log`` is set, the JSON file logger for ``node``
    (its metadata and ``id``). With ``grpc``, ``tagged``: the entry's facts formatted by Envoy into the
    tag of :mod:`envoykit.core.accesslog` (``CustomTag.value``, Envoy ≥ 1.37: the Envoys envoykit
    runs); False for Envoys of unknown version (Istio's proxies): the headers the server then reads
    instead.
    """
    if not srv.enabled:
        return []
    if (transport or srv.transport) == "stats":
        logs = [stats_logger(srv, reporter)]
        if srv.json_log:
            logs.append(json_file_logger(srv.json_log, reporter, node or {}))
        return logs
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

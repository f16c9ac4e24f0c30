"""``envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs``: Envoy's batched access-log stream.

Envoy opens one stream per gRPC access logger and worker thread; its first message carries the
``identifier`` (the node and the logger's ``log_name``), every message carries a batch of HTTP or TCP
entries. The stream is never answered until it ends (the response is empty). Source:
``envoy/service/accesslog/v3/als.proto``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from envoykit.core import AioGrpcServer, get_logger
from envoykit.telemetry.labels import Reporter
from envoykit.telemetry.record import Recorder

SERVICE_NAME = "envoy.service.accesslog.v3.AccessLogService"
NODE_LABEL = 1000  # the guard's slot for the ``node`` label of the server's own metrics
_log = get_logger("telemetry")


class AccessLogService(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """Feeds every batch of every stream to a :class:`~envoykit.telemetry.record.Recorder`."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def StreamAccessLogs(
        self,
        request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage],
        context: grpc.aio.ServicerContext,
    ) -> als_pb2.StreamAccessLogsResponse:
        rec = self.recorder
        rep: Reporter | None = None
        try:
            async for msg in request_iterator:
                if rep is None or msg.HasField("identifier"):
                    if not msg.HasField("identifier"):
                        # Envoy always sends it first; without it the reporter is unknown, say so
                        _log.warning("access-log stream without identifier", peer=context.peer())
                    rep = Reporter.from_identifier(msg.identifier)
                    rep.node_label = rec.guard(NODE_LABEL, rep.node_id)
                    rec.server.streams.inc()
                    rec.server.streams_opened.labels(rep.node_label).inc()
                    _log.info("stream", node=rep.node_id, reporter=rep.reporter)
                try:
                    if msg.HasField("http_logs"):
                        rec.http(rep, msg.http_logs.log_entry)
                    elif msg.HasField("tcp_logs"):
                        rec.tcp(rep, msg.tcp_logs.log_entry)
                except Exception:  # a bad batch is counted and logged; the stream goes on
                    lost = len(msg.http_logs.log_entry) + len(msg.tcp_logs.log_entry)
                    rec.server.failed.labels(rep.node_label).inc(lost)
                    _log.exception("batch not counted", node=rep.node_id, entries=lost)
        finally:
            if rep is not None:
                rec.server.streams.dec()
        return als_pb2.StreamAccessLogsResponse()


def add_to_server(server: AioGrpcServer, service: Any) -> None:
    """Register ``service`` (an AccessLogService servicer) with health and reflection."""
    server.add_service(als_pb2_grpc.add_AccessLogServiceServicer_to_server, service, SERVICE_NAME)

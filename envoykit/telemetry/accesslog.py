"""JSON access logs: one line per HTTP request (and per closed TCP connection), size-rotated.

A line is a flat JSON object whose keys an ELK/OpenSearch user maps without work (``@timestamp`` is
ISO 8601 UTC with milliseconds; numbers are numbers)::

    {"@timestamp": "2026-12-03T09:30:00.123Z", "kind": "http", "reporter": "destination",
     "node": "sidecar~backend-v1", "trace_id": "4bf92f…", "request_id": "9d2c…",
     "source_workload": "frontend-v1", "source_namespace": "default", "source_principal": "spiffe://…",
     "destination_workload": "backend-v1", "destination_namespace": "default",
     "destination_principal": "spiffe://…", "destination_service": "backend.default.svc.cluster.local",
     "method": "GET", "authority": "backend", "path": "/api", "protocol": "HTTP/1.1", "status": 200,
     "grpc_status": "", "response_flags": "-", "duration_ms": 3.2, "upstream_service_time_ms": 2.9,
     "request_bytes": 120, "response_bytes": 512, "upstream_cluster": "inbound|8080||",
     "upstream_host": "127.0.0.1:8080", "downstream_remote_address": "127.0.0.1:51234"}

TCP lines carry ``kind: tcp``, ``received_bytes`` and ``sent_bytes`` instead of the HTTP fields.
Sources: ``envoy.data.accesslog.v3`` (``AccessLogCommon``, ``HTTPRequestProperties``,
``HTTPResponseProperties``, ``ConnectionProperties``). The trace id is read from ``traceparent`` (W3C)
or ``x-b3-traceid``.

:class:`AccessLogWriter` writes a batch of lines with one write, to stdout or to a file rotated by
size (``logging.handlers.RotatingFileHandler``: ``file``, ``file.1`` … ``file.<backups>``). With the
stats transport, Envoys append their own JSON lines to the same file (Envoy's file access logger, one
write per buffer of whole lines, ``O_APPEND``); the server then rotates it by its size on disk and has
each Envoy reopen it (admin ``POST /reopen_logs``).
"""

from __future__ import annotations

import json
import json.encoder
import logging
import logging.handlers
import sys
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from envoykit.core.accesslog import TEXT_FORMAT

_PROTOCOLS = {1: "HTTP/1.0", 2: "HTTP/1.1", 3: "HTTP/2", 4: "HTTP/3"}  # HTTPAccessLogEntry.HTTPVersion


_SECONDS: dict[int, str] = {}


def timestamp(ts: Any) -> str:
    """A ``google.protobuf.Timestamp`` as ``2026-12-03T09:30:00.123Z``."""
    prefix = _SECONDS.get(ts.seconds)
    if prefix is None:  # formatting a date is slow; a batch shares a few seconds
        if len(_SECONDS) > 64:
            _SECONDS.clear()
        prefix = _SECONDS[ts.seconds] = datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
    return f"{prefix}{ts.nanos // 1_000_000:03d}Z"


def millis(d: Any) -> float:
    """A ``google.protobuf.Duration`` in milliseconds."""
    return float(d.seconds * 1000 + d.nanos / 1e6)


def address(a: Any) -> str:
    """An ``envoy.config.core.v3.Address`` as ``host:port`` ('' when unset)."""
    sa = a.socket_address
    return f"{sa.address}:{sa.port_value}" if sa.address else ""


def trace_id(headers: Any) -> str:
    """The trace id of a request: from ``traceparent`` (``00-<trace id>-<span>-<flags>``), else
    ``x-b3-traceid``; '' when neither was sent."""
    tp = headers.get("traceparent", "")
    if tp:
        parts = tp.split("-")
        if len(parts) >= 3:
            return str(parts[1])
    return str(headers.get("x-b3-traceid", ""))


def static_fields(values: tuple[str, ...], node: str) -> str:
    """The part of a line that is the same for every entry of one label set (serialized once per
    series): reporter, node, source and destination (values in ``HTTP_LABELS`` order, unbounded)."""
    v = values
    fields = {
        "reporter": v[0],
        "node": node,
        "source_workload": v[1],
        "source_namespace": v[4],
        "source_principal": v[5],
        "destination_workload": v[9],
        "destination_namespace": v[10],
        "destination_principal": v[11],
        "destination_service": v[14],
        "response_flags": v[23],
        "connection_security_policy": v[24],
    }
    return dumps(fields)[1:-1]


_q = json.encoder.encode_basestring  # type: ignore[attr-defined]  # C: a JSON string with its quotes


def quote(value: str) -> str:
    """``value`` as a JSON string, with its quotes."""
    return str(_q(value))


def _num(v: float | None) -> str:
    return "null" if v is None else repr(v)


def _common(static: str, c: Any, kind: str) -> str:
    # written as text: a dict and json.dumps per line cost more than the rest of the entry's work
    duration = millis(c.duration) if c.HasField("duration") else None
    return (
        f'{{"@timestamp":"{timestamp(c.start_time)}",{static},"kind":"{kind}","duration_ms":{_num(duration)},'
        f'"upstream_cluster":{_q(c.upstream_cluster)},"upstream_host":{_q(address(c.upstream_remote_address))},'
        f'"downstream_remote_address":{_q(address(c.downstream_remote_address))}'
    )


def http_line(static: str, entry: Any, grpc_status: str) -> str:
    """The JSON line for one ``HTTPAccessLogEntry``; ``static`` from :func:`static_fields`."""
    c = entry.common_properties
    req = entry.request
    resp = entry.response
    upstream_ms = (
        millis(c.time_to_first_upstream_rx_byte) - millis(c.time_to_last_upstream_tx_byte)
        if c.HasField("time_to_first_upstream_rx_byte") and c.HasField("time_to_last_upstream_tx_byte")
        else None
    )
    return (
        f"{_common(static, c, 'http')},"
        f'"trace_id":{_q(trace_id(req.request_headers))},"request_id":{_q(req.request_id)},'
        f'"method":"{accesslog_method(req.request_method)}","authority":{_q(req.authority)},'
        f'"path":{_q(req.path)},"protocol":"{_PROTOCOLS.get(entry.protocol_version, "")}",'
        f'"status":{resp.response_code.value},"grpc_status":{_q(grpc_status)},'
        f'"response_code_details":{_q(resp.response_code_details)},'
        f'"upstream_service_time_ms":{_num(upstream_ms)},'
        f'"request_bytes":{req.request_headers_bytes + req.request_body_bytes},'
        f'"response_bytes":{resp.response_headers_bytes + resp.response_body_bytes},'
        f'"user_agent":{_q(req.user_agent)}}}'
    )


_TEXT_QUOTES = TEXT_FORMAT.count('"')


def tagged_line(
    static: str,
    ts: str,
    protocol: str,
    duration_ms: float,
    upstream_ms: float | None,
    request_bytes: int,
    response_bytes: int,
    trace: str,
    text: str,
    entry: Any,
) -> str:
    """The JSON line for one HTTP entry that carries the control plane's tag
    (:data:`envoykit.core.accesslog.TAG`): ``static`` from its key part (labels, status, gRPC
    status), the values parsed by the caller, ``trace`` and ``text`` its last two parts. ``text`` is spliced as is when it is safe, else those
    fields are written from the entry's proto, escaped."""
    if text.count('"') != _TEXT_QUOTES or len(_q(text)) != len(text) + 2 + _TEXT_QUOTES:
        text = _text_fields(entry)  # a value holds a quote, a backslash or a control character
    tp, _, b3 = trace.partition("\n")
    if tp:
        parts = tp.split("-")
        if len(parts) >= 3:
            b3 = parts[1]
    return (
        f'{{"@timestamp":{_q(ts)},{static},"kind":"http","duration_ms":{duration_ms!r},'
        f'"upstream_service_time_ms":{_num(upstream_ms)},"request_bytes":{request_bytes},'
        f'"response_bytes":{response_bytes},"protocol":{_q(protocol)},"trace_id":{_q(b3)},{text}}}'
    )


def _text_fields(entry: Any) -> str:
    """The :data:`~envoykit.core.accesslog.TEXT_FORMAT` fields from the entry's proto, escaped."""
    c = entry.common_properties
    req = entry.request
    return (
        f'"method":"{accesslog_method(req.request_method)}","authority":{_q(req.authority)},'
        f'"path":{_q(req.path)},"request_id":{_q(req.request_id)},"user_agent":{_q(req.user_agent)},'
        f'"response_code_details":{_q(entry.response.response_code_details)},'
        f'"upstream_cluster":{_q(c.upstream_cluster)},"upstream_host":{_q(address(c.upstream_remote_address))},'
        f'"downstream_remote_address":{_q(address(c.downstream_remote_address))}'
    )


def tcp_line(static: str, entry: Any) -> str:
    """The JSON line for one ``TCPAccessLogEntry`` (a closed connection)."""
    conn = entry.connection_properties
    return (
        f"{_common(static, entry.common_properties, 'tcp')},"
        f'"received_bytes":{conn.received_bytes},"sent_bytes":{conn.sent_bytes}}}'
    )


_METHODS: dict[int, str] = {}


def accesslog_method(value: int) -> str:
    """``envoy.config.core.v3.RequestMethod`` number → its name (``GET``); '' for unspecified."""
    if not _METHODS:
        from envoy.config.core.v3 import base_pb2

        _METHODS.update({v: k for k, v in base_pb2.RequestMethod.items()})
        _METHODS[0] = ""
    return _METHODS.get(value, "")


def dumps(obj: dict[str, Any]) -> str:
    """One compact JSON object (no newline)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class AccessLogWriter:
    """Writes JSON lines to stdout (``path`` None or ``-``) or to ``path``, rotated by size.

    A batch is written as one block and flushed, never split across files. Rotation (``path`` →
    ``path.1`` … ``path.<backups>``) is ``logging.handlers.RotatingFileHandler.doRollover``; its
    per-record path (a format and a size check per record) is not used: a batch is a few hundred
    lines.

    Args:
        path: the file (its folder is created), or None/``-`` for stdout.
        max_bytes: rotate before a batch would take the file beyond this (characters; 0: never).
        backups: rotated files kept (``path.1`` is the newest).

    Raises:
        OSError: the file cannot be opened.
    """

    def __init__(self, path: str | Path | None, max_bytes: int = 100 * 1024 * 1024, backups: int = 5) -> None:
        self.path = None if path in (None, "-") else Path(str(path))
        self.max_bytes = max_bytes
        self._files: logging.handlers.RotatingFileHandler | None = None
        self._size = 0
        self._lock = threading.Lock()  # the gRPC loop writes, the rotation thread rotates
        #: called after each rotation (Envoys that write the same file reopen it: ``/reopen_logs``)
        self.on_rotate: list[Callable[[], None]] = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._files = logging.handlers.RotatingFileHandler(
                self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
            self._size = self.path.stat().st_size

    def write(self, lines: Iterable[str]) -> int:
        """Write ``lines`` (no newlines inside) as one block, so a batch lands in one file.

        Returns:
            the number of lines written.

        Raises:
            OSError: the write failed.
        """
        batch = lines if isinstance(lines, list) else list(lines)
        if not batch:
            return 0
        data = "\n".join(batch) + "\n"
        files = self._files
        if files is None:
            sys.stdout.write(data)
            sys.stdout.flush()
            return len(batch)
        with self._lock:
            if self.max_bytes and self._size and self._size + len(data) > self.max_bytes:
                self._rollover()
            stream = files.stream
            assert stream is not None  # opened in __init__ and by every rollover
            stream.write(data)
            stream.flush()
            self._size += len(data)
        return len(batch)

    def rotate_if_large(self) -> bool:
        """Rotate when the file on disk (which Envoys' file loggers may append to as well) reached
        ``max_bytes``; then call :attr:`on_rotate`. Returns whether it rotated.

        Raises:
            OSError: the rename failed.
        """
        if self._files is None or not self.max_bytes or self.path is None:
            return False
        with self._lock:
            try:
                self._size = self.path.stat().st_size
            except FileNotFoundError:
                self._size = 0
            if self._size < self.max_bytes:
                return False
            self._rollover()
        for fn in self.on_rotate:
            fn()
        return True

    def _rollover(self) -> None:
        assert self._files is not None
        self._files.doRollover()
        self._size = 0

    def close(self) -> None:
        """Flush and close the file."""
        if self._files is not None:
            self._files.close()

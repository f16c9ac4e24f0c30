"""From a batch of access-log entries to Istio's metrics and JSON lines: the request path of the server.

Per entry the recorder reads the few facts that decide the labels (peer header, peer certificate,
upstream cluster, code, flags, gRPC status), looks the series up by those facts in the stream's cache
(a mesh has few distinct combinations), and counts. Labels are computed and bounded only on a cache
miss.

TCP connections (``tcp_proxy``'s entries carry the connection's byte totals so far):

* the upstream-connected entry (``access_log_type: TcpUpstreamConnected``, sent when the control plane
  sets ``flush_access_log_on_connected``) counts ``istio_tcp_connections_opened_total``; the
  connection's ``stream_id`` is then remembered with the bytes counted for it (none yet);
* a periodic entry (``TcpPeriodic``, every ``access_log_flush_interval``) counts the bytes since the
  last entry of that connection, so a long-lived connection's bytes grow while it is open; one for a
  connection not remembered (this server started after it opened, when an earlier server had counted
  its bytes up to then) counts nothing and is remembered from there;
* the end entry (``TcpConnectionEnd``, or ``NotSet`` from a logger without options) counts the close
  and the bytes not counted yet, and the open too when no entry was seen for that ``stream_id``
  before (a connection that never reached its upstream, or a logger without the connected entry).

Each byte is counted once while the server runs. Across a restart, bytes a connection carried between
its last entry to the old server and its first periodic entry to the new one are not counted (lost
with the stream, like unsent HTTP entries); a connection that ends before its first periodic entry to
the new server is counted whole there (what the old server counted of it, twice).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from envoykit.core import get_logger
from envoykit.core.accesslog import RESPONSE_HEADERS, TAG
from envoykit.core.peer import PEER_HEADER, parse_peer
from envoykit.telemetry.accesslog import (
    AccessLogWriter,
    http_line,
    millis,
    quote,
    static_fields,
    tagged_line,
    tcp_line,
)
from envoykit.telemetry.flags import response_flags
from envoykit.telemetry.labels import LabelGuard, Reporter, label_values, tcp_values
from envoykit.telemetry.metrics import BOUNDS as _BOUNDS
from envoykit.telemetry.metrics import HttpSeries, IstioMetrics, ServerMetrics, TcpSeries

assert PEER_HEADER in RESPONSE_HEADERS
_GRPC = "application/grpc"
_TCP_CONNECTED = 1  # envoy.data.accesslog.v3.AccessLogType.TcpUpstreamConnected
_TCP_PERIODIC = 2
_MAX_CACHE = 4096
_MAX_CONNECTED = 65536
_MAX_SIZES = 256


def _sizes(by_size: dict[str, tuple[int, int, int, int]], sizes: str) -> tuple[int, int, int, int]:
    """A tag's sizes part → (request bucket, request bytes, response bucket, response bytes), kept in
    ``by_size`` (bounded).

    Raises:
        ValueError: not four integers.
    """
    qh, qb, rh, rb = (int(x) if x else 0 for x in sizes.split(" "))
    req, resp = qh + qb, rh + rb
    out = bisect_left(_BOUNDS, req), req, bisect_left(_BOUNDS, resp), resp
    if len(by_size) < _MAX_SIZES:
        by_size[sizes] = out
    return out


_log = get_logger("telemetry")


def _san_uri(common: Any) -> str:
    """The first URI SAN of the verified downstream peer certificate ('' without TLS or certificate)."""
    if not common.HasField("tls_properties"):
        return ""
    for san in common.tls_properties.peer_certificate_properties.subject_alt_name:
        if san.uri:
            return str(san.uri)
    return ""


class Recorder:
    """Counts entries into :class:`IstioMetrics` and writes JSON lines.

    Args:
        metrics: where the series live.
        server: the server's own counters.
        guard: the label bound (shared by every stream).
        writer: the JSON access log, or None for none.
    """

    def __init__(
        self,
        metrics: IstioMetrics,
        server: ServerMetrics,
        guard: LabelGuard,
        writer: AccessLogWriter | None = None,
    ) -> None:
        self.metrics = metrics
        self.server = server
        self.guard = guard
        self.writer = writer

    # -- HTTP ----------------------------------------------------------------------------------

    def http(self, rep: Reporter, entries: Sequence[Any]) -> None:
        """Count a batch of ``HTTPAccessLogEntry`` from ``rep``."""
        lines: list[str] | None = [] if self.writer is not None else None
        cache = rep.cache
        inbound = rep.reporter == "destination"
        bounds = _BOUNDS
        with self.metrics.lock:
            for e in entries:
                tag = e.common_properties.custom_tags.get(TAG)
                if tag is None:  # not formatted by Envoy (another control plane): read the proto
                    self._http_fields(rep, e, inbound, lines)
                    continue
                try:  # parse everything before counting anything
                    key, times, sizes, trace, text = tag.split("\r", 4)
                    ts, proto, ds_us, dur_ms, up_us = times.split(" ")
                    ms = int(ds_us) / 1000 if ds_us else float(dur_ms)
                    upstream_ms = int(up_us) / 1000 if up_us else None
                    series, static, by_size = cache.get(key) or self._tagged_series(rep, key, inbound)
                    size = by_size.get(sizes) or _sizes(by_size, sizes)  # a series sees few sizes
                except ValueError:  # not the tag of this server's format: read the proto
                    self._http_fields(rep, e, inbound, lines)
                    continue
                # Histo.observe inline: this loop is the server's hot path
                h = series.duration
                h.counts[bisect_left(bounds, ms)] += 1
                h.sum += ms
                req_i, req_bytes, resp_i, resp_bytes = size
                h = series.request_bytes
                h.counts[req_i] += 1
                h.sum += req_bytes
                h = series.response_bytes
                h.counts[resp_i] += 1
                h.sum += resp_bytes
                series.requests += 1
                if lines is not None:
                    lines.append(
                        tagged_line(static, ts, proto, ms, upstream_ms, req_bytes, resp_bytes, trace, text, e)
                    )
        self.server.entries.labels(rep.node_label or rep.node_id, rep.reporter, "http").inc(len(entries))
        if lines:
            self._write(lines)

    def _tagged_series(self, rep: Reporter, key: str, inbound: bool) -> tuple[HttpSeries, str, dict]:
        """The series, static line part and size cache for a tag's key part (a cache miss)."""
        if inbound:
            code, flags, ctype, grpc_t, grpc_h, sans, peer = key.split("\n", 6)
            principal = sans.split(",", 1)[0]
            cluster = authority = ""
        else:
            code, flags, ctype, grpc_t, grpc_h, cluster, authority, peer = key.split("\n", 7)
            principal = ""
        is_grpc = ctype.startswith(_GRPC)
        grpc = (grpc_t or grpc_h or "unknown") if is_grpc else ""
        values = label_values(
            rep,
            parse_peer(peer),
            principal,
            cluster,
            "" if cluster else authority,
            "grpc" if is_grpc else "http",
            code or "0",
            grpc,
            flags or "-",
        )
        # the parts of the line fixed by the key, serialized once
        status = int(code) if code.isdigit() else 0
        static = f'{static_fields(values, rep.node_id)},"status":{status},"grpc_status":{quote(grpc)}'
        return self._cache(rep, key, (self._bounded_http(values), static, {}))  # type: ignore[return-value]

    def _bounded_http(self, values: tuple[str, ...]) -> HttpSeries:
        before = self.guard.collapsed
        series = self.metrics.http(self.guard.apply(values))
        if self.guard.collapsed > before:
            self.server.collapsed.inc(self.guard.collapsed - before)
        return series

    @staticmethod
    def _cache(rep: Reporter, key: Any, hit: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(rep.cache) >= _MAX_CACHE:
            rep.cache.clear()
        rep.cache[key] = hit
        return hit

    def _http_fields(self, rep: Reporter, e: Any, inbound: bool, lines: list[str] | None) -> None:
        """Count one entry from its proto fields and the headers it logged (Envoys configured by
        another control plane: :data:`envoykit.core.accesslog.REQUEST_HEADERS` and friends)."""
        c = e.common_properties
        req = e.request
        resp = e.response
        headers = req.request_headers
        is_grpc = headers.get("content-type", "").startswith(_GRPC)
        code = resp.response_code.value
        if is_grpc:
            grpc = resp.response_trailers.get("grpc-status") or resp.response_headers.get(
                "grpc-status", "unknown"
            )
        else:
            grpc = ""
        flags_set = c.HasField("response_flags") and c.response_flags.ListFields()
        if inbound:
            key: tuple[Any, ...] = (
                headers.get(PEER_HEADER, ""),
                _san_uri(c),
                code,
                grpc,
                is_grpc,
                flags_set and response_flags(c.response_flags),
            )
        else:
            key = (
                resp.response_headers.get(PEER_HEADER, ""),
                c.upstream_cluster,
                "" if c.upstream_cluster else req.authority,
                code,
                grpc,
                is_grpc,
                flags_set and response_flags(c.response_flags),
            )
        hit = rep.cache.get(key)
        if hit is None:
            hit = self._http_series(rep, key, inbound)
        series, static = hit
        series.requests += 1
        if c.HasField("time_to_last_downstream_tx_byte"):
            series.duration.observe(millis(c.time_to_last_downstream_tx_byte))
        elif c.HasField("duration"):
            series.duration.observe(millis(c.duration))
        series.request_bytes.observe(req.request_headers_bytes + req.request_body_bytes)
        series.response_bytes.observe(resp.response_headers_bytes + resp.response_body_bytes)
        if lines is not None:
            lines.append(http_line(static, e, grpc))

    def _http_series(self, rep: Reporter, key: tuple[Any, ...], inbound: bool) -> tuple[HttpSeries, str]:
        if inbound:
            peer_value, principal, code, grpc, is_grpc, flags = key
            cluster = authority = ""
        else:
            peer_value, cluster, authority, code, grpc, is_grpc, flags = key
            principal = ""
        values = label_values(
            rep,
            parse_peer(peer_value),
            principal,
            cluster,
            authority,
            "grpc" if is_grpc else "http",
            str(code),
            grpc,
            flags or "-",
        )
        return self._cache(rep, key, (self._bounded_http(values), static_fields(values, rep.node_id)))

    # -- TCP -----------------------------------------------------------------------------------

    def tcp(self, rep: Reporter, entries: Sequence[Any]) -> None:
        """Count a batch of ``TCPAccessLogEntry`` from ``rep`` (see the module doc for which entry
        counts what: each byte once, whether a connection reports periodically or only at its end)."""
        lines: list[str] = []
        writer = self.writer
        counted = rep.connected
        with self.metrics.lock:
            for e in entries:
                c = e.common_properties
                kind = c.access_log_type
                sid = c.stream_id
                series, static = self._tcp_series(rep, c)
                conn = e.connection_properties
                sent, received = conn.sent_bytes, conn.received_bytes
                if kind == _TCP_CONNECTED:
                    series.opened += 1
                    self._remember(counted, sid, [0, 0])
                    continue
                last = counted.get(sid)
                if kind == _TCP_PERIODIC:
                    if last is None:
                        # opened and partly counted before this stream began (the server restarted):
                        # what it carried until now is not counted again
                        self._remember(counted, sid, [sent, received])
                        continue
                    series.sent += sent - last[0]
                    series.received += received - last[1]
                    last[0], last[1] = sent, received
                    continue
                if last is None:
                    series.opened += 1  # no connected entry was counted for this connection
                    last = [0, 0]
                else:
                    del counted[sid]
                series.closed += 1
                series.sent += sent - last[0]
                series.received += received - last[1]
                if writer is not None:
                    lines.append(tcp_line(static, e))
        self.server.entries.labels(rep.node_label or rep.node_id, rep.reporter, "tcp").inc(len(entries))
        self._write(lines)

    @staticmethod
    def _remember(counted: dict[str, list[int]], sid: str, totals: list[int]) -> None:
        if len(counted) >= _MAX_CONNECTED:  # bounded: the oldest connection is forgotten
            counted.pop(next(iter(counted)))
        counted[sid] = totals

    def _tcp_series(self, rep: Reporter, c: Any) -> tuple[TcpSeries, str]:
        flags = response_flags(c.response_flags) if c.HasField("response_flags") else "-"
        principal = _san_uri(c) if rep.reporter == "destination" else ""
        key = ("tcp", principal, c.upstream_cluster, flags)
        hit = rep.cache.get(key)
        if hit is None:
            values = label_values(rep, {}, principal, c.upstream_cluster, "", "tcp", "", "", flags)
            before = self.guard.collapsed
            series = self.metrics.tcp(tcp_values(self.guard.apply(values)))
            if self.guard.collapsed > before:
                self.server.collapsed.inc(self.guard.collapsed - before)
            if len(rep.cache) >= _MAX_CACHE:
                rep.cache.clear()
            hit = rep.cache[key] = (series, static_fields(values, rep.node_id))
        return hit  # type: ignore[no-any-return]

    # -- JSON lines ----------------------------------------------------------------------------

    def _write(self, lines: list[str]) -> None:
        if not lines or self.writer is None:
            return
        try:
            self.server.lines.inc(self.writer.write(lines))
        except OSError as exc:  # the metrics are counted; the lost lines are counted and logged
            self.server.log_errors.inc(len(lines))
            _log.error("access log write failed", error=str(exc), lines=len(lines))

"""The built-in telemetry processor: Istio's standard HTTP metrics from ext_proc messages.

Metrics (names, labels and meaning follow https://istio.io/latest/docs/reference/config/metrics/):

* ``istio_requests_total`` (counter),
* ``istio_request_duration_milliseconds`` (histogram, ms),
* ``istio_request_bytes`` / ``istio_response_bytes`` (histograms, bytes: headers + body, like
  Envoy's ``request.total_size`` / ``response.total_size`` attributes),

all with Envoy's default histogram buckets (0.5 ms … 3 600 000) and the labels in :data:`LABELS`.

It is meant for an ext_proc filter in ``observability_mode`` (Envoy never waits for it) with
``request_header_mode: SKIP``, ``response_header_mode: SEND``, ``response_trailer_mode: SEND`` and
:data:`envoykit.core.extproc.RESPONSE_ATTRIBUTES` as ``response_attributes``: one message per exchange carries everything
(two for responses with trailers, such as gRPC). Where each value comes from:

* the reporting Envoy's labels: its node metadata (``xds.node.metadata.<key>``);
* ``reporter``: ``xds.listener_direction`` (INBOUND → destination, OUTBOUND → source), else the
  gRPC metadata ``x-envoykit-reporter`` of the filter's ``grpc_service``, else ``unknown``;
* the peer: the ``x-envoykit-peer`` header (request header inbound, response header outbound,
  see :mod:`envoykit.core.peer`); the peer's principal from its certificate
  (``connection.uri_san_peer_certificate`` inbound, ``upstream.uri_san_peer_certificate`` outbound);
* sizes: ``request.total_size``; response header bytes + ``content-length`` (or the counted body
  when ``response_body_mode`` is STREAMED);
* ``grpc_response_status``: the ``grpc-status`` of a trailers-only response, else of the response
  trailers (``response_trailer_mode: SEND``; gRPC exchanges are recorded when they arrive);
* duration: from ``request.time`` to when the response headers (or the response trailers, or, when
  streamed, the last body chunk) reached this processor. It includes the hop to the processor (sub-millisecond on loopback).

Label values are bounded: each label keeps at most ``max_values`` distinct values, later new ones
collapse to ``unknown``.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from envoykit.core.cardinality import UNKNOWN, LabelGuard
from envoykit.core.extproc import TELEMETRY_PROCESSOR
from envoykit.core.peer import PEER_HEADER, PEER_KEYS, parse_peer, spiffe_parts
from envoykit.extproc.exchange import BodyMode, Exchange
from envoykit.extproc.processor import Processor

# Envoy's default histogram buckets (source/common/stats/histogram_impl.h, supported_buckets).
ENVOY_BUCKETS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
    1800000, 3600000,
)  # fmt: skip

LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "connection_security_policy",
)

REPORTER_METADATA = "x-envoykit-reporter"
_DIRECTION = {1.0: "destination", 2.0: "source"}  # envoy.config.core.v3.TrafficDirection
_DONE = "envoykit.telemetry.done"


_METRICS: dict[int, tuple[Counter, Histogram, Histogram, Histogram]] = {}


def _metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram, Histogram, Histogram]:
    # One set per registry: prometheus-client refuses to register a name twice.
    key = id(registry)
    if key not in _METRICS:
        _METRICS[key] = (
            Counter("istio_requests", "Requests seen by the reporting proxy.", LABELS, registry=registry),
            Histogram(
                "istio_request_duration_milliseconds",
                "Request duration in milliseconds.",
                LABELS,
                buckets=ENVOY_BUCKETS,
                registry=registry,
            ),
            Histogram(
                "istio_request_bytes",
                "Request size (headers and body) in bytes.",
                LABELS,
                buckets=ENVOY_BUCKETS,
                registry=registry,
            ),
            Histogram(
                "istio_response_bytes",
                "Response size (headers and body) in bytes.",
                LABELS,
                buckets=ENVOY_BUCKETS,
                registry=registry,
            ),
        )
    return _METRICS[key]


class Telemetry(Processor):
    """Counts, times and sizes every exchange as Istio's standard metrics.

    Args:
        registry: where the metrics live (the process-wide default registry by default).
        max_values: the most distinct values one label may take before new ones become ``unknown``.
    """

    name = TELEMETRY_PROCESSOR
    observer = True

    def __init__(self, registry: CollectorRegistry = REGISTRY, max_values: int = 200) -> None:
        self.requests, self.duration, self.request_bytes, self.response_bytes = _metrics(registry)
        self._guard = LabelGuard(max_values)
        self._children: dict[tuple[str, ...], tuple[Any, Any, Any, Any]] = {}

    # -- phases --------------------------------------------------------------------------------

    def on_response_headers(self, ex: Exchange) -> None:
        """Record now, unless the body is streamed to us or a gRPC status is still to come in the
        trailers (then record at the end of the body, at the trailers, or when the stream ends)."""
        h = ex.headers
        assert h is not None
        st = ex.state
        st["t_end"] = time.time()
        st["resp_header_bytes"] = h.byte_size()
        length = h.get("content-length")
        st["resp_body_bytes"] = int(length) if length and length.isdigit() else 0
        if ex.end_of_stream:
            self._record(ex)
            return
        if ex.response_body_mode is not BodyMode.NONE:
            st["resp_body_bytes"] = 0
            st["counting"] = True
        if _is_grpc(ex.attributes):
            st["await_trailers"] = True  # grpc-status comes in the trailers
        elif "counting" not in st:
            self._record(ex)

    def on_response_body(self, ex: Exchange) -> None:
        """Count streamed body bytes; record at the end of the body (gRPC: at the trailers)."""
        st = ex.state
        if _DONE in st or "counting" not in st:
            return
        st["resp_body_bytes"] += len(ex.body)
        if ex.end_of_stream and "await_trailers" not in st:
            st["t_end"] = time.time()
            self._record(ex)

    def on_response_trailers(self, ex: Exchange) -> None:
        """Trailers end the response (and carry ``grpc-status``)."""
        st = ex.state
        if _DONE not in st and "t_end" in st:
            st["t_end"] = time.time()
            self._record(ex)

    def on_stream_end(self, ex: Exchange) -> None:
        """A response cut short (or trailers not sent to us) is still counted, with what was seen."""
        st = ex.state
        if _DONE not in st and "t_end" in st:
            self._record(ex)

    # -- recording -----------------------------------------------------------------------------

    def _record(self, ex: Exchange) -> None:
        st = ex.state
        st[_DONE] = True
        ex.finish(self.name)
        a = ex.attributes
        labels = self.labels(ex)
        children = self._children.get(labels)
        if children is None:
            children = (
                self.requests.labels(*labels),
                self.duration.labels(*labels),
                self.request_bytes.labels(*labels),
                self.response_bytes.labels(*labels),
            )
            self._children[labels] = children
        children[0].inc()
        started = a.get("request.time")
        if isinstance(started, str):
            try:
                ms = (st["t_end"] - datetime.fromisoformat(started).timestamp()) * 1000.0
                children[1].observe(max(ms, 0.0))
            except ValueError:
                pass
        req_size = a.get("request.total_size")
        if isinstance(req_size, float):
            children[2].observe(req_size)
        children[3].observe(st["resp_header_bytes"] + st["resp_body_bytes"])

    def labels(self, ex: Exchange) -> tuple[str, ...]:
        """The label values (in :data:`LABELS` order) for one exchange."""
        a = ex.attributes
        g = self._guard
        me = {k: a.get(f"xds.node.metadata.{k}") or "" for k in PEER_KEYS}
        reporter = _DIRECTION.get(a.get("xds.listener_direction", 0.0), "")
        if not reporter:
            reporter = ex.grpc_metadata.get(REPORTER_METADATA, "")
            if reporter not in ("source", "destination"):
                reporter = UNKNOWN
        code = a.get("response.code")
        if code is None and ex.response_headers is not None:
            status = ex.response_headers.get(":status")
            code = float(status) if status and status.isdigit() else None
        is_grpc = _is_grpc(a)
        grpc_status = ""
        if is_grpc:
            # Envoy's response.grpc_status attribute is not final at response headers (it says 2,
            # UNKNOWN): read grpc-status from a trailers-only response, else from the trailers.
            grpc_status = UNKNOWN
            for hm in (ex.response_headers, ex.response_trailers):
                value = hm.get("grpc-status") if hm is not None else None
                if value is not None and value.isdigit():
                    grpc_status = value
        if reporter == "source":
            src = me
            peer = parse_peer(_s(ex.response_headers.get(PEER_HEADER) if ex.response_headers else None))
            dst_principal = _s(a.get("upstream.uri_san_peer_certificate")) or peer.get("principal", "")
            dst = {**peer, "principal": dst_principal}
            src_principal = me["principal"]
            security = UNKNOWN  # what Istio reports on the client side
            dest_service = peer.get("app") or _s(a.get("xds.cluster_name")) or _host(a.get("request.host"))
        else:
            dst = me
            peer = parse_peer(_s(a.get(f"request.headers['{PEER_HEADER}']")))
            mtls = a.get("connection.mtls") is True
            # a principal is only believed from a verified peer certificate
            src_principal = _s(a.get("connection.uri_san_peer_certificate")) if mtls else ""
            src = peer
            dst_principal = me["principal"]
            security = "mutual_tls" if mtls else "none"
            dest_service = me["app"] or _host(a.get("request.host"))
        src_ns = src.get("namespace") or spiffe_parts(src_principal)[0]
        dst_ns = dst.get("namespace") or spiffe_parts(dst_principal)[0]
        values = (
            reporter,
            src.get("workload", ""),
            src_ns,
            src_principal,
            src.get("app", ""),
            src.get("version", ""),
            dst.get("workload", ""),
            dst_ns,
            dst_principal,
            dst.get("app", ""),
            dst.get("version", ""),
            dest_service,
            dest_service,
            dst_ns,
            "grpc" if is_grpc else _protocol(a.get("request.protocol")),
            str(int(code)) if isinstance(code, float) else UNKNOWN,
            grpc_status,
            security,
        )
        return tuple(v if i in _FIXED else g(i, v) for i, v in enumerate(values))


# label positions whose values are already from a small fixed set
_FIXED = frozenset({0, 14, 16, 17})


def _is_grpc(a: dict[str, Any]) -> bool:
    ctype = a.get("request.headers['content-type']")
    return isinstance(ctype, str) and ctype.startswith("application/grpc")


def _s(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _host(v: Any) -> str:
    if not isinstance(v, str):
        return ""
    return v.rsplit(":", 1)[0] if v.count(":") == 1 else v


def _protocol(v: Any) -> str:
    return "http" if isinstance(v, str) and v.startswith("HTTP") else UNKNOWN

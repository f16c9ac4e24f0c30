"""Istio's standard metrics as a Prometheus collector, and the server's own counters.

Istio's metrics (https://istio.io/latest/docs/reference/config/metrics/):

* ``istio_requests_total`` (counter), ``istio_request_duration_milliseconds`` (histogram, ms),
  ``istio_request_bytes`` / ``istio_response_bytes`` (histograms, bytes: headers + body), labels
  :data:`~envoykit.telemetry.labels.HTTP_LABELS`;
* ``istio_tcp_sent_bytes_total``, ``istio_tcp_received_bytes_total``,
  ``istio_tcp_connections_opened_total``, ``istio_tcp_connections_closed_total`` (counters), labels
  :data:`~envoykit.telemetry.labels.TCP_LABELS`.

Histograms use Envoy's default buckets (``source/common/stats/histogram_impl.h``), as Istio's do.
Series are plain Python numbers updated under one lock per batch and exported by a custom collector:
a ``prometheus_client`` child per observation would cost more than the rest of the entry's work.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from envoykit.telemetry.labels import HTTP_LABELS, TCP_LABELS

ENVOY_BUCKETS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
    1800000, 3600000,
)  # fmt: skip
#: Upper bounds of the buckets as floats; an observation counts in ``counts[bisect_left(BOUNDS, v)]``.
BOUNDS = tuple(float(b) for b in ENVOY_BUCKETS)
_BOUNDS = BOUNDS
_LE = [*(floatToGoString(b) for b in _BOUNDS), "+Inf"]  # as prometheus_client's own Histogram


class Histo:
    """Bucket counts (non-cumulative, the last one is +Inf) and the sum of one histogram series."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BOUNDS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose upper bound is ≥ it (Prometheus' ``le``)."""
        self.counts[bisect_left(_BOUNDS, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for le, n in zip(_LE, self.counts, strict=True):
            total += n
            out.append((le, float(total)))
        return out


class HttpSeries:
    """One label set of the HTTP metrics."""

    __slots__ = ("duration", "labels", "request_bytes", "requests", "response_bytes")

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.requests = 0
        self.duration = Histo()
        self.request_bytes = Histo()
        self.response_bytes = Histo()


class TcpSeries:
    """One label set of the TCP metrics."""

    __slots__ = ("closed", "labels", "opened", "received", "sent")

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.sent = 0
        self.received = 0
        self.opened = 0
        self.closed = 0


class IstioMetrics(Collector):
    """The series of Istio's metrics; register it with a ``CollectorRegistry``.

    Update series only while holding :attr:`lock` (the recorder takes it once per batch); the
    ``/metrics`` thread takes it to read a consistent snapshot.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._http: dict[tuple[str, ...], HttpSeries] = {}
        self._tcp: dict[tuple[str, ...], TcpSeries] = {}
        #: more HTTP series read at each collect (Envoy's own stats), summed with these per label set
        self.http_sources: list[Callable[[], list[HttpSeries]]] = []

    def http(self, labels: tuple[str, ...]) -> HttpSeries:
        """The series for ``labels`` (values of ``HTTP_LABELS``), created on first use."""
        s = self._http.get(labels)
        if s is None:
            s = self._http[labels] = HttpSeries(labels)
        return s

    def tcp(self, labels: tuple[str, ...]) -> TcpSeries:
        """The series for ``labels`` (values of ``TCP_LABELS``), created on first use."""
        s = self._tcp.get(labels)
        if s is None:
            s = self._tcp[labels] = TcpSeries(labels)
        return s

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "istio_requests", "Requests handled by the reporting proxy.", labels=HTTP_LABELS
        )
        duration = HistogramMetricFamily(
            "istio_request_duration_milliseconds", "Request duration in milliseconds.", labels=HTTP_LABELS
        )
        req_b = HistogramMetricFamily(
            "istio_request_bytes", "Request size (headers and body) in bytes.", labels=HTTP_LABELS
        )
        resp_b = HistogramMetricFamily(
            "istio_response_bytes", "Response size (headers and body) in bytes.", labels=HTTP_LABELS
        )
        sent = CounterMetricFamily(
            "istio_tcp_sent_bytes", "Bytes sent to the downstream during a TCP connection.", labels=TCP_LABELS
        )
        received = CounterMetricFamily(
            "istio_tcp_received_bytes",
            "Bytes received from the downstream during a TCP connection.",
            labels=TCP_LABELS,
        )
        opened = CounterMetricFamily(
            "istio_tcp_connections_opened", "TCP connections opened.", labels=TCP_LABELS
        )
        closed = CounterMetricFamily(
            "istio_tcp_connections_closed", "TCP connections closed.", labels=TCP_LABELS
        )
        extra = [s for source in self.http_sources for s in source()]  # outside the lock: it fetches
        with self.lock:
            http = self._http
            if extra:
                http = {k: _copy(v) for k, v in http.items()}
                for s in extra:
                    mine = http.get(s.labels)
                    if mine is None:
                        http[s.labels] = s
                    else:
                        _add(mine, s)
            for s in http.values():
                labels = list(s.labels)
                requests.add_metric(labels, s.requests)
                duration.add_metric(labels, s.duration.buckets(), s.duration.sum)
                req_b.add_metric(labels, s.request_bytes.buckets(), s.request_bytes.sum)
                resp_b.add_metric(labels, s.response_bytes.buckets(), s.response_bytes.sum)
            for t in self._tcp.values():
                labels = list(t.labels)
                sent.add_metric(labels, t.sent)
                received.add_metric(labels, t.received)
                opened.add_metric(labels, t.opened)
                closed.add_metric(labels, t.closed)
        yield from (requests, duration, req_b, resp_b, sent, received, opened, closed)


def _copy(s: HttpSeries) -> HttpSeries:
    out = HttpSeries(s.labels)
    _add(out, s)
    return out


def _add(into: HttpSeries, s: HttpSeries) -> None:
    into.requests += s.requests
    for a, b in (
        (into.duration, s.duration),
        (into.request_bytes, s.request_bytes),
        (into.response_bytes, s.response_bytes),
    ):
        a.counts = [x + y for x, y in zip(a.counts, b.counts, strict=True)]
        a.sum += b.sum


class ServerMetrics:
    """The server's own counters, next to Envoy's access-log stats (see :mod:`envoykit.telemetry.gap`).

    * ``envoykit_telemetry_entries_total{node, reporter, kind}``: entries received (``kind``: http, tcp);
    * ``envoykit_telemetry_entries_failed_total{node}``: entries received but not counted (an error);
    * ``envoykit_telemetry_streams``: access-log streams open now;
    * ``envoykit_telemetry_streams_total{node}``: streams opened (a stream per Envoy worker and logger);
    * ``envoykit_telemetry_label_values_collapsed_total``: label values turned into ``unknown`` by the bound;
    * ``envoykit_telemetry_access_log_lines_total`` / ``..._access_log_errors_total``: JSON lines written, lost.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        kw: dict[str, Any] = {"registry": registry}
        self.entries = Counter(
            "envoykit_telemetry_entries", "Access-log entries received.", ["node", "reporter", "kind"], **kw
        )
        self.failed = Counter(
            "envoykit_telemetry_entries_failed",
            "Access-log entries received but not counted (the batch raised an error).",
            ["node"],
            **kw,
        )
        self.streams = Gauge("envoykit_telemetry_streams", "Access-log streams open.", **kw)
        self.streams_opened = Counter(
            "envoykit_telemetry_streams_opened", "Access-log streams opened.", ["node"], **kw
        )
        self.collapsed = Counter(
            "envoykit_telemetry_label_values_collapsed",
            "Label values replaced by 'unknown' because a label reached its bound.",
            **kw,
        )
        self.lines = Counter("envoykit_telemetry_access_log_lines", "JSON access-log lines written.", **kw)
        self.log_errors = Counter(
            "envoykit_telemetry_access_log_errors", "JSON access-log lines lost to a failed write.", **kw
        )

"""What Envoy says it logged and dropped, next to what the server counted: a gap is visible, never silent.

Envoy's gRPC access loggers count, per Envoy, ``access_logs.grpc_access_log.logs_written`` (entries
accepted into the logger's buffer, not yet necessarily sent) and ``logs_dropped`` (entries dropped
because the buffer was full: the server was down or slow). Source: Envoy docs,
configuration/observability/access_log/stats.

Given the Envoys' admin URLs, :class:`EnvoyLogStats` reads those counters at every ``/metrics``
scrape and exports them as ``envoykit_telemetry_envoy_logs_written_total{node}`` and
``envoykit_telemetry_envoy_logs_dropped_total{node}`` beside the server's
``envoykit_telemetry_entries_total{node,…}``, and ``envoykit_telemetry_envoy_up{admin}`` (0 when the
admin did not answer). ``written - entries`` is what is buffered, in flight or lost in transport
(a restart of this server loses its earlier counts: compare increases over the same window).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_PREFIX = "access_logs.grpc_access_log."
_FILTER = r"^access_logs\.grpc_access_log\."


def _get_json(url: str, timeout: float) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        out = json.loads(resp.read())
    return out if isinstance(out, dict) else {}


def envoy_log_stats(admin: str, timeout: float = 1.0) -> tuple[str, dict[str, int]]:
    """``(node id, {"logs_written": n, "logs_dropped": m})`` from one Envoy admin (``http://host:port``).

    Raises:
        OSError: the admin did not answer (``urllib.error.URLError`` is one).
        ValueError: the answer is not Envoy's JSON.
    """
    admin = admin.rstrip("/")
    info = _get_json(f"{admin}/server_info", timeout)
    node = info.get("node")
    node_id = str(node.get("id", "")) if isinstance(node, dict) else ""
    stats = _get_json(f"{admin}/stats?format=json&filter={_FILTER}", timeout).get("stats", [])
    out = {"logs_written": 0, "logs_dropped": 0}
    for s in stats if isinstance(stats, list) else []:
        name = str(s.get("name", ""))
        if name.startswith(_PREFIX) and name[len(_PREFIX) :] in out:
            out[name[len(_PREFIX) :]] = int(s.get("value", 0))
    return node_id, out


class EnvoyLogStats(Collector):
    """Mirrors Envoy's gRPC access-log counters of each admin URL at scrape time (see module doc)."""

    def __init__(self, admins: Sequence[str], timeout: float = 1.0, reader: Any = None) -> None:
        self.admins = list(admins)
        self.timeout = timeout
        self.reader = reader  # an EnvoyStatsReader: its Envoy request counts are exported here too

    def collect(self) -> Iterator[Metric]:
        if not self.admins:
            return
        written = CounterMetricFamily(
            "envoykit_telemetry_envoy_logs_written",
            "Envoy's access_logs.grpc_access_log.logs_written: entries its gRPC access loggers accepted.",
            labels=["node"],
        )
        dropped = CounterMetricFamily(
            "envoykit_telemetry_envoy_logs_dropped",
            "Envoy's access_logs.grpc_access_log.logs_dropped: entries dropped with the buffer full.",
            labels=["node"],
        )
        up = GaugeMetricFamily(
            "envoykit_telemetry_envoy_up", "1 if the Envoy admin answered.", labels=["admin"]
        )

        def one(admin: str) -> tuple[str, tuple[str, dict[str, int]] | None]:
            try:
                return admin, envoy_log_stats(admin, self.timeout)
            except (OSError, ValueError):
                return admin, None

        with ThreadPoolExecutor(max_workers=min(8, len(self.admins))) as pool:
            results = list(pool.map(one, self.admins))
        for admin, got in results:
            up.add_metric([admin], 0.0 if got is None else 1.0)
            if got is not None:
                node, stats = got
                written.add_metric([node or admin], stats["logs_written"])
                dropped.add_metric([node or admin], stats["logs_dropped"])
        yield from (written, dropped, up)
        if self.reader is not None:
            yield from self.reader.gap_metrics()

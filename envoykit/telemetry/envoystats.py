"""Istio's HTTP metrics from the stats Envoy keeps itself (the ``stats`` transport): nothing per request
leaves Envoy.

Each Envoy counts every request into three histograms ``envoykit_<reporter>.<name>`` (the duration's
count is the request count)
(``envoy.access_loggers.stats``; names, tags and scope in :mod:`envoykit.core.accesslog`). At every
scrape of ``/metrics`` this reader fetches, from each Envoy admin it was given, ``/server_info`` (the
node: id and metadata, and its uptime) and ``/stats/prometheus?usedonly&filter=…`` (those stats, and
each connection manager's ``downstream_rq_completed``), turns every tag set into Istio's labels with
the same functions as the gRPC stream (:func:`envoykit.telemetry.labels.label_values`, bounded by the
shared :class:`~envoykit.telemetry.labels.LabelGuard`) and sums the series per label set.

Counts are Envoy's own totals since it started, so a restart of this server loses nothing and counts
nothing twice: the next scrape reads the same totals. When an Envoy restarts (its uptime went back, or
a total went down), what it had counted is kept and its new totals add to it, so every series only
grows. An admin that does not answer keeps its last totals and shows as
``envoykit_telemetry_envoy_up{admin} 0``.

Next to them, ``envoykit_telemetry_envoy_requests_total{node, reporter}`` is what each Envoy's
connection managers completed (``http.<prefix>.downstream_rq_completed``; ``inbound`` reports as
destination, every other prefix but ``admin`` as source): a label set Envoy did not count (its stats
scope full: ``max_series``) shows as the difference from ``istio_requests_total``, never silently.

Every figure comes from Envoy's histograms, merged from its worker threads at each stats flush
(``stats_flush_interval``, 5 s by default): counts, buckets and sums of one scrape agree, and lag the
requests by at most that interval. Source: Envoy docs, operations/admin
(``/stats/prometheus``, ``usedonly``, ``filter``), ``envoy.extensions.access_loggers.stats.v3``.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from envoykit.core import get_logger
from envoykit.core.accesslog import STATS_HISTOGRAMS, STATS_PREFIXES, STATS_TAG
from envoykit.core.peer import parse_peer
from envoykit.telemetry import gatestats
from envoykit.telemetry.labels import LabelGuard, Reporter, label_values
from envoykit.telemetry.metrics import BOUNDS, HttpSeries

_log = get_logger("telemetry")
_REPORTER_OF = {f"envoy_{p}": r for r, p in STATS_PREFIXES.items()}
_FILTER = (
    "^("
    + "|".join(f"{p}\\." for p in STATS_PREFIXES.values())
    + r"|http\.[^.]+\.downstream_rq_completed$|"
    + gatestats.STATS_FILTER
    + ")"
)
_COMPLETED = "envoy_http_downstream_rq_completed"
_HCM_PREFIX = "envoy_http_conn_manager_prefix"
_HISTOS = {name: i for i, name in enumerate(STATS_HISTOGRAMS)}  # duration, request bytes, response bytes
_LE = {float(b): i for i, b in enumerate(BOUNDS)}

#: an Envoy's totals: Istio labels → [requests, [cumulative bucket counts + sum] per histogram]
Totals = dict[tuple[str, ...], "_Series"]


@dataclass
class _Series:
    requests: float = 0.0
    # per histogram: cumulative counts at each of BOUNDS, then +Inf, then the sum
    histos: list[list[float]] = field(default_factory=lambda: [[0.0] * (len(BOUNDS) + 2) for _ in _HISTOS])

    def add(self, other: _Series) -> None:
        self.requests += other.requests
        for mine, theirs in zip(self.histos, other.histos, strict=True):
            for i, v in enumerate(theirs):
                mine[i] += v


@dataclass
class _Envoy:
    """What one admin said last, and what it had counted before its last restart."""

    node: str = ""
    uptime: float = -1.0
    current: Totals = field(default_factory=dict)
    retired: Totals = field(default_factory=dict)
    completed: dict[str, float] = field(default_factory=dict)  # reporter → downstream_rq_completed
    native: dict[str, float] = field(default_factory=dict)  # the authz gate's decisions: result → n
    native_retired: dict[str, float] = field(default_factory=dict)  # ... before its last restart
    up: bool = False


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read())


def _reporter(info: dict[str, Any], reporter: str) -> Reporter:
    node = info.get("node") if isinstance(info.get("node"), dict) else {}
    assert isinstance(node, dict)
    meta = node.get("metadata") if isinstance(node.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    strings = {k: v for k, v in meta.items() if isinstance(v, str)}
    return Reporter(reporter, str(node.get("id", "")), strings)


def _uptime(info: dict[str, Any]) -> float:
    try:
        return float(str(info.get("uptime_current_epoch", "0")).rstrip("s"))
    except ValueError:
        return 0.0


class EnvoyStatsReader:
    """Reads the stats transport's series from Envoy admins at scrape time (see the module doc).

    Args:
        admins: Envoy admin URLs (``http://127.0.0.1:15000``).
        guard: the label bound shared with the gRPC stream's series.
        timeout: seconds per admin request.
    """

    def __init__(self, admins: Sequence[str], guard: LabelGuard, timeout: float = 2.0) -> None:
        self.admins = [a.rstrip("/") for a in admins]
        self.guard = guard
        self.timeout = timeout
        self._envoys = {a: _Envoy() for a in self.admins}
        self._lock = threading.Lock()  # one scrape at a time updates the totals

    def http_series(self) -> list[HttpSeries]:
        """Every Envoy's totals, fetched now and summed per Istio label set, as series to export."""
        if not self.admins:
            return []
        with self._lock, ThreadPoolExecutor(max_workers=min(8, len(self.admins))) as pool:
            for admin, got in zip(self.admins, pool.map(self._fetch, self.admins), strict=True):
                self._update(self._envoys[admin], got)
            summed: Totals = {}
            for env in self._envoys.values():
                for totals in (env.retired, env.current):
                    for labels, s in totals.items():
                        summed.setdefault(labels, _Series()).add(s)
        return [_export(labels, s) for labels, s in summed.items()]

    def gap_metrics(self) -> Iterable[Metric]:
        """``envoykit_telemetry_envoy_requests_total{node, reporter}`` and the authz native gate's
        ``envoykit_authz_native_decisions_total{node, result}`` (:mod:`envoykit.telemetry.gatestats`;
        only Envoys that run a gate), as last read."""
        fam = CounterMetricFamily(
            "envoykit_telemetry_envoy_requests",
            "Requests Envoy's connection managers completed (http.<prefix>.downstream_rq_completed), "
            "to compare with istio_requests_total.",
            labels=["node", "reporter"],
        )
        native = CounterMetricFamily(gatestats.NAME, gatestats.HELP, labels=["node", "result"])
        with self._lock:
            for admin, env in self._envoys.items():
                for reporter, n in env.completed.items():
                    fam.add_metric([env.node or admin, reporter], n)
                if env.native or env.native_retired:
                    for result in ("allow", "deny"):
                        n = env.native.get(result, 0.0) + env.native_retired.get(result, 0.0)
                        native.add_metric([env.node or admin, result], n)
        yield fam
        if native.samples:  # only where a gate runs
            yield native

    def up(self) -> dict[str, bool]:
        """admin → whether it answered the last read."""
        return {a: e.up for a, e in self._envoys.items()}

    def _fetch(self, admin: str) -> tuple[dict[str, Any], str] | None:
        try:
            info = json.loads(_get(f"{admin}/server_info", self.timeout))
            query = urllib.parse.urlencode({"usedonly": "", "filter": _FILTER})
            text = _get(f"{admin}/stats/prometheus?{query}", self.timeout).decode()
        except (OSError, ValueError) as exc:
            _log.warning("envoy admin did not answer", admin=admin, error=str(exc))
            return None
        return (info if isinstance(info, dict) else {}), text

    def _update(self, env: _Envoy, got: tuple[dict[str, Any], str] | None) -> None:
        env.up = got is not None
        if got is None:
            return  # its last totals stand
        info, text = got
        families = list(text_string_to_metric_families(text))
        totals, completed = self._parse(info, families)
        native = gatestats.native_decisions(families)
        uptime = _uptime(info)
        restarted = (
            uptime < env.uptime
            or any(s.requests < env.current[k].requests for k, s in totals.items() if k in env.current)
            or any(n < env.native.get(r, 0.0) for r, n in native.items())
        )
        if restarted:  # a new Envoy behind the same admin: its counts start again from zero
            for labels, s in env.current.items():
                env.retired.setdefault(labels, _Series()).add(s)
            for r, n in env.native.items():
                env.native_retired[r] = env.native_retired.get(r, 0.0) + n
        env.uptime = uptime
        env.current = totals
        env.completed = completed
        env.native = native if any(native.values()) or env.native else {}
        env.node = _reporter(info, "").node_id

    def _parse(self, info: dict[str, Any], families: list[Metric]) -> tuple[Totals, dict[str, float]]:
        totals: Totals = {}
        completed: dict[str, float] = {}
        reps: dict[str, Reporter] = {}
        for fam in families:
            if fam.name == _COMPLETED:
                for s in fam.samples:
                    prefix = s.labels.get(_HCM_PREFIX, "")
                    if prefix and prefix != "admin":
                        rep = "destination" if prefix == "inbound" else "source"
                        completed[rep] = completed.get(rep, 0.0) + s.value
                continue
            base = next((b for b in _REPORTER_OF if fam.name.startswith(b + "_")), None)
            if base is None:
                continue
            reporter = _REPORTER_OF[base]
            stat = fam.name[len(base) + 1 :]
            who = reps.get(reporter) or reps.setdefault(reporter, _reporter(info, reporter))
            for s in fam.samples:
                labels = self._labels(who, s.labels)
                series = totals.setdefault(labels, _Series())
                if stat in _HISTOS:
                    h = series.histos[_HISTOS[stat]]
                    if s.name.endswith("_bucket"):
                        le = s.labels.get("le", "")
                        i = len(BOUNDS) if le == "+Inf" else _LE.get(float(le))
                        if i is not None:
                            h[i] += s.value
                    elif s.name.endswith("_sum"):
                        h[-1] += s.value
                    elif s.name.endswith("_count") and _HISTOS[stat] == 0:  # the duration's
                        series.requests += s.value
        return totals, completed

    def _labels(self, rep: Reporter, tags: dict[str, str]) -> tuple[str, ...]:
        parts = tags.get(STATS_TAG, "").split(" ", 4)
        code, flags, grpc, where, peer = parts + [""] * (5 - len(parts))
        # Envoy writes '-' for a command without a value (no gRPC status, certificate or cluster)
        grpc = "" if grpc == "-" else grpc
        where = "" if where == "-" else where
        inbound = rep.reporter == "destination"
        values = label_values(
            rep,
            parse_peer(peer),
            where.split(",", 1)[0] if inbound else "",
            "" if inbound else where,
            "",
            "grpc" if grpc else "http",
            code or "0",
            grpc,
            flags or "-",
        )
        return self.guard.apply(values)


def _export(labels: tuple[str, ...], s: _Series) -> HttpSeries:
    out = HttpSeries(labels)
    out.requests = int(s.requests)
    for histo, cum in zip((out.duration, out.request_bytes, out.response_bytes), s.histos, strict=True):
        prev = 0.0
        for i in range(len(BOUNDS) + 1):
            histo.counts[i] = int(cum[i] - prev)
            prev = cum[i]
        histo.sum = cum[-1]
    return out

"""Prometheus metrics in the spirit of envoyproxy/ratelimit's stats.

Per rule (the reference's ``ratelimit.service.rate_limit.<domain>.<key>.*``), labelled ``domain`` and
``key``: ``envoykit_ratelimit_hits_total``, ``..._over_limit_total``, ``..._near_limit_total``,
``..._within_limit_total``, ``..._shadow_mode_total``. Service-wide: ``..._domain_not_found_total``,
``..._global_shadow_mode_total``, ``..._store_errors_total{store}``, ``..._call_seconds`` (histogram
of ShouldRateLimit latency), ``..._stats_keys_dropped_total``. Config loads are counted by
``envoykit_config_reloads_total{component="ratelimit"}`` (envoykit.core).

Counters on the request path are plain integers on a :class:`RuleStats` (the service updates them
under one short lock; no label lookup); a collector turns them into Prometheus samples at scrape time. The number of label sets is bounded
(``max_keys``): keys made from request values (``detailed_metric``, ``value_to_metric``, limit
overrides, unknown domains) beyond the bound are counted under ``key="_overflow"``.
:func:`use_metric_names` switches the per-rule names to envoyproxy/ratelimit's.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from typing import cast

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

OVERFLOW_KEY = "_overflow"

STORE_ERRORS = Counter(
    "envoykit_ratelimit_store_errors", "Counter store calls that failed or timed out.", ["store"]
)
CALL_SECONDS = Histogram(
    "envoykit_ratelimit_call_seconds",
    "ShouldRateLimit latency in seconds, measured in the server.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)


class RuleStats:
    """The counters of one stats key (``domain`` + ``key``), in requests (hits_addend units)."""

    __slots__ = ("domain", "key", "near_limit", "over_limit", "shadow_mode", "total_hits", "within_limit")

    def __init__(self, domain: str, key: str) -> None:
        self.domain = domain
        self.key = key
        self.total_hits = 0
        self.over_limit = 0
        self.near_limit = 0
        self.within_limit = 0
        self.shadow_mode = 0


class StatsRegistry:
    """Bounded map of stats keys to :class:`RuleStats`, shared across config reloads.

    Args:
        max_keys: the most distinct (domain, key) pairs kept; further ones share an overflow entry.
    """

    def __init__(self, max_keys: int = 10_000) -> None:
        self.max_keys = max_keys
        self._rules: dict[tuple[str, str], RuleStats] = {}
        self._not_found: dict[str, int] = {}
        self._not_found_warned: dict[str, float] = {}
        self._lock = threading.Lock()
        self.dropped = 0
        self.global_shadow_mode = 0
        _LIVE.add(self)

    def rule(self, domain: str, key: str) -> RuleStats:
        """The stats of ``key`` (a dotted stats key without the domain) in ``domain``."""
        found = self._rules.get((domain, key))
        if found is not None:
            return found
        with self._lock:
            found = self._rules.get((domain, key))
            if found is not None:
                return found
            if len(self._rules) >= self.max_keys:
                self.dropped += 1
                domain, key = OVERFLOW_KEY, OVERFLOW_KEY
                found = self._rules.get((domain, key))
                if found is not None:
                    return found
            found = RuleStats(domain, key)
            self._rules[(domain, key)] = found
            return found

    def domain_not_found(self, domain: str, warn_every_s: float = 60.0) -> bool:
        """Count a request for a domain no config file defines.

        Returns True when the caller should log a warning about ``domain``: its first request, then
        at most once per ``warn_every_s`` seconds (a misnamed domain in Envoy's filter would
        otherwise go unnoticed: nothing is limited and nothing fails).
        """
        now = time.monotonic()
        with self._lock:
            if domain not in self._not_found and len(self._not_found) >= 1000:
                domain = OVERFLOW_KEY
            self._not_found[domain] = self._not_found.get(domain, 0) + 1
            last = self._not_found_warned.get(domain)
            if last is not None and now - last < warn_every_s:
                return False
            self._not_found_warned[domain] = now
            return True

    def get(self, domain: str, key: str) -> RuleStats | None:
        """The stats of a key if it was ever used (for tests and ``check``)."""
        return self._rules.get((domain, key))

    def rules(self) -> list[RuleStats]:
        """A snapshot of every RuleStats."""
        return list(self._rules.values())

    def not_found(self) -> dict[str, int]:
        """Requests per unknown domain."""
        return dict(self._not_found)


_LIVE: weakref.WeakSet[StatsRegistry] = weakref.WeakSet()

_RULE_FIELDS = ("total_hits", "over_limit", "near_limit", "within_limit", "shadow_mode")
# envoykit's names: a Prometheus counter gets ``_total`` appended, so ``total_hits`` is plain ``hits``.
_ENVOYKIT_NAMES = {f: f"envoykit_ratelimit_{'hits' if f == 'total_hits' else f}" for f in _RULE_FIELDS}

METRIC_NAMES = ("envoykit", "ratelimit")
_metric_names = "envoykit"


def use_metric_names(kind: str) -> None:
    """Name the per-rule metrics of this process as ``kind`` says (process-wide).

    ``envoykit`` (default): ``envoykit_ratelimit_hits_total{domain,key}`` and its siblings.
    ``ratelimit``: envoyproxy/ratelimit's names as its Prometheus exporter mapping gives them,
    ``ratelimit_service_rate_limit_{total_hits,over_limit,near_limit,within_limit,shadow_mode}``
    with labels ``domain``, ``key1`` (first segment of the stats key) and ``key2`` (the rest, or
    empty), so alerts written for that service carry over.

    Raises:
        ValueError: an unknown ``kind``.
    """
    global _metric_names
    if kind not in METRIC_NAMES:
        raise ValueError(f"unknown metric names {kind!r}: use one of {', '.join(METRIC_NAMES)}")
    _metric_names = kind


def _reference_family(field: str) -> Metric:
    # counter samples without the _total suffix, exactly as the reference's exporter names them
    return Metric(f"ratelimit_service_rate_limit_{field}", f"Rate-limit {field} per rule.", "counter")


class _Collector(Collector):
    def collect(self) -> Iterator[Metric]:
        reference = _metric_names == "ratelimit"
        families: dict[str, Metric] = {
            f: _reference_family(f)
            if reference
            else CounterMetricFamily(
                _ENVOYKIT_NAMES[f], f"Rate-limit {f} per rule.", labels=["domain", "key"]
            )
            for f in _RULE_FIELDS
        }
        nf = CounterMetricFamily(
            "envoykit_ratelimit_domain_not_found", "Requests for an unknown domain.", labels=["domain"]
        )
        gsm = CounterMetricFamily(
            "envoykit_ratelimit_global_shadow_mode", "Over-limit answers turned OK by global shadow mode."
        )
        dropped = CounterMetricFamily(
            "envoykit_ratelimit_stats_keys_dropped", "Stats keys counted under _overflow (bound reached)."
        )
        total_gsm = 0
        total_dropped = 0
        for reg in list(_LIVE):
            for st in reg.rules():
                if reference:
                    key1, _, key2 = st.key.partition(".")
                    labels = {"domain": st.domain, "key1": key1, "key2": key2}
                    for f in _RULE_FIELDS:
                        families[f].add_sample(families[f].name, labels, getattr(st, f))
                else:
                    for f in _RULE_FIELDS:
                        cast(CounterMetricFamily, families[f]).add_metric([st.domain, st.key], getattr(st, f))
            for domain, n in reg.not_found().items():
                nf.add_metric([domain], n)
            total_gsm += reg.global_shadow_mode
            total_dropped += reg.dropped
        gsm.add_metric([], total_gsm)
        dropped.add_metric([], total_dropped)
        yield from families.values()
        yield nf
        yield gsm
        yield dropped


REGISTRY.register(_Collector())

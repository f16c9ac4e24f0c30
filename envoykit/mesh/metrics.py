"""Read Prometheus text metrics back: scrape an endpoint, sum counters, estimate histogram quantiles.

Used by ``envoykit demo`` and the mesh tests to report what the telemetry server counted (Istio's
``istio_requests_total`` and ``istio_request_duration_milliseconds``).
"""

from __future__ import annotations

import math
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    """One sample: metric ``name`` (with its ``_total``/``_bucket`` suffix), ``labels``, ``value``."""

    name: str
    labels: Mapping[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition."""
    return [
        Sample(s.name, dict(s.labels), float(s.value))
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]


def scrape(url: str, timeout: float = 5.0) -> list[Sample]:
    """GET ``url`` (a ``/metrics`` endpoint) and parse it.

    Raises:
        OSError: the endpoint did not answer.
    """
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return parse(r.read().decode())


def _match(s: Sample, name: str, where: Mapping[str, str]) -> bool:
    return s.name == name and all(s.labels.get(k) == v for k, v in where.items())


def total(samples: Iterable[Sample], name: str, **where: str) -> float:
    """Sum of ``name`` over the samples whose labels include ``where``."""
    return sum(s.value for s in samples if _match(s, name, where))


def sum_by(
    samples: Iterable[Sample], name: str, by: tuple[str, ...], **where: str
) -> dict[tuple[str, ...], float]:
    """Sums of ``name`` grouped by the label values ``by`` (like PromQL ``sum by (...)``)."""
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for s in samples:
        if _match(s, name, where):
            out[tuple(s.labels.get(k, "") for k in by)] += s.value
    return dict(out)


def quantile(samples: Iterable[Sample], histogram: str, q: float, **where: str) -> float:
    """The ``q`` quantile (0..1) of a histogram, interpolated inside buckets as PromQL's
    ``histogram_quantile`` does; ``nan`` when it holds no observation.

    Args:
        histogram: the metric name without ``_bucket`` (``istio_request_duration_milliseconds``).
        where: labels the buckets must carry; buckets of several series are added up.
    """
    buckets: dict[float, float] = defaultdict(float)
    for s in samples:
        if _match(s, f"{histogram}_bucket", where):
            buckets[float(s.labels["le"])] += s.value
    if not buckets:
        return math.nan
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count == 0:
        return math.nan
    rank = q * count
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        c = buckets[b]
        if c >= rank:
            if math.isinf(b):
                return prev_bound  # PromQL answers the highest finite bound
            if c == prev_count:
                return b
            return prev_bound + (b - prev_bound) * (rank - prev_count) / (c - prev_count)
        prev_bound, prev_count = b, c
    return prev_bound

"""Metrics: ``proxy_define_metric``, ``proxy_increment_metric``, ``proxy_record_metric``,
``proxy_get_metric`` with Envoy's rules (``Context::defineMetric`` ... ``getMetric``):

- a type above HISTOGRAM is BAD_ARGUMENT; the id's low two bits give the type;
- increment: counters take only a positive delta (else BAD_ARGUMENT), gauges add or subtract,
  histograms are BAD_ARGUMENT; an unknown id NOT_FOUND;
- record: counters add, gauges set, histograms record a value; unknown NOT_FOUND;
- get: counters and gauges; histograms BAD_ARGUMENT.
"""

from __future__ import annotations

from typing import Any

from envoykit.wasmhost.abi import MetricType, Status
from envoykit.wasmhost.hostcalls.table import Table


def proxy_define_metric(vm: Any, kind: int, np: int, ns: int, id_ptr: int) -> int:
    """``proxy_define_metric(metric_type, name_data, name_size, return_metric_id *) -> status``."""
    name = vm.read(np, ns).decode(errors="replace")
    if kind > MetricType.HISTOGRAM:
        return Status.BAD_ARGUMENT
    vm.write_u32(id_ptr, vm.plugin.host.metrics.define(MetricType(kind), name))
    return Status.OK


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def proxy_increment_metric(vm: Any, metric_id: int, delta: int) -> int:
    """``proxy_increment_metric(metric_id, **i64** delta) -> status``."""
    delta = _signed(delta)
    kind = metric_id & 3
    metric = vm.plugin.host.metrics.by_id.get(metric_id)
    if kind == MetricType.COUNTER:
        if metric is None:
            return Status.NOT_FOUND
        if delta <= 0:
            return Status.BAD_ARGUMENT
        metric.value += delta
        return Status.OK
    if kind == MetricType.GAUGE:
        if metric is None:
            return Status.NOT_FOUND
        metric.value += delta
        return Status.OK
    return Status.BAD_ARGUMENT


def proxy_record_metric(vm: Any, metric_id: int, value: int) -> int:
    """``proxy_record_metric(metric_id, **i64** value) -> status``."""
    value &= (1 << 64) - 1
    metric = vm.plugin.host.metrics.by_id.get(metric_id)
    if metric is None:
        return Status.NOT_FOUND
    kind = metric_id & 3
    if kind == MetricType.COUNTER:
        metric.value += value
    elif kind == MetricType.GAUGE:
        metric.value = value
    elif kind == MetricType.HISTOGRAM:
        metric.values.append(value)
    else:
        return Status.NOT_FOUND
    return Status.OK


def proxy_get_metric(vm: Any, metric_id: int, value_ptr: int) -> int:
    """``proxy_get_metric(metric_id, return_value *u64) -> status``."""
    kind = metric_id & 3
    if kind not in (MetricType.COUNTER, MetricType.GAUGE):
        return Status.BAD_ARGUMENT
    metric = vm.plugin.host.metrics.by_id.get(metric_id)
    if metric is None:
        return Status.NOT_FOUND
    vm.write_u64(value_ptr, metric.value)
    return Status.OK


FUNCTIONS: Table = {
    "proxy_define_metric": ("iiii>i", proxy_define_metric),
    "proxy_increment_metric": ("iI>i", proxy_increment_metric),
    "proxy_record_metric": ("iI>i", proxy_record_metric),
    "proxy_get_metric": ("ii>i", proxy_get_metric),
}

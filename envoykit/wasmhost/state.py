"""What a proxy shares between plugins: the clock, shared data, shared queues and metrics.

One :class:`~envoykit.wasmhost.Host` owns one of each, the way one Envoy process does. Rules are
cpp-host's (``src/shared_data.cc``, ``src/shared_queue.cc``, ``include/proxy-wasm/wasm.h``) and
Envoy's (``source/extensions/common/wasm/context.cc`` metrics).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

from envoykit.wasmhost.abi import MetricType, Status

# 2026-01-01T00:00:00Z: a fixed start so filter output is reproducible.
DEFAULT_EPOCH_NS = 1_767_225_600 * 1_000_000_000


class Clock:
    """A controllable clock: wall time and monotonic time in nanoseconds; moves only when told.

    ``proxy_get_current_time_nanoseconds`` and WASI ``clock_time_get`` read it; ticks fire from
    :meth:`~envoykit.wasmhost.Host.advance` as it moves.
    """

    def __init__(self, wall_ns: int = DEFAULT_EPOCH_NS, monotonic_ns: int = 1_000_000_000) -> None:
        self.wall_ns = wall_ns
        self.monotonic_ns = monotonic_ns

    def advance_ns(self, ns: int) -> None:
        """Move both clocks forward by ``ns`` nanoseconds.

        Raises:
            ValueError: ``ns`` is negative (time does not go back).
        """
        if ns < 0:
            raise ValueError("the clock does not go back")
        self.wall_ns += ns
        self.monotonic_ns += ns


class SharedData:
    """Per-VM-id key/value store with compare-and-swap (cpp-host ``SharedData``).

    The CAS token is a process-wide counter bumped on every successful set. ``set`` with ``cas=0``
    is unconditional; a non-zero ``cas`` must equal the key's current token (a missing key accepts
    any ``cas``), else ``CAS_MISMATCH``.
    """

    def __init__(self) -> None:
        self._data: dict[str, dict[bytes, tuple[bytes, int]]] = {}
        self._cas = itertools.count(1)

    def get(self, vm_id: str, key: bytes) -> tuple[bytes, int] | None:
        """(value, cas) of ``key`` in ``vm_id``'s map, or ``None``."""
        return self._data.get(vm_id, {}).get(key)

    def set(self, vm_id: str, key: bytes, value: bytes, cas: int) -> Status:
        """Store ``value``; returns ``OK`` or ``CAS_MISMATCH``."""
        table = self._data.setdefault(vm_id, {})
        current = table.get(key)
        if cas and current is not None and current[1] != cas:
            return Status.CAS_MISMATCH
        table[key] = (value, next(self._cas))
        return Status.OK

    def items(self, vm_id: str = "") -> dict[str, bytes]:
        """A copy of ``vm_id``'s map as text keys → bytes (for assertions)."""
        return {k.decode(errors="replace"): v for k, (v, _) in self._data.get(vm_id, {}).items()}


@dataclass
class SharedQueue:
    """One registered queue: owner plugin's root context gets ``proxy_on_queue_ready``."""

    token: int
    vm_id: str
    name: str
    owner: object  # the Plugin that registered it
    items: deque[bytes] = field(default_factory=deque)


class SharedQueues:
    """Shared queues keyed by (vm_id, name); tokens start at 1 (cpp-host ``SharedQueue``)."""

    def __init__(self) -> None:
        self._by_name: dict[tuple[str, str], SharedQueue] = {}
        self._by_token: dict[int, SharedQueue] = {}
        self._tokens = itertools.count(1)

    def register(self, vm_id: str, name: str, owner: object) -> int:
        """Register (or re-register to a new owner) and return the token."""
        q = self._by_name.get((vm_id, name))
        if q is None:
            q = SharedQueue(next(self._tokens), vm_id, name, owner)
            self._by_name[(vm_id, name)] = q
            self._by_token[q.token] = q
        q.owner = owner
        return q.token

    def resolve(self, vm_id: str, name: str) -> int | None:
        """The token of (vm_id, name), or ``None``."""
        q = self._by_name.get((vm_id, name))
        return q.token if q else None

    def get(self, token: int) -> SharedQueue | None:
        """The queue of ``token``, or ``None``."""
        return self._by_token.get(token)


@dataclass
class Metric:
    """One metric as Envoy keeps it: ``value`` for counters and gauges, ``values`` for histograms."""

    name: str
    type: MetricType
    value: int = 0
    values: list[int] = field(default_factory=list)


class Metrics:
    """Metrics by name, with ids as cpp-host allocates them: the low 2 bits are the type.

    Counter ids are 4, 8, 12...; gauges 5, 9...; histograms 6, 10... (``wasm.h``
    ``nextCounterMetricId`` etc.). Envoy names them ``wasmcustom.<name>`` in its stats
    (``custom_stat_namespace_``); here the plain name is the key.
    """

    def __init__(self) -> None:
        self.by_name: dict[str, Metric] = {}
        self.by_id: dict[int, Metric] = {}
        self._next = {MetricType.COUNTER: 0, MetricType.GAUGE: 0, MetricType.HISTOGRAM: 0}

    def define(self, type_: MetricType, name: str) -> int:
        """A new id for ``name`` (every call allocates one, as in Envoy; the metric is shared)."""
        metric = self.by_name.get(name)
        if metric is None or metric.type is not type_:
            metric = Metric(name, type_)
            self.by_name[name] = metric
        self._next[type_] += 1
        mid = (self._next[type_] << 2) | int(type_)
        self.by_id[mid] = metric
        return mid

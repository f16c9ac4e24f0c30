"""The proxy side of the ABI: what one Envoy shares between the plugins loaded into it."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from envoykit.wasmhost.abi import LogLevel, Status
from envoykit.wasmhost.module import WasmModule, load_module
from envoykit.wasmhost.plugin import Plugin
from envoykit.wasmhost.state import Clock, Metrics, SharedData, SharedQueue, SharedQueues

ForeignFunction = Callable[[bytes], bytes | Status]


class Host:
    """A Proxy-Wasm host: the clock, shared data and queues, metrics, properties and log level
    that every plugin loaded into it shares, as the plugins of one Envoy do.

    Args:
        log_level: the ``wasm`` logger level: lower lines are dropped and
            ``proxy_get_log_level`` returns it. Envoy's default is INFO.
        clusters: cluster names ``proxy_http_call`` / ``proxy_grpc_call`` accept (Envoy refuses
            others with BAD_ARGUMENT); ``None`` accepts any name.
        properties: attribute overrides by dotted path (``{"xds.node.id": "sidecar~1"}``); a
            value may be a mapping (``{"xds.node": {"id": "n", "metadata": {"team": "a"}}}``).

    Raises:
        ValueError: a ``node.*`` property (Envoy's attribute is ``xds.node.*``).
        clock: the clock (a fixed start by default; move it with :meth:`advance`).
        seed: seed of WASI ``random_get`` (deterministic tests).
    """

    def __init__(
        self,
        *,
        log_level: LogLevel = LogLevel.INFO,
        clusters: Iterable[str] | None = None,
        properties: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        seed: int = 0,
    ) -> None:
        self.log_level = LogLevel(log_level)
        self.clusters = set(clusters) if clusters is not None else None
        self.properties: dict[str, Any] = dict(properties or {})
        stale = [k for k in self.properties if k == "node" or k.startswith("node.")]
        if stale:
            raise ValueError(
                f"properties {stale}: Envoy 1.40 has no node.* attribute (NOT_FOUND); "
                "use xds.node.id and xds.node.metadata.<key>"
            )
        self.clock = clock or Clock()
        self.shared_data = SharedData()
        self.queues = SharedQueues()
        self.metrics = Metrics()
        self.foreign_functions: dict[str, ForeignFunction] = {}
        self.plugins: list[Plugin] = []
        self._random = random.Random(seed)

    def load(
        self,
        module: str | Path | bytes | WasmModule,
        *,
        configuration: str | bytes = b"",
        vm_configuration: str | bytes = b"",
        root_id: str = "",
        vm_id: str = "",
        name: str = "",
        **limits: Any,
    ) -> Plugin:
        """Load and start a plugin (see :class:`~envoykit.wasmhost.Plugin` for the arguments).

        ``module`` is a path (``.wasm`` or ``.wat``), module bytes, or a :class:`WasmModule`
        from :func:`~envoykit.wasmhost.load_module`.

        Raises:
            ModuleLoadError: the module is invalid or would be refused by Envoy.
            FilterFailure: start-up trapped or the plugin refused its configuration.
        """
        compiled = module if isinstance(module, WasmModule) else load_module(module)
        plugin = Plugin(
            self,
            compiled,
            configuration=configuration.encode() if isinstance(configuration, str) else configuration,
            vm_configuration=vm_configuration.encode()
            if isinstance(vm_configuration, str)
            else vm_configuration,
            root_id=root_id,
            vm_id=vm_id,
            name=name,
            **limits,
        )
        self.plugins.append(plugin)
        return plugin

    def advance(self, ms: float) -> int:
        """Move the clock forward ``ms`` milliseconds, firing due ticks; returns ticks fired."""
        self.clock.advance_ns(int(ms * 1_000_000))
        return sum(p.fire_due_ticks() for p in self.plugins if not p.failed)

    def knows_cluster(self, name: str) -> bool:
        """Whether callouts to cluster ``name`` are accepted."""
        return self.clusters is None or name in self.clusters

    def register_foreign_function(self, name: str, fn: ForeignFunction) -> None:
        """Make ``proxy_call_foreign_function(name, args)`` run ``fn(args)``; return bytes or a Status."""
        self.foreign_functions[name] = fn

    def notify_queue(self, queue: SharedQueue) -> None:
        """An item was enqueued: the registering plugin's root gets ``proxy_on_queue_ready``."""
        owner = queue.owner
        if isinstance(owner, Plugin) and not owner.failed:
            owner.queue_ready(queue.token)

    def random_bytes(self, n: int) -> bytes:
        """``n`` pseudo-random bytes from the seeded generator (WASI ``random_get``)."""
        return bytes(self._random.getrandbits(8) for _ in range(n))

    def random_int(self, n: int) -> int:
        """A pseudo-random integer in ``[0, n)`` (0 when ``n`` is 0) from the seeded generator."""
        return self._random.randrange(n) if n > 0 else 0

    def metric(self, name: str) -> int:
        """Value of counter or gauge ``name``. Raises ``KeyError`` if undefined."""
        return self.metrics.by_name[name].value

    def histogram(self, name: str) -> list[int]:
        """Values recorded in histogram ``name``. Raises ``KeyError`` if undefined."""
        return list(self.metrics.by_name[name].values)


def load_plugin(module: str | Path | bytes | WasmModule, **kwargs: Any) -> Plugin:
    """Load a plugin into a fresh :class:`Host`.

    Keyword arguments for the host (``log_level``, ``clusters``, ``properties``) go to it; the
    rest to :meth:`Host.load`.
    """
    host_keys = {"log_level", "clusters", "properties", "clock", "seed"}
    host = Host(**{k: kwargs.pop(k) for k in list(kwargs) if k in host_keys})
    return host.load(module, **kwargs)

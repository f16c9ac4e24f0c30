"""The gRPC server runners every envoykit server uses.

Two flavours with one face, named by their gRPC runtime: :class:`AioGrpcServer` (grpc.aio, for
streaming services such as ext_proc and xDS) and :class:`SyncGrpcServer` (a thread pool, for CPU-bound
unary calls such as Check and ShouldRateLimit). Both add ``grpc.health.v1.Health`` and server reflection, optionally a metrics port
(Prometheus ``/metrics``, and ``/healthz``, ``/readyz``, ``/healthcheck``: see
:mod:`envoykit.core.metrics`), and drain on SIGTERM/SIGINT: health flips to NOT_SERVING, new calls are
refused, calls in flight get ``grace`` seconds to finish, then the process exits. They bind their
address exclusively: a second server on a served address fails to start with
:class:`~envoykit.core.bind.AddressInUse` (see :mod:`envoykit.core.bind`).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import REGISTRY, CollectorRegistry

from envoykit.core.bind import bind_exclusive, reserved_by_parent, split_address
from envoykit.core.logs import get_logger
from envoykit.core.metrics import Health, JsonRoute, start_metrics_server

# Envoy multiplexes many calls over one HTTP/2 connection; these keep it from being throttled.
# grpc.so_reuseport is not among them: it is set per server by the binding rule (envoykit.core.bind).
DEFAULT_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.max_concurrent_streams", 1000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
)

_HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class _ServerParts:
    """What both runners share: names, metrics endpoint, reflection and the serving log line."""

    def __init__(
        self,
        name: str,
        address: str,
        metrics_port: int | None,
        metrics_host: str,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.name = name
        self.registry = registry
        self.address = address
        self.port = 0
        self.metrics_port: int | None = None
        self._metrics_port_req = metrics_port
        self._metrics_host = metrics_host
        self._metrics_server: Any = None
        self.health = Health()  # what /healthz, /readyz and /healthcheck answer on the metrics port
        self._log = get_logger(name)
        self._service_names: list[str] = [_HEALTH]
        # only a worker holding its parent's reservation of the address joins it (SO_REUSEPORT)
        self.shared_with_parent = reserved_by_parent(address)
        self.bind_options: list[tuple[str, Any]] = [("grpc.so_reuseport", int(self.shared_with_parent))]
        self._json_routes: dict[str, JsonRoute] = {}

    def add_json_route(self, prefix: str, route: JsonRoute) -> None:
        """Serve read-only JSON under ``prefix`` on the metrics port (see :mod:`envoykit.core.metrics`).

        ``route`` runs on the metrics server's threads; call before ``start``.
        """
        self._json_routes[prefix] = route

    def _bind(self, server: Any) -> None:
        """Bind exclusively (see :mod:`envoykit.core.bind`).

        Raises:
            AddressInUse: another process serves the address.
            OSError: the address cannot be bound for another reason.
        """
        reflection.enable_server_reflection([*self._service_names, reflection.SERVICE_NAME], server)
        if not self.shared_with_parent and split_address(self.address)[1] != 0:
            # grpc only says "Failed to bind": the same bind first, to name the reason
            bind_exclusive(self.address, listen=False).close()
        try:
            self.port = server.add_insecure_port(self.address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise OSError(f"{self.name}: cannot listen on {self.address}")

    def _start_metrics(self) -> None:
        if self._metrics_port_req is not None:
            self._metrics_server, _, self.metrics_port = start_metrics_server(
                self._metrics_port_req,
                self._metrics_host,
                self.registry,
                health=self.health,
                routes=self._json_routes,
            )
        host = self.address.rsplit(":", 1)[0]
        self._log.info("serving", address=f"{host}:{self.port}", metrics_port=self.metrics_port)

    def _stop_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        self._log.info("stopped")


class AioGrpcServer(_ServerParts):
    """A grpc.aio server with health, reflection and metrics.

    Args:
        name: component name for logs and the health service entry.
        address: ``host:port`` to listen on; port 0 picks a free one (see :attr:`port`).
        metrics_port: serve Prometheus metrics on this port (0: any free port, None: not at all).
        options: extra grpc channel arguments appended to :data:`DEFAULT_OPTIONS`.
        registry: the metrics served (the process-wide default registry by default).
    """

    def __init__(
        self,
        name: str,
        address: str = "127.0.0.1:0",
        *,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        options: Sequence[tuple[str, Any]] = (),
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        super().__init__(name, address, metrics_port, metrics_host, registry)
        self._server = grpc.aio.server(options=[*DEFAULT_OPTIONS, *self.bind_options, *options])
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._on_start: list[Callable[[], Awaitable[None]]] = []

    @property
    def server(self) -> grpc.aio.Server:
        """The underlying ``grpc.aio.Server``."""
        return self._server

    def add_service(
        self, adder: Callable[[Any, grpc.aio.Server], None], servicer: Any, full_name: str
    ) -> None:
        """Register ``servicer`` with its generated ``add_XServicer_to_server`` function.

        ``full_name`` is the proto service name (``envoy.service.auth.v3.Authorization``), used for
        health and reflection.
        """
        adder(servicer, self._server)
        self._service_names.append(full_name)

    def on_start(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` once the server listens (start file watchers, background refreshes)."""
        self._on_start.append(fn)

    def on_stop(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` after the server drained (close stores, stop watchers)."""
        self._on_stop.append(fn)

    async def start(self) -> int:
        """Bind, start serving, mark every service SERVING; return the bound port."""
        self._bind(self._server)
        await self._server.start()
        for svc in ["", *self._service_names]:
            await self._health.set(svc, health_pb2.HealthCheckResponse.SERVING)
        for fn in self._on_start:
            await fn()
        self._start_metrics()
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        """Drain: NOT_SERVING, refuse new calls, wait up to ``grace`` seconds for calls in flight."""
        self.health.draining = True
        await self._health.enter_graceful_shutdown()
        self._log.info("draining", grace_s=grace)
        await self._server.stop(grace)
        for fn in self._on_stop:
            await fn()
        self._stop_metrics()

    async def wait_for_termination(self) -> None:
        """Wait until the server stops."""
        await self._server.wait_for_termination()


class SyncGrpcServer(_ServerParts):
    """A thread-pool grpc server with health, reflection and metrics, for CPU-bound unary handlers.

    Measured on the 2-core box with Envoy in front: a trivial unary handler served ~3,100 calls/s on
    this server (4 threads) against ~2,600 on grpc.aio, and it spreads over worker processes (which
    join their parent's reservation of the port, see :mod:`envoykit.core.bind`), which grpc.aio did
    not gain from. Handlers must be plain functions.

    Args:
        name: component name for logs and health.
        address: ``host:port``; port 0 picks a free one.
        threads: handler threads.
        metrics_port: Prometheus port (0: any free, None: none).
    """

    def __init__(
        self,
        name: str,
        address: str = "127.0.0.1:0",
        *,
        threads: int = 4,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        super().__init__(name, address, metrics_port, metrics_host)
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=threads),
            options=[*DEFAULT_OPTIONS, *self.bind_options, *options],
        )
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._on_stop: list[Callable[[], None]] = []

    def add_service(self, adder: Callable[[Any, grpc.Server], None], servicer: Any, full_name: str) -> None:
        """Register ``servicer`` with its generated ``add_XServicer_to_server`` function."""
        adder(servicer, self._server)
        self._service_names.append(full_name)

    def on_stop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` after the server drained (stop watchers, close stores)."""
        self._on_stop.append(fn)

    def start(self) -> int:
        """Bind, start, mark services SERVING; return the bound port."""
        self._bind(self._server)
        self._server.start()
        for svc in ["", *self._service_names]:
            self._health.set(svc, health_pb2.HealthCheckResponse.SERVING)
        self._start_metrics()
        return self.port

    def stop(self, grace: float = 5.0) -> None:
        """Drain: NOT_SERVING, refuse new calls, wait up to ``grace`` s for calls in flight."""
        self.health.draining = True
        self._health.enter_graceful_shutdown()
        self._log.info("draining", grace_s=grace)
        self._server.stop(grace).wait()
        for fn in self._on_stop:
            fn()
        self._stop_metrics()


def loop_termination_signal() -> asyncio.Event:
    """Handle SIGTERM and SIGINT on the running event loop from now on by setting the returned event.

    The asyncio twin of :func:`termination_signal`, for every long-lived process on an event loop (the
    grpc.aio servers, the control plane, the lean unary server). Call it before the server listens.

    Raises:
        RuntimeError: no running event loop.
    """
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    return stopping


async def serve_forever(server: AioGrpcServer, grace: float = 5.0) -> None:
    """Start ``server`` and run until SIGTERM or SIGINT, then drain for ``grace`` seconds and return."""
    stopping = loop_termination_signal()
    await server.start()
    await stopping.wait()
    await server.stop(grace)


def termination_signal() -> threading.Event:
    """Handle SIGTERM and SIGINT from now on by setting the returned event.

    Call it before the server starts listening: a signal that arrives as soon as the port answers
    must drain the server, not kill it.
    """
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    return stopping


def wait_for_termination_signal(stopping: threading.Event | None = None) -> None:
    """Block the main thread until SIGTERM or SIGINT arrives (``stopping``: from an earlier
    :func:`termination_signal`)."""
    stopping = stopping or termination_signal()
    while not stopping.wait(1.0):  # a timed wait lets the signal handler run promptly
        pass


def serve_sync_forever(server: SyncGrpcServer, grace: float = 5.0) -> None:
    """Start ``server`` and block until SIGTERM or SIGINT, then drain for ``grace`` seconds."""
    stopping = termination_signal()
    server.start()
    wait_for_termination_signal(stopping)
    server.stop(grace)

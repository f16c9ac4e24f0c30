"""The lean unary gRPC server: one uvloop event loop per process, libnghttp2 for HTTP/2, handlers inline.

For the per-request calls Envoy makes (``Authorization/Check``, ``RateLimitService/ShouldRateLimit``)
where grpcio's server costs several times the decision itself (issue 13: 120-270 µs of CPU per call
against 20-30 µs of policy). Same face as the grpcio runners in :mod:`envoykit.core.server`:
``grpc.health.v1.Health/Check`` on the same port, a metrics port (``/metrics``, ``/healthz``,
``/readyz``), and a drain on SIGTERM/SIGINT (health NOT_SERVING, GOAWAY to every client, listener
closed, calls in flight get ``grace`` seconds). Not served here: streaming RPCs (``Health/Watch``
answers UNIMPLEMENTED), server reflection and TLS; use the grpcio runner for those (``--server grpcio``).

Why libnghttp2 (through ngh2) and not h2: measured on the 2-core box (loaded), one Check exchange
in memory (request headers and body in; headers, message and trailers out) cost 11-22 µs of server
CPU in ngh2 against 250-640 µs in h2's ``H2Connection``, in the same runs; own framing over ``hpack``
(the issue's fastest prototype) would mean owning flow control, SETTINGS, GOAWAY and stream state,
which libnghttp2 already does (the engine of curl and nghttpx). HPACK decoding in C also makes the
prototype's header-block decode cache unneeded; what is cached here is the parsed meaning of a block
(method, deadline), keyed by the decoded headers. ngh2 is young (0.3, pinned below 0.4); the HTTP/2
engine under it is not.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import socket
from collections.abc import Callable, Iterable
from typing import Any

from grpc_health.v1 import health_pb2

from envoykit.core.bind import bind_exclusive, reserved_by_parent, split_address
from envoykit.core.logs import get_logger
from envoykit.core.metrics import Health, JsonRoute, start_metrics_server
from envoykit.core.server import loop_termination_signal
from envoykit.core.unary.protocol import Dispatch, Limits, UnaryConnection, UnaryMethod
from envoykit.core.unary.wire import GrpcStatusError, StatusCode

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
_SERVING = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING).SerializeToString()
_NOT_SERVING = health_pb2.HealthCheckResponse(
    status=health_pb2.HealthCheckResponse.NOT_SERVING
).SerializeToString()


class UnaryServer:
    """Serves :class:`UnaryMethod` handlers on one event loop (start it from inside the loop).

    Args:
        name: component name for logs.
        address: ``host:port``; port 0 picks a free one (see :attr:`port`). Bound exclusively
            (:mod:`envoykit.core.bind`): a second server on a served address fails with
            :class:`~envoykit.core.bind.AddressInUse`; a worker holding its parent's reservation
            joins the address with ``SO_REUSEPORT``.
        sock: a listening socket to serve instead of binding ``address``.
        limits: stream, message-size and window limits.
        metrics_port: Prometheus port (0: any free, None: none).
    """

    def __init__(
        self,
        name: str,
        address: str = "127.0.0.1:0",
        *,
        sock: socket.socket | None = None,
        limits: Limits | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> None:
        self.name = name
        self.address = address
        self.port = 0
        self.metrics_port: int | None = None
        self._sock = sock
        self._limits = limits or Limits()
        self._metrics_req = metrics_port
        self._metrics_host = metrics_host
        self._metrics_server: Any = None
        self.health = Health()  # what /healthz, /readyz and /healthcheck answer on the metrics port
        self._methods: dict[str, UnaryMethod] = {}
        self._services: set[str] = set()
        self._serving = False
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[UnaryConnection] = set()
        self._on_stop: list[Callable[[], Any]] = []
        self._json_routes: dict[str, JsonRoute] = {}
        self._log = get_logger(name)
        self.add_service(
            "grpc.health.v1.Health",
            [
                UnaryMethod(HEALTH_CHECK, health_pb2.HealthCheckRequest, self._health_check),
                UnaryMethod(HEALTH_WATCH, health_pb2.HealthCheckRequest, _no_watch),
            ],
        )

    def add_service(self, full_name: str, methods: Iterable[UnaryMethod]) -> None:
        """Serve ``methods`` of service ``full_name`` (health reports it by that name)."""
        for m in methods:
            self._methods[m.path] = m
        self._services.add(full_name)

    def add_json_route(self, prefix: str, route: JsonRoute) -> None:
        """Serve read-only JSON under ``prefix`` on the metrics port (see :mod:`envoykit.core.metrics`).

        ``route`` runs on the metrics server's thread; call before ``start``.
        """
        self._json_routes[prefix] = route

    def on_stop(self, fn: Callable[[], Any]) -> None:
        """Call ``fn`` after the server drained, in the order given: stop watchers, close stores. An
        awaitable it returns is awaited (on the serving loop)."""
        self._on_stop.append(fn)

    def _health_check(self, req: health_pb2.HealthCheckRequest) -> bytes:
        if req.service and req.service not in self._services:
            raise GrpcStatusError(StatusCode.NOT_FOUND, f"unknown service {req.service}")
        return _SERVING if self._serving else _NOT_SERVING

    @property
    def connections(self) -> int:
        """Client connections open now."""
        return len(self._connections)

    async def start(self) -> int:
        """Listen, mark every service SERVING, start metrics; return the port.

        Raises:
            AddressInUse: another process serves the address.
            OSError: the address cannot be bound for another reason.
        """
        sock = self._sock if self._sock is not None else _listen(self.address)
        dispatch = Dispatch(self._methods, self._limits)
        loop = asyncio.get_running_loop()
        conns = self._connections
        self._server = await loop.create_server(lambda: UnaryConnection(dispatch, conns), sock=sock)
        self.port = int(sock.getsockname()[1])
        self._serving = True
        if self._metrics_req is not None:
            self._metrics_server, _, self.metrics_port = start_metrics_server(
                self._metrics_req, self._metrics_host, health=self.health, routes=self._json_routes
            )
        host = self.address.rsplit(":", 1)[0]
        self._log.info(
            "serving", address=f"{host}:{self.port}", metrics_port=self.metrics_port, server="lean"
        )
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        """Drain: NOT_SERVING, GOAWAY, stop accepting, wait up to ``grace`` s for calls in flight, close."""
        self._serving = False
        self.health.draining = True
        self._log.info("draining", grace_s=grace)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        for c in list(self._connections):
            c.shutdown_notice()
        if self._server is not None:
            self._server.close()
        # a client may have sent streams before it saw the notice: give them one short round trip
        await asyncio.sleep(min(0.05, grace))
        for c in list(self._connections):
            c.goaway()
        while loop.time() < deadline and any(c.in_flight for c in self._connections):
            await asyncio.sleep(0.01)
        for c in list(self._connections):
            c.close()
        for fn in self._on_stop:
            result = fn()
            if inspect.isawaitable(result):
                await result
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server = None
        self._log.info("stopped")


def _listen(address: str) -> socket.socket:
    if not reserved_by_parent(address):
        return bind_exclusive(address)
    # a worker: join the parent's reservation; the kernel spreads connections over the workers
    host, port = split_address(address)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def _no_watch(_req: Any) -> bytes:
    raise GrpcStatusError(
        StatusCode.UNIMPLEMENTED, "Health/Watch is a stream; this server serves unary calls"
    )


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop (falls back to asyncio's where uvloop is not installed)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _freeze_startup_heap() -> None:
    """Keep what start-up built (policy, protobuf classes, caches: ~70k objects for the authz bench
    policy) out of every later collection. A full collection walks them all: 42 ms of CPU on the
    2-core bench machine (over 100 ms of wall time when loaded), stalling every call in flight; after
    ``gc.freeze()`` it walks only what was allocated since (0.001 ms just after start). Collected
    first so no garbage is frozen. The price: frozen reference cycles are never collected, so the
    start-up policy or config, once a reload replaces it, stays in memory (once, not per reload)."""
    gc.collect()
    gc.freeze()


def serve_unary_forever(
    build: Callable[[], UnaryServer],
    grace: float = 5.0,
    on_ready: Callable[[UnaryServer], None] | None = None,
) -> None:
    """Run ``build()``'s server on a new uvloop until SIGTERM or SIGINT, then drain for ``grace`` s.

    ``build`` runs inside the loop, so handlers that create loop objects may do so at build time.
    Once started, the heap built so far is frozen out of the garbage collector (``gc.freeze``).
    """

    async def main() -> None:
        stopping = loop_termination_signal()
        server = build()
        await server.start()
        _freeze_startup_heap()
        if on_ready is not None:
            on_ready(server)
        await stopping.wait()
        await server.stop(grace)

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())

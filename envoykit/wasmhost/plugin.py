"""A plugin: one VM running one root context, driven the way Envoy's Wasm filter drives it.

Start-up follows cpp-host ``WasmBase::startVm`` and Envoy: instantiate; ``_initialize`` then
``main(0, 0)`` when exported, else ``_start`` (only logging/WASI basics allowed meanwhile); then
root context 1: ``proxy_on_context_create(1, 0)``, ``proxy_on_vm_start(1, vm_config_size)``,
``proxy_on_configure(1, plugin_config_size)``. A false answer fails the plugin as Envoy fails it.
Streams get ids 2, 3, ... and are created lazily on their first event.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Protocol

import wasmtime

from envoykit.wasmhost import properties as props
from envoykit.wasmhost.abi import LogLevel, Status
from envoykit.wasmhost.callouts import CalloutResponse, GrpcCall, HttpCall
from envoykit.wasmhost.context import ContextState
from envoykit.wasmhost.errors import FilterFailure, HostTrap, PluginFailedError, StreamStateError
from envoykit.wasmhost.headermap import HeaderMap, HeadersLike
from envoykit.wasmhost.http import HttpStream
from envoykit.wasmhost.module import WasmModule
from envoykit.wasmhost.tcp import TcpStream
from envoykit.wasmhost.types import LogRecord
from envoykit.wasmhost.vm import VM

if TYPE_CHECKING:
    from envoykit.wasmhost.host import Host

ROOT_CONTEXT_ID = 1
# Envoy PluginConfig.failure_policy values (FAIL_UNSPECIFIED is FAIL_CLOSED in Envoy 1.40).
FAILURE_POLICIES = ("FAIL_CLOSED", "FAIL_OPEN", "FAIL_RELOAD")


class _Driven(Protocol):
    def apply_deferred(self, actions: list[tuple[str, Any]]) -> None: ...


class Plugin:
    """A loaded, started filter. Make one with :meth:`Host.load` or :func:`load_plugin`.

    Args:
        host: the proxy-wide state (clock, shared data, metrics...).
        module: the compiled module.
        configuration: plugin configuration bytes (Envoy ``config.configuration``).
        vm_configuration: VM configuration bytes (``vm_config.configuration``).
        root_id: ``config.root_id`` (SDKs pick the root context factory by it).
        vm_id: ``vm_config.vm_id``; shared data and queues are scoped by it.
        name: ``config.name``.
        fuel: instruction budget per callback (an endless loop fails with reason ``"fuel"``).
        memory_limit: bytes of linear memory the module may use.
        environment: variables WASI ``environ_get`` returns (``vm_config.environment_variables``).
        failure_policy: what streams get once the VM failed (a trap, an endless loop, a memory
            bomb), Envoy's ``PluginConfig.failure_policy``: ``"FAIL_CLOSED"`` (Envoy 1.40's default)
            answers the failing stream and every later one with a 503 and an empty body (gRPC:
            UNAVAILABLE) without calling the module again; ``"FAIL_OPEN"`` lets them through as
            if the filter were not there; ``"FAIL_RELOAD"`` answers like FAIL_CLOSED until a
            new stream comes at least the backoff after the last (re)load, which then gets a
            fresh VM (see :meth:`new_context`).
        reload_backoff_ms: ``reload_config.backoff.base_interval`` of FAIL_RELOAD (Envoy's default
            1000 ms); each reload waits a jittered ``[base, 1.5 * base)`` since the last load
            (Envoy ``JitteredLowerBoundBackOffStrategy``, which needs more than 1 ms).

    Raises:
        ModuleLoadError: the module cannot be linked (unknown import, no malloc, no memory).
        FilterFailure: start-up trapped, or ``proxy_on_vm_start`` / ``proxy_on_configure`` returned false.
    """

    def __init__(
        self,
        host: Host,
        module: WasmModule,
        *,
        configuration: bytes = b"",
        vm_configuration: bytes = b"",
        root_id: str = "",
        vm_id: str = "",
        name: str = "",
        fuel: int = 500_000_000,
        memory_limit: int = 256 * 1024 * 1024,
        environment: dict[str, str] | None = None,
        failure_policy: str = "FAIL_CLOSED",
        reload_backoff_ms: int = 1000,
    ) -> None:
        if failure_policy not in FAILURE_POLICIES:
            raise ValueError(f"failure_policy: one of {', '.join(FAILURE_POLICIES)}, got {failure_policy!r}")
        if reload_backoff_ms < 2:
            raise ValueError(
                f"reload_backoff_ms: at least 2 (Envoy's jittered backoff), got {reload_backoff_ms}"
            )
        self.failure_policy = failure_policy
        self.reload_backoff_ms = reload_backoff_ms
        self.fuel, self.memory_limit = fuel, memory_limit
        self.generation = 0  # bumped by every FAIL_RELOAD reload: contexts of older VMs stay failed
        self.reloads = 0  # successful reloads (Envoy's wasm.<name>.vm_reload_success... events)
        self.reload_failures = 0
        self.host = host
        self.module = module
        self.configuration = configuration
        self.vm_configuration = vm_configuration
        self.root_id = root_id
        self.vm_id = vm_id
        self.name = name
        self.environment = dict(environment or {})
        self.logs: list[LogRecord] = []
        self.failed: FilterFailure | None = None
        self._new_vm()

    def _new_vm(self) -> None:
        """Everything that belongs to one VM, fresh, then the VM itself started (cpp-host: a
        new ``WasmBase`` with its own context ids, root context, timers and callouts)."""
        self.configuring = False
        self.status: tuple[int, str] = (0, "")
        self.http_calls: list[HttpCall] = []
        self.grpc_calls: list[GrpcCall] = []
        self.http_call_response: CalloutResponse | None = None
        self.grpc_receive_buffer: bytes | None = None
        self.grpc_initial_metadata: HeaderMap | None = None
        self.grpc_trailing_metadata: HeaderMap | None = None
        self.call_data: bytes | None = None
        self.tick_period_ms = 0
        self.next_tick_ns = 0
        self.ticks = 0
        self.contexts: dict[int, ContextState] = {}
        self.streams: dict[int, _Driven] = {}
        self._ids = itertools.count(ROOT_CONTEXT_ID)
        self._call_ids = {0: itertools.count(1), 1: itertools.count(1), 2: itertools.count(1)}
        self._pending_queue: list[int] = []
        self._awaiting_done = False
        self.closed = False
        self._dirty: list[ContextState] = []  # contexts whose host calls deferred an action
        self.root = ContextState(next(self._ids), 0, "root", dirty=self._dirty)
        self.contexts[self.root.id] = self.root
        self.effective = self.root
        self.last_load_ns = self.host.clock.monotonic_ns
        self.vm = VM(self.module, self, fuel=self.fuel, memory_limit=self.memory_limit)
        self._start()

    def _maybe_reload(self) -> None:
        """FAIL_RELOAD, as Envoy's ``PluginConfig::maybeReloadHandleIfNeeded`` on each new stream:
        only a runtime failure (not a refused start) reloads; the backoff is drawn on every
        try; within it the failed VM stays (its streams fail closed); past it the last-load time
        moves and a fresh VM replaces the failed one, unless that one fails to start too."""
        assert self.failed is not None
        if self.failure_policy != "FAIL_RELOAD" or self.failed.reason == "refused":
            return
        base = self.reload_backoff_ms
        interval_ms = base + self.host.random_int(base >> 1)
        now = self.host.clock.monotonic_ns
        if now - self.last_load_ns < interval_ms * 1_000_000:
            return
        failed, saved = self.failed, dict(self.__dict__)
        self.failed = None
        self.generation += 1
        try:
            self._new_vm()
        except FilterFailure:
            # Envoy keeps the failed handle (VmReloadFailure); only the load time moves.
            generation = self.generation
            self.__dict__.update(saved)
            self.failed, self.generation, self.last_load_ns = failed, generation, now
            self.reload_failures += 1
            return
        self.reloads += 1

    # -- start-up and shutdown --------------------------------------------------------------------
    def _start(self) -> None:
        vm = self.vm
        vm.restricted = True
        try:
            if vm.has("_initialize"):
                self._guarded("_initialize", 0)
                if vm.has("main"):
                    self._guarded("main", 0, 0, 0)
            elif vm.has("_start"):
                self._guarded("_start", 0)
        finally:
            vm.restricted = False
        root = self.root
        self.call(root, "proxy_on_context_create", root.id, 0)
        root.created = True
        ok = self.call(root, "proxy_on_vm_start", root.id, len(self.vm_configuration), default=1)
        if not ok:
            self._fail_start(
                "proxy_on_vm_start", "Failed to start base Wasm (proxy_on_vm_start returned false)"
            )
        self.configuring = True
        try:
            ok = self.call(root, "proxy_on_configure", root.id, len(self.configuration), default=1)
        finally:
            self.configuring = False
        if not ok:
            self._fail_start(
                "proxy_on_configure", "Failed to configure Wasm plugin (proxy_on_configure returned false)"
            )

    def _fail_start(self, callback: str, message: str) -> None:
        self.failed = FilterFailure(message, callback=callback, context_id=ROOT_CONTEXT_ID, reason="refused")
        raise self.failed

    def validate_configuration(self, configuration: bytes) -> bool:
        """Run ``proxy_validate_configuration`` (Envoy calls it for config validation); True if absent."""
        if not self.vm.has("proxy_validate_configuration"):
            return True
        saved, self.configuration, self.configuring = self.configuration, configuration, True
        try:
            return bool(
                self.call(self.root, "proxy_validate_configuration", self.root.id, len(configuration))
            )
        finally:
            self.configuration, self.configuring = saved, False

    def close(self) -> None:
        """Shut the plugin down: ``proxy_on_done`` on the root context, then ``proxy_on_delete``.

        If ``proxy_on_done`` returns false, ``proxy_on_delete`` waits for the module's
        ``proxy_done()`` (cpp-host ``WasmBase::startShutdown``).
        """
        if self.closed or self.failed:
            self.closed = True
            return
        done = self.call(self.root, "proxy_on_done", self.root.id, default=1)
        if done:
            self.call(self.root, "proxy_on_delete", self.root.id)
            self.closed = True
        else:
            self._awaiting_done = True

    def finish_done(self) -> Status:
        """``proxy_done()``: complete a shutdown that ``proxy_on_done`` deferred."""
        if not self._awaiting_done:
            return Status.NOT_FOUND
        self._awaiting_done = False
        self.root.defer("delete_root", None)
        return Status.OK

    # -- calls into the module --------------------------------------------------------------------
    def _guarded(self, name: str, context_id: int, *args: int) -> Any:
        try:
            return self.vm.call(name, *args, context_id=context_id)
        except FilterFailure as failure:
            self.failed = failure
            raise

    def call(self, ctx: ContextState, name: str, *args: int, default: int | None = None) -> Any:
        """Run callback ``name`` for ``ctx`` if exported (else return ``default``), then apply
        what it deferred (local responses, continues, queue notifications), as Envoy does after
        each VM call (cpp-host ``DeferAfterCallActions``).

        Raises:
            PluginFailedError: the plugin failed before.
            FilterFailure: this callback trapped / ran out of fuel / hit the memory limit.
        """
        if self.failed is not None:
            raise PluginFailedError(f"the plugin failed earlier: {self.failed}")
        vm = self.vm
        func = vm.funcs.get(name)
        if func is None:
            return default
        depth = vm.depth
        saved = self.effective
        self.effective = ctx
        # VM.call inlined (the per-callback path): a fresh fuel budget, traps as FilterFailure.
        if vm.set_fuel_raw(vm.fuel_context, vm.fuel_amount):  # non-NULL: a wasmtime error
            vm.set_fuel(vm.fuel)  # raises it
        vm.depth = depth + 1
        try:
            result = func(vm.store, *args)
        except (wasmtime.Trap, HostTrap, wasmtime.WasmtimeError) as exc:
            vm.host_failure = None
            self.failed = vm.failure(name, ctx.id, exc)
            raise self.failed from exc
        finally:
            vm.depth = depth
            self.effective = saved
        if not depth and (self._dirty or self._pending_queue):
            self._after_call()
        return result

    def _after_call(self) -> None:
        vm = self.vm
        if vm.host_failure is not None:
            # malloc trapped in a host call (VM.return_bytes, which marked the plugin dirty to get
            # here): the callback that made it fails as it ends, as in cpp-host.
            self.failed, vm.host_failure = vm.host_failure, None
            raise self.failed
        while self._dirty:
            ctx = self._dirty.pop(0)
            if not ctx.deferred:
                continue
            actions = ctx.take_deferred()
            if ctx is self.root:
                if any(a == "delete_root" for a, _ in actions):
                    self.call(self.root, "proxy_on_delete", self.root.id)
                    self.closed = True
                continue
            stream = self.streams.get(ctx.id)
            if stream is not None:
                stream.apply_deferred(actions)
        while self._pending_queue:
            token = self._pending_queue.pop(0)
            self.call(self.root, "proxy_on_queue_ready", self.root.id, token)

    def new_context(self, kind: str, stream: _Driven) -> ContextState:
        """Allocate the next context id for a stream (not yet created in the module).

        Once the plugin failed, Envoy gives a stream a context without a VM (id 0, never
        registered): the stream gets the failure policy's answer and the module is not called;
        with FAIL_RELOAD past the backoff, the VM is reloaded first and the stream uses it.
        """
        if self.failed is not None:
            self._maybe_reload()
        if self.failed is not None:
            ctx = ContextState(0, self.root.id, kind)
            ctx.generation = self.generation
            return ctx
        ctx = ContextState(next(self._ids), self.root.id, kind, self._dirty)
        ctx.generation = self.generation
        self.contexts[ctx.id] = ctx
        self.streams[ctx.id] = stream
        return ctx

    def create_context(self, ctx: ContextState) -> None:
        """``proxy_on_context_create(id, root_id)`` once, on the stream's first event."""
        if not ctx.created:
            ctx.created = True
            self.call(ctx, "proxy_on_context_create", ctx.id, ctx.parent_id)

    def delete_context(self, ctx: ContextState) -> None:
        """Forget a finished stream context (its id is never reused within a VM)."""
        ctx.deleted = True
        if self.contexts.get(ctx.id) is ctx:  # not a reloaded VM's context of the same id
            del self.contexts[ctx.id]
            self.streams.pop(ctx.id, None)

    def stream_failed(self, ctx: ContextState) -> bool:
        """Whether the VM of ``ctx`` failed: the current one, or one a reload replaced (Envoy: the
        stream's ``Context`` keeps its own, failed, VM)."""
        return self.failed is not None or ctx.generation != self.generation

    # -- ticks, callouts, queues ------------------------------------------------------------------
    def set_tick_period(self, period_ms: int) -> None:
        """From ``proxy_set_tick_period_milliseconds``: 0 stops ticks."""
        self.tick_period_ms = period_ms
        self.next_tick_ns = self.host.clock.monotonic_ns + period_ms * 1_000_000 if period_ms else 0

    def tick(self) -> None:
        """Run ``proxy_on_tick`` on the root context now (regardless of the period)."""
        self.ticks += 1
        self.call(self.root, "proxy_on_tick", self.root.id)

    def fire_due_ticks(self) -> int:
        """Run every tick the clock has passed; returns how many ran."""
        fired = 0
        while self.tick_period_ms and self.next_tick_ns and self.host.clock.monotonic_ns >= self.next_tick_ns:
            self.next_tick_ns += self.tick_period_ms * 1_000_000
            self.tick()
            fired += 1
        return fired

    def next_call_id(self, kind: int) -> int:
        """cpp-host ids: HTTP calls 4, 8...; gRPC calls 5, 9...; gRPC streams 6, 10..."""
        return (next(self._call_ids[kind]) << 2) | kind

    def grpc_call(self, token: int) -> GrpcCall | None:
        """The open gRPC call or stream with ``token``."""
        return next((c for c in self.grpc_calls if c.token == token), None)

    def deliver_http_response(self, call: HttpCall, response: CalloutResponse | None) -> None:
        """Run ``proxy_on_http_call_response`` on the root context for ``call``."""
        if call.answered:
            raise StreamStateError(f"HTTP call {call.token} was answered already")
        call.answered = True
        if call in self.http_calls:
            self.http_calls.remove(call)
        if response is None:
            self.status = (int(Status.BROKEN_CONNECTION), "reset")
            args = (0, 0, 0)
        else:
            self.http_call_response = response
            trailers = len(response.trailers) if response.trailers is not None else 0
            args = (len(response.headers), len(response.body), trailers)
        try:
            self.call(self.root, "proxy_on_http_call_response", self.root.id, call.token, *args)
        finally:
            self.http_call_response = None
            self.status = (0, "")

    def deliver_grpc(
        self,
        call: GrpcCall,
        *,
        initial_metadata: HeadersLike = None,
        message: bytes | None = None,
        trailing_metadata: HeadersLike = None,
        close_status: int | None = None,
        close_message: str = "",
    ) -> None:
        """Run the gRPC callbacks on the root context for ``call``, in Envoy's order."""
        rid = self.root.id
        if initial_metadata is not None:
            self.grpc_initial_metadata = HeaderMap(initial_metadata)
            try:
                self.call(self.root, "proxy_on_grpc_receive_initial_metadata", rid, call.token,
                          len(self.grpc_initial_metadata))  # fmt: skip
            finally:
                self.grpc_initial_metadata = None
        if message is not None:
            self.grpc_receive_buffer = message
            try:
                self.call(self.root, "proxy_on_grpc_receive", rid, call.token, len(message))
            finally:
                self.grpc_receive_buffer = None
        if trailing_metadata is not None:
            self.grpc_trailing_metadata = HeaderMap(trailing_metadata)
            try:
                self.call(self.root, "proxy_on_grpc_receive_trailing_metadata", rid, call.token,
                          len(self.grpc_trailing_metadata))  # fmt: skip
            finally:
                self.grpc_trailing_metadata = None
        if close_status is not None:
            if call in self.grpc_calls:
                self.grpc_calls.remove(call)
            self.status = (close_status, close_message)
            try:
                self.call(self.root, "proxy_on_grpc_close", rid, call.token, close_status)
            finally:
                self.status = (0, "")

    def queue_ready(self, token: int) -> None:
        """Schedule ``proxy_on_queue_ready`` (runs after the current call, or now if idle)."""
        self._pending_queue.append(token)
        if self.vm.depth == 0:
            self._after_call()

    def call_foreign_function(self, function_id: int, arguments: bytes) -> None:
        """Run ``proxy_on_foreign_function`` with ``arguments`` as the call-data buffer."""
        self.call_data = arguments
        try:
            self.call(self.root, "proxy_on_foreign_function", self.root.id, function_id, len(arguments))
        finally:
            self.call_data = None

    # -- state for host functions and tests -------------------------------------------------------
    def record_log(self, level: LogLevel, message: bytes) -> None:
        """Keep a log line if it passes the host's log level (Envoy's ``wasm`` logger level)."""
        if level >= self.host.log_level:
            self.logs.append(LogRecord(level, message.decode(errors="replace"), self.effective.id))

    def log_messages(self, level: LogLevel | None = None) -> list[str]:
        """Messages logged, optionally only those at exactly ``level``."""
        return [r.message for r in self.logs if level is None or r.level == level]

    def lookup_property(self, segments: list[bytes]) -> bytes | None:
        """Resolve a property path for the effective context (see :mod:`~envoykit.wasmhost.properties`)."""
        ctx = self.effective
        return props.lookup(self, ctx if ctx.kind != "root" else None, segments)

    def metric(self, name: str) -> int:
        """Current value of counter or gauge ``name``.

        Raises:
            KeyError: no metric of that name was defined.
        """
        return self.host.metrics.by_name[name].value

    def http_stream(self, **properties: Any) -> HttpStream:
        """A new HTTP stream (context created on its first event)."""
        return HttpStream(self, properties)

    def tcp_stream(self, **properties: Any) -> TcpStream:
        """A new TCP (network filter) stream."""
        return TcpStream(self, properties)

"""Per-context state the host functions act on: maps, buffers, deferred actions, properties."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envoykit.wasmhost.abi import BufferType, MapType
from envoykit.wasmhost.headermap import HeaderMap


@dataclass(eq=False)
class ContextState:
    """One Proxy-Wasm context as the host sees it.

    Attributes:
        id: context id (root 1, streams 2, 3... never reused; cpp-host ``allocContextId``).
        parent_id: 0 for the root context, else the root context's id.
        kind: ``"root"``, ``"http"`` or ``"tcp"``.
        maps: the header maps the filter can reach right now (absent = not available, as in
            Envoy ``getMap`` which returns null outside the owning callback).
        bodies: the body / data buffers reachable right now, by buffer type.
        deferred: actions recorded by host calls, applied after the module returns.
    """

    id: int
    parent_id: int
    kind: str
    maps: dict[MapType, HeaderMap] = field(default_factory=dict)
    bodies: dict[int, bytearray] = field(default_factory=dict)
    deferred: list[tuple[str, Any]] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)
    filter_state: dict[str, bytes] = field(default_factory=dict)
    live_maps: dict[MapType, HeaderMap] = field(default_factory=dict)  # writable in on_log
    response_headers_seen: HeaderMap | None = None
    connection_id: int | None = None
    start_ns: int = 0  # request.time: when the stream began (wall clock)
    request_bytes: int = 0  # request body bytes received from the client so far
    upstream_reached: bool = False  # the router sent the request upstream (upstream.address)
    access_log_phase: bool = False
    route_cache_cleared: int = 0
    created: bool = False
    deleted: bool = False

    dirty: list[ContextState] | None = field(
        default=None, repr=False
    )  # the plugin's list of contexts with deferred actions

    def defer(self, action: str, value: Any) -> None:
        """Record an action to apply after the current call into the module."""
        if not self.deferred and self.dirty is not None:
            self.dirty.append(self)
        self.deferred.append((action, value))

    def take_deferred(self) -> list[tuple[str, Any]]:
        """The recorded actions, oldest first; clears the list."""
        out, self.deferred = self.deferred, []
        return out

    def set_body(self, kind: BufferType, data: bytearray | None) -> None:
        """Make a body/data buffer reachable (or unreachable with ``None``)."""
        if data is None:
            self.bodies.pop(kind, None)
        else:
            self.bodies[kind] = data

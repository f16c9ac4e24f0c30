"""Per-context state the host functions act on: maps, buffers, deferred actions, properties."""

from __future__ import annotations

from typing import Any

from envoykit.wasmhost.headermap import HeaderMap


class ContextState:
    """One Proxy-Wasm context as the host sees it.

    A plain class with slots, not a dataclass: one is made per stream, on the hot path.

    Attributes:
        id: context id (root 1, streams 2, 3... never reused; cpp-host ``allocContextId``).
        parent_id: 0 for the root context, else the root context's id.
        kind: ``"root"``, ``"http"`` or ``"tcp"``.
        maps: the header maps the filter can reach right now (absent = not available, as in
            Envoy ``getMap`` which returns null outside the owning callback), by ``MapType`` value.
        bodies: the body / data buffers reachable right now, by buffer type.
        deferred: actions recorded by host calls, applied after the module returns.
    """

    __slots__ = (
        "access_log_phase",
        "bad_request_header",
        "bodies",
        "connection_id",
        "created",
        "deferred",
        "deleted",
        "dirty",
        "filter_state",
        "generation",
        "id",
        "kind",
        "live_maps",
        "maps",
        "parent_id",
        "properties",
        "request_bytes",
        "response_headers_seen",
        "route_cache_cleared",
        "start_ns",
        "upstream_reached",
    )  # fmt: skip

    def __init__(self, id: int, parent_id: int, kind: str, dirty: list[ContextState] | None = None) -> None:
        self.id = id
        self.parent_id = parent_id
        self.kind = kind
        self.maps: dict[int, HeaderMap] = {}
        self.bodies: dict[int, bytearray] = {}
        self.deferred: list[tuple[str, Any]] = []
        self.properties: dict[str, Any] = {}
        self.filter_state: dict[str, bytes] = {}
        self.live_maps: dict[int, HeaderMap] = {}  # writable in on_log
        self.response_headers_seen: HeaderMap | None = None
        self.connection_id: int | None = None
        self.start_ns = 0  # request.time: when the stream began (wall clock)
        self.request_bytes = 0  # request body bytes received from the client so far
        self.upstream_reached = False  # the router sent the request upstream (upstream.address)
        self.bad_request_header = False  # the module wrote a name or value HTTP/1 cannot carry
        self.access_log_phase = False
        self.route_cache_cleared = 0
        self.created = False
        self.deleted = False
        self.dirty = dirty  # the plugin's list of contexts with deferred actions
        self.generation = 0  # which VM of the plugin (FAIL_RELOAD makes new ones)

    def __repr__(self) -> str:
        return f"ContextState(id={self.id}, parent_id={self.parent_id}, kind={self.kind!r})"

    def defer(self, action: str, value: Any) -> None:
        """Record an action to apply after the current call into the module."""
        if not self.deferred and self.dirty is not None:
            self.dirty.append(self)
        self.deferred.append((action, value))

    def take_deferred(self) -> list[tuple[str, Any]]:
        """The recorded actions, oldest first; clears the list."""
        out, self.deferred = self.deferred, []
        return out

    def set_body(self, kind: int, data: bytearray | None) -> None:
        """Make a body/data buffer reachable (or unreachable with ``None``)."""
        if data is None:
            self.bodies.pop(kind, None)
        else:
            self.bodies[kind] = data

"""Properties (Envoy's attributes) and their byte encodings.

Encodings are Envoy's ``serializeValue`` (``source/extensions/common/wasm/context.cc``): strings
and bytes raw; integers as 8 bytes little-endian (int64/uint64); floats as 8-byte doubles; bools
1 byte; maps and lists in the header-pairs format (lists with empty values). Timestamps and
durations are int64 nanoseconds.

Built-in attributes (names from Envoy's ``docs/root/intro/arch_overview/advanced/attributes.rst``):
``plugin_name``, ``plugin_root_id``, ``plugin_vm_id``, ``request.{path,url_path,host,scheme,method,
headers,referer,useragent,id,protocol,query}``, ``response.{code,headers}``, ``connection_id``,
``source.{address,port}`` and ``destination.{address,port}`` (loopback defaults: Envoy always
has them), ``xds.node.id`` and ``xds.node.cluster`` (Envoy's default node: ``""``),
``xds.node.user_agent_name`` (``"envoy"``), ``xds.node.metadata`` (a map: Struct numbers are
doubles, lists are indexable by position, a ``null`` anywhere in what is read is
SERIALIZATION_FAILURE; pinned by ``node_metadata.wat``), ``xds.node`` whole (the serialized
``Node`` message, without Envoy's build fields: see :func:`node_message`), ``xds.cluster_name`` (``"upstream"``) and ``xds.route_name`` (``""``) from the first
callback, ``request.time`` (int64 ns), ``request.size`` (the content-length header while it is
reachable, else the body bytes received), ``upstream.address`` once the request went upstream,
``request.duration`` only in ``on_log``; ``node.*`` is NOT_FOUND, as in Envoy 1.40 (all pinned by
``envoy_properties.wat``). As in Envoy, the
header-derived ``request.*`` / ``response.headers`` attributes exist only while the filter can
reach those headers (its header callbacks, a pause, ``on_log``): ``request.path`` read on the
response side is NOT_FOUND (checked by the differential tests). Tests set or override any
attribute with a dotted path: ``Host(properties={"xds.node.id": "sidecar~1"})`` or
``plugin.http_stream(**{"source.address": "10.0.0.1:5000"})``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from envoykit.wasmhost.abi import MapType
from envoykit.wasmhost.pairs import encode_pairs

if TYPE_CHECKING:
    from envoykit.wasmhost.context import ContextState
    from envoykit.wasmhost.plugin import Plugin

PropertyValue = str | bytes | int | float | bool | Mapping[str, Any] | Sequence[Any]


_EMPTY = b"\0\0\0\0"


class Unserializable(Exception):
    """A value Envoy's ``serializeValue`` has no form for (a Struct ``null``): SERIALIZATION_FAILURE."""


def encode_value(value: Any) -> bytes:
    """Envoy's byte form of ``value`` (see module docstring).

    Raises:
        Unserializable: ``None`` (a ``null`` in node metadata), alone or inside a map or list.
        TypeError: a type Envoy has no encoding for.
    """
    if value is None:
        raise Unserializable
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, int):
        return struct.pack("<q", value) if value < 0 else struct.pack("<Q", value)
    if isinstance(value, float):
        return struct.pack("<d", value)
    # Maps and lists are pairs with their count even when empty (4 zero bytes): Envoy marshals
    # them itself, unlike a header map handed over empty (observed, node_metadata_bare.yaml).
    if isinstance(value, Mapping):
        return encode_pairs([(encode_value(k), encode_value(v)) for k, v in value.items()]) or _EMPTY
    if isinstance(value, Sequence):
        return encode_pairs([(encode_value(v), b"") for v in value]) or _EMPTY
    raise TypeError(f"no Envoy encoding for a property of type {type(value).__name__}")


_MISSING = object()

# The attributes Envoy 1.40 answers with a CEL wrapper map in a stream's context: read whole,
# they are SERIALIZATION_FAILURE even when nothing below them is set (property_paths.yaml).
WRAPPERS = frozenset({"request", "response", "connection", "upstream", "source", "destination", "xds",
                      "filter_state"})  # fmt: skip


def _walk(value: Any, rest: list[str]) -> Any:
    """The value at ``rest`` below ``value``, or ``_MISSING`` (``None`` is a ``null`` value)."""
    for part in rest:
        if isinstance(value, Mapping):
            if part not in value:
                return _MISSING
            value = value[part]
        elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
            if not part.isdigit() or int(part) >= len(value):
                return _MISSING
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"xds.node.id": x}`` → ``{"xds": {"node": {"id": x}}}`` so paths can be walked segment by segment."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = {}
                node[p] = nxt
            node = nxt
        node[parts[-1]] = value
    return out


# Defaults of what Envoy always knows; tests and the diff override them through Host(properties=).
DEFAULT_UPSTREAM_ADDRESS = "127.0.0.1:10001"
DEFAULT_CLUSTER = "upstream"


def builtins(plugin: Plugin, ctx: ContextState | None) -> dict[str, Any]:
    """The attributes the host computes for ``ctx`` (a stream context, or ``None`` for the root)."""
    attrs: dict[str, Any] = {
        "plugin_name": plugin.name,
        "plugin_root_id": plugin.root_id,
        "plugin_vm_id": plugin.vm_id,
        # Envoy's default node: empty id and cluster, empty metadata (xds.node.metadata.* NOT_FOUND),
        # and its own user_agent_name; Node fields a message does not set read as their defaults.
        "xds": {"node": {"id": "", "cluster": "", "metadata": {}, "user_agent_name": "envoy"}},
    }
    if ctx is None or ctx.kind == "root":
        return attrs
    if ctx.kind == "http":
        # The route is resolved before the filters run, so both are there from on_request_headers.
        attrs["xds"].update({"cluster_name": DEFAULT_CLUSTER, "route_name": ""})
    # Header-derived attributes read the headers Envoy's context can reach right now (its
    # activation uses request_headers_ / the access-log headers, both null once the request went
    # upstream); stream-info ones (protocol, response.code) stay available.
    request: dict[str, Any] = {"protocol": "HTTP/1.1"} if ctx.kind == "http" else {}
    req = ctx.maps.get(MapType.HTTP_REQUEST_HEADERS)
    if req is not None:
        path = req.get(":path") or ""
        request.update(
            {
                "path": path,
                "url_path": path.split("?", 1)[0],
                "query": path.split("?", 1)[1] if "?" in path else "",
                "host": req.get(":authority") or "",
                "scheme": req.get(":scheme") or "",
                "method": req.get(":method") or "",
                "headers": req.to_dict(),  # repeated names joined with "," (Envoy's CEL header map)
            }
        )
        for name, header in (("referer", "referer"), ("useragent", "user-agent"), ("id", "x-request-id")):
            if header in req:
                request[name] = req[header]
    if ctx.kind == "http":
        request["time"] = ctx.start_ns  # a timestamp: int64 nanoseconds
        # Envoy: the content-length header while the headers are reachable, else bytes received.
        length = req.get("content-length") if req is not None else None
        request["size"] = int(length) if length is not None and length.isdigit() else ctx.request_bytes
        if ctx.access_log_phase:  # only once the stream is complete: on_log
            request["duration"] = max(0, plugin.host.clock.wall_ns - ctx.start_ns)
        if ctx.upstream_reached:
            attrs["upstream"] = {"address": DEFAULT_UPSTREAM_ADDRESS}
        # Headers out of reach read as an empty map, not NOT_FOUND (Envoy's wrapper over no
        # headers); the stream's dynamic metadata, empty here, as its empty message.
        request.setdefault("headers", {})
        attrs["metadata"] = b""
    if request:
        attrs["request"] = request
    response: dict[str, Any] = {}
    seen = ctx.response_headers_seen
    status = seen.get(":status") if seen is not None else None
    if status and status.isdigit():
        response["code"] = int(status)
    resp = ctx.maps.get(MapType.HTTP_RESPONSE_HEADERS)
    if resp is not None:
        response["headers"] = resp.to_dict()
    elif ctx.kind == "http":
        response["headers"] = {}  # out of reach: an empty map, as request.headers above
    if response:
        attrs["response"] = response
    if ctx.connection_id is not None:
        attrs["connection_id"] = ctx.connection_id
    # Envoy always knows the connection's addresses; tests override these defaults.
    attrs["source"] = {"address": "127.0.0.1:40000", "port": 40000}
    attrs["destination"] = {"address": "127.0.0.1:10000", "port": 10000}
    return attrs


def node_message(plugin: Plugin, ctx: ContextState | None) -> bytes:
    """``xds.node`` whole: Envoy serializes the ``envoy.config.core.v3.Node`` message. The host
    fills ``id``, ``cluster``, ``metadata`` and ``user_agent_name`` as the attributes below it
    read; Envoy's own build fields (``user_agent_build_version``, ``extensions``,
    ``client_features``) are not reproduced, so the bytes are a subset of Envoy's."""
    from envoy.config.core.v3 import base_pb2
    from google.protobuf import json_format

    def field(name: str) -> Any:
        for source in (
            _nest(ctx.properties) if ctx is not None else {},
            _nest(plugin.host.properties),
            builtins(plugin, ctx),
        ):
            value = _walk(source, ["xds", "node", name])
            if value is not _MISSING:
                return value
        return None

    node = base_pb2.Node(id=str(field("id") or ""), cluster=str(field("cluster") or ""),
                         user_agent_name=str(field("user_agent_name") or ""))  # fmt: skip
    json_format.ParseDict(field("metadata") or {}, node.metadata)
    return node.SerializeToString(deterministic=True)


def lookup(plugin: Plugin, ctx: ContextState | None, segments: list[bytes]) -> bytes | None:
    """Resolve a property path: filter state set by the module, then test overrides, then built-ins."""
    names = [s.decode(errors="replace") for s in segments]
    if not names or not names[0] or names[0] == "node":
        return None  # Envoy 1.40 has xds.node.*, no node.* (NOT_FOUND there)
    if ctx is not None:
        state = ctx.filter_state.get(".".join(names))
        if state is not None:
            return state
    if names == ["xds", "node"]:
        return node_message(plugin, ctx)
    if ctx is not None and len(names) == 1 and names[0] in WRAPPERS:
        raise Unserializable  # Envoy's CEL wrapper maps list no keys: serializeValue fails
    for source in (
        _nest(ctx.properties) if ctx is not None else {},
        _nest(plugin.host.properties),
        builtins(plugin, ctx),
    ):
        value = _walk(source, names)
        if value is not _MISSING:
            return encode_value(value)
    return None

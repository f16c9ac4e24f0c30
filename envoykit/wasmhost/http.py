"""An HTTP stream through the filter, driven like Envoy's filter manager drives ``Context``.

Envoy behaviour kept here (``source/extensions/common/wasm/context.cc`` and the HTTP filter
manager):

- the stream context is created on the first event (``onCreate`` in ``decodeHeaders``);
- a header map is reachable only in its callback, or while that callback's pause holds it;
- PAUSE (or any non-zero) from a header callback stops the stream: body chunks are held, not
  delivered, until ``continue_stream``; then the held data arrives in one body callback;
- PAUSE from a body callback buffers: the next callback sees the whole buffered body;
- no body callback when the headers ended the stream;
- ``send_local_response`` is applied after the callback returns; sent from the request side, the
  reply then runs through the filter's response callbacks (``:status``, the filter's headers,
  ``content-length`` and ``content-type: text/plain`` for a non-empty body) and the request goes
  no further; sent from the response side, it replaces the response without more callbacks;
- the end of the stream runs ``proxy_on_log`` (maps read-only), ``proxy_on_done``, ``proxy_on_delete``.
"""

from __future__ import annotations

import itertools
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from envoykit.wasmhost.abi import _ACTIONS, AbiVersion, Action, BufferType, MapType, StreamType
from envoykit.wasmhost.errors import FilterFailure, StreamStateError
from envoykit.wasmhost.headermap import HeaderMap, HeadersLike
from envoykit.wasmhost.types import LocalResponse

if TYPE_CHECKING:
    from envoykit.wasmhost.plugin import Plugin

_connection_ids = itertools.count(1)  # each stream on its own downstream connection, as in the diff

# Plain names for the enum members used per request: an attribute of an Enum class goes
# through EnumType.__getattr__ on Python 3.11, which costs more than the rest of the line.
_CONTINUE = Action.CONTINUE
_PAUSE = Action.PAUSE
_V0_1_0 = AbiVersion.V0_1_0


# A direction's constants: its callbacks, maps, body buffer and stream type. The map and buffer
# keys are plain ints, as the host functions look them up: an int key found under an enum
# member (or the reverse) costs a rich comparison on every lookup.
_REQUEST = (
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    int(MapType.HTTP_REQUEST_HEADERS),
    int(MapType.HTTP_REQUEST_TRAILERS),
    int(BufferType.HTTP_REQUEST_BODY),
    StreamType.HTTP_REQUEST,
)
_RESPONSE = (
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    int(MapType.HTTP_RESPONSE_HEADERS),
    int(MapType.HTTP_RESPONSE_TRAILERS),
    int(BufferType.HTTP_RESPONSE_BODY),
    StreamType.HTTP_RESPONSE,
)


class _Direction:
    """One direction (request or response) of the stream, made from ``_REQUEST`` or ``_RESPONSE``.

    Slots, every one set here: the filter manager reads these fields many times per event, and a
    default read through the class costs several times a slot read (measured with callgrind).
    """

    __slots__ = (
        "body_buffer", "body_cb", "buffer", "buffering", "complete", "eos_seen", "forwarded_body",
        "headers", "headers_cb", "headers_forwarded", "headers_map", "headers_paused", "held",
        "held_any", "held_eos", "held_trailers", "stopped", "stream_type", "trailers", "trailers_cb",
        "trailers_map",
    )  # fmt: skip

    def __init__(self, names: tuple[Any, ...]) -> None:
        (self.headers_cb, self.body_cb, self.trailers_cb, self.headers_map, self.trailers_map,
         self.body_buffer, self.stream_type) = names  # fmt: skip
        self.headers: HeaderMap | None = None
        self.trailers: HeaderMap | None = None
        self.forwarded_body: bytes | bytearray = b""  # bytes: ``+=`` rebinds, never shared
        self.headers_forwarded = False
        self.headers_paused = False
        self.buffering = False
        self.buffer: bytes | bytearray = b""
        self.held: bytes | bytearray = b""
        self.held_any = False
        self.held_eos = False
        self.held_trailers: HeaderMap | None = None
        self.eos_seen = False
        self.complete = False  # everything forwarded
        self.stopped = False  # a local reply or reset ended this direction


def _as_sent(headers: HeaderMap, wall_ns: int) -> HeaderMap:
    """The response headers as Envoy's access log has them: the connection manager sets ``date``
    and ``server: envoy`` after the filters, appended (observed in Envoy 1.40,
    property_paths.yaml; one already there is overwritten in place, Envoy's ``setReference`` on
    an inline header: not diffed). A copy: the client's view leaves them out, as the diff does."""
    date = formatdate(wall_ns / 1e9, usegmt=True).encode()
    out: list[tuple[bytes, bytes]] = []
    missing = {b"date": date, b"server": b"envoy"}
    for k, v in headers._entries:
        if k in missing:
            out.append((k, missing.pop(k)))
        elif k != b"date" and k != b"server":
            out.append((k, v))
    out += missing.items()
    return HeaderMap.of_entries(out)


class HttpStream:
    """One HTTP request/response through the filter. Get one from :meth:`Plugin.http_stream`.

    Feed it with :meth:`send_request_headers`, :meth:`send_request_body`,
    :meth:`send_request_trailers`, then the ``send_response_*`` methods, and :meth:`complete`.
    Each returns the :class:`~envoykit.wasmhost.Action` of the callback (``None`` when no
    callback ran: held by a pause, or the stream ended). Read the results from
    :attr:`request_headers` / :attr:`request_body` (what went upstream), :attr:`response_headers` /
    :attr:`response_body` (what went downstream), :attr:`local_response`, :attr:`reset`.
    """

    def __init__(self, plugin: Plugin, properties: dict[str, Any] | None = None) -> None:
        self.plugin = plugin
        self.ctx = ctx = plugin.new_context("http", self)
        if properties:
            ctx.properties.update(properties)
        ctx.connection_id = next(_connection_ids)
        ctx.start_ns = plugin.host.clock.wall_ns
        self.req = _Direction(_REQUEST)
        self.resp = _Direction(_RESPONSE)
        self.local_response: LocalResponse | None = None
        self.reset: StreamType | None = None
        # (callback, the action it returned as a plain int): what ``Outcome.actions`` shows
        self.actions: list[tuple[str, int]] = []
        self.failure: FilterFailure | None = None
        self.done = False

    # -- read-outs ---------------------------------------------------------------------------------
    @property
    def id(self) -> int:
        """The stream's context id."""
        return self.ctx.id

    @property
    def request_headers(self) -> HeaderMap:
        """Request headers as the filter left them (empty before any were sent)."""
        return self.req.headers if self.req.headers is not None else HeaderMap()

    @property
    def request_body(self) -> bytes:
        """Request body forwarded upstream so far."""
        return bytes(self.req.forwarded_body)

    @property
    def request_trailers(self) -> HeaderMap:
        """Request trailers as the filter left them."""
        return self.req.trailers if self.req.trailers is not None else HeaderMap()

    @property
    def response_headers(self) -> HeaderMap:
        """Response headers as the filter left them (a local reply's, if one was sent)."""
        return self.resp.headers if self.resp.headers is not None else HeaderMap()

    @property
    def response_body(self) -> bytes:
        """Response body forwarded downstream so far."""
        return bytes(self.resp.forwarded_body)

    @property
    def response_trailers(self) -> HeaderMap:
        """Response trailers as the filter left them."""
        return self.resp.trailers if self.resp.trailers is not None else HeaderMap()

    @property
    def request_complete(self) -> bool:
        """True once headers, body and trailers all went upstream (the upstream may answer)."""
        return self.req.complete and self.local_response is None and self.reset is None

    @property
    def request_headers_sent(self) -> bool:
        """True once the request headers went upstream (the router starts the upstream request
        then, before the body: a later local reply or reset cuts that request short)."""
        return self.req.headers_forwarded

    @property
    def request_paused(self) -> bool:
        """True while the filter holds the request (waiting for ``continue_stream``)."""
        return (self.req.headers_paused or self.req.buffering) and not self.req.stopped

    @property
    def response_complete(self) -> bool:
        """True once the whole response went downstream."""
        return self.resp.complete

    # -- request side --------------------------------------------------------------------------------
    def send_request_headers(
        self, headers: HeadersLike, end_of_stream: bool = False, *, copy: bool = True
    ) -> Action | int | None:
        """Run ``proxy_on_request_headers`` (``decodeHeaders``). ``copy=False`` hands a
        :class:`HeaderMap` over as it is: the stream then owns it and the filter edits it."""
        hmap = headers if not copy and isinstance(headers, HeaderMap) else HeaderMap(headers)
        return self._headers(self.req, hmap, end_of_stream)

    def send_request_body(self, data: bytes | str, end_of_stream: bool = False) -> Action | int | None:
        """Run ``proxy_on_request_body`` for one chunk (``decodeData``)."""
        return self._body(self.req, data.encode() if isinstance(data, str) else data, end_of_stream)

    def send_request_trailers(self, trailers: HeadersLike) -> Action | int | None:
        """Run ``proxy_on_request_trailers`` (``decodeTrailers``); ends the request."""
        return self._trailers(self.req, HeaderMap(trailers))

    # -- response side -------------------------------------------------------------------------------
    def send_response_headers(
        self, headers: HeadersLike, end_of_stream: bool = False, *, copy: bool = True
    ) -> Action | int | None:
        """Run ``proxy_on_response_headers`` (``encodeHeaders``); ``copy`` as for the request."""
        if self.local_response is not None:
            raise StreamStateError(
                "a local response was sent: the upstream response never reaches the filter"
            )
        hmap = headers if not copy and isinstance(headers, HeaderMap) else HeaderMap(headers)
        return self._headers(self.resp, hmap, end_of_stream)

    def send_response_body(self, data: bytes | str, end_of_stream: bool = False) -> Action | int | None:
        """Run ``proxy_on_response_body`` for one chunk (``encodeData``)."""
        return self._body(self.resp, data.encode() if isinstance(data, str) else data, end_of_stream)

    def send_response_trailers(self, trailers: HeadersLike) -> Action | int | None:
        """Run ``proxy_on_response_trailers`` (``encodeTrailers``)."""
        return self._trailers(self.resp, HeaderMap(trailers))

    # -- end -----------------------------------------------------------------------------------------
    def complete(self) -> None:
        """End the stream as Envoy does: ``proxy_on_log``, then ``proxy_on_done`` and ``proxy_on_delete``.

        Envoy runs the access-log hook (``on_log``: the final request and response headers are
        readable; only maps the filter still held, e.g. a paused request's, are writable) before
        destroying the filter (``onDestroy``: ``on_done``, ``on_delete``, which still reach those
        held maps).
        """
        if self.done:
            return
        self.done = True
        plugin, ctx = self.plugin, self.ctx
        if plugin.failed is not None or ctx.generation != plugin.generation:  # stream_failed
            plugin.delete_context(ctx)  # a failed VM is not called again, not even to log
            return
        if not ctx.created:
            plugin.create_context(ctx)  # Envoy Context::log creates a context that never saw headers
        if plugin.failed is not None or not plugin.vm.end_callbacks:  # the generation is ctx's
            plugin.delete_context(ctx)  # nothing of the module runs at the end: no maps to set up
            return
        # Envoy keeps two views: the maps its pointers still reach (a paused request's headers,
        # say) stay writable and, after on_log, readable in on_done/on_delete; on_log reads the
        # access-log view, the final request and response headers (getConstMap vs getMap).
        live = dict(ctx.maps)
        ctx.live_maps = live
        ctx.maps = {}
        ctx.access_log_phase = True
        if self.req.headers is not None:
            ctx.maps[self.req.headers_map] = self.req.headers
        if self.resp.headers is not None:
            ctx.maps[self.resp.headers_map] = _as_sent(self.resp.headers, plugin.host.clock.wall_ns)
        if self.resp.trailers is not None:
            ctx.maps[self.resp.trailers_map] = self.resp.trailers
        try:
            plugin.call(ctx, "proxy_on_log", ctx.id)
        finally:
            ctx.access_log_phase = False
            ctx.maps = live
        plugin.call(ctx, "proxy_on_done", ctx.id)
        plugin.call(ctx, "proxy_on_delete", ctx.id)
        plugin.delete_context(ctx)

    # -- the filter manager --------------------------------------------------------------------------
    def _check_open(self, d: _Direction) -> bool:
        if self.done:
            raise StreamStateError("the stream is complete")
        return not d.stopped and self.reset is None

    def _call(self, d: _Direction, name: str, *args: int) -> Action | int:
        plugin = self.plugin
        if plugin.failed is not None or self.ctx.generation != plugin.generation:  # stream_failed
            return self._failed_vm()
        if name not in plugin.vm.funcs:  # not exported: Envoy's wrapper continues
            self.actions.append((name, 0))
            return _CONTINUE
        index = len(self.actions)
        self.actions.append((name, 0))  # placeholder: keeps call order under nesting
        ctx = self.ctx
        try:
            result = plugin.call(ctx, name, ctx.id, *args)  # exported: no default
        except FilterFailure as failure:
            self.failure = failure
            self.ctx.take_deferred()
            failed = self._failed_vm()
            self.actions[index] = (name, int(failed))
            return failed
        action = _ACTIONS.get(result, result)  # Action.of: the member, or the raw int
        self.actions[index] = (name, result)  # the u32 the module returned
        return action

    def _failed_vm(self) -> Action:
        """The VM failed (now or earlier): Envoy's ``CHECK_FAIL``. The stream whose callback
        failed, and with FAIL_CLOSED every later one, is answered once with ``sendLocalReply(503,
        "", UNAVAILABLE, "wasm_fail_stream")`` (Envoy ``Context::failStream``): the client gets a
        503 and an empty body, and the module is not called again; a response already on its way
        is reset. With FAIL_OPEN later streams go on as if the filter were not there (both
        observed in Envoy 1.40, ``panic_*.yaml``)."""
        if self.plugin.failure_policy == "FAIL_OPEN" and self.failure is None:
            return _CONTINUE
        if self.local_response is None and self.reset is None:
            if self.resp.headers_forwarded:
                self.reset = StreamType.HTTP_RESPONSE
            else:
                reply = LocalResponse(503, b"", details="wasm_fail_stream", grpc_status=14)
                self.local_response = reply
                self.ctx.maps.clear()
                self.ctx.bodies.clear()
                self._replace_response(reply)
        self.req.stopped = self.resp.stopped = True
        return _PAUSE

    def _headers(self, d: _Direction, headers: HeaderMap, eos: bool) -> Action | int | None:
        if d.headers is not None:
            raise StreamStateError(f"{d.headers_cb}: headers were sent already")
        if self.done:
            raise StreamStateError("the stream is complete")
        if d.stopped or self.reset is not None:
            return None
        ctx, plugin = self.ctx, self.plugin
        live = plugin.failed is None and ctx.generation == plugin.generation  # not stream_failed
        if live and not ctx.created:  # Plugin.create_context, inline
            ctx.created = True
            plugin.call(ctx, "proxy_on_context_create", ctx.id, ctx.parent_id)
            live = plugin.failed is None
        d.headers = headers
        d.eos_seen = eos
        ctx.maps[d.headers_map] = headers
        if d is self.resp:
            ctx.response_headers_seen = headers  # response.code: stream info, stays readable
        name = d.headers_cb
        if live and name not in plugin.vm.funcs:
            # not exported: Envoy's wrapper continues (``_call``'s first answer, without a call)
            self.actions.append((name, 0))
            action: Action | int = _CONTINUE
        elif plugin.module.abi_version is _V0_1_0:
            action = self._call(d, name, len(headers._entries))
        else:
            action = self._call(d, name, len(headers._entries), 1 if eos else 0)
        if d.stopped or self.reset is not None:
            return action
        if action is _CONTINUE or action == _CONTINUE:  # the member first: no comparison
            # _forward_headers(d), inline
            d.headers_paused = False
            d.headers_forwarded = True
            if d is self.req:
                ctx.upstream_reached = True
            ctx.maps.pop(d.headers_map, None)
            if d.eos_seen and not d.held_any:
                d.complete = True
        else:
            d.headers_paused = True
        return action

    def _forward_headers(self, d: _Direction, resumed: bool = False) -> None:
        d.headers_paused = False
        d.headers_forwarded = True
        if d is self.req:
            self.ctx.upstream_reached = True
        # Envoy drops its pointer when the header callback returns Continue; resumed after a
        # pause, only continue_stream's own clearing applies, which spares the response headers.
        if not (resumed and d is self.resp):
            self.ctx.maps.pop(d.headers_map, None)
        if d.eos_seen and not d.held_any:
            d.complete = True

    def _body(self, d: _Direction, data: bytes, eos: bool) -> Action | int | None:
        if d.headers is None or d.eos_seen:
            raise StreamStateError(f"{d.body_cb}: no headers yet, or the stream already ended")
        if self.done:
            raise StreamStateError("the stream is complete")
        if d.stopped or self.reset is not None:
            return None
        d.eos_seen = eos
        if d is self.req:
            self.ctx.request_bytes += len(data)
        if d.headers_paused:
            d.held += data
            d.held_any = True
            d.held_eos = eos
            return None
        plugin = self.plugin
        if (
            d.body_cb not in plugin.vm.funcs
            and not d.buffering
            and plugin.failed is None
            and self.ctx.generation == plugin.generation
        ):
            # _deliver_body's first case inline (most filters export no body callback)
            self.actions.append((d.body_cb, 0))
            d.forwarded_body += data
            if eos:
                d.complete = True
            return _CONTINUE
        return self._deliver_body(d, data, eos)

    def _body_frames(self, d: _Direction, data: bytes) -> None:
        """``data`` as Envoy's HTTP/1 codec hands a body of known length to the filters: one
        frame without end of stream, then an empty one with it (``_body`` twice; in one go when
        the filter exports no body callback, which most filters do not)."""
        plugin = self.plugin
        if (
            d.headers is None
            or d.eos_seen
            or self.done
            or d.stopped
            or self.reset is not None
            or d.headers_paused
            or d.buffering
            or d.body_cb in plugin.vm.funcs
            or plugin.failed is not None
            or self.ctx.generation != plugin.generation
        ):
            for chunk, eos in ((data, False), (b"", True)):
                if self.local_response is None and self.reset is None:
                    self._body(d, chunk, eos)
            return
        # _body's not-exported case, for both frames: Envoy's wrapper continues each.
        d.eos_seen = True
        if d is self.req:
            self.ctx.request_bytes += len(data)
        entry = (d.body_cb, 0)
        self.actions += (entry, entry)
        d.forwarded_body += data
        d.complete = True

    def _deliver_body(self, d: _Direction, data: bytes, eos: bool) -> Action | int | None:
        plugin = self.plugin
        if (
            d.body_cb not in plugin.vm.funcs
            and not d.buffering
            and plugin.failed is None
            and self.ctx.generation == plugin.generation  # not stream_failed
        ):
            # Not exported: Envoy's wrapper continues and the filter never sees the buffer.
            self.actions.append((d.body_cb, 0))
            d.forwarded_body += data
            if eos:
                d.complete = True
            return _CONTINUE
        if not d.buffering:
            d.buffer = bytearray(data)
        elif isinstance(d.buffer, bytearray):
            d.buffer += data  # in place: the same buffer the filter's host calls edit
        else:
            d.buffer = bytearray(d.buffer) + data
        self.ctx.set_body(d.body_buffer, d.buffer)
        action = self._call(d, d.body_cb, len(d.buffer), 1 if eos else 0)
        if d.stopped or self.reset is not None:
            return action
        if action == _CONTINUE:
            self._forward_body(d, eos)
        else:
            d.buffering = True
        return action

    def _forward_body(self, d: _Direction, eos: bool) -> None:
        d.forwarded_body += d.buffer
        d.buffer = b""
        d.buffering = False
        self.ctx.set_body(d.body_buffer, None)
        if eos:
            d.complete = True

    def _trailers(self, d: _Direction, trailers: HeaderMap) -> Action | int | None:
        if d.headers is None or d.eos_seen:
            raise StreamStateError(f"{d.trailers_cb}: no headers yet, or the stream already ended")
        if self.done:
            raise StreamStateError("the stream is complete")
        if d.stopped or self.reset is not None:
            return None
        d.eos_seen = True
        d.trailers = trailers
        if d.headers_paused:
            d.held_trailers = trailers
            d.held_any = True
            return None
        return self._deliver_trailers(d)

    def _deliver_trailers(self, d: _Direction) -> Action | int | None:
        assert d.trailers is not None
        self.ctx.maps[d.trailers_map] = d.trailers
        action = self._call(d, d.trailers_cb, len(d.trailers))
        if d.stopped or self.reset is not None:
            return action
        if action == _CONTINUE:
            self.ctx.maps.pop(d.trailers_map, None)
            if d.buffering:
                self._forward_body(d, False)
            d.complete = True
        else:
            d.headers_paused = True  # held until continue_stream
        return action

    def _resume(self, d: _Direction) -> None:
        """``continue_stream``: forward what the pause held, delivering held data to the filter."""
        if d.stopped or self.reset is not None:
            return
        if d.headers_paused and not d.headers_forwarded:
            self._forward_headers(d, resumed=True)
            if d.held_any:
                data, eos = bytes(d.held), d.held_eos
                d.held = bytearray()
                if data or (eos and d.held_trailers is None):
                    self._deliver_body(d, data, eos and d.held_trailers is None)
                if d.held_trailers is not None and not d.stopped:
                    d.held_any = False
                    self._deliver_trailers(d)
                d.held_any = False
                if eos and not d.buffering and not d.headers_paused:
                    d.complete = True
        elif d.headers_paused and d.trailers is not None:  # paused from the trailers callback
            d.headers_paused = False
            if d.buffering:
                self._forward_body(d, False)
            self.ctx.maps.pop(d.trailers_map, None)
            d.complete = True
        elif d.buffering:
            self._forward_body(d, d.eos_seen and d.trailers is None)

    # -- deferred actions from host calls ------------------------------------------------------------
    def apply_deferred(self, actions: list[tuple[str, Any]]) -> None:
        """Apply what host calls recorded during the last call into the module (Envoy's
        after-VM-call actions), in order."""
        for kind, value in actions:
            if kind == "local_response" and self.local_response is None and not self.resp.headers_forwarded:
                self._send_local_reply(value)
            elif kind == "continue":
                # Envoy continueStream forgets the request maps and body whichever way continues.
                self.ctx.maps.pop(MapType.HTTP_REQUEST_HEADERS, None)
                self.ctx.maps.pop(MapType.HTTP_REQUEST_TRAILERS, None)
                self.ctx.set_body(BufferType.HTTP_REQUEST_BODY, None)
                self._resume(self.req if value == StreamType.HTTP_REQUEST else self.resp)
            elif kind == "close":
                self.reset = value
                self.req.stopped = self.resp.stopped = True

    def _replace_response(self, reply: LocalResponse) -> None:
        self.resp = _Direction(_RESPONSE)
        grpc = self._is_grpc()
        self.resp.headers = reply.header_map(grpc)
        self.resp.forwarded_body = bytearray(b"" if grpc else reply.body)
        self.resp.headers_forwarded = self.resp.complete = self.resp.stopped = True
        self.ctx.maps.pop(MapType.HTTP_RESPONSE_HEADERS, None)
        self.ctx.set_body(BufferType.HTTP_RESPONSE_BODY, None)

    def _is_grpc(self) -> bool:
        # Envoy Grpc::Common::isGrpcRequestHeaders: content-type application/grpc or application/grpc+*
        ct = self.request_headers.get("content-type") or ""
        return ct == "application/grpc" or ct.startswith("application/grpc+")

    def _send_local_reply(self, reply: LocalResponse) -> None:
        self.local_response = reply
        self.req.stopped = True
        self.ctx.maps.pop(MapType.HTTP_REQUEST_HEADERS, None)
        self.ctx.set_body(BufferType.HTTP_REQUEST_BODY, None)
        if self.resp.headers is not None:
            # Sent from the response side: the reply replaces the response on its way to the
            # client without running this filter's callbacks again (checked against Envoy).
            self._replace_response(reply)
            return
        # Sent from the request side: the reply runs through this filter's encoder side.
        grpc = self._is_grpc()
        body = b"" if grpc else reply.body
        self.resp = _Direction(_RESPONSE)
        self._headers(self.resp, reply.header_map(grpc), not body)
        if body and not self.resp.stopped and self.reset is None:
            self._body(self.resp, body, True)

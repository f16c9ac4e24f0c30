"""One HTTP/2 connection of the lean unary gRPC server: libnghttp2 (through ngh2) does HTTP/2, this does gRPC.

The HTTP/2 engine (framing, HPACK, SETTINGS, PING, flow control both ways, stream limits, GOAWAY)
is libnghttp2 behind ngh2's sans-I/O ``Connection``; this module feeds it bytes from the socket,
turns its events into unary calls and writes its output. A call's handler runs inline on the event
loop, with no thread hop; a handler that must wait returns an awaitable instead, and the call then
ends when it does or when its ``grpc-timeout`` passes.

Writes are coalesced: output is written once ``flush_every`` responses wait, else after one more pass
of the event loop. Writing every response at once (or once per read batch) makes Envoy, the load
generator and this server run in lockstep on a small machine; measured in issue 13.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import ngh2
from ngh2 import Setting

from envoykit.core.logs import get_logger
from envoykit.core.unary.wire import (
    OK_TRAILERS,
    RESPONSE_HEADERS,
    GrpcStatusError,
    StatusCode,
    frame,
    parse_timeout,
    status_trailers,
)

log = get_logger("unary")

Reply = Any  # a serialised message (bytes), or a message with SerializeToString()
Handler = Callable[[Any], "Reply | Awaitable[Reply]"]


@dataclass(frozen=True, slots=True)
class UnaryMethod:
    """One unary RPC.

    Attributes:
        path: ``/package.Service/Method``.
        request_type: the request message class (upb, from ``xds-protos``); parsed with ``FromString``.
        handler: called inline with the parsed request; returns the response message, its serialised
            bytes (for pre-serialised common answers), or an awaitable of either (for work that
            waits: offloads, network I/O). Raise :class:`GrpcStatusError` to end with a status.
    """

    path: str
    request_type: Any
    handler: Handler


@dataclass(frozen=True)
class Limits:
    """Per-connection limits (defaults in line with grpcio's where it has one).

    Attributes:
        max_concurrent_streams: SETTINGS_MAX_CONCURRENT_STREAMS; streams above it are refused by
            the HTTP/2 engine (RST_STREAM REFUSED_STREAM).
        max_receive_message_bytes: a larger request ends with RESOURCE_EXHAUSTED.
        max_send_message_bytes: a larger response ends with RESOURCE_EXHAUSTED.
        initial_window_size: SETTINGS_INITIAL_WINDOW_SIZE (bytes) for each stream.
        max_header_list_size: SETTINGS_MAX_HEADER_LIST_SIZE (bytes).
        flush_every: write once this many responses wait (see the module docstring).
    """

    max_concurrent_streams: int = 1000
    max_receive_message_bytes: int = 4 * 1024 * 1024
    max_send_message_bytes: int = 4 * 1024 * 1024
    initial_window_size: int = 1024 * 1024
    max_header_list_size: int = 16 * 1024
    flush_every: int = 4


class Dispatch:
    """What all connections of one server share: the methods, limits and the header-block cache.

    Envoy sends the same header block for every call of a method (only the stream id differs, and it
    is not a header), so the parsed form of a block is cached by the block itself.
    """

    _CACHE_MAX = 512

    def __init__(self, methods: dict[str, UnaryMethod], limits: Limits) -> None:
        self.methods = {m.path.encode(): m for m in methods.values()}
        self.limits = limits
        self.settings = {
            Setting.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            Setting.INITIAL_WINDOW_SIZE: limits.initial_window_size,
            Setting.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
        }
        self.config = ngh2.Configuration(max_inbound_header_list_size=limits.max_header_list_size)
        self._cache: dict[tuple[Any, ...], tuple[UnaryMethod | None, float | None, StatusCode, str]] = {}

    def route(self, headers: tuple[Any, ...]) -> tuple[UnaryMethod | None, float | None, StatusCode, str]:
        """``(method, timeout_s, status, message)`` for a request's headers; status OK when callable."""
        hit = self._cache.get(headers)
        if hit is not None:
            return hit
        parsed = self._parse(headers)
        if len(self._cache) >= self._CACHE_MAX:
            self._cache.clear()
        self._cache[headers] = parsed
        return parsed

    def _parse(self, headers: tuple[Any, ...]) -> tuple[UnaryMethod | None, float | None, StatusCode, str]:
        path = ctype = verb = b""
        timeout: float | None = None
        encoding = b"identity"
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b":method":
                verb = value
            elif name == b"content-type":
                ctype = value
            elif name == b"grpc-timeout":
                try:
                    timeout = parse_timeout(value)
                except ValueError:
                    return (
                        None,
                        None,
                        StatusCode.INTERNAL,
                        f"bad grpc-timeout {value.decode(errors='replace')}",
                    )
            elif name == b"grpc-encoding":
                encoding = value
        if verb != b"POST" or not (ctype == b"application/grpc" or ctype.startswith(b"application/grpc+")):
            return None, None, StatusCode.UNKNOWN, "not a gRPC request"  # answered HTTP 415
        if encoding != b"identity":
            return None, None, StatusCode.UNIMPLEMENTED, f"grpc-encoding {encoding.decode()} not supported"
        method = self.methods.get(path)
        if method is None:
            return None, None, StatusCode.UNIMPLEMENTED, f"unknown method {path.decode(errors='replace')}"
        return method, timeout, StatusCode.OK, ""


class _Call:
    __slots__ = ("body", "deadline", "done", "method", "task")

    def __init__(self, method: UnaryMethod, deadline: float | None) -> None:
        self.method = method
        self.deadline = deadline
        self.body: bytes | bytearray = b""
        self.done = False  # answered; later DATA is dropped
        self.task: asyncio.Task[None] | None = None


class UnaryConnection(asyncio.Protocol):
    """An ``asyncio.Protocol`` serving one client connection (see the module docstring).

    Args:
        dispatch: the shared methods and limits.
        registry: the server's set of live connections (this adds and removes itself).
    """

    def __init__(self, dispatch: Dispatch, registry: set[UnaryConnection]) -> None:
        self._d = dispatch
        self._limits = dispatch.limits
        self._registry = registry
        self._calls: dict[int, _Call] = {}
        self._unflushed = 0
        self._flush_pending = False
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._h2 = ngh2.Connection(ngh2.Role.SERVER, dispatch.config)
        self._transport: asyncio.Transport | None = None

    # --- transport callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        self._registry.add(self)
        self._h2.initiate_connection(self._d.settings)
        self._write()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._registry.discard(self)
        for call in self._calls.values():
            if call.task is not None:
                call.task.cancel()
        self._calls.clear()

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()  # a client that does not read stops being read

    def resume_writing(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        h2 = self._h2
        try:
            h2.receive_data(data)
        except ngh2.NGH2Error as exc:
            self._abort(exc)
            return
        events: list[Any] = h2.events()  # typed by isinstance-free dispatch below
        for ev in events:
            t = type(ev)
            if t is ngh2.DataReceived:
                self._on_data(ev.stream_id, ev.data, ev.end_stream)
            elif t is ngh2.RequestReceived:
                self._on_request(ev.stream_id, ev.headers, ev.end_stream)
            elif t is ngh2.StreamClosed or t is ngh2.StreamReset:
                self._forget(ev.stream_id)
            elif t is ngh2.TrailersReceived:
                self._on_data(ev.stream_id, b"", True)
            elif t is ngh2.ConnectionClosed:
                self._write()
                self._close()
                return
        self._after_batch()

    # --- calls ----------------------------------------------------------------------------------

    def _on_request(self, sid: int, headers: tuple[Any, ...], end_stream: bool) -> None:
        method, timeout, code, message = self._d.route(headers)
        if method is None:
            if code == StatusCode.UNKNOWN:
                self._h2.send_response(sid, ((b":status", b"415"),), end_stream=True)
            else:
                self._trailers_only(sid, code, message)
            self._unflushed += 1
            if not end_stream:
                self._calls[sid] = _done_call()
            return
        call = _Call(method, None if timeout is None else self._loop.time() + timeout)
        self._calls[sid] = call
        if end_stream:
            self._dispatch(sid, call)

    def _on_data(self, sid: int, data: bytes, end_stream: bool) -> None:
        call = self._calls.get(sid)
        if call is None or call.done:
            return
        if data:
            if call.body:
                if not isinstance(call.body, bytearray):
                    call.body = bytearray(call.body)
                call.body += data
            else:
                call.body = data
            body = call.body
            if len(body) >= 5 and int.from_bytes(body[1:5], "big") > self._limits.max_receive_message_bytes:
                self._fail(sid, call, StatusCode.RESOURCE_EXHAUSTED, "request message larger than the limit")
                return
        if end_stream:
            self._dispatch(sid, call)

    def _dispatch(self, sid: int, call: _Call) -> None:
        body = call.body
        call.body = b""
        if len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5], "big") != len(body) - 5:
            if len(body) >= 5 and body[0] == 1:
                self._fail(sid, call, StatusCode.UNIMPLEMENTED, "compressed messages are not supported")
            else:
                self._fail(sid, call, StatusCode.INTERNAL, "a unary call takes exactly one request message")
            return
        method = call.method
        try:
            request = method.request_type.FromString(bytes(body[5:]) if type(body) is bytearray else body[5:])
        except Exception:
            self._fail(sid, call, StatusCode.INTERNAL, "cannot parse the request message")
            return
        if call.deadline is not None and self._loop.time() >= call.deadline:
            self._fail(sid, call, StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before the call ran")
            return
        try:
            reply = method.handler(request)
        except GrpcStatusError as exc:
            self._fail(sid, call, exc.code, exc.message)
            return
        except Exception:
            log.exception("handler failed", method=method.path)
            self._fail(sid, call, StatusCode.INTERNAL, "the handler failed")
            return
        if type(reply) is bytes:
            self._respond(sid, call, reply)
        elif inspect.isawaitable(reply):
            call.task = self._loop.create_task(self._await_reply(sid, call, reply))
        else:
            self._respond(sid, call, reply.SerializeToString())

    async def _await_reply(self, sid: int, call: _Call, reply: Awaitable[Reply]) -> None:
        try:
            if call.deadline is None:
                result = await reply
            else:
                async with asyncio.timeout_at(call.deadline):
                    result = await reply
        except TimeoutError:
            self._fail(sid, call, StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        except asyncio.CancelledError:
            return  # the client reset the stream or the connection went away
        except GrpcStatusError as exc:
            self._fail(sid, call, exc.code, exc.message)
        except Exception:
            log.exception("handler failed", method=call.method.path)
            self._fail(sid, call, StatusCode.INTERNAL, "the handler failed")
        else:
            self._respond(sid, call, result if type(result) is bytes else result.SerializeToString())
        finally:
            call.task = None
        self._after_batch()

    def _respond(self, sid: int, call: _Call, payload: bytes) -> None:
        if self._closed or call.done:
            return
        if len(payload) > self._limits.max_send_message_bytes:
            self._fail(sid, call, StatusCode.RESOURCE_EXHAUSTED, "response message larger than the limit")
            return
        call.done = True
        h2 = self._h2
        try:
            h2.send_response(sid, RESPONSE_HEADERS)
            h2.send_data(sid, frame(payload))
            h2.send_trailers(sid, OK_TRAILERS)
        except ngh2.NGH2Error:
            return  # the stream was reset meanwhile
        self._unflushed += 1

    def _fail(self, sid: int, call: _Call, code: StatusCode, message: str) -> None:
        if self._closed or call.done:
            return
        call.done = True
        self._trailers_only(sid, code, message)
        self._unflushed += 1

    def _trailers_only(self, sid: int, code: StatusCode, message: str) -> None:
        with contextlib.suppress(ngh2.NGH2Error):  # the stream was reset meanwhile
            self._h2.send_response(
                sid, RESPONSE_HEADERS[:2] + status_trailers(code, message), end_stream=True
            )

    def _forget(self, sid: int) -> None:
        call = self._calls.pop(sid, None)
        if call is not None and call.task is not None:
            call.task.cancel()

    # --- output ---------------------------------------------------------------------------------

    def _after_batch(self) -> None:
        if self._unflushed >= self._limits.flush_every:
            self._write()
        elif not self._flush_pending and not self._closed:
            self._flush_pending = True
            self._loop.call_soon(self._flush_next_pass)

    def _flush_next_pass(self) -> None:
        self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_pending = False
        self._write()

    def _write(self) -> None:
        self._unflushed = 0
        if self._closed or self._transport is None:
            return
        try:
            if self._h2.want_write:
                out = self._h2.data_to_send()
                if out:
                    self._transport.write(out)
            if not self._h2.want_read and not self._h2.want_write:
                self._close()  # GOAWAY exchanged and every stream done
        except ngh2.NGH2Error as exc:
            self._abort(exc)

    def _abort(self, exc: Exception) -> None:
        log.info("connection closed on a protocol error", error=str(exc))
        try:
            out = self._h2.data_to_send()  # the GOAWAY libnghttp2 queued, if any
            if out and self._transport is not None:
                self._transport.write(out)
        except ngh2.NGH2Error:
            pass
        self._close()

    def _close(self) -> None:
        if not self._closed and self._transport is not None:
            self._closed = True
            self._transport.close()

    # --- drain ----------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Calls received and not answered yet."""
        return sum(1 for c in self._calls.values() if not c.done)

    def shutdown_notice(self) -> None:
        """First step of a graceful close: GOAWAY with the highest stream id (RFC 9113 §6.8)."""
        if not self._closed:
            try:
                self._h2.send_shutdown_notice()
            except ngh2.NGH2Error:
                return
            self._write()

    def goaway(self) -> None:
        """Second step: GOAWAY naming the last stream this connection will serve; new streams are refused."""
        if not self._closed:
            try:
                self._h2.send_goaway(0)
            except ngh2.NGH2Error:
                return
            self._write()

    def close(self) -> None:
        """Close now (after the drain's grace); calls still in flight are cancelled."""
        self._write()
        self._close()


def _done_call() -> _Call:
    call = _Call(UnaryMethod("", None, lambda _: b""), None)
    call.done = True
    return call

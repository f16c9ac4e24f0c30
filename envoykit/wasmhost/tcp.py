"""A TCP connection through a network filter, as Envoy's Wasm network filter drives it.

Envoy (``Context::onNewConnection`` / ``onData`` / ``onWrite`` / ``onEvent``): the context is
created on the new connection; downstream data goes to ``proxy_on_downstream_data``, upstream
data to ``proxy_on_upstream_data`` (end of stream there also counts as the upstream closing);
the client closing runs ``proxy_on_downstream_connection_close`` (peer type) and then ends the
context: ``proxy_on_done``, ``proxy_on_log``, ``proxy_on_delete`` (``onCloseTCP``); the upstream
closing first only runs ``proxy_on_upstream_connection_close``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from envoykit.wasmhost.abi import Action, BufferType, PeerType, StreamType
from envoykit.wasmhost.errors import FilterFailure, StreamStateError

if TYPE_CHECKING:
    from envoykit.wasmhost.plugin import Plugin
    from envoykit.wasmhost.types import LogRecord

_connection_ids = itertools.count(1)


class TcpStream:
    """One downstream connection through the network filter (see :meth:`Plugin.tcp_stream`).

    Attributes:
        upstream_data: bytes the filter let through towards the upstream.
        downstream_data: bytes the filter let through towards the client.
        closed: which side the filter closed with ``proxy_close_stream``, if any.
        failure: the trap that failed the VM during this connection (Envoy then closed it).
    """

    def __init__(self, plugin: Plugin, properties: dict[str, Any] | None = None) -> None:
        self.plugin = plugin
        self.ctx = plugin.new_context("tcp", self)
        self.ctx.properties.update(properties or {})
        self.ctx.connection_id = next(_connection_ids)
        self.upstream_data = bytearray()
        self.downstream_data = bytearray()
        self._held = {BufferType.DOWNSTREAM_DATA: bytearray(), BufferType.UPSTREAM_DATA: bytearray()}
        self.paused = False
        self.closed: StreamType | None = None
        self.actions: list[tuple[str, Action | int]] = []
        self._downstream_closed = False
        self._upstream_closed = False
        self.done = False
        self.aborted = False  # closed by Envoy for a failed VM
        self.failure: FilterFailure | None = None

    @property
    def id(self) -> int:
        """The connection's context id."""
        return self.ctx.id

    def _call(self, name: str, *args: int) -> Action | int:
        if self.plugin.stream_failed(self.ctx):
            return self._failed_vm()
        try:
            result = self.plugin.call(self.ctx, name, self.ctx.id, *args, default=0)
        except FilterFailure as failure:
            self.failure = failure
            self.ctx.take_deferred()
            action: Action | int = self._failed_vm()
        else:
            action = Action.of(int(result)) if result is not None else Action.CONTINUE
        self.actions.append((name, action))
        return action

    def _failed_vm(self) -> Action:
        """The VM failed (now or earlier): Envoy's ``Context::failStream`` closes the client
        connection without flushing (``NoFlush``): nothing more goes either way and the module is
        not called again (observed in Envoy 1.40, ``tcp_panic.yaml``). With FAIL_OPEN, later
        connections go through as if the filter were not there."""
        if self.plugin.failure_policy == "FAIL_OPEN" and self.failure is None:
            return Action.CONTINUE
        self.aborted = True
        self._held[BufferType.DOWNSTREAM_DATA].clear()
        self._held[BufferType.UPSTREAM_DATA].clear()
        if not self.done:
            self.done = True
            self.plugin.delete_context(self.ctx)
        return Action.PAUSE

    def connect(self) -> Action | int:
        """A new connection: create the context and run ``proxy_on_new_connection``."""
        if self.ctx.created:
            raise StreamStateError("the connection is already open")
        if not self.plugin.stream_failed(self.ctx):
            self.plugin.create_context(self.ctx)
        else:
            self.ctx.created = True
        return self._call("proxy_on_new_connection")

    def _data(self, kind: BufferType, cb: str, data: bytes, eos: bool, out: bytearray) -> Action | int:
        if not self.ctx.created:
            self.connect()
        if self.aborted:
            return Action.PAUSE  # the connection was closed for a failed VM: nothing moves
        if self.done:
            raise StreamStateError("the connection is closed")
        buf = self._held[kind]
        buf += data
        self.ctx.set_body(kind, buf)
        try:
            action = self._call(cb, len(buf), int(eos))
        finally:
            self.ctx.set_body(kind, None)
        if self.aborted:
            return action
        if action == Action.CONTINUE:
            out += buf
            buf.clear()
        return action

    def send_downstream_data(self, data: bytes | str, end_of_stream: bool = False) -> Action | int:
        """Client → upstream bytes (``proxy_on_downstream_data``); held while the filter pauses."""
        raw = data.encode() if isinstance(data, str) else data
        return self._data(BufferType.DOWNSTREAM_DATA, "proxy_on_downstream_data", raw, end_of_stream,
                          self.upstream_data)  # fmt: skip

    def send_upstream_data(self, data: bytes | str, end_of_stream: bool = False) -> Action | int:
        """Upstream → client bytes (``proxy_on_upstream_data``); ``end_of_stream`` closes the upstream."""
        raw = data.encode() if isinstance(data, str) else data
        action = self._data(BufferType.UPSTREAM_DATA, "proxy_on_upstream_data", raw, end_of_stream,
                            self.downstream_data)  # fmt: skip
        if end_of_stream:
            self.close_upstream(PeerType.UNKNOWN)
        return action

    def close_downstream(self, peer: PeerType = PeerType.REMOTE) -> None:
        """The client side closed: ``proxy_on_downstream_connection_close``, then the end of the
        context (Envoy ``onDownstreamConnectionClose`` calls ``onCloseTCP`` unconditionally)."""
        if self._downstream_closed or self.done:
            return
        self._downstream_closed = True
        self._call_close("proxy_on_downstream_connection_close", peer)
        self._finish()

    def close_upstream(self, peer: PeerType = PeerType.UNKNOWN) -> None:
        """The upstream side closed: ``proxy_on_upstream_connection_close`` (ends the context only
        if the client side had closed)."""
        if self._upstream_closed or self.done:
            return
        self._upstream_closed = True
        self._call_close("proxy_on_upstream_connection_close", peer)
        if self._downstream_closed:
            self._finish()

    def _call_close(self, name: str, peer: PeerType) -> None:
        self._call(name, int(peer))
        self.actions.pop()  # close callbacks return nothing

    def _finish(self) -> None:
        if self.done:
            return
        for name in ("proxy_on_done", "proxy_on_log", "proxy_on_delete"):
            if not self.plugin.stream_failed(self.ctx):
                self._call(name)
                self.actions.pop()
        self.done = True
        if not self.ctx.deleted:
            self.plugin.delete_context(self.ctx)

    def apply_deferred(self, actions: list[tuple[str, Any]]) -> None:
        """Continue (re-deliver held downstream data) or close, after the module returns."""
        for kind, value in actions:
            if kind == "close":
                self.closed = value
            elif kind == "continue" and value == StreamType.DOWNSTREAM:
                held = self._held[BufferType.DOWNSTREAM_DATA]
                self.upstream_data += held
                held.clear()


@dataclass
class TcpOutcome:
    """What one TCP connection through the filter produced.

    Attributes:
        upstream_received: bytes the upstream got.
        client_received: bytes the client got back.
        logs: the filter's log lines during the connection.
        failure: the trap that failed the VM during the connection (Envoy closed it).
    """

    upstream_received: bytes = b""
    client_received: bytes = b""
    logs: list[LogRecord] = field(default_factory=list)
    failure: FilterFailure | None = None


def run_tcp_exchange(plugin: Plugin, messages: list[bytes]) -> TcpOutcome:
    """One connection through Envoy's ``tcp_proxy`` to an echo upstream, as Envoy sequences it.

    The client sends each message and waits for its echo, then closes. Observed in Envoy 1.40
    (and pinned by the differential tests): each message goes through ``on_downstream_data``,
    its echo through ``on_upstream_data``; the client's close arrives as empty downstream data
    with end of stream, the upstream's as empty upstream data with end of stream (then
    ``on_upstream_connection_close`` with peer UNKNOWN); Envoy then closes the client connection
    itself (``on_downstream_connection_close`` with peer LOCAL) and the context ends. Bytes the
    filter adds in the callback that sees the client's end of stream reach the upstream before
    the FIN; their echo comes back with the upstream's end of stream, to a client already gone
    (``tcp_close.wat``).
    """
    first_log = len(plugin.logs)
    conn = plugin.tcp_stream()
    conn.connect()
    sent = 0
    for message in messages:
        conn.send_downstream_data(message)
        reply = bytes(conn.upstream_data[sent:])  # the echo upstream returns what it received
        sent = len(conn.upstream_data)
        if reply:
            conn.send_upstream_data(reply)
    conn.send_downstream_data(b"", end_of_stream=True)
    client_received = bytes(conn.downstream_data)  # the client is gone: later bytes never reach it
    # What the filter wrote at close time went upstream before the FIN; the echo of it comes
    # back in one read with the upstream's FIN: one on_upstream_data with end_of_stream.
    conn.send_upstream_data(bytes(conn.upstream_data[sent:]), end_of_stream=True)
    conn.close_downstream(PeerType.LOCAL)
    return TcpOutcome(bytes(conn.upstream_data), client_received, plugin.logs[first_log:], conn.failure)

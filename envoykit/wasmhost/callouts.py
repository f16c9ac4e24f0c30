"""Callouts the filter made, waiting for the test to answer them.

``proxy_http_call`` records an :class:`HttpCall`; the test calls :meth:`HttpCall.respond` (or
:meth:`HttpCall.fail`) and the host runs ``proxy_on_http_call_response`` on the root context,
as Envoy does (``Context::onHttpCallSuccess`` / ``onHttpCallFailure``: a failure has 0 headers and
``proxy_get_status`` gives BROKEN_CONNECTION with message ``"reset"``). gRPC calls and streams
are :class:`GrpcCall`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from envoykit.wasmhost.headermap import HeaderMap, HeadersLike

if TYPE_CHECKING:
    from envoykit.wasmhost.plugin import Plugin


@dataclass
class CalloutResponse:
    """What ``proxy_on_http_call_response`` exposes through the HTTP-call maps and buffer."""

    headers: HeaderMap
    body: bytes
    trailers: HeaderMap | None  # None: the answer had no trailers (Envoy's map pointer is null)


@dataclass(eq=False)
class HttpCall:
    """One ``proxy_http_call``.

    Attributes:
        token: the call id the module got (4, 8, 12...).
        cluster: the upstream (Envoy cluster name) asked for.
        headers, body, trailers: the request as the filter built it.
        timeout_ms: the timeout asked for (0 = none).
        context_id: the context that was effective when the call was made.
    """

    plugin: Plugin
    token: int
    cluster: str
    headers: HeaderMap
    body: bytes
    trailers: HeaderMap | None  # None: the answer had no trailers (Envoy's map pointer is null)
    timeout_ms: int
    context_id: int
    answered: bool = False

    @property
    def method(self) -> str:
        """``:method`` of the call."""
        return self.headers.get(":method") or ""

    @property
    def path(self) -> str:
        """``:path`` of the call."""
        return self.headers.get(":path") or ""

    def respond(
        self,
        status: int = 200,
        headers: HeadersLike = None,
        body: bytes | str = b"",
        trailers: HeadersLike = None,
        *,
        upstream_service_time_ms: int | None = 0,
    ) -> None:
        """Answer the call: runs ``proxy_on_http_call_response`` on the root context.

        The headers are built as Envoy's async client delivers them: ``:status`` first, the given
        headers, ``content-length`` for a non-empty body, then the router's
        ``x-envoy-upstream-service-time`` (milliseconds; ``None`` leaves it out), which Envoy adds
        to callout responses (checked by the differential tests).

        Raises:
            StreamStateError: the call was answered already.
            FilterFailure: the callback trapped.
        """
        hdrs = HeaderMap([(":status", str(status))])
        for k, v in HeaderMap(headers).pairs():
            hdrs.add(k, v)
        data = body.encode() if isinstance(body, str) else body
        if data and "content-length" not in hdrs:
            hdrs.add("content-length", str(len(data)))
        if upstream_service_time_ms is not None:
            hdrs.add("x-envoy-upstream-service-time", str(upstream_service_time_ms))
        trl = HeaderMap(trailers)
        self.plugin.deliver_http_response(self, CalloutResponse(hdrs, data, trl if len(trl) else None))

    def time_out(self) -> None:
        """Answer as Envoy does when the call's timeout expires: the router's local reply
        ``504`` with body ``upstream request timeout`` (``content-length``, ``content-type:
        text/plain``), delivered as a response, not a failure (checked by the differential tests)."""
        body = b"upstream request timeout"
        hdrs = HeaderMap(
            [(":status", "504"), ("content-length", str(len(body))), ("content-type", "text/plain")]
        )
        self.plugin.deliver_http_response(self, CalloutResponse(hdrs, body, None))

    def fail(self) -> None:
        """Fail the call as a reset connection (0 headers, status BROKEN_CONNECTION "reset")."""
        self.plugin.deliver_http_response(self, None)


@dataclass(eq=False)
class GrpcCall:
    """One ``proxy_grpc_call`` (``stream=False``) or ``proxy_grpc_stream`` (``stream=True``)."""

    plugin: Plugin
    token: int
    cluster: str
    service: str
    method: str
    metadata: HeaderMap
    messages: list[bytes] = field(default_factory=list)
    timeout_ms: int = 0
    stream: bool = False
    local_closed: bool = False
    cancelled: bool = False

    def respond(
        self, message: bytes, *, initial_metadata: HeadersLike = None, trailing_metadata: HeadersLike = None
    ) -> None:
        """Deliver a unary answer: initial metadata, the message, trailing metadata, close(0)."""
        self.plugin.deliver_grpc(self, initial_metadata=initial_metadata, message=message,
                                 trailing_metadata=trailing_metadata, close_status=0)  # fmt: skip

    def send(self, message: bytes) -> None:
        """Deliver one message on a stream (``proxy_on_grpc_receive``)."""
        self.plugin.deliver_grpc(self, message=message)

    def close(self, status: int = 0, message: str = "") -> None:
        """Close with a gRPC status (``proxy_on_grpc_close``; ``proxy_get_status`` gives it)."""
        self.plugin.deliver_grpc(self, close_status=status, close_message=message)

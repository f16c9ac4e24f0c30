"""One whole request/response through the filter, the way an HTTP/1.1 client and Envoy make it.

:func:`run_exchange` is what ``envoykit wasm run`` prints and what ``envoykit wasm diff`` compares
with real Envoy. The request headers get what Envoy's connection manager adds before filters
(``:scheme``, ``x-forwarded-proto: http``; no ``x-request-id`` since the diff turns it off), the
upstream answer is given by the case, and callouts are answered from a table by cluster.

Envoy's HTTP/1 codec hands a body with a known length to the filters as one data frame without
end of stream, then an empty frame with end of stream; a 204 response loses its
``content-length``. Both are reproduced here (checked by the differential tests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from envoykit.wasmhost.callouts import HttpCall
from envoykit.wasmhost.errors import FilterFailure
from envoykit.wasmhost.headermap import _KEYS, HeaderMap, first, invalid_header
from envoykit.wasmhost.headermap import _key as key
from envoykit.wasmhost.http import HttpStream
from envoykit.wasmhost.plugin import Plugin
from envoykit.wasmhost.types import LocalResponse, LogRecord


@dataclass
class HttpRequest:
    """A client request. ``headers`` are the client's own (no pseudo-headers)."""

    method: str = "GET"
    path: str = "/"
    authority: str = "example.com"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    added_by_filters: list[tuple[str, str]] = field(default_factory=list)  # by filters before this one
    buffered_by_filters: bool = False  # a buffer filter before this one: the body in one data frame

    def envoy_headers(self) -> HeaderMap:
        """The request headers as the first filter sees them behind Envoy's HTTP/1 codec and HCM."""
        # Built as entries (one list, no per-header method calls): the pseudo-headers, the
        # client's headers (content-length last when there is a body: Envoy's ``setCopy``), then
        # x-forwarded-proto and what a header_mutation filter ahead appends.
        entries = [(b":authority", self.authority.encode()), (b":path", self.path.encode()),
                   (b":method", self.method.encode())]  # fmt: skip
        client = []
        body = self.body
        for k, v in self.headers:
            name = _KEYS.get(k) or key(k)
            if name[:1] == b":":  # never from an HTTP/1 client; kept in front
                entries.append((name, v.encode()))
            elif not body or name != b"content-length":
                client.append((name, v.encode()))
        entries.append((b":scheme", b"http"))
        entries += client
        if body:
            entries.append((b"content-length", b"%d" % len(body)))
        entries.append((b"x-forwarded-proto", b"http"))
        hmap = HeaderMap.__new__(HeaderMap)  # HeaderMap.of_entries, inline
        hmap._entries, hmap._encoded = entries, None
        if self.added_by_filters:
            for k, v in self.added_by_filters:
                hmap.add(k, v)  # a header_mutation filter ahead appends (APPEND_IF_EXISTS_OR_ADD)
        return hmap


@dataclass
class HttpResponse:
    """An upstream (or callout) answer; a callout answer ``delay_ms`` late (at least the call's
    timeout) becomes Envoy's timeout answer (:meth:`HttpCall.time_out`)."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    delay_ms: int = 0

    def envoy_headers(self) -> HeaderMap:
        """The response headers as the filter sees them from an HTTP/1.1 upstream."""
        entries = [(b":status", str(self.status).encode())]
        for k, v in self.headers:
            name = _KEYS.get(k) or key(k)
            if name != b"content-length":
                entries.append((name, v.encode()))
        if self.status != 204:  # Envoy's HTTP/1 codec drops it from a 204 (RFC 9110 section 8.6)
            entries.append((b"content-length", b"%d" % len(self.body)))
        hmap = HeaderMap.__new__(HeaderMap)  # HeaderMap.of_entries, inline
        hmap._entries, hmap._encoded = entries, None
        return hmap


@dataclass
class Outcome:
    """What the client and the upstream saw, and what the filter logged.

    Attributes:
        status: status the client got (0 if the stream was reset or stalled).
        headers: response headers the client got (before Envoy's own ``date``/``server``; with
            the HTTP/1 codec's ``content-length: 0`` for an empty body).
        body: response body the client got.
        upstream_headers / upstream_body: the request as it reached the upstream (``None`` if
            its headers never left; a request stopped after its headers went upstream shows
            the headers and the body forwarded so far).
        upstream_complete: the whole request reached the upstream, which answered.
        local_response: the filter's local reply, if any.
        reset: the stream was reset by ``proxy_close_stream``.
        stalled: the filter paused and nothing continued it (Envoy would time out).
        logs: the filter's log lines during this exchange.
        failure: the trap (or fuel / memory exhaustion) that failed the VM during this exchange;
            the client then got the plugin's failure policy's answer (Envoy's 503).
        actions: (callback, returned action) for each stream callback that ran.
    """

    status: int = 0
    headers: HeaderMap = field(default_factory=HeaderMap)
    body: bytes = b""
    upstream_headers: HeaderMap | None = None
    upstream_body: bytes | None = None
    upstream_complete: bool = False
    local_response: LocalResponse | None = None
    reset: bool = False
    stalled: bool = False
    logs: list[LogRecord] = field(default_factory=list)
    actions: list[tuple[str, int]] = field(default_factory=list)
    failure: FilterFailure | None = None


def http1_read(headers: HeaderMap, body: bytes) -> tuple[bytes, bool]:
    """What an HTTP/1.1 peer reads of ``body`` sent under ``headers``: ``content-length`` bytes.

    Returns (bytes read, whether that many arrived). A filter that changes a body without fixing
    ``content-length`` truncates it for the peer, or leaves the peer waiting; Envoy sends what the
    filter produced and the peer's parser decides (checked by the differential tests).
    """
    length = first(headers._entries, b"content-length")
    if length is None or not length.isdigit():
        return body, True
    n = int(length)
    return body[:n], len(body) >= n


# Methods Envoy's HTTP/1 codec sends without a body and without "content-length: 0".
BODILESS_METHODS = frozenset({b"GET", b"HEAD", b"DELETE", b"TRACE", b"CONNECT"})


def http1_upstream_headers(headers: HeaderMap, body: bytes) -> HeaderMap:
    """The request headers as Envoy's HTTP/1 codec writes them upstream: a request that ends with
    its headers gets ``content-length: 0`` unless its method is bodiless (a bodiless POST, PUT or
    PATCH; not GET or DELETE, observed in Envoy 1.40). The filter never sees that header."""
    if body or first(headers._entries, b":method") in BODILESS_METHODS:
        return headers
    if (
        first(headers._entries, b"content-length") is not None
        or first(headers._entries, b"transfer-encoding") is not None
    ):
        return headers
    out = HeaderMap(headers)
    out.add("content-length", "0")
    return out


def _client_view(out: Outcome, headers: HeaderMap, body: bytes, head: bool = False) -> None:
    status = first(headers._entries, b":status") or b""
    if not status.isdigit():
        # Envoy's HTTP/1 codec refuses to encode it and answers with its own 502.
        text = b"missing required header: :status"
        out.status, out.body = 502, text
        out.headers = HeaderMap(
            [(":status", "502"), ("content-length", str(len(text))), ("content-type", "text/plain")]
        )
        return
    length = first(headers._entries, b"content-length")  # http1_read, inline
    if head:
        # A response to HEAD: Envoy's downstream codec writes the headers as they are (the
        # content-length of the body a GET would get, no "content-length: 0" added) and no body.
        out.status, out.headers, out.body = int(status), headers, b""
        return
    read = body
    if length is not None and length.isdigit():
        n = int(length)
        if len(body) < n:
            out.reset = True  # the client sees the connection end before the promised body
            return
        read = body[:n]
    out.status, out.headers, out.body = int(status), headers, read
    if not body and length is None and out.status not in (204, 304):
        # Envoy's HTTP/1 codec writes "content-length: 0" for a response without a body.
        out.headers = HeaderMap(headers)
        out.headers.add("content-length", "0")


CalloutAnswer = HttpResponse | Callable[[HttpCall], HttpResponse | None] | None
_NO_CALLOUTS: Mapping[str, CalloutAnswer] = MappingProxyType({})


def _answer_callouts(plugin: Plugin, callouts: Mapping[str, CalloutAnswer]) -> FilterFailure | None:
    """Answer every pending callout; a trap in ``on_http_call_response`` (root context) fails the
    VM and is returned: the stream that waited for the answer is never continued (Envoy leaves
    it paused until the client gives up, observed with ``panic_callout.yaml``)."""
    while plugin.http_calls and plugin.failed is None:
        call = plugin.http_calls[0]
        answer = callouts.get(call.cluster)
        resp = answer(call) if callable(answer) else answer
        try:
            if resp is None:
                call.fail()
            elif call.timeout_ms and resp.delay_ms >= call.timeout_ms:
                call.time_out()
            else:
                call.respond(resp.status, resp.headers, resp.body)
        except FilterFailure as failure:
            plugin.http_calls.clear()
            return failure
    return None


def run_exchange(
    plugin: Plugin,
    request: HttpRequest,
    upstream: HttpResponse,
    *,
    callouts: Mapping[str, CalloutAnswer] | None = None,
    properties: dict[str, object] | None = None,
) -> Outcome:
    """Send ``request`` through the filter, answer with ``upstream``, and end the stream.

    Callouts the filter makes are answered right away from ``callouts`` (cluster → response, a
    function of the call, or ``None`` for a reset); an unlisted cluster fails as a reset.

    A callback that traps, loops or runs out of memory fails the VM as in Envoy: the client gets
    the failure policy's answer (a 503, empty body) and ``Outcome.failure`` names the trap.
    """
    table = callouts or _NO_CALLOUTS
    first_log = len(plugin.logs)
    stream = HttpStream(plugin, properties)  # Plugin.http_stream(**properties)
    # The stream's private steps are called directly (what its public send_* methods do after
    # their argument checks, which hold here): one Python frame less per event, on the hot path.
    body = request.body
    if isinstance(body, str):
        body = body.encode()
    req = stream.req
    # Callouts are answered once the direction's frames are in: over the network the body is
    # buffered in Envoy before a callout's answer comes back (checked by the differential tests).
    stream._headers(req, request.envoy_headers(), not body)  # send_request_headers(copy=False)
    if body:
        if request.buffered_by_filters:
            # Envoy's buffer filter ahead hands the whole body on with the end of stream.
            if stream.local_response is None and stream.reset is None:
                stream._body(req, body, True)  # send_request_body
        elif stream.local_response is None and stream.reset is None:
            stream._body_frames(req, body)
    root_failure = _answer_callouts(plugin, table) if plugin.http_calls else None
    # Outcome() without the dataclass __init__ (13 stores, 3 factories; one per case): the plain
    # defaults are class attributes, logs and actions are set by _finish, headers here.
    out = Outcome.__new__(Outcome)
    out.headers = HeaderMap()
    head = request.method == "HEAD"
    refusal = invalid_header(req.headers._entries) if stream.ctx.bad_request_header and req.headers else None
    if refusal is not None and req.complete and stream.local_response is None and stream.reset is None:
        # Envoy's HTTP/1 upstream codec refuses the headers the module wrote; the router answers
        # the client itself (503, the reason as a text/plain body), through the filter's response
        # callbacks, and the upstream sees nothing (observed in Envoy 1.40, bad_headers.yaml).
        text = refusal.encode()
        reply = [
            (b":status", b"503"),
            (b"content-length", b"%d" % len(text)),
            (b"content-type", b"text/plain"),
        ]
        stream._headers(stream.resp, HeaderMap.of_entries(reply), False)
        if stream.reset is None and stream.local_response is None:
            stream._body(stream.resp, text, True)  # a local reply's body: one frame
        if plugin.http_calls:
            root_failure = root_failure or _answer_callouts(plugin, table)
    elif req.complete and stream.local_response is None and stream.reset is None:  # request_complete
        out.upstream_complete = True
        sent_headers = req.headers if req.headers is not None else HeaderMap()
        sent_body = bytes(req.forwarded_body)
        out.upstream_headers = sent_headers if sent_body else http1_upstream_headers(sent_headers, sent_body)
        out.upstream_body, whole = http1_read(sent_headers, sent_body)
        if not whole:  # the upstream waits for bytes that never come (Envoy's route timeout)
            out.upstream_complete = False
            out.stalled = True
            return _finish(out, plugin, stream, first_log, root_failure)
        # Envoy's upstream codec reads no body after the headers of a response to HEAD (RFC 9110
        # section 9.3.2), whatever its content-length says; nor of a 204.
        # The client's method stands for the one sent upstream (a module rewriting :method to or
        # from HEAD is not modelled): a look-up in the sent headers costs 1k instructions a case.
        resp_body = upstream.body if upstream.status != 204 and not head else b""
        if isinstance(resp_body, str):
            resp_body = resp_body.encode()
        # send_response_headers(copy=False): no local response was sent (the request completed)
        stream._headers(stream.resp, upstream.envoy_headers(), not resp_body)
        if resp_body and stream.reset is None and stream.local_response is None:
            stream._body_frames(stream.resp, resp_body)  # send_response_body, two frames
        if plugin.http_calls:
            root_failure = root_failure or _answer_callouts(plugin, table)
    elif req.headers_forwarded:
        # The router started the upstream request at the headers; the rest never came.
        out.upstream_headers = stream.request_headers
        out.upstream_body = bytes(req.forwarded_body)
    out.local_response = stream.local_response
    out.reset = stream.reset is not None
    resp = stream.resp
    if resp.complete and not out.reset:
        headers = resp.headers if resp.headers is not None else HeaderMap()  # response_headers
        _client_view(out, headers, bytes(resp.forwarded_body), head)
    elif not out.reset:
        out.stalled = True
    return _finish(out, plugin, stream, first_log, root_failure)


def _finish(
    out: Outcome, plugin: Plugin, stream: HttpStream, first_log: int, root_failure: FilterFailure | None
) -> Outcome:
    """End the stream (on_log, on_done, on_delete) and fill in what the filter logged and did."""
    stream.complete()
    out.logs = plugin.logs[first_log:]
    out.actions = stream.actions  # plain ints already; the stream is done with the list
    out.failure = stream.failure or root_failure
    return out

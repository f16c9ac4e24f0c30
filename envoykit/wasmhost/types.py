"""Value types the host's layers share: what a filter asked to answer, what it logged.

The bottom of :mod:`envoykit.wasmhost` with :mod:`~envoykit.wasmhost.abi` and
:mod:`~envoykit.wasmhost.errors`: the host functions (:mod:`~envoykit.wasmhost.hostcalls`) build these,
the streams and the plugin hand them to tests, so neither has to import the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envoykit.wasmhost.abi import LogLevel
from envoykit.wasmhost.headermap import HeaderMap


@dataclass(frozen=True)
class LogRecord:
    """One line the filter logged (``proxy_log`` or stdout/stderr through WASI ``fd_write``)."""

    level: LogLevel
    message: str
    context_id: int


@dataclass
class LocalResponse:
    """A response the filter asked Envoy to send (``proxy_send_local_response``).

    Attributes:
        status: HTTP status code.
        body: response body bytes.
        headers: extra headers (lowercased names) in the order given.
        details: response code details (whitespace replaced by ``_``, as Envoy does).
        grpc_status: gRPC status, or ``None`` (values outside 0..16 mean none).
    """

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    details: str = ""
    grpc_status: int | None = None

    def header_map(self, grpc: bool = False) -> HeaderMap:
        """The reply's headers as Envoy's ``sendLocalReply`` builds them (before other filters).

        For a gRPC request (``grpc``) Envoy answers gRPC-style, trailers-only: ``:status: 200``,
        the filter's headers, ``content-type: application/grpc``, ``grpc-status`` (the given one,
        else mapped from the HTTP status as Envoy's ``Grpc::Utility::httpToGrpcStatus``) and the
        body as a percent-encoded ``grpc-message``; no body (checked by the differential tests).
        """
        hmap = HeaderMap([(":status", "200" if grpc else str(self.status))])
        for k, v in self.headers:
            hmap.add(k, v)
        if grpc:
            hmap.replace("content-type", "application/grpc")
            code = self.grpc_status if self.grpc_status is not None else http_to_grpc_status(self.status)
            hmap.replace("grpc-status", str(code))
            if self.body:
                hmap.replace("grpc-message", grpc_percent_encode(self.body))
        elif self.body:
            hmap.replace("content-length", str(len(self.body)))
            if "content-type" not in hmap:
                hmap.add("content-type", "text/plain")
        return hmap


def http_to_grpc_status(status: int) -> int:
    """Envoy's ``Grpc::Utility::httpToGrpcStatus`` (source/common/grpc/common.cc)."""
    table = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
    return table.get(status, 2)


def grpc_percent_encode(data: bytes) -> str:
    """gRPC ``grpc-message`` percent-encoding: bytes outside 0x20..0x7e and ``%`` become ``%XX``."""
    return "".join(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in data)

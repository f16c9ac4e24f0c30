"""gRPC over HTTP/2, the parts the lean server needs: status codes, ``grpc-timeout``, message framing.

Source: gRPC's "gRPC over HTTP2" protocol document (PROTOCOL-HTTP2.md in grpc/grpc): a message is a
1-byte compressed flag, a 4-byte big-endian length and the bytes; the call ends with trailers carrying
``grpc-status`` and an optional percent-encoded ``grpc-message``; ``grpc-timeout`` is up to 8 digits
and a unit (H, M, S, m, u, n).
"""

from __future__ import annotations

from enum import IntEnum
from urllib.parse import quote


class StatusCode(IntEnum):
    """gRPC status codes (google.rpc.Code)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class GrpcStatusError(Exception):
    """Raised by a handler to end its call with ``code`` and ``message`` (sent in the trailers)."""

    def __init__(self, code: StatusCode, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def parse_timeout(value: bytes) -> float:
    """Seconds of a ``grpc-timeout`` value such as ``b"200m"``.

    Raises:
        ValueError: not 1-8 ASCII digits followed by one of H M S m u n.
    """
    digits, unit = value[:-1], value[-1:]
    if not (1 <= len(digits) <= 8 and digits.isdigit()) or unit not in _TIMEOUT_UNITS:
        raise ValueError(f"bad grpc-timeout {value!r}")
    return int(digits) * _TIMEOUT_UNITS[unit]


def frame(payload: bytes) -> bytes:
    """One uncompressed length-prefixed message."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def encode_message(message: str) -> bytes:
    """``grpc-message``: percent-encoded UTF-8, printable ASCII except ``%`` kept as is."""
    return quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode("ascii")


RESPONSE_HEADERS = (
    (b":status", b"200"),
    (b"content-type", b"application/grpc"),
    (b"grpc-accept-encoding", b"identity"),
)
OK_TRAILERS = ((b"grpc-status", b"0"),)


def status_trailers(code: StatusCode, message: str = "") -> tuple[tuple[bytes, bytes], ...]:
    """Trailers ending a call with ``code`` (and ``message`` when not empty)."""
    out = [(b"grpc-status", str(int(code)).encode())]
    if message:
        out.append((b"grpc-message", encode_message(message)))
    return tuple(out)

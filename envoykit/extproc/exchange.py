"""The per-exchange context a processor sees: what Envoy sent so far, and the edits of this phase.

One :class:`Exchange` lives for one ext_proc stream, which is one HTTP request and its response
(envoy.service.ext_proc.v3.ExternalProcessor/Process). Every processor of the chain gets the same
object in every phase, so ``ex.state`` carries data from the request to the response.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2

from envoykit.extproc.headers import HeaderEdits, Headers, to_bytes

# The ext_proc filter puts request_attributes / response_attributes under its own filter name.
ATTRIBUTES_KEY = "envoy.filters.http.ext_proc"


class Phase(enum.Enum):
    """The six messages Envoy may send; values are the ``ProcessingRequest`` oneof field names."""

    REQUEST_HEADERS = "request_headers"
    REQUEST_BODY = "request_body"
    REQUEST_TRAILERS = "request_trailers"
    RESPONSE_HEADERS = "response_headers"
    RESPONSE_BODY = "response_body"
    RESPONSE_TRAILERS = "response_trailers"

    @property
    def is_request(self) -> bool:
        """True for the three request-path phases."""
        return self.value.startswith("request")


class BodyMode(enum.IntEnum):
    """``ProcessingMode.BodySendMode`` (envoy/extensions/filters/http/ext_proc/v3/processing_mode.proto)."""

    NONE = 0
    STREAMED = 1
    BUFFERED = 2
    BUFFERED_PARTIAL = 3
    FULL_DUPLEX_STREAMED = 4
    GRPC = 5


@dataclass(slots=True)
class ImmediateReply:
    """An answer sent to the downstream instead of going on (``ImmediateResponse``).

    Attributes:
        status: HTTP status code.
        body: response body bytes.
        headers: extra response headers.
        grpc_status: gRPC status code for gRPC clients (``ImmediateResponse.grpc_status``), or None.
        details: text for Envoy's ``%RESPONSE_CODE_DETAILS%`` access-log field.
    """

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, bytes], ...] = ()
    grpc_status: int | None = None
    details: str = ""


class Exchange:
    """What a processor sees and changes. Read the current phase's data, call methods to change it.

    Read:
        ``phase`` (:class:`Phase`), ``headers`` (the current phase's headers or trailers, else None),
        ``body`` (the current body chunk, or the whole body in BUFFERED mode), ``end_of_stream``,
        ``request_headers`` / ``response_headers`` (kept from earlier phases), ``attributes``
        (the values of ``request_attributes`` / ``response_attributes``, merged), ``metadata``
        (``metadata_context.filter_metadata`` as dicts), ``observability_mode``, ``state`` (yours).

    Change (all apply to the current phase; ignored by Envoy in observability mode):
        :meth:`set_header`, :meth:`append_header`, :meth:`remove_header`, :meth:`set_body`,
        :meth:`respond`, :meth:`set_metadata`, :meth:`clear_route_cache`, :meth:`override_mode`,
        :meth:`extend_timeout`. :meth:`finish` says a processor needs no more messages.
    """

    def __init__(self, invocation_metadata: dict[str, str] | None = None) -> None:
        self.phase: Phase = Phase.REQUEST_HEADERS
        self.observability_mode = False
        self.attributes: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {}
        self.grpc_metadata: dict[str, str] = invocation_metadata or {}
        self.request_headers: Headers | None = None
        self.response_headers: Headers | None = None
        self.request_trailers: Headers | None = None
        self.response_trailers: Headers | None = None
        self.headers: Headers | None = None
        self.body: bytes = b""
        self.end_of_stream = False
        self.request_body_mode = BodyMode.NONE
        self.response_body_mode = BodyMode.NONE
        self.state: dict[str, Any] = {}
        self.finished: set[str] = set()
        # writes a message on the stream at once (set by the servicer; None in unit use)
        self.send: Callable[[Any], Awaitable[None]] | None = None
        # edits of the current phase, reset by begin_phase()
        self.header_edits = HeaderEdits()
        self.new_body: bytes | None = None
        self.immediate: ImmediateReply | None = None
        self.dynamic_metadata: dict[str, dict[str, Any]] = {}
        self.route_cache_cleared = False
        self.mode_override: dict[str, int] | None = None
        self.timeout_ms: int | None = None

    def begin_phase(self, phase: Phase) -> None:
        """Reset the per-phase edits (called by the stream state machine)."""
        self.phase = phase
        self.headers = None
        self.body = b""
        self.end_of_stream = False
        if self.header_edits:
            self.header_edits = HeaderEdits()
        self.new_body = None
        self.immediate = None
        self.route_cache_cleared = False
        self.mode_override = None
        self.timeout_ms = None
        if self.dynamic_metadata:
            self.dynamic_metadata = {}

    # -- edits ---------------------------------------------------------------------------------

    def set_header(self, name: str, value: str | bytes | int) -> None:
        """Set ``name`` to ``value``, replacing any value (headers and trailers phases)."""
        self.header_edits.set.append((name.lower(), to_bytes(value), False))

    def append_header(self, name: str, value: str | bytes | int) -> None:
        """Add one more value of ``name``, keeping existing ones."""
        self.header_edits.set.append((name.lower(), to_bytes(value), True))

    def remove_header(self, name: str) -> None:
        """Remove every value of ``name``. Envoy refuses to remove pseudo headers and ``host``."""
        self.header_edits.remove.append(name.lower())

    def set_body(self, body: bytes | str) -> None:
        """Replace the current body (chunk, in STREAMED modes). ``content-length`` is kept right by
        the state machine: rewritten in BUFFERED mode, removed in streamed modes."""
        self.new_body = body.encode() if isinstance(body, str) else bytes(body)

    def respond(
        self,
        status: int,
        body: bytes | str = b"",
        headers: dict[str, str] | None = None,
        *,
        grpc_status: int | None = None,
        details: str = "",
    ) -> None:
        """Answer the downstream now with ``status`` and stop the chain (``ImmediateResponse``).

        Envoy sends it only before response headers went downstream; later it resets the stream.
        """
        self.immediate = ImmediateReply(
            status=status,
            body=body.encode() if isinstance(body, str) else bytes(body),
            headers=tuple((k.lower(), to_bytes(v)) for k, v in (headers or {}).items()),
            grpc_status=grpc_status,
            details=details,
        )

    def set_metadata(self, namespace: str, key: str, value: Any) -> None:
        """Emit dynamic metadata ``namespace.key = value`` (``ProcessingResponse.dynamic_metadata``).

        Envoy keeps only namespaces listed in the filter's
        ``metadata_options.receiving_namespaces.untyped``.
        """
        self.dynamic_metadata.setdefault(namespace, {})[key] = value

    def clear_route_cache(self) -> None:
        """Ask Envoy to recompute the route after header changes (``CommonResponse.clear_route_cache``)."""
        self.route_cache_cleared = True

    def override_mode(self, **modes: str | int) -> None:
        """Change the processing mode for the rest of this exchange (``mode_override``).

        Keys are ``ProcessingMode`` fields (``response_header_mode="SKIP"``,
        ``response_body_mode="BUFFERED"``); values are enum names or numbers. Envoy honours it only
        with ``allow_mode_override: true`` and only in answer to headers.
        """
        from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2

        out: dict[str, int] = {}
        pm = processing_mode_pb2.ProcessingMode
        for field, value in modes.items():
            fd = pm.DESCRIPTOR.fields_by_name.get(field)
            if fd is None or fd.enum_type is None:
                raise ValueError(f"override_mode: no ProcessingMode field {field!r}")
            if isinstance(value, str):
                ev = fd.enum_type.values_by_name.get(value.upper())
                if ev is None:
                    raise ValueError(f"override_mode: {field} has no value {value!r}")
                out[field] = ev.number
            else:
                out[field] = int(value)
        self.mode_override = out

    async def extend_timeout(self, ms: int) -> None:
        """Ask Envoy now to wait up to ``ms`` milliseconds for this phase's answer.

        Sends a ProcessingResponse carrying only ``override_message_timeout`` at once, as the proto
        asks, so call it (awaited) before the slow work. Envoy honours it up to the filter's
        ``max_message_timeout``. Does nothing in observability mode.
        """
        self.timeout_ms = int(ms)
        if self.send is not None and not self.observability_mode:
            from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

            msg = pb.ProcessingResponse()
            msg.override_message_timeout.FromMilliseconds(int(ms))
            await self.send(msg)

    def finish(self, processor_name: str) -> None:
        """Say ``processor_name`` needs no more messages of this exchange. When every processor of
        the stream has finished, the server closes the stream early (Envoy allows this in
        observability mode), instead of holding it until Envoy's ``deferred_close_timeout``."""
        self.finished.add(processor_name)

    @property
    def has_edits(self) -> bool:
        """True when this phase changed anything Envoy should apply."""
        return bool(
            self.header_edits
            or self.new_body is not None
            or self.immediate is not None
            or self.dynamic_metadata
            or self.route_cache_cleared
            or self.mode_override is not None
        )


def struct_to_dict(s: struct_pb2.Struct) -> dict[str, Any]:
    """A ``google.protobuf.Struct`` as plain Python values (faster than ``MessageToDict``)."""
    return {k: value_to_python(v) for k, v in s.fields.items()}


def value_to_python(v: struct_pb2.Value) -> Any:
    """A ``google.protobuf.Value`` as a plain Python value (numbers stay ``float``)."""
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        return v.number_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return struct_to_dict(v.struct_value)
    if kind == "list_value":
        return [value_to_python(x) for x in v.list_value.values]
    return None

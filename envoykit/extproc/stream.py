"""The ext_proc stream state machine: one ``ProcessingRequest`` in, at most one ``ProcessingResponse`` out.

It follows envoy/service/ext_proc/v3/external_processor.proto and the ext_proc filter docs
(https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/ext_proc_filter):

* every message Envoy waits for gets exactly one answer of the matching type, never an empty
  ``ProcessingResponse``; in ``observability_mode`` nothing is answered (Envoy does not wait);
* header values are written as ``raw_value``;
* ``content-length`` stays right when a body changes length: rewritten when the whole body is
  known (BUFFERED), removed on the headers answer when chunks may change (STREAMED,
  FULL_DUPLEX_STREAMED, BUFFERED_PARTIAL) so Envoy falls back to chunked encoding / HTTP/2 framing;
* in FULL_DUPLEX_STREAMED mode every chunk is sent back as a ``streamed_response``;
* ``mode_override`` is passed through when a processor asks; ``override_message_timeout`` goes out
  at once, alone in its own message (``Exchange.extend_timeout``).
"""

from __future__ import annotations

from typing import Any

from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2
from prometheus_client import Counter

from envoykit.extproc.exchange import ATTRIBUTES_KEY, BodyMode, Exchange, Phase, struct_to_dict
from envoykit.extproc.headers import Headers
from envoykit.extproc.processor import Chain

PROCESSOR_ERRORS = Counter(
    "envoykit_extproc_processor_errors",
    "Processor handlers that raised, by processor, phase and the failure mode applied.",
    ["processor", "phase", "failure_mode"],
)

_STREAMING = (BodyMode.STREAMED, BodyMode.FULL_DUPLEX_STREAMED, BodyMode.BUFFERED_PARTIAL, BodyMode.GRPC)
_BODY_PHASE = {True: Phase.REQUEST_BODY, False: Phase.RESPONSE_BODY}


class StreamMachine:
    """Drives one ext_proc stream through a :class:`Chain`.

    Args:
        chain: the processors for this stream.
        exchange: the per-stream context (created by the servicer with the gRPC metadata).
        log: a structlog logger for handler failures.
    """

    __slots__ = ("chain", "ex", "log")

    def __init__(self, chain: Chain, exchange: Exchange, log: Any) -> None:
        self.chain = chain
        self.ex = exchange
        self.log = log

    async def handle(self, req: pb.ProcessingRequest) -> pb.ProcessingResponse | None:
        """Apply ``req`` to the exchange, run the chain, and return the answer (None when Envoy
        expects none: observability mode, or a message with no phase)."""
        which = req.WhichOneof("request")
        if which is None:
            return None
        phase = Phase(which)
        ex = self.ex
        ex.begin_phase(phase)
        ex.observability_mode = req.observability_mode
        self._absorb(req, phase, which)
        steps = self.chain.steps[phase]
        if steps:
            await self._run(steps)
        if ex.observability_mode:
            return None
        return self._answer(phase)

    def end(self) -> None:
        """The stream ended (Envoy closed it, or the call was cancelled): run ``on_stream_end``."""
        for p in self.chain.enders:
            try:
                p.on_stream_end(self.ex)
            except Exception:
                PROCESSOR_ERRORS.labels(p.name, "stream_end", p.failure_mode).inc()
                self.log.exception("processor failed", processor=p.name, phase="stream_end")

    # -- input ---------------------------------------------------------------------------------

    def _absorb(self, req: pb.ProcessingRequest, phase: Phase, which: str) -> None:
        ex = self.ex
        if req.attributes:
            attrs = req.attributes.get(ATTRIBUTES_KEY)
            if attrs is not None:
                ex.attributes.update(struct_to_dict(attrs))
        if req.HasField("metadata_context") and req.metadata_context.filter_metadata:
            for ns, s in req.metadata_context.filter_metadata.items():
                ex.metadata[ns] = struct_to_dict(s)
        if req.HasField("protocol_config"):
            ex.request_body_mode = BodyMode(req.protocol_config.request_body_mode)
            ex.response_body_mode = BodyMode(req.protocol_config.response_body_mode)
        msg = getattr(req, which)
        if phase is Phase.REQUEST_HEADERS or phase is Phase.RESPONSE_HEADERS:
            h = Headers(msg.headers)
            ex.headers = h
            ex.end_of_stream = msg.end_of_stream
            if phase is Phase.REQUEST_HEADERS:
                ex.request_headers = h
            else:
                ex.response_headers = h
        elif phase is Phase.REQUEST_BODY or phase is Phase.RESPONSE_BODY:
            ex.body = msg.body
            ex.end_of_stream = msg.end_of_stream or msg.end_of_stream_without_message
        else:
            h = Headers(msg.trailers)
            ex.headers = h
            ex.end_of_stream = True
            if phase is Phase.REQUEST_TRAILERS:
                ex.request_trailers = h
            else:
                ex.response_trailers = h

    # -- processors ----------------------------------------------------------------------------

    async def _run(self, steps: list[Any]) -> None:
        ex = self.ex
        for step in steps:
            edits = ex.header_edits
            mark = (len(edits.set), len(edits.remove), ex.new_body, dict(ex.dynamic_metadata))
            try:
                if step.is_async:
                    await step.fn(ex)
                else:
                    step.fn(ex)
            except Exception as exc:
                # A failing processor never kills the stream: undo its edits, then apply its mode.
                edits.truncate(mark[0], mark[1])
                ex.new_body = mark[2]
                ex.dynamic_metadata = mark[3]
                ex.immediate = None
                PROCESSOR_ERRORS.labels(step.name, ex.phase.value, step.failure_mode).inc()
                self.log.error(
                    "processor failed",
                    processor=step.name,
                    phase=ex.phase.value,
                    failure_mode=step.failure_mode,
                    error=f"{type(exc).__name__}: {exc}",
                )
                if step.failure_mode == "reject":
                    ex.respond(500, "processor error\n", details=f"envoykit_processor_error:{step.name}")
                    return
                continue
            if ex.immediate is not None:
                return

    # -- output --------------------------------------------------------------------------------

    def _answer(self, phase: Phase) -> pb.ProcessingResponse:
        ex = self.ex
        resp = pb.ProcessingResponse()
        if ex.immediate is not None:
            self._immediate(resp)
        elif phase is Phase.REQUEST_HEADERS or phase is Phase.RESPONSE_HEADERS:
            self._headers_answer(resp, phase)
        elif phase is Phase.REQUEST_BODY or phase is Phase.RESPONSE_BODY:
            self._body_answer(resp, phase)
        else:
            tr = getattr(resp, phase.value)
            tr.SetInParent()
            if ex.header_edits:
                tr.header_mutation.CopyFrom(ex.header_edits.to_proto())
        if ex.dynamic_metadata:
            resp.dynamic_metadata.CopyFrom(_to_struct(ex.dynamic_metadata))
        if ex.mode_override is not None:
            resp.mode_override.CopyFrom(processing_mode_pb2.ProcessingMode(**ex.mode_override))
            # later phases follow the new body modes (content-length handling depends on them)
            if "request_body_mode" in ex.mode_override:
                ex.request_body_mode = BodyMode(ex.mode_override["request_body_mode"])
            if "response_body_mode" in ex.mode_override:
                ex.response_body_mode = BodyMode(ex.mode_override["response_body_mode"])
        return resp

    def _immediate(self, resp: pb.ProcessingResponse) -> None:
        reply = self.ex.immediate
        assert reply is not None
        ir = resp.immediate_response
        ir.status.code = reply.status  # type.v3.StatusCode is an open enum: any number passes
        if reply.body:
            ir.body = reply.body
        for name, value in reply.headers:
            opt = ir.headers.set_headers.add()
            opt.header.key = name
            opt.header.raw_value = value
        if reply.grpc_status is not None:
            ir.grpc_status.status = reply.grpc_status
        if reply.details:
            ir.details = reply.details

    def _headers_answer(self, resp: pb.ProcessingResponse, phase: Phase) -> None:
        ex = self.ex
        hr = getattr(resp, phase.value)
        hr.SetInParent()
        is_request = phase is Phase.REQUEST_HEADERS
        mode = ex.request_body_mode if is_request else ex.response_body_mode
        edits = ex.header_edits
        if ex.new_body is not None:
            # A body set on the headers phase replaces the whole body (CONTINUE_AND_REPLACE).
            hr.response.status = pb.CommonResponse.CONTINUE_AND_REPLACE
            hr.response.body_mutation.body = ex.new_body
            ex.set_header("content-length", len(ex.new_body))
        elif (
            not ex.end_of_stream
            and mode in _STREAMING
            and self.chain.handles(_BODY_PHASE[is_request])
            and ex.headers is not None
            and "content-length" in ex.headers
        ):
            # Chunks may change length after these headers left: let Envoy frame the body itself.
            ex.remove_header("content-length")
        if edits:
            hr.response.header_mutation.CopyFrom(edits.to_proto())
        if ex.route_cache_cleared:
            hr.response.clear_route_cache = True

    def _body_answer(self, resp: pb.ProcessingResponse, phase: Phase) -> None:
        ex = self.ex
        br = getattr(resp, phase.value)
        br.SetInParent()
        mode = ex.request_body_mode if phase is Phase.REQUEST_BODY else ex.response_body_mode
        if mode is BodyMode.FULL_DUPLEX_STREAMED:
            # Envoy keeps nothing in this mode: every chunk must come back, changed or not.
            sr = br.response.body_mutation.streamed_response
            sr.body = ex.body if ex.new_body is None else ex.new_body
            sr.end_of_stream = ex.end_of_stream
        elif ex.new_body is not None:
            br.response.body_mutation.body = ex.new_body
            if mode is BodyMode.BUFFERED and len(ex.new_body) != len(ex.body):
                # Headers are still held in BUFFERED mode, so the length can be corrected here.
                ex.set_header("content-length", len(ex.new_body))
            elif mode is BodyMode.BUFFERED_PARTIAL and len(ex.new_body) != len(ex.body):
                ex.remove_header("content-length")
        if ex.header_edits:
            br.response.header_mutation.CopyFrom(ex.header_edits.to_proto())
        if ex.route_cache_cleared:
            br.response.clear_route_cache = True


def _to_struct(d: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s

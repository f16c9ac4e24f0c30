"""The state machine message by message, per processing mode (no Envoy: exact protobuf answers)."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from envoykit.core import ConfigError, get_logger
from envoykit.extproc import Chain, Exchange, Processor, load_processors, processor
from envoykit.extproc.exchange import BodyMode
from envoykit.extproc.stream import StreamMachine


def header_map(**kv: str) -> base_pb2.HeaderMap:
    hm = base_pb2.HeaderMap()
    for k, v in kv.items():
        hm.headers.add(key=k, raw_value=v.encode())
    return hm


def machine(*procs: Processor) -> StreamMachine:
    return StreamMachine(Chain(procs), Exchange(), get_logger("test"))


def req_headers(body_mode: int = 0, /, **kv: str) -> pb.ProcessingRequest:
    r = pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=header_map(**kv)))
    r.protocol_config.request_body_mode = body_mode
    r.protocol_config.response_body_mode = body_mode
    return r


PATH = {":path": "/"}


async def test_every_answer_matches_its_phase_and_is_never_empty() -> None:
    m = machine()
    status = header_map(**{":status": "200"})
    msgs = [
        (req_headers(**PATH), "request_headers"),
        (pb.ProcessingRequest(request_body=pb.HttpBody(body=b"x", end_of_stream=True)), "request_body"),
        (pb.ProcessingRequest(request_trailers=pb.HttpTrailers()), "request_trailers"),
        (pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=status)), "response_headers"),
        (pb.ProcessingRequest(response_body=pb.HttpBody(body=b"y")), "response_body"),
        (pb.ProcessingRequest(response_trailers=pb.HttpTrailers()), "response_trailers"),
    ]
    for msg, which in msgs:
        resp = await m.handle(msg)
        assert resp is not None
        assert resp.WhichOneof("response") == which  # the oneof is always set: never empty
    assert m.ex.response_headers is not None and m.ex.response_headers[":status"] == "200"


async def test_observability_mode_answers_nothing_but_runs_processors() -> None:
    seen: list[str] = []
    p = processor("obs", observer=True)

    @p.on_response_headers
    def _(ex: Exchange) -> None:
        seen.append(ex.headers[":status"] if ex.headers else "")
        ex.set_header("x-ignored", "1")

    msg = pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(headers=header_map(**{":status": "204"})), observability_mode=True
    )
    assert await machine(p).handle(msg) is None
    assert seen == ["204"]


async def test_header_values_are_raw_and_set_append_remove_map_to_actions() -> None:
    p = processor("h")

    @p.on_request_headers
    def _(ex: Exchange) -> None:
        ex.set_header("X-One", "é")
        ex.append_header("x-two", b"\x00\xff")
        ex.remove_header("x-gone")

    resp = await machine(p).handle(req_headers(**PATH))
    assert resp is not None
    hm = resp.request_headers.response.header_mutation
    got = [(h.header.key, h.header.raw_value, h.header.value) for h in hm.set_headers]
    assert got == [("x-one", "é".encode("latin-1"), ""), ("x-two", b"\x00\xff", "")]
    opt = base_pb2.HeaderValueOption
    assert [h.append_action for h in hm.set_headers] == [
        opt.OVERWRITE_IF_EXISTS_OR_ADD,
        opt.APPEND_IF_EXISTS_OR_ADD,
    ]
    assert list(hm.remove_headers) == ["x-gone"]


class Grow(Processor):
    def on_request_body(self, ex: Exchange) -> None:
        ex.set_body(ex.body + b"++")


@pytest.mark.parametrize(
    ("mode", "removed_on_headers", "set_on_body"),
    [
        (BodyMode.BUFFERED, False, ["7"]),
        (BodyMode.STREAMED, True, []),
        (BodyMode.BUFFERED_PARTIAL, True, []),
        (BodyMode.FULL_DUPLEX_STREAMED, True, []),
    ],
)
async def test_content_length_kept_right_per_body_mode(
    mode: BodyMode, removed_on_headers: bool, set_on_body: list[str]
) -> None:
    m = machine(Grow())
    h = await m.handle(req_headers(int(mode), **PATH, **{"content-length": "5"}))
    assert h is not None
    removed = "content-length" in h.request_headers.response.header_mutation.remove_headers
    assert removed == removed_on_headers
    b = await m.handle(pb.ProcessingRequest(request_body=pb.HttpBody(body=b"hello", end_of_stream=True)))
    assert b is not None
    common = b.request_body.response
    if mode is BodyMode.FULL_DUPLEX_STREAMED:
        assert common.body_mutation.streamed_response.body == b"hello++"
        assert common.body_mutation.streamed_response.end_of_stream
    else:
        assert common.body_mutation.body == b"hello++"
    cl = [
        x.header.raw_value.decode()
        for x in common.header_mutation.set_headers
        if x.header.key == "content-length"
    ]
    assert cl == set_on_body


async def test_no_body_handler_leaves_content_length_alone() -> None:
    h = await machine(processor("none")).handle(
        req_headers(int(BodyMode.STREAMED), **PATH, **{"content-length": "5"})
    )
    assert h is not None and not h.request_headers.response.HasField("header_mutation")


async def test_full_duplex_sends_unchanged_chunks_back() -> None:
    m = machine(processor("noop"))
    await m.handle(req_headers(int(BodyMode.FULL_DUPLEX_STREAMED), **PATH))
    resp = await m.handle(pb.ProcessingRequest(request_body=pb.HttpBody(body=b"chunk")))
    assert resp is not None
    sr = resp.request_body.response.body_mutation.streamed_response
    assert sr.body == b"chunk" and not sr.end_of_stream


async def test_metadata_mode_override_timeout_route_cache() -> None:
    p = processor("all")

    @p.on_request_headers
    def _(ex: Exchange) -> None:
        ex.set_metadata("envoykit", "user", "alice")
        ex.override_mode(response_header_mode="SKIP", response_body_mode="BUFFERED")
        ex.clear_route_cache()

    resp = await machine(p).handle(req_headers(**PATH))
    assert resp is not None
    assert resp.dynamic_metadata.fields["envoykit"].struct_value.fields["user"].string_value == "alice"
    assert resp.mode_override.response_header_mode == 2  # SKIP
    assert resp.mode_override.response_body_mode == 2  # BUFFERED
    assert not resp.HasField("override_message_timeout")
    assert resp.request_headers.response.clear_route_cache
    sent: list[pb.ProcessingResponse] = []
    ex = Exchange()

    async def send(msg: pb.ProcessingResponse) -> None:
        sent.append(msg)

    ex.send = send
    await ex.extend_timeout(1500)  # goes out at once, alone
    assert [m.override_message_timeout.ToMilliseconds() for m in sent] == [1500]
    assert sent[0].WhichOneof("response") is None
    with pytest.raises(ValueError, match="no value"):
        Exchange().override_mode(response_body_mode="SOMETIMES")


async def test_immediate_response_stops_the_chain() -> None:
    q = processor("deny")

    @q.on_request_headers
    def _deny(ex: Exchange) -> None:
        ex.respond(429, "slow down", {"retry-after": "3"}, grpc_status=8, details="quota")

    after: list[int] = []
    r = processor("after")
    r.on_request_headers(lambda ex: after.append(1))
    resp = await machine(q, r).handle(req_headers(**PATH))
    assert resp is not None
    ir = resp.immediate_response
    assert (ir.status.code, ir.body, ir.grpc_status.status, ir.details) == (429, b"slow down", 8, "quota")
    assert ir.headers.set_headers[0].header.raw_value == b"3"
    assert after == []


async def test_failure_modes_undo_edits_and_keep_the_stream() -> None:
    bad = processor("bad")

    @bad.on_request_headers
    def _(ex: Exchange) -> None:
        ex.set_header("x-half", "done")
        raise ValueError("oops")

    good = processor("good")
    good.on_request_headers(lambda ex: ex.set_header("x-good", "1"))
    resp = await machine(bad, good).handle(req_headers(**PATH))
    assert resp is not None
    assert [h.header.key for h in resp.request_headers.response.header_mutation.set_headers] == ["x-good"]

    strict = processor("strict", failure_mode="reject")
    strict.on_request_headers(lambda ex: 1 / 0)
    resp = await machine(strict, good).handle(req_headers(**PATH))
    assert resp is not None and resp.immediate_response.status.code == 500


async def test_attributes_and_metadata_are_merged_into_the_exchange() -> None:
    m = machine()
    r = req_headers(**PATH)
    r.attributes["envoy.filters.http.ext_proc"].update(
        {"request.protocol": "HTTP/2", "xds.listener_direction": 1}
    )
    r.metadata_context.filter_metadata["ns"].update({"k": "v"})
    await m.handle(r)
    assert m.ex.attributes == {"request.protocol": "HTTP/2", "xds.listener_direction": 1.0}
    assert m.ex.metadata == {"ns": {"k": "v"}}


def test_chain_refuses_duplicates_and_bad_modes() -> None:
    with pytest.raises(ConfigError, match="two processors"):
        Chain([processor("a"), processor("a")])
    with pytest.raises(ConfigError, match=r"processor\.b\.failure_mode"):
        Chain([processor("b", failure_mode="explode")])  # type: ignore[arg-type]


def test_load_processors_errors_name_the_problem() -> None:
    assert [p.name for p in load_processors("tests.extproc.procs:chain")] == ["add-header", "gate"]
    with pytest.raises(ConfigError, match=r"module\.path:object"):
        load_processors("nocolon")
    with pytest.raises(ConfigError, match="cannot import"):
        load_processors("no.such.module:x")
    with pytest.raises(ConfigError, match="has no"):
        load_processors("tests.extproc.procs:missing")
    with pytest.raises(ConfigError, match="not a Processor"):
        load_processors("tests.extproc.procs:asyncio")

"""Local responses, pause / continue, close, and the end of a stream (examples/wasm/wat/stream.wat)."""

from __future__ import annotations

import pytest

from envoykit.wasmhost import Action, HeaderMap, Host, Status, StreamStateError, StreamType
from tests.wasmhost.conftest import slot

GET = {":path": "/", ":method": "GET", ":authority": "a"}


def test_local_response_is_deferred_and_runs_through_the_response_side(wat) -> None:
    plugin = wat("stream", configuration="L")
    stream = plugin.http_stream()
    assert stream.send_request_headers(GET, end_of_stream=True) == Action.PAUSE
    assert slot(plugin, 1) == Status.OK
    reply = stream.local_response
    assert reply is not None
    assert (reply.status, reply.body, reply.details, reply.grpc_status) == (401, b"go away", "no_entry", None)
    assert reply.headers == [("x-why", "test")]
    assert stream.response_headers.items() == [
        (":status", "401"), ("x-why", "test"), ("content-length", "7"), ("content-type", "text/plain"),
    ]  # fmt: skip
    assert stream.response_body == b"go away"
    assert (slot(plugin, 10), slot(plugin, 11), slot(plugin, 12), slot(plugin, 13)) == (4, 0, 7, 1)
    assert not stream.request_complete
    with pytest.raises(StreamStateError):
        stream.send_response_headers({":status": "200"})


def test_pause_holds_the_body_until_continue_from_another_context(wasm_host: Host, wat) -> None:
    plugin = wat("stream", configuration="P")
    stream = plugin.http_stream()
    assert stream.send_request_headers({**GET, ":method": "POST"}) == Action.PAUSE
    assert stream.send_request_body("abc") is None  # held: no body callback while headers pause
    assert stream.send_request_body("def", end_of_stream=True) is None
    assert slot(plugin, 4) == 0
    assert stream.request_paused and not stream.request_complete
    plugin.tick()  # on_tick: set_effective_context(2) then continue_stream(REQUEST)
    assert (slot(plugin, 7), slot(plugin, 8), slot(plugin, 9)) == (Status.OK, Status.OK, Status.BAD_ARGUMENT)
    assert (slot(plugin, 4), slot(plugin, 5), slot(plugin, 6)) == (1, 6, 1)  # one call with all held data
    assert stream.request_complete and stream.request_body == b"abcdef"


def test_body_pause_buffers(wat) -> None:
    plugin = wat("stream", configuration="B")
    stream = plugin.http_stream()
    stream.send_request_headers(GET)
    assert slot(plugin, 3) == Status.BAD_ARGUMENT  # continue_stream(9)
    assert stream.send_request_body("12") == Action.PAUSE
    assert stream.send_request_body("345") == Action.PAUSE
    assert stream.send_request_body("", end_of_stream=True) == Action.CONTINUE
    assert (slot(plugin, 4), slot(plugin, 5), slot(plugin, 6)) == (3, 5, 1)
    assert stream.request_body == b"12345"


def test_no_body_callback_when_headers_end_the_stream(wat) -> None:
    plugin = wat("stream", configuration="B")
    stream = plugin.http_stream()
    stream.send_request_headers(GET, end_of_stream=True)
    with pytest.raises(StreamStateError):
        stream.send_request_body("late")
    assert slot(plugin, 4) == 0


def test_close_stream_resets(wat) -> None:
    plugin = wat("stream", configuration="C")
    stream = plugin.http_stream()
    stream.send_request_headers(GET, end_of_stream=True)
    assert slot(plugin, 2) == Status.OK
    assert stream.reset == StreamType.HTTP_REQUEST
    assert not stream.request_complete


def test_end_of_stream_order_and_ids_never_reused(wat) -> None:
    plugin = wat("stream", configuration="B")
    first = plugin.http_stream()
    first.send_request_headers(GET, end_of_stream=True)
    first.send_response_headers({":status": "200"}, end_of_stream=True)
    first.complete()
    assert (slot(plugin, 14), slot(plugin, 15), slot(plugin, 16)) == (1, 2, 3)
    assert first.id == 2
    assert first.id not in plugin.contexts
    second = plugin.http_stream()
    assert second.id == 3
    second.send_request_headers(GET, end_of_stream=True)
    assert slot(plugin, 0) == 3


def test_client_and_upstream_views_follow_http1_framing(wat) -> None:
    from envoykit.wasmhost import HttpRequest, HttpResponse, run_exchange
    from envoykit.wasmhost.exchange import http1_read

    assert http1_read(HeaderMap({"content-length": "3"}), b"abcdef") == (b"abc", True)
    assert http1_read(HeaderMap({"content-length": "9"}), b"abc") == (b"abc", False)
    assert http1_read(HeaderMap(), b"abc") == (b"abc", True)
    plugin = wat("buffers", configuration="x")
    out = run_exchange(plugin, HttpRequest("POST", "/", body=b"hello"), HttpResponse(body=b"upstream"))
    assert out.upstream_body == b"<hell"  # the filter made it 7 bytes, content-length still says 5
    assert out.reset and out.status == 0  # response body shrank to "XX" under content-length 8
    plugin = wat("headers")
    out = run_exchange(plugin, HttpRequest(), HttpResponse())
    assert (out.status, out.body) == (502, b"missing required header: :status")

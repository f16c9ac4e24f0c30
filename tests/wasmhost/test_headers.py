"""Header maps with Envoy's semantics (examples/wasm/wat/headers.wat)."""

from __future__ import annotations

from envoykit.wasmhost import Action, HeaderMap, Status
from envoykit.wasmhost.pairs import decode_pairs, encode_pairs
from tests.wasmhost.conftest import slot

REQUEST = [(":path", "/"), (":method", "GET"), ("x-a", "first"), ("x-a", "second"), ("x-b", "1"),
           ("x-b", "2"), ("x-gone", "bye")]  # fmt: skip


def test_request_header_operations(wat) -> None:
    plugin = wat("headers")
    stream = plugin.http_stream()
    assert stream.send_request_headers(REQUEST, end_of_stream=True) == Action.CONTINUE
    assert slot(plugin, 0) == 7  # number of headers
    assert slot(plugin, 1) == Status.OK
    assert plugin.vm.read(slot(plugin, 2), slot(plugin, 3)) == b"first"  # first value, key lowercased
    assert slot(plugin, 4) == Status.NOT_FOUND
    assert [slot(plugin, i) for i in (5, 6, 7)] == [Status.OK] * 3
    assert stream.request_headers.items() == [
        (":path", "/"), (":method", "GET"), ("x-a", "first"), ("x-a", "second"), ("x-added", "yes"), ("x-b", "two"),
    ]  # fmt: skip
    # byte size is Envoy's byteSize(): keys + values, after the edits
    assert slot(plugin, 8) == Status.OK
    assert slot(plugin, 9) == sum(len(k) + len(v) for k, v in stream.request_headers.items())
    assert slot(plugin, 10) == Status.OK
    pairs = decode_pairs(plugin.vm.read(slot(plugin, 11), slot(plugin, 12)))
    assert pairs == [(k.encode(), v.encode()) for k, v in stream.request_headers.items()]


def test_unavailable_map_answers_like_envoy(wat) -> None:
    plugin = wat("headers")
    plugin.http_stream().send_request_headers(REQUEST, end_of_stream=True)
    assert slot(plugin, 13) == Status.BAD_ARGUMENT  # get on a map that is not there
    assert slot(plugin, 14) == Status.BAD_ARGUMENT  # add
    assert slot(plugin, 15) == Status.OK  # pairs: OK and empty
    assert slot(plugin, 16) == 0
    assert slot(plugin, 17) == Status.BAD_ARGUMENT  # size


def test_set_pairs_replaces_the_response_map(wat) -> None:
    plugin = wat("headers")
    stream = plugin.http_stream()
    stream.send_request_headers(REQUEST, end_of_stream=True)
    stream.send_response_headers({":status": "200", "x-old": "1"}, end_of_stream=True)
    assert slot(plugin, 20) == Status.OK
    assert stream.response_headers.items() == [("x-set", "1"), ("x-other", "2")]
    assert slot(plugin, 21) == Status.BAD_ARGUMENT  # request headers went upstream
    assert slot(plugin, 22) == Status.BAD_ARGUMENT  # response trailers are not there


def test_pairs_round_trip_and_malformed_input() -> None:
    pairs = [(b"a", b"1"), (b"", b""), (b"long-key", b"v" * 300)]
    assert decode_pairs(encode_pairs(pairs)) == pairs
    assert encode_pairs([]) == b""
    assert decode_pairs(b"") == [] and decode_pairs(b"\0") == []
    data = encode_pairs(pairs)
    assert decode_pairs(data[:-1]) is None  # missing terminator
    assert decode_pairs(data + b"x") is None  # trailing bytes
    assert decode_pairs(b"\x01\x04\x00\x00" + b"\0" * 8) is None  # too many pairs


def test_header_map_keeps_pseudo_headers_first_and_replace_appends() -> None:
    m = HeaderMap([("x-a", "1"), (":path", "/")])
    m.add(":method", "GET")
    assert list(m) == [":path", ":method", "x-a"]
    m.add("X-B", "2")
    m.replace("x-a", "3")
    assert m.items() == [(":path", "/"), (":method", "GET"), ("x-b", "2"), ("x-a", "3")]
    assert m.byte_size() == len(":path/:methodGETx-b2x-a3")

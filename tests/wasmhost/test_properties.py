"""Properties (examples/wasm/wat/properties.wat)."""

from __future__ import annotations

import struct

from envoykit.wasmhost import Host, Status
from envoykit.wasmhost.properties import encode_value
from tests.wasmhost.conftest import slot


def value(plugin, i: int) -> bytes:
    return plugin.vm.read(slot(plugin, i + 1), slot(plugin, i + 2))


def test_builtin_and_test_set_properties(wasm_host: Host, wat):
    wasm_host.properties["node.id"] = "sidecar~10.0.0.1"
    plugin = wat("properties", root_id="my_root")
    assert slot(plugin, 0) == Status.OK and value(plugin, 0) == b"my_root"
    assert slot(plugin, 3) == Status.NOT_FOUND  # set_property without a stream
    stream = plugin.http_stream()
    stream.send_request_headers({":path": "/p?x=1", ":method": "GET", ":authority": "a"}, end_of_stream=True)
    assert slot(plugin, 4) == Status.OK and value(plugin, 4) == b"/p?x=1"
    assert slot(plugin, 7) == Status.OK and value(plugin, 7) == b"sidecar~10.0.0.1"
    assert slot(plugin, 10) == Status.NOT_FOUND
    assert slot(plugin, 13) == Status.OK
    assert slot(plugin, 14) == Status.OK and value(plugin, 14) == b"value"
    stream.send_response_headers({":status": "404"}, end_of_stream=True)
    assert slot(plugin, 17) == Status.OK
    assert struct.unpack("<q", value(plugin, 17))[0] == 404  # integers: 8 bytes little-endian


def test_per_stream_property_overrides(wat):
    plugin = wat("properties")
    stream = plugin.http_stream(**{"node.id": "per-stream"})
    stream.send_request_headers({":path": "/"}, end_of_stream=True)
    assert value(plugin, 7) == b"per-stream"


def test_encodings_follow_envoy():
    assert encode_value("s") == b"s"
    assert encode_value(True) == b"\x01"
    assert encode_value(-2) == struct.pack("<q", -2)
    assert encode_value(1.5) == struct.pack("<d", 1.5)
    assert encode_value({"k": "v"}) == b"\x01\0\0\0\x01\0\0\0\x01\0\0\0k\0v\0"
    assert encode_value(["a"]) == b"\x01\0\0\0\x01\0\0\0\0\0\0\0a\0\0"

"""Properties (examples/wasm/wat/properties.wat)."""

from __future__ import annotations

import struct

from envoykit.wasmhost import Host, Status
from envoykit.wasmhost.properties import encode_value
from tests.wasmhost.conftest import slot


def value(plugin, i: int) -> bytes:
    return plugin.vm.read(slot(plugin, i + 1), slot(plugin, i + 2))


def test_builtin_and_test_set_properties(wasm_host: Host, wat) -> None:
    wasm_host.properties["xds.node.id"] = "sidecar~10.0.0.1"
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


def test_per_stream_property_overrides(wat) -> None:
    plugin = wat("properties")
    stream = plugin.http_stream(**{"xds.node.id": "per-stream"})
    stream.send_request_headers({":path": "/"}, end_of_stream=True)
    assert value(plugin, 7) == b"per-stream"


def test_encodings_follow_envoy() -> None:
    assert encode_value("s") == b"s"
    assert encode_value(True) == b"\x01"
    assert encode_value(-2) == struct.pack("<q", -2)
    assert encode_value(1.5) == struct.pack("<d", 1.5)
    assert encode_value({"k": "v"}) == b"\x01\0\0\0\x01\0\0\0\x01\0\0\0k\0v\0"
    assert encode_value(["a"]) == b"\x01\0\0\0\x01\0\0\0\0\0\0\0a\0\0"


def test_envoy_1_40_attributes_in_each_phase() -> None:
    """What envoy_properties.wat logs (diffed against Envoy in test_examples_vs_envoy)."""
    from envoykit.wasmbuild.build import build_example
    from envoykit.wasmdiff.cases import load_cases
    from envoykit.wasmdiff.host_side import run_case, start_plugin
    from tests.wasmhost.conftest import CASES

    cases = load_cases(CASES / "envoy_properties.yaml")
    plugin = start_plugin(build_example("wat_envoy_properties"), cases)
    post = run_case(plugin, cases.cases[1], cases)
    got = dict(m.split("=", 1) for _, m in post.logs)
    assert got["qa"] == "0:sidecar~10.0.0.1~web.default" and got["qb"] == "0:payments"
    assert got["qc"] == got["lc"] == "0:upstream" and got["qd"] == "0:"  # cluster, unnamed route
    assert got["qe"] == "0:8" and got["qf"] == got["sf"] == got["lf"] == "0:5"  # time; size
    assert (got["qg"], got["sg"], got["lg"]) == ("1", "0", "0")  # upstream.address once upstream
    assert (got["qh"], got["sh"], got["lh"]) == ("1", "1", "0:8")  # request.duration in on_log only
    assert got["qi"] == got["qj"] == "1"  # node.* is NOT_FOUND
    bodiless = run_case(plugin, cases.cases[2], cases)
    assert bodiless.upstream is not None and ("content-length", "0") in bodiless.upstream[2]


def test_node_properties_are_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match=r"xds\.node\.id"):
        Host(properties={"node.id": "x"})


def test_xds_node_whole_is_the_serialized_node_message(wasm_host: Host, wat):
    from envoy.config.core.v3 import base_pb2

    from envoykit.wasmhost.properties import lookup

    wasm_host.properties["xds.node"] = {"id": "web", "metadata": {"team": "payments", "replicas": 3.0}}
    plugin = wat("properties", root_id="my_root")
    node = base_pb2.Node.FromString(lookup(plugin, None, [b"xds", b"node"]) or b"")
    assert (node.id, node.cluster, node.user_agent_name) == ("web", "", "envoy")
    assert dict(node.metadata) == {"team": "payments", "replicas": 3.0}
    assert lookup(plugin, None, [b"xds", b"node", b"metadata", b"missing"]) is None
    assert encode_value({}) == encode_value([]) == b"\0\0\0\0"  # Envoy marshals an empty map itself

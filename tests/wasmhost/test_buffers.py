"""Configuration and body buffers (examples/wasm/wat/buffers.wat)."""

from __future__ import annotations

import pytest

from envoykit.wasmhost import Action, HttpRequest, HttpResponse, Status, fastcall, load_plugin, run_exchange
from tests.wasmhost.conftest import WAT, slot


def test_configuration_buffers(wat) -> None:
    plugin = wat("buffers", configuration="abcdefgh", vm_configuration="vm-conf")
    assert slot(plugin, 0) == 7  # vm configuration size passed to on_vm_start
    assert (slot(plugin, 1), slot(plugin, 2)) == (Status.OK, 7)
    assert slot(plugin, 3) == Status.NOT_FOUND  # no plugin configuration outside on_configure
    assert slot(plugin, 4) == 8
    assert slot(plugin, 5) == Status.OK
    assert plugin.vm.read(slot(plugin, 6), slot(plugin, 7)) == b"cde"
    assert (slot(plugin, 8), slot(plugin, 9)) == (Status.OK, 0)  # zero length: ptr 0
    assert slot(plugin, 10) == Status.BAD_ARGUMENT  # read-only
    assert slot(plugin, 11) == Status.BAD_ARGUMENT  # unknown buffer type


def test_request_body_is_buffered_then_edited_with_envoys_rules(wat) -> None:
    plugin = wat("buffers", configuration="x")
    stream = plugin.http_stream()
    stream.send_request_headers({":path": "/", ":method": "POST"})
    assert stream.send_request_body("hello ") == Action.PAUSE
    assert slot(plugin, 12) == 6
    assert stream.request_body == b""  # held while the filter buffers
    assert stream.send_request_body("world", end_of_stream=True) == Action.CONTINUE
    assert slot(plugin, 12) == 11  # the callback saw the whole buffered body
    assert slot(plugin, 13) == Status.OK  # prepend (start 0, size 0)
    assert slot(plugin, 14) == Status.OK  # append (start past the end)
    assert slot(plugin, 15) == Status.BAD_ARGUMENT  # splice in the middle (0 < start < length)
    assert (slot(plugin, 16), slot(plugin, 17)) == (Status.OK, 13)
    assert stream.request_body == b"<hello world>"


def test_response_body_replaced(wat) -> None:
    plugin = wat("buffers", configuration="x")
    stream = plugin.http_stream()
    stream.send_request_headers({":path": "/"}, end_of_stream=True)
    stream.send_response_headers({":status": "200"})
    stream.send_response_body("upstream body", end_of_stream=True)
    assert slot(plugin, 18) == Status.OK
    assert stream.response_body == b"X"


@pytest.mark.parametrize("enabled", [True, False])
def test_u32_arguments_are_unsigned_on_both_call_paths(monkeypatch, enabled) -> None:
    """0xffffffff is "to the end" / "append", never -1 (examples/wasm/wat/u32_args.wat; the same
    answers are diffed against Envoy in test_examples_vs_envoy)."""
    monkeypatch.setattr(fastcall, "ENABLED", enabled and fastcall.ENABLED)
    plugin = load_plugin(WAT / "u32_args.wat")
    out = run_exchange(plugin, HttpRequest("POST", "/p", body=b"hello"), HttpResponse(body=b"upstream body"))
    codes = dict(m.split("=") for m in plugin.log_messages())
    assert (codes["ba"], codes["bb"]) == ("0", "5")  # read to the end: the whole body
    assert (codes["bc"], codes["bd"]) == ("0", "3")  # from offset 2 to the end
    assert (codes["bg"], codes["bh"], codes["bj"]) == ("0", "0", "7")  # two appends
    assert out.upstream_body == b"hello!?"
    assert (codes["ca"], codes["cf"]) == ("0", "12")  # start 0, size 2: drain two, prepend one
    assert (codes["cb"], codes["cd"]) == ("0", "1") and out.body == b"R"  # size 0xffffffff: replace
    assert codes["hb"] == codes["hc"] == codes["hd"] == codes["he"] == str(int(Status.BAD_ARGUMENT))
    assert codes["hf"] == codes["hg"] == codes["hh"] == str(int(Status.INVALID_MEMORY_ACCESS))

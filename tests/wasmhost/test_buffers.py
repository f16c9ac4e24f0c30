"""Configuration and body buffers (examples/wasm/wat/buffers.wat)."""

from __future__ import annotations

from envoykit.wasmhost import Action, Status
from tests.wasmhost.conftest import slot


def test_configuration_buffers(wat):
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


def test_request_body_is_buffered_then_edited_with_envoys_rules(wat):
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
    assert slot(plugin, 15) == Status.BAD_ARGUMENT  # splice in the middle
    assert (slot(plugin, 16), slot(plugin, 17)) == (Status.OK, 13)
    assert stream.request_body == b"<hello world>"


def test_response_body_replaced(wat):
    plugin = wat("buffers", configuration="x")
    stream = plugin.http_stream()
    stream.send_request_headers({":path": "/"}, end_of_stream=True)
    stream.send_response_headers({":status": "200"})
    stream.send_response_body("upstream body", end_of_stream=True)
    assert slot(plugin, 18) == Status.OK
    assert stream.response_body == b"X"

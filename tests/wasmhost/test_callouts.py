"""HTTP and gRPC callouts answered by the test (examples/wasm/wat/callouts.wat)."""

from __future__ import annotations

import pytest

from envoykit.wasmhost import Action, Host, Status, StreamStateError, load_plugin
from tests.wasmhost.conftest import WAT, slot

GET = {":path": "/", ":method": "GET", ":authority": "a"}


@pytest.fixture
def plugin():
    return load_plugin(WAT / "callouts.wat", clusters={"backend", "grpc_backend"})


def test_http_call_is_recorded_and_answered_on_the_root_context(plugin) -> None:
    stream = plugin.http_stream()
    assert stream.send_request_headers(GET, end_of_stream=True) == Action.PAUSE
    assert slot(plugin, 0) == Status.OK and slot(plugin, 1) == 4  # first HTTP call id
    assert slot(plugin, 2) == Status.BAD_ARGUMENT  # no :path / :authority
    assert slot(plugin, 3) == Status.BAD_ARGUMENT  # unknown cluster
    [call] = plugin.http_calls
    assert (call.cluster, call.method, call.path, call.body, call.timeout_ms) == (
        "backend",
        "POST",
        "/check",
        b"ping",
        500,
    )
    assert call.headers["content-length"] == "4"
    call.respond(201, {"x-r": "1"}, "pong!")
    assert slot(plugin, 6) == 1  # root context
    # :status, x-r, content-length, x-envoy-upstream-service-time
    assert (slot(plugin, 7), slot(plugin, 8), slot(plugin, 9)) == (4, 4, 5)
    assert plugin.vm.read(slot(plugin, 11), slot(plugin, 12)) == b"pong!"
    assert plugin.vm.read(slot(plugin, 14), slot(plugin, 15)) == b"201"
    assert slot(plugin, 17) == 0
    assert (slot(plugin, 18), slot(plugin, 19)) == (Status.OK, Status.OK)
    assert stream.request_complete
    with pytest.raises(StreamStateError):
        call.respond()


def test_failed_call_has_no_headers_and_a_reset_status(plugin) -> None:
    stream = plugin.http_stream()
    stream.send_request_headers(GET, end_of_stream=True)
    plugin.http_calls[0].fail()
    assert slot(plugin, 8) == 0
    assert slot(plugin, 10) == Status.NOT_FOUND  # no response body buffer
    assert slot(plugin, 17) == Status.BROKEN_CONNECTION
    assert stream.request_complete


def test_grpc_call(plugin) -> None:
    plugin.http_stream().send_request_headers(GET, end_of_stream=True)
    assert slot(plugin, 4) == Status.OK and slot(plugin, 5) == 5  # first gRPC call id
    [call] = plugin.grpc_calls
    assert (call.cluster, call.service, call.method, call.messages) == (
        "grpc_backend",
        "pkg.Svc",
        "Call",
        [b"ping"],
    )
    call.respond(b"answer", initial_metadata={"a": "1"}, trailing_metadata={"b": "2", "c": "3"})
    assert (slot(plugin, 20), slot(plugin, 21), slot(plugin, 25), slot(plugin, 26)) == (1, 5, 2, 0)
    assert plugin.vm.read(slot(plugin, 23), slot(plugin, 24)) == b"answer"
    assert plugin.grpc_calls == []


def test_any_cluster_accepted_without_a_cluster_list() -> None:
    plugin = Host().load(WAT / "callouts.wat")
    plugin.http_stream().send_request_headers(GET, end_of_stream=True)
    assert slot(plugin, 3) == Status.OK  # "nope" is fine when clusters are not restricted

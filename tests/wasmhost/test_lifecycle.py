"""Start-up rules, refused configurations, validation, and gRPC streams (inline WAT modules)."""

from __future__ import annotations

import pytest

from envoykit.wasmhost import FilterFailure, Status, load_plugin

PRELUDE = b"""
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 32768))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
"""


def module(body: bytes, imports: bytes = b"") -> bytes:
    return b"(module " + imports + PRELUDE + body + b")"


def test_only_startup_safe_calls_during_initialize() -> None:
    wasm = module(
        b'(func (export "_initialize") (drop (call $tick (i32.const 10))))',
        b'(import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))',
    )
    with pytest.raises(
        FilterFailure, match="proxy_set_tick_period_milliseconds is not allowed during VM start-up"
    ):
        load_plugin(wasm)


def test_main_runs_after_initialize() -> None:
    wasm = module(
        b"(global $seq (mut i32) (i32.const 0))"
        b'(func (export "_initialize") (global.set $seq (i32.const 1)))'
        b'(func (export "main") (param i32 i32) (result i32)'
        b"  (i32.store (i32.const 256) (i32.add (global.get $seq) (i32.const 10))) (i32.const 0))"
    )
    plugin = load_plugin(wasm)
    assert plugin.vm.read_u32(256) == 11


@pytest.mark.parametrize("callback", ["proxy_on_vm_start", "proxy_on_configure"])
def test_refusing_start_or_configuration_fails_the_load(callback) -> None:
    wasm = module(f'(func (export "{callback}") (param i32 i32) (result i32) (i32.const 0))'.encode())
    with pytest.raises(FilterFailure) as err:
        load_plugin(wasm)
    assert err.value.callback == callback and err.value.reason == "refused"


def test_validate_configuration() -> None:
    wasm = module(
        b'(func (export "proxy_validate_configuration") (param i32 i32) (result i32)'
        b"  (i32.lt_u (local.get 1) (i32.const 4)))"
    )
    plugin = load_plugin(wasm)
    assert plugin.validate_configuration(b"ok") is True
    assert plugin.validate_configuration(b"too long") is False


def test_grpc_stream_send_close_cancel() -> None:
    imports = (
        b'(import "env" "proxy_grpc_stream" (func $stream (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))'
        b'(import "env" "proxy_grpc_send" (func $send (param i32 i32 i32 i32) (result i32)))'
        b'(import "env" "proxy_grpc_close" (func $close (param i32) (result i32)))'
        b'(import "env" "proxy_grpc_cancel" (func $cancel (param i32) (result i32)))'
    )
    body = b"""
      (data (i32.const 2048) "grpc")
      (data (i32.const 2056) "svc")
      (data (i32.const 2064) "M")
      (data (i32.const 2072) "hello")
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
        (i32.store (i32.const 256) (call $stream (i32.const 2048) (i32.const 4) (i32.const 2056) (i32.const 3)
          (i32.const 2064) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 1024)))
        (i32.store (i32.const 260) (call $send (i32.load (i32.const 1024)) (i32.const 2072) (i32.const 5) (i32.const 0)))
        (i32.store (i32.const 264) (call $send (i32.const 5) (i32.const 2072) (i32.const 5) (i32.const 0)))
        (i32.store (i32.const 268) (call $close (i32.load (i32.const 1024))))
        (i32.store (i32.const 272) (call $cancel (i32.const 99)))
        (i32.const 1))
      (func (export "proxy_on_grpc_receive") (param i32 i32 i32) (i32.store (i32.const 276) (local.get 2)))
      (func (export "proxy_on_grpc_close") (param i32 i32 i32) (i32.store (i32.const 280) (local.get 2)))
    """
    plugin = load_plugin(module(body, imports), clusters={"grpc"})
    slots = [plugin.vm.read_u32(256 + 4 * i) for i in range(5)]
    assert slots == [Status.OK, Status.OK, Status.BAD_ARGUMENT, Status.OK, Status.NOT_FOUND]
    [call] = plugin.grpc_calls
    assert (call.token, call.stream, call.messages, call.local_closed) == (6, True, [b"hello"], True)
    call.send(b"reply!")
    assert plugin.vm.read_u32(276) == 6
    call.close(14, "unavailable")
    assert plugin.vm.read_u32(280) == 14 and plugin.grpc_calls == []


def test_start_runs_for_wasi_commands() -> None:
    wasm = module(b'(func (export "_start") (i32.store (i32.const 256) (i32.const 42)))')
    assert load_plugin(wasm).vm.read_u32(256) == 42


def test_compiled_module_cache(tmp_path) -> None:
    from envoykit.wasmhost import load_module
    from envoykit.wasmhost.module import clear_memory_cache

    wasm = module(b'(func (export "proxy_on_tick") (param i32))')
    first = load_module(wasm, cache_dir=tmp_path)
    assert first.from_cache in ("", "memory")
    clear_memory_cache()
    again = load_module(wasm, cache_dir=tmp_path)
    assert again.from_cache == "disk" and list(tmp_path.glob("*.cwasm"))
    assert load_module(wasm, cache_dir=tmp_path).from_cache == "memory"
    assert load_module(wasm, use_cache=False).from_cache == ""
    (next(tmp_path.glob("*.cwasm"))).write_bytes(b"corrupt")
    clear_memory_cache()
    assert load_module(wasm, cache_dir=tmp_path).from_cache == ""  # recompiled, not trusted


def test_trailers_are_reachable_in_their_callbacks_and_can_pause() -> None:
    imports = (
        b'(import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))'
        b'(import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))'
        b'(import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))'
        b'(import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))'
    )
    body = b"""
      (data (i32.const 2048) "x-t")
      (data (i32.const 2056) "yes")
      (data (i32.const 2064) "grpc-status")
      (func (export "proxy_on_request_trailers") (param $ctx i32) (param $n i32) (result i32)
        (i32.store (i32.const 256) (local.get $n))
        (i32.store (i32.const 260) (call $add (i32.const 1) (i32.const 2048) (i32.const 3) (i32.const 2056) (i32.const 3)))
        (i32.const 1))
      (func (export "proxy_on_response_trailers") (param $ctx i32) (param $n i32) (result i32)
        (i32.store (i32.const 264) (call $get (i32.const 3) (i32.const 2064) (i32.const 11) (i32.const 1024) (i32.const 1028)))
        (i32.const 0))
      (func (export "proxy_on_tick") (param i32)
        (drop (call $effective (i32.const 2)))
        (drop (call $continue (i32.const 0))))
    """
    plugin = load_plugin(module(body, imports))
    stream = plugin.http_stream()
    stream.send_request_headers({":path": "/", ":method": "POST"})
    stream.send_request_body("data")
    assert stream.send_request_trailers({"x-a": "1"}) == 1
    assert plugin.vm.read_u32(256) == 1 and plugin.vm.read_u32(260) == Status.OK
    assert stream.request_trailers.items() == [("x-a", "1"), ("x-t", "yes")]
    assert not stream.request_complete and stream.request_body == b"data"
    plugin.tick()  # on_tick: set_effective_context(2), continue_stream(REQUEST)
    assert stream.request_complete
    stream.send_response_headers({":status": "200"})
    assert stream.send_response_trailers({"grpc-status": "0"}) == 0
    assert plugin.vm.read_u32(264) == Status.OK
    assert stream.response_complete

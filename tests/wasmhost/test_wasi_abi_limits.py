"""WASI, ABI versions and refusals, traps / loops / memory bombs (wasi, abi_0_1_0, bad_signature, limits)."""

from __future__ import annotations

import re

import pytest

from envoykit.wasmhost import (
    AbiVersion,
    FilterFailure,
    HttpRequest,
    HttpResponse,
    LogLevel,
    ModuleLoadError,
    PluginFailedError,
    Status,
    run_exchange,
)
from envoykit.wasmhost.abi import AbiError
from envoykit.wasmhost.hostcalls.wasi import EBADF, ENOTSUP
from tests.wasmhost.conftest import WAT, slot


def test_wasi_stdout_stderr_clock_random_environ(wasm_load) -> None:
    plugin = wasm_load(WAT / "wasi.wat", environment={"A": "1", "BB": "22"})
    assert slot(plugin, 0) == 0 and slot(plugin, 1) == 10
    assert [(r.level, r.message) for r in plugin.logs] == [
        (LogLevel.INFO, "to stdout"),
        (LogLevel.ERROR, "to stderr"),
    ]
    assert slot(plugin, 3) == EBADF
    assert slot(plugin, 4) == 0 and slot(plugin, 5) == plugin.host.clock.wall_ns >> 32
    assert slot(plugin, 6) == ENOTSUP
    assert slot(plugin, 7) == 0 and plugin.vm.read(1100, 16) != b"\0" * 16
    assert (slot(plugin, 8), slot(plugin, 9), slot(plugin, 10)) == (0, 2, len("A=1\0BB=22\0"))
    assert plugin.vm.read(1300, 10) == b"A=1\0BB=22\0"


def test_proc_exit_fails_the_callback_and_the_plugin(wasm_load) -> None:
    plugin = wasm_load(WAT / "wasi.wat")
    stream = plugin.http_stream()
    stream.send_request_headers({":path": "/"})
    failure = stream.failure
    assert failure is not None and plugin.failed is failure
    assert re.search(r"proxy_on_request_headers .*proc_exit\(3\)", str(failure))
    assert failure.callback == "proxy_on_request_headers" and failure.context_id == 2
    # Envoy's fail-closed answer, for this stream and the next, without calling the module again
    later = plugin.http_stream()
    later.send_request_headers({":path": "/"}, end_of_stream=True)
    for s in (stream, later):
        assert s.local_response is not None and s.local_response.status == 503
        assert (s.response_headers[":status"], s.response_body) == ("503", b"")
        assert s.local_response.details == "wasm_fail_stream"
    assert later.failure is None and later.actions == []
    with pytest.raises(PluginFailedError):
        plugin.tick()


def test_abi_0_1_0_module(wasm_load) -> None:
    plugin = wasm_load(WAT / "abi_0_1_0.wat", configuration="conf!")
    assert plugin.module.abi_version is AbiVersion.V0_1_0
    assert slot(plugin, 0) == Status.OK
    assert plugin.vm.read(slot(plugin, 1), slot(plugin, 2)) == b"conf!"
    stream = plugin.http_stream()
    stream.send_request_headers({":path": "/", "x-a": "1"}, end_of_stream=True)
    assert slot(plugin, 3) == 2
    assert (slot(plugin, 4), slot(plugin, 5)) == (Status.OK, 0)  # 0.1.0: missing header is OK + empty
    assert stream.request_paused
    plugin.tick()  # proxy_continue_request (0.1.0) from the root context, with the stream effective?
    assert slot(plugin, 6) == Status.OK


def test_abi_0_1_0_with_0_2_signatures_is_refused() -> None:
    from envoykit.wasmhost import load_module

    with pytest.raises(ModuleLoadError, match="Bad function signature for: proxy_on_request_headers") as err:
        load_module(WAT / "bad_signature.wat")
    assert isinstance(err.value.__cause__, AbiError)


def test_unknown_abi_and_unknown_import_are_refused() -> None:
    from envoykit.wasmhost import load_module, load_plugin

    with pytest.raises(ModuleLoadError, match="Missing or unknown Proxy-Wasm ABI version"):
        load_module(b'(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_3_0")))')
    with pytest.raises(ModuleLoadError, match=r"missing import: env\.proxy_frobnicate"):
        load_plugin(
            b'(module (import "env" "proxy_frobnicate" (func)) (memory (export "memory") 1)'
            b' (func (export "malloc") (param i32) (result i32) (i32.const 0)) (func (export "proxy_abi_version_0_2_1")))'
        )
    # 0.2.0 modules do not get 0.2.1's proxy_get_log_level
    with pytest.raises(ModuleLoadError, match=r"missing import: env\.proxy_get_log_level"):
        load_plugin(
            b'(module (import "env" "proxy_get_log_level" (func (param i32) (result i32)))'
            b' (memory (export "memory") 1) (func (export "malloc") (param i32) (result i32) (i32.const 0))'
            b' (func (export "proxy_abi_version_0_2_0")))'
        )
    with pytest.raises(ModuleLoadError, match="missing malloc"):
        load_plugin(b'(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")))')


@pytest.mark.parametrize(
    ("path", "reason", "text"),
    [
        ("/trap", "trap", "unreachable"),
        ("/loop", "fuel", "budget of 2000000 fuel units"),
        ("/memory", "memory", "memory limit of 4194304 bytes"),
    ],
)
def test_failures_are_contained_and_named(wasm_load, path, reason, text) -> None:
    plugin = wasm_load(WAT / "limits.wat", fuel=2_000_000, memory_limit=4 * 1024 * 1024)
    out = run_exchange(plugin, HttpRequest(path=path), HttpResponse())
    assert isinstance(out.failure, FilterFailure) and text in str(out.failure)
    assert out.failure.reason == reason
    assert out.failure.callback == "proxy_on_request_headers"
    assert plugin.failed is out.failure
    assert (out.status, out.body, out.upstream_headers) == (503, b"", None)
    # the host survives: another plugin from the same module still works
    other = wasm_load(WAT / "limits.wat")
    assert other.http_stream().send_request_headers({":path": "/fine"}, end_of_stream=True) == 0

"""The direct C-API call path gives exactly what wasmtime-py's public API gives."""

from __future__ import annotations

import pytest

from envoykit.wasmhost import HttpRequest, HttpResponse, fastcall, load_plugin, run_exchange
from tests.wasmhost.conftest import WAT, slot


def _run(wasm):
    plugin = load_plugin(wasm, root_id="inspect")
    out = run_exchange(
        plugin, HttpRequest("POST", "/x", headers=[("x-a", "1")], body=b"abc"), HttpResponse(body=b"ok")
    )
    return [(r.level, r.message) for r in out.logs], out.headers.items(), out.upstream_body


def test_fast_and_public_paths_agree(wasm_example, monkeypatch) -> None:
    wasm = wasm_example("inspect")
    fast = _run(wasm)
    monkeypatch.setattr(fastcall, "ENABLED", False)
    slow = _run(wasm)
    assert fast == slow
    assert fast[2] == b"ABC"


@pytest.mark.parametrize("enabled", [True, False])
def test_i64_arguments_and_traps_cross_both_paths(monkeypatch, enabled) -> None:
    monkeypatch.setattr(fastcall, "ENABLED", enabled and fastcall.ENABLED)
    plugin = load_plugin(WAT / "metrics.wat")
    assert slot(plugin, 8) == 0 and plugin.host.metric("active") == 7  # gauge got -3 as an i64
    failing = load_plugin(WAT / "wasi.wat")
    stream = failing.http_stream()
    stream.send_request_headers({":path": "/"})
    assert stream.failure is not None and "proc_exit(3)" in str(stream.failure)

"""A failing VM and a TCP close-time write, as Envoy answers them (the same cases are diffed
against Envoy in test_examples_vs_envoy: panic_*.yaml, tcp_close.yaml, tcp_panic.yaml)."""

from __future__ import annotations

from envoykit.wasmdiff.observe import Observation, differences
from envoykit.wasmhost import Action, HttpRequest, HttpResponse, LogLevel, load_plugin, run_exchange
from envoykit.wasmhost.tcp import run_tcp_exchange
from tests.wasmhost.conftest import WAT

PANIC = "panicked at src/lib.rs:7:9:\nboom: the filter gave up\nnote: run with RUST_BACKTRACE=1"


def test_a_trap_in_a_request_is_envoys_503_then_fail_closed() -> None:
    plugin = load_plugin(WAT / "panic.wat")
    ok = run_exchange(plugin, HttpRequest(path="/a"), HttpResponse(body=b"ok"))
    assert (ok.status, ok.body, ok.failure) == (200, b"ok", None)
    bad = run_exchange(plugin, HttpRequest(path="/b", headers=[("x-panic", "request")]), HttpResponse())
    assert bad.failure is not None and bad.failure.callback == "proxy_on_request_headers"
    assert (bad.status, bad.body, bad.upstream_headers) == (503, b"", None)
    assert bad.headers.items() == [(":status", "503"), ("content-length", "0")]
    assert [(r.level, r.message) for r in bad.logs] == [(LogLevel.ERROR, PANIC)]  # whole, multi-line
    assert bad.local_response is not None and bad.local_response.details == "wasm_fail_stream"
    later = run_exchange(plugin, HttpRequest("POST", "/c", body=b"abc"), HttpResponse(body=b"ok"))
    assert (later.status, later.body, later.logs, later.upstream_headers) == (503, b"", [], None)


def test_a_trap_in_the_response_headers_still_answers_503() -> None:
    plugin = load_plugin(WAT / "panic.wat")
    bad = run_exchange(plugin, HttpRequest(headers=[("x-panic", "response")]), HttpResponse(body=b"ok"))
    assert bad.upstream_complete and (bad.status, bad.body) == (503, b"")
    assert bad.failure is not None and bad.failure.callback == "proxy_on_response_headers"


def test_a_trap_answering_a_callout_leaves_the_request_paused() -> None:
    plugin = load_plugin(WAT / "panic.wat", clusters={"auth"})
    out = run_exchange(
        plugin,
        HttpRequest(headers=[("x-panic", "callout")]),
        HttpResponse(body=b"ok"),
        callouts={"auth": HttpResponse(body=b"yes")},
    )
    assert out.failure is not None and out.failure.callback == "proxy_on_http_call_response"
    assert (out.stalled, out.status, out.upstream_headers) == (True, 0, None)
    later = run_exchange(plugin, HttpRequest(path="/c"), HttpResponse(body=b"ok"))
    assert (later.status, later.body) == (503, b"")


def test_fail_open_lets_later_requests_through() -> None:
    plugin = load_plugin(WAT / "panic.wat", failure_policy="FAIL_OPEN")
    bad = run_exchange(plugin, HttpRequest(headers=[("x-panic", "request")]), HttpResponse(body=b"ok"))
    assert bad.status == 503
    later = run_exchange(plugin, HttpRequest(path="/c"), HttpResponse(body=b"ok"))
    assert (later.status, later.body, later.logs) == (200, b"ok", [])
    assert later.upstream_headers is not None and later.upstream_headers[":path"] == "/c"


def test_fail_reload_waits_out_the_backoff_then_starts_a_fresh_vm() -> None:
    plugin = load_plugin(WAT / "reload.wat", failure_policy="FAIL_RELOAD", reload_backoff_ms=1000)
    host, up = plugin.host, HttpResponse(body=b"ok")
    assert run_exchange(plugin, HttpRequest(path="/a"), up).logs[0].message == "request 1 in context 2"
    held = plugin.http_stream()  # a stream of the VM that is about to fail
    bad = run_exchange(plugin, HttpRequest(headers=[("x-panic", "1")]), up)
    assert (bad.status, bad.failure is not None) == (503, True)
    host.advance(999)  # within the backoff (jittered: 1000..1499 ms after the load)
    assert (run_exchange(plugin, HttpRequest(), up).status, plugin.reloads) == (503, 0)
    host.advance(500)
    fresh = run_exchange(plugin, HttpRequest(path="/d"), up)
    assert fresh.status == 200 and plugin.reloads == 1 and plugin.failed is None
    assert [r.message for r in fresh.logs] == ["vm start", "configure", "request 1 in context 2"]
    assert (
        held.send_request_headers({":path": "/"}, end_of_stream=True) == Action.PAUSE
    )  # still the failed VM's
    assert held.local_response is not None and held.local_response.status == 503
    assert run_exchange(plugin, HttpRequest(), up).logs[0].message == "request 2 in context 3"


def test_fail_closed_and_open_never_reload() -> None:
    for policy in ("FAIL_CLOSED", "FAIL_OPEN"):
        plugin = load_plugin(WAT / "reload.wat", failure_policy=policy, reload_backoff_ms=2)
        run_exchange(plugin, HttpRequest(headers=[("x-panic", "1")]), HttpResponse())
        plugin.host.advance(10_000)
        out = run_exchange(plugin, HttpRequest(), HttpResponse(body=b"ok"))
        assert (out.status, out.logs, plugin.reloads) == (
            (503, [], 0) if policy == "FAIL_CLOSED" else (200, [], 0)
        )


def test_tcp_close_time_write_goes_before_the_fin_and_its_echo_ends_the_stream() -> None:
    plugin = load_plugin(WAT / "tcp_close.wat")
    out = run_tcp_exchange(plugin, [b"hello\n"])
    assert (out.upstream_received, out.client_received) == (b"hello\nbye\n", b"hello\n")
    assert [r.message for r in out.logs] == [
        "new", "down 6 0", "up 6 0", "down 0 1", "up 4 1", "up-close 0", "down-close 1", "done", "log",
        "delete",
    ]  # fmt: skip


def test_tcp_trap_closes_the_connection_and_later_ones() -> None:
    plugin = load_plugin(WAT / "tcp_close.wat")
    bad = run_tcp_exchange(plugin, [b"!\n"])
    assert bad.failure is not None and (bad.upstream_received, bad.client_received) == (b"", b"")
    assert [r.message for r in bad.logs] == ["new", "down 2 0"]
    later = run_tcp_exchange(plugin, [b"b\n"])
    assert (later.upstream_received, later.client_received, later.logs) == (b"", b"", [])


def test_timing_headers_count_by_presence_not_value():
    def obs(headers):
        return Observation(status=200, headers=headers)

    a = obs([("x-envoy-upstream-service-time", "3"), ("x-a", "1")])
    assert differences(a, obs([("x-a", "1"), ("x-envoy-upstream-service-time", "11")])) == []
    assert differences(a, obs([("x-a", "1")]))  # missing altogether is a difference

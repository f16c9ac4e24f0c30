"""Every example filter, in the host and through a real Envoy (V8), with identical outcomes.

Each C and AssemblyScript example runs its cases file (tests/wasmhost/cases/) through
``envoykit.wasmdiff``: status, headers, body, the request the upstream got, the filter's logs and
its metrics must match Envoy's exactly. Host-side assertions pin what the outcome *is*, so two
identical wrong answers would still fail.
"""

from __future__ import annotations

import pytest

from envoykit.core.envoy import EnvoyError, EnvoyProcess
from envoykit.wasmdiff.cases import load_cases
from envoykit.wasmdiff.envoy_side import bootstrap
from envoykit.wasmhost import (
    Action,
    FilterFailure,
    HttpRequest,
    HttpResponse,
    ModuleLoadError,
    load_plugin,
    run_exchange,
)
from tests.wasmhost.conftest import CASES

pytestmark = pytest.mark.envoy

DIFFS = [
    ("add_header", "add_header"),
    ("as_add_header", "add_header"),
    ("deny", "deny"),
    ("as_deny", "deny"),
    ("counter", "counter"),
    ("as_counter", "counter"),
    ("callout", "callout"),
    ("as_callout", "callout"),
    ("callout", "callout_denied"),
    ("as_callout", "callout_denied"),
    ("callout", "callout_timeout"),
    ("shared_state", "shared_state"),
    ("as_shared_state", "shared_state"),
    ("inspect", "inspect"),
    ("inspect", "inspect_buffered"),
    ("body_limit", "body_limit"),
    ("wat_local_reply", "local_reply"),
    ("wat_abi_0_1_0_log", "abi_0_1_0"),
    ("wat_headers", "headers_wat"),
    ("wat_buffers", "buffers_wat"),
    ("wat_callouts", "callouts_wat"),
    ("wat_callout_phases", "callout_phases"),
    ("wat_return_codes", "return_codes"),
    ("wat_return_codes_late", "return_codes_late"),
    ("wat_u32_args", "u32_args"),
    ("wat_panic", "panic_request"),
    ("wat_panic", "panic_response"),
    ("wat_panic", "panic_fail_open"),
    ("wat_panic", "panic_callout"),
    ("wat_reload", "reload"),
    ("wat_reload", "reload_long"),
    ("wat_node_metadata", "node_metadata"),
    ("wat_node_metadata", "node_metadata_bare"),
    ("wat_node_metadata", "node_metadata_flat"),
    ("wat_tcp_close", "tcp_close"),
    ("wat_tcp_close", "tcp_panic"),
    ("wat_tcp_close", "tcp_reload"),
    ("wat_tcp_close", "tcp_reload_long"),
    ("wat_envoy_properties", "envoy_properties"),
    ("wat_envoy_properties", "envoy_properties_bare"),
    ("wat_singleton", "singleton"),
    ("wat_stream", "stream_close"),
    ("wat_stream", "stream_buffer"),
    ("wat_stream", "stream_local"),
    ("wat_hostile_args", "hostile_args"),
    ("wat_property_paths", "property_paths"),
    ("wat_malloc_trap", "malloc_trap"),
    ("wat_malloc_trap", "malloc_trap_tcp"),
    ("wat_bad_headers", "bad_headers"),
    ("tcp_inspect", "tcp_inspect"),
]


# Cases whose Envoy side depends on delivery timing: when the upstream's end of stream arrives in a
# later read than its body, Envoy calls on_response_body twice (data, then the buffered body with
# end_of_stream) instead of once; the host models the single call. Seen once in ~5 full CI runs.
TIMING_DEPENDENT = {"callout_phases"}


@pytest.mark.parametrize(("example", "cases"), DIFFS, ids=[f"{e}-{c}" for e, c in DIFFS])
def test_host_matches_envoy(wasm_example, wasm_diff, example, cases) -> None:
    report = wasm_diff(wasm_example(example), CASES / f"{cases}.yaml")
    if not report.ok and cases in TIMING_DEPENDENT:
        report = wasm_diff(wasm_example(example), CASES / f"{cases}.yaml")  # one more draw of the timing
    assert report.ok, report.summary()
    assert len(report.cases) == len(load_cases(CASES / f"{cases}.yaml").cases)


@pytest.mark.parametrize("example", ["add_header", "as_add_header"])
def test_add_header_outcome(wasm_example, example) -> None:
    plugin = load_plugin(wasm_example(example), root_id="add_header", configuration="x-a: 1\nx-b:  two ")
    out = run_exchange(
        plugin, HttpRequest(path="/"), HttpResponse(200, [("content-type", "text/plain")], b"hi")
    )
    assert out.status == 200 and out.body == b"hi"
    assert (out.headers["x-a"], out.headers["x-b"]) == ("1", "two")
    assert plugin.log_messages() == ["add_header: 2 header(s)"]


@pytest.mark.parametrize("example", ["deny", "as_deny"])
def test_deny_outcome(wasm_example, example) -> None:
    plugin = load_plugin(wasm_example(example), root_id="deny", configuration="x-deny")
    stream = plugin.http_stream()
    assert (
        stream.send_request_headers({":path": "/s", ":method": "GET", "x-deny": "1"}, end_of_stream=True)
        == Action.PAUSE
    )
    assert stream.local_response is not None and stream.local_response.status == 403
    assert stream.response_headers["x-denied-by"] == "wasm"
    assert stream.response_body == b"denied by wasm\n"
    assert not stream.request_complete
    ok = run_exchange(plugin, HttpRequest(path="/open"), HttpResponse(body=b"fine"))
    assert (ok.status, ok.body, ok.upstream_headers is not None) == (200, b"fine", True)


@pytest.mark.parametrize("example", ["counter", "as_counter"])
def test_counter_outcome(wasm_example, example) -> None:
    plugin = load_plugin(wasm_example(example), root_id="counter", configuration="count")
    for n in range(1, 4):
        out = run_exchange(plugin, HttpRequest(), HttpResponse())
        assert out.headers["x-request-count"] == str(n)
    assert plugin.metric("requests_total") == 3


@pytest.mark.parametrize("example", ["callout", "as_callout"])
def test_callout_outcome(wasm_example, example) -> None:
    plugin = load_plugin(wasm_example(example), root_id="callout", configuration="auth", clusters={"auth"})
    stream = plugin.http_stream()
    assert (
        stream.send_request_headers({":path": "/", ":method": "GET", "x-user": "bob"}, end_of_stream=True)
        == 1
    )
    [call] = plugin.http_calls
    assert (call.cluster, call.path, call.headers["x-user"]) == ("auth", "/check", "bob")
    assert stream.request_paused
    call.respond(200, body="bob-token")
    assert stream.request_complete and stream.request_headers["x-auth"] == "bob-token"
    denied = plugin.http_stream()
    denied.send_request_headers({":path": "/", ":method": "GET"}, end_of_stream=True)
    plugin.http_calls[0].fail()
    assert denied.local_response is not None and denied.local_response.status == 503


@pytest.mark.parametrize("example", ["shared_state", "as_shared_state"])
def test_shared_state_outcome(wasm_example, example) -> None:
    plugin = load_plugin(wasm_example(example), root_id="shared_state", configuration="hits")
    other = plugin.host.load(wasm_example(example), root_id="shared_state", configuration="hits")
    run_exchange(plugin, HttpRequest(), HttpResponse())
    out = run_exchange(other, HttpRequest(), HttpResponse())  # another VM, same vm_id: shared
    assert out.headers["x-hits"] == "2"
    assert plugin.host.shared_data.items() == {"hits": b"2"}


def test_assemblyscript_empty_configuration_traps_in_both(wasm_example, tmp_path) -> None:
    """The SDK's known bug: an empty plugin configuration traps in onConfigure, in Envoy too."""
    wasm = wasm_example("as_counter")
    with pytest.raises(FilterFailure, match="out of bounds memory access") as err:
        load_plugin(wasm, root_id="counter")
    assert err.value.callback == "proxy_on_configure"
    cases = load_cases(CASES / "counter.yaml")
    cases.configuration = ""
    envoy = EnvoyProcess(bootstrap(wasm, cases, 0, 1, {}, 0), workdir=tmp_path, log_level="error",
                         component_log_level="wasm:info")  # fmt: skip
    with pytest.raises(EnvoyError):
        envoy.start(timeout=30)
    assert "Function: proxy_on_configure failed" in envoy.log()


def test_bad_signature_refused_by_both(wasm_example, tmp_path) -> None:
    wasm = wasm_example("wat_bad_signature")
    with pytest.raises(ModuleLoadError, match="Bad function signature for: proxy_on_request_headers"):
        load_plugin(wasm)
    cases = load_cases(CASES / "add_header.yaml")
    envoy = EnvoyProcess(bootstrap(wasm, cases, 0, 1, {}, 0), workdir=tmp_path, log_level="error",
                         component_log_level="wasm:info")  # fmt: skip
    with pytest.raises(EnvoyError):
        envoy.start(timeout=30)
    assert "Bad function signature for: proxy_on_request_headers" in envoy.log()


def test_tcp_inspect_outcome(wasm_example) -> None:
    from envoykit.wasmhost.tcp import run_tcp_exchange

    plugin = load_plugin(wasm_example("tcp_inspect"), root_id="tcp_inspect")
    out = run_tcp_exchange(plugin, [b"ping\n"])
    assert (out.upstream_received, out.client_received) == (b"PING\n", b"PING\n")
    assert [r.message for r in out.logs][-4:] == ["downstream close peer=1", "done", "log", "delete"]


def test_body_limit_outcome(wasm_example) -> None:
    plugin = load_plugin(wasm_example("body_limit"), root_id="body_limit", configuration="8")
    big = run_exchange(plugin, HttpRequest("POST", "/", body=b"0123456789"), HttpResponse(body=b"ok"))
    assert (big.status, big.body) == (413, b"payload too large\n")
    assert big.upstream_headers is not None and big.upstream_body == b"" and not big.upstream_complete
    assert [r.message for r in big.logs] == ["body_limit: too large", "body_limit: response 413"]  # no DEBUG
    small = run_exchange(plugin, HttpRequest("POST", "/", body=b"0123"), HttpResponse(body=b"ok"))
    assert (small.status, small.upstream_body, small.upstream_complete) == (200, b"0123", True)


def test_grpc_local_reply_outcome(wasm_example) -> None:
    plugin = load_plugin(wasm_example("wat_local_reply"))
    grpc = HttpRequest("POST", "/r", headers=[("content-type", "application/grpc")], body=b"x")
    out = run_exchange(plugin, grpc, HttpResponse())
    assert (out.status, out.body) == (200, b"")
    assert out.headers["grpc-status"] == "14" and out.headers["grpc-message"] == "50%25 off%0A"
    assert out.headers["content-type"] == "application/grpc" and out.headers.get_all("x-a") == ["1", "2"]
    plain = run_exchange(plugin, HttpRequest(path="/g"), HttpResponse())
    assert (plain.status, plain.headers.items()) == (200, [(":status", "200"), ("content-length", "0")])


def test_callout_timeout_is_envoys_504(wasm_example) -> None:
    plugin = load_plugin(wasm_example("callout"), root_id="callout", configuration="auth")
    stream = plugin.http_stream()
    stream.send_request_headers({":path": "/", ":method": "GET"}, end_of_stream=True)
    plugin.http_calls[0].time_out()
    assert "callout: answer 504, 3 header(s), 24 body byte(s)" in plugin.log_messages()
    assert stream.local_response is not None and stream.local_response.status == 403


def test_a_request_paused_to_the_end_keeps_its_headers_reachable(wasm_example) -> None:
    """Observed in Envoy (the callout never answered, the client gave up): on_log can still size
    the held request headers, and on_done still reads them and request.path."""
    plugin = load_plugin(wasm_example("wat_return_codes_late"), clusters={"backend"})
    stream = plugin.http_stream()
    stream.send_request_headers({":path": "/", ":method": "GET", ":authority": "a"}, end_of_stream=True)
    assert stream.request_paused
    stream.complete()
    codes = dict(m.split("=") for m in plugin.log_messages())
    assert (codes["ee"], codes["fa"], codes["fb"]) == ("00", "00", "00")


def test_singleton_and_filter_before_outcome(wasm_example) -> None:
    """What singleton.yaml pins against Envoy: the singleton's shared data and the header the
    filter before the Wasm one added both reach the filter."""
    from envoykit.wasmdiff.host_side import run_case, start_plugin

    cases = load_cases(CASES / "singleton.yaml")
    plugin = start_plugin(wasm_example("wat_singleton"), cases)
    get, post = (run_case(plugin, c, cases) for c in cases.cases)
    assert [m for _, m in get.logs] == ["greeting=hello from the singleton", "x-before=1"]
    assert [m for _, m in post.logs] == ["greeting=hello from the singleton", "x-before=0"]
    assert post.upstream is not None and [v for k, v in post.upstream[2] if k == "x-before"] == ["0", "1"]
    cases.singleton, cases.before_headers = None, []
    bare = start_plugin(wasm_example("wat_singleton"), cases)
    assert [m for _, m in run_case(bare, cases.cases[0], cases).logs] == [
        "greeting=missing",
        "x-before=missing",
    ]


def test_head_response_has_no_body(wasm_example) -> None:
    """What hostile_args.yaml's HEAD case pins against Envoy: the upstream's content-length is
    kept, no body reaches the filter or the client, and the stream is not reset."""
    plugin = load_plugin(wasm_example("wat_hostile_args"))
    out = run_exchange(plugin, HttpRequest(method="HEAD", path="/h"), HttpResponse(body=b"upstream body"))
    assert (out.status, out.body, out.reset, out.stalled) == (200, b"", False, False)
    assert out.headers["content-length"] == "13"
    assert [name for name, _ in out.actions] == ["proxy_on_request_headers", "proxy_on_response_headers"]
    got = run_exchange(plugin, HttpRequest(method="GET", path="/g"), HttpResponse(body=b"upstream body"))
    assert got.body == b"upstream body"


def test_hostile_arguments_answers(wasm_example) -> None:
    """hostile_args.wat's answers as hostile_args.yaml pins them against Envoy: 6
    (INVALID_MEMORY_ACCESS) for every range or out-pointer outside memory, OK for an empty range
    at its very end and for an out-pointer that malloc's memory.grow brought inside."""
    plugin = load_plugin(wasm_example("wat_hostile_args"))
    out = run_exchange(plugin, HttpRequest(path="/g"), HttpResponse(body=b"upstream body"))
    got = dict(m.split("=", 1) for m in (r.message for r in out.logs) if m[2:3] == "=")
    assert {k: got[k] for k in ("aa", "ab", "ac", "ad", "ae", "af", "ag", "ah", "ai", "aj")} == {
        "aa": "0", "ab": "6", "ac": "0", "ad": "6", "ae": "6", "af": "6", "ag": "6", "ah": "0", "ai": "0",
        "aj": "1",
    }  # fmt: skip
    assert (got["ii"], got["ao"], got["ap"], got["ar"], got["as"], got["at"]) == (
        "2",
        "6",
        "3",
        "6",
        "6",
        "6",
    )
    assert (got["au"], got["av"]) == ("6", "6")  # malloc answering outside memory
    assert out.upstream_headers is not None and out.upstream_headers["x-upper-key"] == "v2"


def test_property_path_rules(wasm_example) -> None:
    """property_paths.wat in on_request_headers, as property_paths.yaml pins it against Envoy."""
    plugin = load_plugin(wasm_example("wat_property_paths"))
    out = run_exchange(plugin, HttpRequest(path="/g"), HttpResponse(body=b"up"))
    got = {m[:2]: int(m[3:]) for m in (r.message for r in out.logs) if m[:1] == "A"}
    status = {k: v // 1_000_000 for k, v in got.items()}
    assert status["Aa"] == 3  # an empty path
    assert (status["Ab"], status["Ac"], status["Ad"]) == (3, 3, 1)  # request, request\0, request\0\0
    assert (status["Ae"], status["Af"]) == (0, 1)  # request\0path\0, request\0path\0\0
    assert all(status[k] == 3 for k in ("Ag", "Ah", "Ai", "Aj", "Ak", "Al", "Ar"))  # CEL wrappers
    assert (status["As"], status["At"]) == (1, 1)  # "\0", nosuch\0
    assert got["Av"] == 4  # response.headers before the response: an empty map
    assert got["Aq"] == 0  # metadata: the empty message


def test_malloc_trap_in_a_host_call_lets_the_callback_finish(wasm_example) -> None:
    """malloc_trap.yaml against Envoy, pinned: the host call answers 6, the module runs on (the
    next call allocates again), then the stream and the next one get the 503 of a failed VM."""
    plugin = load_plugin(wasm_example("wat_malloc_trap"))
    out = run_exchange(plugin, HttpRequest(path="/a"), HttpResponse(body=b"up"))
    assert [r.message for r in out.logs] == ["before", "in malloc", "6", "m", "0", "/a", "after"]
    assert (out.status, out.body, out.upstream_headers) == (503, b"", None)
    assert out.failure is not None and out.failure.callback == "malloc"
    later = run_exchange(plugin, HttpRequest(path="/b"), HttpResponse(body=b"up"))
    assert (later.status, later.logs) == (503, [])


@pytest.mark.parametrize(
    ("method", "reason"),
    [("GET", "invalid header value for: x-bad"), ("DELETE", "invalid header name: x a"), ("HEAD", None)],
)
def test_request_headers_http1_cannot_carry(wasm_example, method, reason) -> None:
    """bad_headers.yaml against Envoy, pinned: Envoy's 503 with the reason, through the filter's
    response callbacks, the upstream never reached; a valid header goes through."""
    plugin = load_plugin(wasm_example("wat_bad_headers"))
    out = run_exchange(plugin, HttpRequest(method=method, path="/x"), HttpResponse(body=b"up"))
    if reason is None:
        assert out.status == 200 and out.upstream_headers is not None
        assert out.upstream_headers["x-up"] == "b\tc"
        return
    assert (out.status, out.body, out.upstream_headers) == (503, reason.encode(), None)
    assert out.headers["content-type"] == "text/plain"
    assert [r.message for r in out.logs] == ["reqh", "resh", "resb"]

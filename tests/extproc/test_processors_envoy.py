"""User processors through a real Envoy: headers, bodies, immediate responses, limits, failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from envoykit.core import free_port
from tests.extproc import procs
from tests.extproc.helpers import ThreadedServer, ext_proc_filter, proxy_config
from tests.extproc.proc import start_extproc
from tests.serverproc import StartServer
from tests.upstream import EchoServer


@pytest.fixture
def upstream() -> Iterator[EchoServer]:
    with EchoServer() as srv:
        yield srv


def start(envoy, upstream, extproc_port: int, **filter_kw) -> str:
    port = free_port()
    envoy(proxy_config(port, upstream.port, extproc_port, [ext_proc_filter(**filter_kw)]))
    return f"http://127.0.0.1:{port}"


def test_header_added_reaches_upstream_and_response(envoy, upstream) -> None:
    with ThreadedServer([procs.add_header]) as srv:
        url = start(envoy, upstream, srv.port)
        r = httpx.get(f"{url}/a/b?c=1")
    assert r.status_code == 200
    seen = r.json()["headers"]
    assert seen["x-processed-by"] == "envoykit"
    assert seen["x-seen-path"] == "/a/b?c=1"
    assert r.headers["x-request-path"] == "/a/b?c=1"  # state carried from request to response


@pytest.mark.parametrize("mode", ["BUFFERED", "STREAMED", "BUFFERED_PARTIAL", "FULL_DUPLEX_STREAMED"])
def test_request_body_rewritten_arrives_whole(envoy, upstream, mode: str) -> None:
    pm = {"request_body_mode": mode, "response_header_mode": "SKIP"}
    if mode == "FULL_DUPLEX_STREAMED":
        pm["request_trailer_mode"] = "SEND"
    with ThreadedServer([procs.Upper()]) as srv:
        url = start(envoy, upstream, srv.port, processing_mode=pm)

        def chunks() -> Iterator[bytes]:
            for _ in range(3):
                yield b"abc" * 1000
                time.sleep(0.02)

        r = httpx.post(f"{url}/up", content=chunks(), timeout=10)
        r2 = httpx.post(f"{url}/up", content=b"hello")
    body = r.json()
    assert r.status_code == 200
    assert body["body"] == "ABC" * 3000 + "!"  # every chunk, in order, plus the added byte
    assert body["body_len"] == 9001
    assert r2.json()["body"] == "HELLO!"
    if mode == "BUFFERED":
        assert r2.json()["headers"]["content-length"] == "6"  # corrected, not the client's 5
    else:
        assert r2.json()["chunked"] is True  # length left to chunked framing


def test_response_body_rewritten_buffered_has_right_length(envoy, upstream) -> None:
    with ThreadedServer([procs.Upper()]) as srv:
        url = start(
            envoy,
            upstream,
            srv.port,
            processing_mode={"request_header_mode": "SKIP", "response_body_mode": "BUFFERED"},
        )
        r = httpx.get(f"{url}/x", headers={"x-echo-body-size": "1000"})
    assert r.status_code == 200
    assert r.headers["content-length"] == "2000"
    assert r.content == b"x" * 2000


def test_immediate_response_short_circuits(envoy, upstream) -> None:
    with ThreadedServer([procs.Gate()]) as srv:
        url = start(envoy, upstream, srv.port)
        r = httpx.get(f"{url}/deny/me")
        ok = httpx.get(f"{url}/fine")
    assert r.status_code == 403
    assert r.text == "denied by gate\n"
    assert r.headers["x-denied"] == "1"
    assert [q["path"] for q in upstream.requests] == ["/fine"]  # /deny never reached upstream
    assert ok.json()["headers"]["x-gate"] == "passed"


@pytest.mark.parametrize(("mode", "status"), [("BUFFERED", 413), ("STREAMED", 200)])
def test_two_megabytes_buffered_is_413_streamed_passes(envoy, upstream, mode: str, status: int) -> None:
    with ThreadedServer([procs.Upper()]) as srv:
        url = start(envoy, upstream, srv.port, processing_mode={"request_body_mode": mode})
        r = httpx.post(f"{url}/big", content=b"z" * (2 * 1024 * 1024), timeout=30)
    assert r.status_code == status
    if status == 200:
        assert r.json()["body_len"] == 2 * 1024 * 1024 + 1


def test_processor_that_raises_follows_its_failure_mode(envoy, upstream) -> None:
    with ThreadedServer([procs.Gate(), procs.add_header]) as srv:
        url = start(envoy, upstream, srv.port)
        r = httpx.get(f"{url}/boom")
    assert r.status_code == 200  # continue: the stream lives on, the next processor still runs
    seen = r.json()["headers"]
    assert "x-gate" not in seen  # edits of the failed handler are dropped
    assert seen["x-processed-by"] == "envoykit"

    with ThreadedServer([procs.StrictGate(), procs.add_header]) as srv:
        url = start(envoy, upstream, srv.port)
        r = httpx.get(f"{url}/boom")
        ok = httpx.get(f"{url}/fine")
    assert r.status_code == 500  # reject
    assert ok.status_code == 200


@pytest.mark.parametrize(("allow", "status"), [(True, 200), (False, 500)])
def test_server_killed_mid_stream_follows_failure_mode_allow(
    envoy, upstream, allow: bool, status: int, server_process: StartServer
) -> None:
    with start_extproc(server_process, "--no-telemetry", "--processor", "tests.extproc.procs:Slow") as srv:
        url = start(envoy, upstream, srv.port, failure_mode_allow=allow, timeout_ms=20000)
        assert httpx.get(f"{url}/warmup").status_code == 200
        result: list[httpx.Response] = []
        t = threading.Thread(
            target=lambda: result.append(httpx.get(f"{url}/held", headers={"x-hold-ms": "10000"}, timeout=30))
        )
        t.start()
        time.sleep(1.0)  # the request is now waiting on the processor
        srv.kill()
        t.join(30)
    assert result and result[0].status_code == status
    if allow:
        assert result[0].json()["path"] == "/held"


def test_mode_override_timeout_extension_and_dynamic_metadata(envoy, upstream, tmp_path) -> None:
    log = tmp_path / "access.log"
    with ThreadedServer([procs.Steer()]) as srv:
        port = free_port()
        f = ext_proc_filter(
            processing_mode={"request_header_mode": "SEND", "response_header_mode": "SKIP"},
            timeout_ms=1000,
            allow_mode_override=True,
            max_message_timeout="10s",
            metadata_options={"receiving_namespaces": {"untyped": ["envoykit"]}},
        )
        cfg = proxy_config(port, upstream.port, srv.port, [f])
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["access_log"] = [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": str(log),
                    "log_format": {
                        "text_format_source": {"inline_string": "%DYNAMIC_METADATA(envoykit:user)%\n"}
                    },
                },
            }
        ]
        envoy(cfg)
        url = f"http://127.0.0.1:{port}"
        plain = httpx.get(f"{url}/a", headers={"x-echo-body-size": "3"})
        steered = httpx.get(f"{url}/b", headers={"x-echo-body-size": "3", "x-buffer-response": "1"})
        late = httpx.get(f"{url}/c", headers={"x-hold-ms": "2000"}, timeout=15)
        extended = httpx.get(f"{url}/d", headers={"x-hold-ms": "2000", "x-extend": "1"}, timeout=15)
    assert plain.content == b"xxx"  # the response body is not sent by default
    assert steered.content == b"[xxx]"  # mode_override asked for it, and it was rewritten
    # headers went out before the body (header mode SKIP): Envoy drops the stale length, chunks it
    assert steered.headers.get("content-length", "5") == "5"
    assert late.status_code == 504  # 2 s > message_timeout 1 s, failure_mode_allow false
    assert extended.status_code == 200  # override_message_timeout sent first bought the time
    deadline = time.monotonic() + 10
    while len(log.read_text().split()) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert log.read_text().split()[:2] == ["alice", "alice"]

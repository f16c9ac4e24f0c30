"""The control plane's access-log tag (Envoy formats each entry's facts) against an Envoy configured
without it (headers logged instead, as another control plane does): the same traffic gives the same
metrics and the same JSON lines, and a value with quotes or backslashes cannot break a line."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx

from envoykit.core import free_port
from envoykit.core.accesslog import REQUEST_HEADERS, RESPONSE_HEADERS, RESPONSE_TRAILERS, TAG
from envoykit.core.peer import format_peer
from tests.envoycfg import bootstrap, cluster, http_listener, route_to
from tests.serverproc import StartServer
from tests.telemetry.helpers import (
    BACKEND,
    FRONTEND,
    access_logs,
    read_lines,
    samples,
    start_telemetry,
    wait_total,
)

VOLATILE = {"@timestamp", "duration_ms", "upstream_service_time_ms", "request_id", "authority"}
VOLATILE |= {"downstream_remote_address", "upstream_host", "request_bytes", "response_bytes"}  # ports, dates


def _untagged(logs: list[dict[str, Any]], cluster_name: str) -> list[dict[str, Any]]:
    """The same logger without the tag, logging headers instead, to ``cluster_name``."""
    out = copy.deepcopy(logs)
    conf = out[0]["typed_config"]
    common = conf["common_config"]
    assert [t["tag"] for t in common.pop("custom_tags")] == [TAG]
    common["grpc_service"]["envoy_grpc"]["cluster_name"] = cluster_name
    conf["additional_request_headers_to_log"] = list(REQUEST_HEADERS)
    conf["additional_response_headers_to_log"] = list(RESPONSE_HEADERS)
    conf["additional_response_trailers_to_log"] = list(RESPONSE_TRAILERS)
    return out


def test_tagged_and_untagged_entries_count_and_log_the_same(
    envoy, echo, tmp_path: Path, server_process: StartServer
) -> None:
    with (
        start_telemetry(server_process, tmp_path / "a.log") as tagged,
        start_telemetry(server_process, tmp_path / "b.log") as plain,
    ):
        ports = free_port(), free_port()
        logs = access_logs(tagged.port, "destination")
        listeners = [
            http_listener(
                port, [route_to("app", route={"timeout": "10s"})], name=f"in{i}", hcm_extra={"access_log": a}
            )
            for i, (port, a) in enumerate(zip(ports, (logs, _untagged(logs, "plain_als")), strict=True))
        ]
        cfg = bootstrap(
            listeners,
            [
                cluster("app", echo.port),
                cluster("envoykit_telemetry", tagged.port, http2=True),
                cluster("plain_als", plain.port, http2=True),
            ],
        )
        cfg["node"] = {"id": "sidecar~backend-v2", "cluster": "backend", "metadata": BACKEND}
        envoy(cfg)
        odd = 'say "hi" \\ \t to {json}'  # quotes, a backslash and a tab: JSON must escape them
        for port in ports:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
                for status in (200, 200, 404, 503):
                    headers = {
                        "x-echo-status": str(status),
                        "x-envoykit-peer": format_peer(FRONTEND),
                        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    }
                    assert c.post("/items", content=b"q" * 10, headers=headers).status_code == status
                assert c.get('/odd"path\\', headers={"user-agent": odd}).status_code == 200
                assert c.get("/nope", headers={"content-type": "application/grpc"}).status_code == 200
        texts = [wait_total(srv, "istio_requests_total", 6) for srv in (tagged, plain)]
        lines = [read_lines(tmp_path / n) for n in ("a.log", "b.log")]

    def series(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted(lbl.items())): v for lbl, v in samples(text, name)}

    for name in ("istio_requests_total", "istio_request_bytes_count", "istio_response_bytes_count"):
        assert series(texts[0], name) == series(texts[1], name), name
    by_code: dict[str, float] = {}
    for k, v in series(texts[0], "istio_requests_total").items():
        by_code[dict(k)["response_code"]] = by_code.get(dict(k)["response_code"], 0) + v
    assert by_code == {"200": 4, "404": 1, "503": 1}
    assert len(lines[0]) == len(lines[1]) == 6
    for a, b in zip(lines[0], lines[1], strict=True):
        assert {k: v for k, v in a.items() if k not in VOLATILE} == {
            k: v for k, v in b.items() if k not in VOLATILE
        }
    odd_line = next(x for x in lines[0] if x["user_agent"] == odd)
    assert odd_line["path"] == "/odd%22path\\" and odd_line["status"] == 200  # httpx encodes the quote
    assert lines[0][0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert lines[0][0]["source_workload"] == "frontend-v1" and lines[0][0]["method"] == "POST"
    grpc_line = next(x for x in lines[0] if x["path"] == "/nope")
    assert grpc_line["grpc_status"] == "unknown"  # gRPC by content-type, no grpc-status answered

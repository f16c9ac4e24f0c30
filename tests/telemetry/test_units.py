"""Units of the telemetry room and the core contracts it shares with the control plane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from prometheus_client import CollectorRegistry, generate_latest

from envoykit.control.model.loader import load_mesh
from envoykit.control.translate.clusters import external_cluster_name, outbound_cluster_name
from envoykit.core.accesslog import LOG_NAMES, parse_cluster_name, reporter_of
from envoykit.core.peer import format_peer, parse_peer, spiffe_parts
from envoykit.telemetry.accesslog import AccessLogWriter, trace_id
from envoykit.telemetry.flags import response_flags
from envoykit.telemetry.labels import HTTP_LABELS, LabelGuard, Reporter, destination_service
from envoykit.telemetry.metrics import IstioMetrics, ServerMetrics
from envoykit.telemetry.record import Recorder
from tests.serverproc import StartServer

REPO = Path(__file__).resolve().parents[2]


def test_cluster_names_of_the_control_plane_parse_back() -> None:
    mesh = load_mesh(REPO / "examples" / "mesh.yaml").mesh
    svc = mesh.services[0]
    parts = parse_cluster_name(outbound_cluster_name(mesh, svc, "v1"))
    assert parts is not None and parts.direction == "outbound" and parts.subset == "v1"
    assert (
        destination_service(outbound_cluster_name(mesh, svc), "")[0]
        == f"{svc.name}.{mesh.ns(svc)}.svc.cluster.local"
    )
    if mesh.gateways and any(g.allow for g in mesh.gateways):
        ext = next(h for g in mesh.gateways for h in g.allow)
        assert destination_service(external_cluster_name(ext), "")[0] == ext.host
    assert destination_service("ext_authz", "api.example:8443") == ("api.example", "api.example", "")
    assert parse_cluster_name("ext_authz") is None


def test_reporters_and_peer_header_round_trip() -> None:
    assert {reporter_of(v) for v in LOG_NAMES.values()} == {"source", "destination"}
    assert reporter_of("other") == "unknown"
    meta = {"workload": "a-v1", "app": "a", "principal": "spiffe://td/ns/n/sa/s", "kind": "sidecar"}
    assert parse_peer(format_peer(meta)) == {k: v for k, v in meta.items() if k != "kind"}
    assert spiffe_parts("spiffe://td/ns/shop/sa/web") == ("shop", "web")


def test_response_flags_use_envoy_short_codes() -> None:
    assert response_flags(accesslog_pb2.ResponseFlags()) == "-"
    flags = accesslog_pb2.ResponseFlags(upstream_connection_failure=True, upstream_retry_limit_exceeded=True)
    assert response_flags(flags) == "UF,URX"
    assert response_flags(accesslog_pb2.ResponseFlags(no_route_found=True)) == "NR"


def test_label_guard_bounds_each_label() -> None:
    g = LabelGuard(max_values=2)
    assert [g(1, v) for v in ("a", "b", "c", "a")] == ["a", "b", "unknown", "a"]
    assert g.collapsed == 1
    assert g(2, "") == "unknown"
    with pytest.raises(ValueError):
        LabelGuard(0)


def _entry(code: int, peer: str) -> accesslog_pb2.HTTPAccessLogEntry:
    e = accesslog_pb2.HTTPAccessLogEntry()
    e.response.response_code.value = code
    e.request.request_headers["x-envoykit-peer"] = peer
    e.common_properties.start_time.seconds = 1_700_000_000
    e.common_properties.time_to_last_downstream_tx_byte.nanos = 3_000_000
    return e


def test_cardinality_bound_collapses_new_peers_and_counts_everything(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = IstioMetrics()
    registry.register(metrics)
    rec = Recorder(
        metrics, ServerMetrics(registry), LabelGuard(max_values=3), AccessLogWriter(tmp_path / "a.log")
    )
    ident = als_pb2.StreamAccessLogsMessage.Identifier(log_name=LOG_NAMES["destination"])
    ident.node.id = "sidecar~b-v1"
    ident.node.metadata.update({"workload": "b-v1", "app": "b", "namespace": "ns"})
    rep = Reporter.from_identifier(ident)
    entries = [_entry(200, f"workload=w{i}") for i in range(10)]
    rec.http(rep, entries)
    text = generate_latest(registry).decode()
    workloads = {
        line.split('source_workload="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("istio_requests_total{")
    }
    assert workloads == {"w0", "w1", "w2", "unknown"}
    total = sum(
        float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith("istio_requests_total{")
    )
    assert total == 10
    # each of the 7 late peers loses its workload and canonical service (which falls back to it)
    assert "envoykit_telemetry_label_values_collapsed_total 14.0" in text
    lines = [json.loads(x) for x in (tmp_path / "a.log").read_text().splitlines()]
    assert [x["source_workload"] for x in lines] == [f"w{i}" for i in range(10)]  # logs keep the real value
    assert lines[0]["@timestamp"] == "2023-11-14T22:13:20.000Z" and lines[0]["status"] == 200
    assert len(HTTP_LABELS) == len(set(HTTP_LABELS))


def test_writer_rotates_by_size_and_keeps_batches_whole(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "access.log"
    w = AccessLogWriter(path, max_bytes=1000, backups=2)
    for i in range(30):
        w.write([json.dumps({"i": i, "pad": "x" * 40})] * 3)
    w.close()
    files = sorted(path.parent.iterdir())
    assert [f.name for f in files] == ["access.log", "access.log.1", "access.log.2"]
    for f in files:
        assert f.stat().st_size <= 1000
        lines = f.read_text().splitlines()
        assert len(lines) % 3 == 0 and all(json.loads(x) for x in lines)


def test_trace_id_from_traceparent_or_b3() -> None:
    assert trace_id({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}) == (
        "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert trace_id({"x-b3-traceid": "abc"}) == "abc"
    assert trace_id({}) == ""


def test_logs_access_prints_the_last_lines_of_a_file(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from envoykit.cli import main

    path = tmp_path / "access.json"
    w = AccessLogWriter(path)
    w.write([json.dumps({"i": i}) for i in range(10)])
    w.close()
    out = CliRunner().invoke(main, ["logs", "access", "--file", str(path), "-n", "3"])
    assert out.exit_code == 0, out.output
    assert [json.loads(x)["i"] for x in out.output.splitlines()] == [7, 8, 9]
    missing = CliRunner().invoke(main, ["logs", "access", "--file", str(tmp_path / "nope.json")])
    assert missing.exit_code != 0 and "no log yet" in missing.output


@pytest.mark.server
def test_a_second_server_on_a_served_address_exits_1(tmp_path: Path, server_process: StartServer) -> None:
    import subprocess
    import sys

    from tests.telemetry.helpers import ROOT, start_telemetry

    with start_telemetry(server_process, tmp_path / "a.json") as srv:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "envoykit.cli",
                "telemetry",
                "serve",
                "--address",
                f"127.0.0.1:{srv.port}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1
    assert f"address in use: 127.0.0.1:{srv.port}" in out.stderr


def _tcp(kind: int, sid: str, sent: int, received: int) -> accesslog_pb2.TCPAccessLogEntry:
    e = accesslog_pb2.TCPAccessLogEntry()
    e.common_properties.access_log_type = kind  # type: ignore[assignment]
    e.common_properties.stream_id = sid
    e.connection_properties.sent_bytes = sent
    e.connection_properties.received_bytes = received
    return e


def test_tcp_bytes_count_once_across_periodic_entries_and_a_restart() -> None:
    registry = CollectorRegistry()
    metrics = IstioMetrics()
    registry.register(metrics)
    rec = Recorder(metrics, ServerMetrics(registry), LabelGuard(max_values=10))
    ident = als_pb2.StreamAccessLogsMessage.Identifier(log_name=LOG_NAMES["source"])
    rep = Reporter.from_identifier(ident)
    connected, periodic, end = 1, 2, 3  # AccessLogType
    rec.tcp(rep, [_tcp(connected, "a", 0, 0), _tcp(periodic, "a", 100, 10)])
    rec.tcp(rep, [_tcp(periodic, "a", 250, 10), _tcp(periodic, "a", 250, 10), _tcp(end, "a", 300, 12)])
    # "b" opened before this server: its first periodic entry is the baseline, not counted again
    rec.tcp(rep, [_tcp(periodic, "b", 1000, 500), _tcp(end, "b", 1200, 600)])
    # "c" never reached its upstream (no connected entry): counted opened and closed at its end
    rec.tcp(rep, [_tcp(end, "c", 0, 7)])
    text = generate_latest(registry).decode()

    def value(name: str) -> float:
        return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(name + "{"))

    assert value("istio_tcp_sent_bytes_total") == 300 + 200 + 0
    assert value("istio_tcp_received_bytes_total") == 12 + 100 + 7
    assert value("istio_tcp_connections_opened_total") == 2  # a and c; b's open was counted before
    assert value("istio_tcp_connections_closed_total") == 3
    assert rep.connected == {}

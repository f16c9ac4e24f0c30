"""Long-lived TCP connections through real Envoys: bytes are counted while the connection is open
(``tcp_proxy`` periodic access-log entries), and the total at close is exact (nothing twice)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from envoykit.core import free_port
from tests.envoycfg import bootstrap, cluster
from tests.serverproc import StartServer
from tests.telemetry.helpers import (
    BACKEND,
    FRONTEND,
    TcpEcho,
    read_lines,
    start_telemetry,
    tcp_listener,
    total,
    wait_total,
)

FLUSH = 0.3  # seconds between periodic entries


def _echo(s: socket.socket, n: int) -> None:
    s.sendall(b"y" * n)
    got = 0
    while got < n:
        chunk = s.recv(65536)
        assert chunk, "connection closed early"
        got += len(chunk)


def test_open_connection_reports_bytes_periodically_and_exactly_at_close(
    envoy, tmp_path: Path, server_process: StartServer
) -> None:
    with TcpEcho() as app, start_telemetry(server_process, tmp_path / "access.log") as srv:
        in_port, out_port = free_port(), free_port()
        als = cluster("envoykit_telemetry", srv.port, http2=True)
        server_cfg = bootstrap(
            [tcp_listener("inbound", in_port, "inbound|9000||", srv.port, "destination", FLUSH)],
            [cluster("inbound|9000||", app.port), als],
        )
        server_cfg["node"] = {"id": "sidecar~db-v1", "cluster": "db", "metadata": {**BACKEND, "app": "db"}}
        client_cfg = bootstrap(
            [tcp_listener("outbound_tcp|db", out_port, "outbound|9000||db.shop", srv.port, "source", FLUSH)],
            [cluster("outbound|9000||db.shop", in_port), dict(als)],
        )
        client_cfg["node"] = {"id": "sidecar~frontend-v1", "cluster": "frontend", "metadata": FRONTEND}
        envoy(server_cfg, name="db-sidecar")
        envoy(client_cfg, name="frontend-sidecar")

        with socket.create_connection(("127.0.0.1", out_port), timeout=10) as s:
            _echo(s, 1000)
            text = wait_total(srv, "istio_tcp_received_bytes_total", 2 * 1000)  # both reporters
            assert total(text, "istio_tcp_received_bytes_total") == 2 * 1000
            assert total(text, "istio_tcp_sent_bytes_total") == 2 * 1000
            assert total(text, "istio_tcp_connections_opened_total") == 2
            assert total(text, "istio_tcp_connections_closed_total") == 0  # still open
            _echo(s, 30000)
            text = wait_total(srv, "istio_tcp_received_bytes_total", 2 * 31000)
            assert total(text, "istio_tcp_received_bytes_total") == 2 * 31000
            time.sleep(3 * FLUSH)  # periodic entries with no new bytes add nothing
            text = srv.metrics()
            assert total(text, "istio_tcp_received_bytes_total") == 2 * 31000
            assert total(text, "istio_tcp_connections_closed_total") == 0
            _echo(s, 7)
        text = wait_total(srv, "istio_tcp_connections_closed_total", 2)
        lines = read_lines(tmp_path / "access.log")
    for reporter in ("source", "destination"):
        labels = {"reporter": reporter, "destination_service": "db.shop.svc.cluster.local"}
        assert total(text, "istio_tcp_connections_opened_total", **labels) == 1
        assert total(text, "istio_tcp_connections_closed_total", **labels) == 1
        assert total(text, "istio_tcp_received_bytes_total", **labels) == 31007
        assert total(text, "istio_tcp_sent_bytes_total", **labels) == 31007
    tcp_lines = [x for x in lines if x["kind"] == "tcp"]  # one line per closed connection, with its totals
    assert sorted(x["reporter"] for x in tcp_lines) == ["destination", "source"]
    assert all(x["received_bytes"] == 31007 and x["sent_bytes"] == 31007 for x in tcp_lines)

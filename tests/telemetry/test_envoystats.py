"""Units of the stats transport's reader: Envoy's tag parsed into Istio's labels, an Envoy restart keeps
what it had counted, an admin that stops answering keeps its last totals; the JSON file's rotation."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from envoykit.core.peer import format_peer
from envoykit.telemetry.accesslog import AccessLogWriter
from envoykit.telemetry.envoystats import EnvoyStatsReader
from envoykit.telemetry.labels import HTTP_LABELS, LabelGuard
from tests.telemetry.helpers import BACKEND, FRONTEND

_NODE = {"node": {"id": "sidecar~backend-v2", "metadata": BACKEND}}


class FakeAdmin(ThreadingHTTPServer):
    """Answers ``/server_info`` and ``/stats/prometheus`` with what the test set (Envoy's shapes)."""

    def __init__(self) -> None:
        self.uptime = 10
        self.prometheus = ""
        self.up = True

        class Handler(BaseHTTPRequestHandler):
            def do_GET(h) -> None:
                if not self.up:
                    h.send_error(503)
                    return
                if h.path.startswith("/server_info"):
                    body = json.dumps({**_NODE, "uptime_current_epoch": f"{self.uptime}s"}).encode()
                else:
                    body = self.prometheus.encode()
                h.send_response(200)
                h.end_headers()
                h.wfile.write(body)

            def log_message(h, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def admin() -> Iterator[FakeAdmin]:
    srv = FakeAdmin()
    yield srv
    srv.shutdown()
    srv.server_close()


def _stats(n: int, facts: str, completed: int | None = None) -> str:
    """Envoy's /stats/prometheus for ``n`` requests of one tag value (and the HCM's completions)."""
    label = f'facts="{facts}"'
    out = [
        "# TYPE envoy_envoykit_destination_request_duration_milliseconds histogram",
        f'envoy_envoykit_destination_request_duration_milliseconds_bucket{{{label},le="5"}} {n}',
        f'envoy_envoykit_destination_request_duration_milliseconds_bucket{{{label},le="+Inf"}} {n}',
        f"envoy_envoykit_destination_request_duration_milliseconds_sum{{{label}}} {2 * n}",
        f"envoy_envoykit_destination_request_duration_milliseconds_count{{{label}}} {n}",
        "# TYPE envoy_http_downstream_rq_completed counter",
        f'envoy_http_downstream_rq_completed{{envoy_http_conn_manager_prefix="inbound"}} {completed or n}',
        'envoy_http_downstream_rq_completed{envoy_http_conn_manager_prefix="admin"} 99',
    ]
    return "\n".join(out) + "\n"


def _label(series: object, name: str) -> str:
    return series.labels[HTTP_LABELS.index(name)]  # type: ignore[attr-defined]


def test_the_tag_becomes_istio_labels_and_dashes_mean_none(admin: FakeAdmin) -> None:
    peer = format_peer(FRONTEND)
    admin.prometheus = _stats(3, f"200 - - {FRONTEND['principal']},spiffe://x/y {peer}")
    (s,) = EnvoyStatsReader([admin.url], LabelGuard()).http_series()
    assert s.requests == 3 and s.duration.counts[2] == 3 and s.duration.sum == 6
    assert _label(s, "reporter") == "destination"
    assert _label(s, "source_workload") == "frontend-v1"
    assert _label(s, "source_principal") == FRONTEND["principal"]  # the first URI SAN
    assert _label(s, "destination_workload") == "backend-v2"
    assert _label(s, "connection_security_policy") == "mutual_tls"
    assert (_label(s, "response_code"), _label(s, "response_flags")) == ("200", "-")
    assert (_label(s, "request_protocol"), _label(s, "grpc_response_status")) == ("http", "")
    # no certificate, no peer header, a gRPC status: Envoy writes '-' for what it has not
    admin.prometheus = _stats(2, "200 - 14 - -")
    (s,) = EnvoyStatsReader([admin.url], LabelGuard()).http_series()
    assert _label(s, "source_principal") == "unknown"
    assert _label(s, "connection_security_policy") == "none"
    assert (_label(s, "request_protocol"), _label(s, "grpc_response_status")) == ("grpc", "14")


def test_an_envoy_restart_keeps_its_counts_and_a_silent_admin_its_last(admin: FakeAdmin) -> None:
    reader = EnvoyStatsReader([admin.url], LabelGuard())
    admin.prometheus = _stats(5, "200 - - - -")
    assert [s.requests for s in reader.http_series()] == [5]
    assert [s.requests for s in reader.http_series()] == [5]  # read again: not counted twice
    admin.uptime, admin.prometheus = 1, _stats(2, "200 - - - -")  # Envoy restarted, counts from zero
    assert [s.requests for s in reader.http_series()] == [7]
    admin.uptime, admin.prometheus = 2, _stats(4, "200 - - - -")
    assert [s.requests for s in reader.http_series()] == [9]
    admin.up = False
    assert [s.requests for s in reader.http_series()] == [9]
    assert reader.up() == {admin.url: False}
    (gap,) = reader.gap_metrics()
    assert [(s.labels, s.value) for s in gap.samples] == [
        ({"node": "sidecar~backend-v2", "reporter": "destination"}, 4.0)
    ]


def test_the_file_envoys_append_to_is_rotated_by_its_size_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    writer = AccessLogWriter(path, max_bytes=100, backups=2)
    rotated: list[int] = []
    writer.on_rotate.append(lambda: rotated.append(1))
    writer.write(['{"kind":"tcp"}'])
    assert not writer.rotate_if_large()
    with path.open("a") as f:  # an Envoy's lines
        f.write('{"kind":"http"}\n' * 10)
    assert writer.rotate_if_large() and rotated == [1]
    assert path.read_text() == "" and len((tmp_path / "access.json.1").read_text().splitlines()) == 11
    writer.write(['{"kind":"tcp"}'])
    assert path.read_text() == '{"kind":"tcp"}\n'
    writer.close()

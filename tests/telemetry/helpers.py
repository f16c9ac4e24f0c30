"""Test helpers: the telemetry server as a process, sidecar-shaped Envoy configs wired by the control
plane's own access-logger builders, a TCP echo upstream, and /metrics readers."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from google.protobuf import json_format

from envoykit.control.model.mesh import AccessLogServer
from envoykit.control.model.types import Address
from envoykit.control.translate.accesslog import (
    ACCESS_LOG_CLUSTER,
    http_access_logs,
    logger_dict,
    tcp_access_logs,
)
from envoykit.control.translate.listeners import tcp_proxy
from envoykit.core import free_port
from envoykit.core.peer import format_peer
from tests.envoycfg import bootstrap, cluster, http_listener, route_to, socket_address
from tests.serverproc import ServerProcess, StartServer

ROOT = Path(__file__).resolve().parents[2]

FRONTEND = {
    "workload": "frontend-v1",
    "app": "frontend",
    "version": "v1",
    "namespace": "shop",
    "service_account": "frontend",
    "principal": "spiffe://envoykit.local/ns/shop/sa/frontend",
    "mesh_id": "mesh1",
}
BACKEND = {
    "workload": "backend-v2",
    "app": "backend",
    "version": "v2",
    "namespace": "shop",
    "service_account": "backend",
    "principal": "spiffe://envoykit.local/ns/shop/sa/backend",
    "mesh_id": "mesh1",
}
FRONTEND_ID, BACKEND_ID = "sidecar~frontend-v1", "sidecar~backend-v2"
#: the client sidecar's cluster towards backend, named as the control plane names it
BACKEND_CLUSTER = "outbound|80||backend.shop"


def start_telemetry(
    server_process: StartServer, access_log: Path | None, *args: str, **kw: Any
) -> ServerProcess:
    """``envoykit telemetry serve <args>`` with warning-level logs and its JSON access log in ``access_log``
    (None: metrics only), started by the ``server_process`` fixture (``port=`` etc. as it takes)."""
    log_args = ["--access-log", str(access_log)] if access_log is not None else []
    return server_process("telemetry", "--log-level", "warning", *log_args, *args, **kw)


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (s.labels, s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name
    ]


def total(text: str, name: str, **match: str) -> float:
    return sum(v for lbl, v in samples(text, name) if all(lbl.get(k) == x for k, x in match.items()))


def wait_total(srv: ServerProcess, name: str, expected: float, timeout: float = 20.0) -> str:
    """Scrape until ``name`` adds up to ``expected``, then once more after a pause (nothing extra)."""
    deadline = time.monotonic() + timeout
    text = srv.metrics()
    while total(text, name) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        text = srv.metrics()
    time.sleep(0.5)
    return srv.metrics()


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def _als(
    port: int, tcp_flush_interval: float | None = None, transport: str = "grpc", json_log: str | None = None
) -> AccessLogServer:
    return AccessLogServer(
        address=Address(port=port),
        buffer_flush_interval=0.2,
        tcp_flush_interval=tcp_flush_interval,
        transport=transport,  # type: ignore[arg-type]
        json_log=json_log,
    )


def access_logs(
    port: int,
    reporter: str,
    kind: str = "http",
    *,
    transport: str = "grpc",
    json_log: str | None = None,
    node: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The control plane's access-logger list for a listener, as bootstrap JSON (``transport``: the
    gRPC stream, or ``stats`` with Envoy's JSON file logger when ``json_log`` is given)."""
    als = _als(port, transport=transport, json_log=json_log)
    logs = http_access_logs(als, reporter, node=node) if kind == "http" else tcp_access_logs(als, reporter)
    return [logger_dict(a) for a in logs]


def hcm_of(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]  # type: ignore[no-any-return]


def http_sidecars(
    app_port: int,
    als_port: int,
    *,
    admin_ports: tuple[int, int] = (0, 0),
    transport: str = "grpc",
    json_log: str | None = None,
) -> tuple[dict, dict, int]:
    """A client sidecar (outbound, reporter=source) in front of a server sidecar (inbound,
    reporter=destination) in front of the app; both log to the telemetry server on ``als_port``
    (``transport`` as :func:`access_logs`; ``json_log``: Envoy's JSON lines, ``{node}`` the node id).

    The client routes ``/down`` to a cluster with nothing listening (503, flag UF)."""
    kw: dict[str, Any] = {"transport": transport, "json_log": json_log}
    out_port, in_port = free_port(), free_port()
    inbound = http_listener(
        in_port,
        [route_to("inbound|8080||", route={"timeout": "10s"})],
        name="inbound",
        vhost_extra={
            "response_headers_to_add": [{"header": {"key": "x-envoykit-peer", "value": format_peer(BACKEND)}}]
        },
        hcm_extra={
            "access_log": access_logs(als_port, "destination", node={**BACKEND, "id": BACKEND_ID}, **kw)
        },
    )
    outbound = http_listener(
        out_port,
        [
            route_to("outbound|80||down.shop", prefix="/down"),
            route_to(BACKEND_CLUSTER, route={"timeout": "10s"}),
        ],
        name="outbound",
        vhost_extra={
            "request_headers_to_add": [{"header": {"key": "x-envoykit-peer", "value": format_peer(FRONTEND)}}]
        },
        hcm_extra={"access_log": access_logs(als_port, "source", node={**FRONTEND, "id": FRONTEND_ID}, **kw)},
    )
    als = cluster(ACCESS_LOG_CLUSTER, als_port, http2=True)
    server_cfg = bootstrap([inbound], [cluster("inbound|8080||", app_port), als])
    server_cfg["node"] = {"id": BACKEND_ID, "cluster": "backend", "metadata": BACKEND}
    down = cluster("outbound|80||down.shop", free_port())
    client_cfg = bootstrap([outbound], [cluster(BACKEND_CLUSTER, in_port), down, dict(als)])
    client_cfg["node"] = {"id": FRONTEND_ID, "cluster": "frontend", "metadata": FRONTEND}
    for cfg, admin in zip((server_cfg, client_cfg), admin_ports, strict=True):
        cfg["admin"] = {"address": socket_address(admin)}
    return client_cfg, server_cfg, out_port


def tcp_listener(
    name: str, port: int, target: str, als_port: int, reporter: str, flush_interval: float | None = None
) -> dict[str, Any]:
    """A listener with the control plane's ``tcp_proxy`` and TCP access logger (periodic entries every
    ``flush_interval`` seconds when given)."""
    als = _als(als_port, flush_interval)
    proxy = tcp_proxy(name, target, tcp_access_logs(als, reporter), als.tcp_flush_interval)
    return {
        "name": name,
        "address": socket_address(port),
        "filter_chains": [{"filters": [json_format.MessageToDict(proxy, preserving_proto_field_name=True)]}],
    }


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class TcpEcho(socketserver.ThreadingTCPServer):
    """A TCP echo server on a free loopback port, in a thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.port = int(self.server_address[1])
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def __enter__(self) -> TcpEcho:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def tcp_exchange(port: int, payload: bytes) -> bytes:
    """Send ``payload``, half-close, read the echo to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = bytearray()
        while chunk := s.recv(65536):
            out += chunk
    return bytes(out)


BACKEND_SERVICE = "backend.shop.svc.cluster.local"
#: (count, x-echo-status, x-echo-delay-ms) of the requests :func:`send_http_plan` sends through a sidecar pair
HTTP_PLAN = [(9, 200, 0), (5, 404, 0), (4, 503, 0), (3, 200, 300)]
#: requests to /down (no upstream: 503 UF on the client side only)
N_DOWN = 3


def send_http_plan(port: int) -> tuple[int, int]:
    """Send :data:`HTTP_PLAN` (100-byte POSTs to /items) and :data:`N_DOWN` GETs of /down through the
    client sidecar on ``port``, checking each status; returns (requests reaching the app, /down requests)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for count, status, delay in HTTP_PLAN:
            for _ in range(count):
                r = c.post(
                    "/items",
                    content=b"q" * 100,
                    headers={"x-echo-status": str(status), "x-echo-delay-ms": str(delay)},
                )
                assert r.status_code == status
        for _ in range(N_DOWN):
            assert c.get("/down").status_code == 503
    return sum(p[0] for p in HTTP_PLAN), N_DOWN


def assert_http_plan_metrics(text: str, n_app: int, n_down: int) -> None:
    """Istio's HTTP metrics in ``text`` (a /metrics page) are exactly those of :func:`send_http_plan`
    through the frontend → backend sidecar pair, on both reporters."""
    assert total(text, "istio_requests_total") == 2 * n_app + n_down  # one per reporter, nothing else
    both = {
        "source_workload": "frontend-v1",
        "source_canonical_service": "frontend",
        "source_canonical_revision": "v1",
        "source_workload_namespace": "shop",
        "source_principal": FRONTEND["principal"],
        "source_app": "frontend",
        "source_version": "v1",
        "source_cluster": "mesh1",
        "destination_workload": "backend-v2",
        "destination_workload_namespace": "shop",
        "destination_principal": BACKEND["principal"],
        "destination_app": "backend",
        "destination_version": "v2",
        "destination_service": BACKEND_SERVICE,
        "destination_service_name": "backend",
        "destination_service_namespace": "shop",
        "destination_canonical_service": "backend",
        "destination_canonical_revision": "v2",
        "destination_cluster": "mesh1",
        "request_protocol": "http",
        "grpc_response_status": "",
        "response_flags": "-",
    }
    security = {"destination": "mutual_tls", "source": "unknown"}
    for reporter in ("source", "destination"):
        labels = {**both, "reporter": reporter, "connection_security_policy": security[reporter]}
        assert total(text, "istio_requests_total", **labels) == n_app
        assert total(text, "istio_requests_total", response_code="200", **labels) == 12
        assert total(text, "istio_requests_total", response_code="404", **labels) == 5
        assert total(text, "istio_requests_total", response_code="503", **labels) == 4
        assert total(text, "istio_request_duration_milliseconds_count", **labels) == n_app
        assert total(text, "istio_request_duration_milliseconds_bucket", le="250.0", **labels) == n_app - 3
        assert total(text, "istio_request_duration_milliseconds_bucket", le="10000.0", **labels) == n_app
        assert total(text, "istio_request_bytes_count", **labels) == n_app
        assert total(text, "istio_request_bytes_bucket", le="100.0", **labels) == 0  # 100 B body + headers
        assert total(text, "istio_response_bytes_count", **labels) == n_app
    down = {"reporter": "source", "response_code": "503", "response_flags": "UF"}
    assert total(text, "istio_requests_total", **down) == n_down
    assert total(text, "istio_requests_total", reporter="destination", response_flags="UF") == 0

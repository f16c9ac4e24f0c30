"""The telemetry server restarted mid-traffic: what was lost is visible, nothing is counted twice."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from envoykit.core import free_port
from tests.serverproc import StartServer
from tests.telemetry.helpers import http_sidecars, read_lines, samples, start_telemetry, total

N = 400


def test_restart_mid_traffic_reports_the_gap_and_counts_nothing_twice(
    envoy, echo, tmp_path: Path, server_process: StartServer
) -> None:
    admins = (free_port(), free_port())
    args = [a for p in admins for a in ("--envoy-admin", f"http://127.0.0.1:{p}")]
    log = tmp_path / "access.log"
    first = start_telemetry(server_process, log, *args)
    try:
        client_cfg, server_cfg, port = http_sidecars(echo.port, first.port, admin_ports=admins)
        envoy(server_cfg, name="backend-sidecar")
        envoy(client_cfg, name="frontend-sidecar")
        sent = threading.Event()
        codes: list[int] = []

        def traffic() -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
                for i in range(N):
                    codes.append(c.get(f"/r{i}").status_code)
                    time.sleep(0.01)
            sent.set()

        t = threading.Thread(target=traffic)
        t.start()
        while len(codes) < N // 3:
            time.sleep(0.02)
        first.kill()  # mid-stream, without a goodbye
        while len(codes) < N // 2:
            time.sleep(0.02)
        second = start_telemetry(server_process, log, *args, port=first.port, metrics_port=first.metrics_port)
        t.join(60)
        assert sent.is_set() and codes == [200] * N
        deadline = time.monotonic() + 20
        text = second.metrics()
        while time.monotonic() < deadline:  # Envoy reconnects at its next flush
            time.sleep(0.5)
            now = second.metrics()
            if total(now, "istio_requests_total") == total(text, "istio_requests_total") > 0:
                break
            text = now
        text = second.metrics()
    finally:
        first.kill()  # already dead; the second one is stopped (SIGTERM, exit 0) by the fixture

    lines = read_lines(log)  # both lives of the server wrote here
    for reporter, node in (("source", "sidecar~frontend-v1"), ("destination", "sidecar~backend-v2")):
        ids = [x["request_id"] for x in lines if x["reporter"] == reporter]
        assert len(ids) == len(set(ids)), "an entry was counted twice"
        counted = len(ids)
        assert 0 < counted <= N
        # Envoy's own figures, exported by the restarted server beside its count: nothing is silent
        written = total(text, "envoykit_telemetry_envoy_logs_written_total", node=node)
        dropped = total(text, "envoykit_telemetry_envoy_logs_dropped_total", node=node)
        assert written + dropped == N
        # Envoy accepted every entry (nothing dropped at its buffer), but what it sent on the broken
        # stream and while the server was down never arrived: the gap is written - counted
        assert written == N and dropped == 0
        assert written - counted > 0
        # the restarted server counted only what arrived after the restart
        after = total(text, "envoykit_telemetry_entries_total", node=node)
        assert 0 < after < counted or counted == after
        assert total(text, "istio_requests_total", reporter=reporter) == after
    paths = Counter(x["path"] for x in lines if x["reporter"] == "source")
    assert max(paths.values()) == 1
    assert [s for s in samples(text, "envoykit_telemetry_envoy_up")] and all(
        v == 1 for _, v in samples(text, "envoykit_telemetry_envoy_up")
    )

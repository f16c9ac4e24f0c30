"""``envoykit extproc serve`` as the mesh runner starts it: health, structured logs, SIGTERM drain."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.extproc.proc import ROOT, start_extproc
from tests.serverproc import StartServer


@pytest.mark.server
def test_health_logs_and_sigterm_drain(server_process: StartServer) -> None:
    with start_extproc(
        server_process, "--processor", "tests.extproc.procs:chain", "--log-level", "info"
    ) as srv:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            for service in ("", "envoy.service.ext_proc.v3.ExternalProcessor"):
                resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert resp.status == health_pb2.HealthCheckResponse.SERVING
        assert "envoykit_extproc_streams" in srv.metrics()  # /metrics answers with our families
        code, err = srv.stop(), srv.log()
    assert code == 0
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert events[-3:] == ["serving", "draining", "stopped"]


@pytest.mark.server
def test_bad_processor_is_refused_with_a_clear_message() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "envoykit.cli", "extproc", "serve", "--address", "127.0.0.1:0",
         "--processor", "tests.extproc.procs:nothing_here"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode != 0
    assert "processor" in out.stderr and "nothing_here" in out.stderr


@pytest.mark.server
def test_nice_applies_to_every_thread(server_process: StartServer) -> None:
    from pathlib import Path

    with start_extproc(server_process, "--nice", "7") as srv:
        assert srv.proc is not None
        tasks = list(Path(f"/proc/{srv.proc.pid}/task").iterdir())
        nices = set()
        for t in tasks:
            with contextlib.suppress(FileNotFoundError):  # a short-lived thread ended meanwhile
                nices.add(int((t / "stat").read_text().rsplit(")", 1)[1].split()[16]))
    assert len(tasks) > 1 and nices == {7}


@pytest.mark.server
def test_second_server_on_a_served_port_fails_with_a_clear_message(server_process: StartServer) -> None:
    with start_extproc(server_process) as srv:
        out = subprocess.run(
            [sys.executable, "-m", "envoykit.cli", "extproc", "serve", "--address", f"127.0.0.1:{srv.port}"],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 1 and f"address in use: 127.0.0.1:{srv.port}" in out.stderr, out.stderr
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:  # the first still serves
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING

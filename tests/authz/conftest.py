"""Fixtures for authz tests: the authz server as a real process, and Envoy configs that call it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from envoykit.core import free_port
from tests.envoycfg import bootstrap, cluster, http_listener, route_to


class AuthzProcess:
    """``envoykit authz serve`` in a subprocess on a free port."""

    def __init__(self, policy_dir: Path, log_path: Path, *extra: str) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.log_path = log_path
        self.decision_log = log_path.with_suffix(".decisions")
        self.args = [
            sys.executable,
            "-m",
            "envoykit.cli",
            "authz",
            "serve",
            "--policy-dir",
            str(policy_dir),
            "--address",
            f"127.0.0.1:{self.port}",
            "--metrics-port",
            str(self.metrics_port),
            "--decision-log",
            str(self.decision_log),
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> AuthzProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"authz server exited: {self.log()}")
                try:
                    r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    time.sleep(0.1)
        raise RuntimeError(f"authz server not ready: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def authz_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., AuthzProcess]]:
    started: list[AuthzProcess] = []

    def start(policy_dir: Path, *extra: str) -> AuthzProcess:
        p = AuthzProcess(policy_dir, tmp_path / f"authz-{len(started)}.log", *extra)
        started.append(p)
        return p.start()

    yield start
    failed = getattr(request.node, "rep_call", None)
    for p in started:
        p.stop()
    del failed


def ext_authz_filter(cluster_name: str = "authz", **extra: Any) -> dict[str, Any]:
    """The ext_authz HTTP filter as envoy/authz.yaml configures it (gRPC, fail closed)."""
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "grpc_service": {"envoy_grpc": {"cluster_name": cluster_name}, "timeout": "1s"},
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "include_peer_certificate": True,
            "encode_raw_headers": True,
            **extra,
        },
    }


def authz_envoy_config(
    listen_port: int, upstream_port: int, authz_port: int, **filter_extra: Any
) -> dict[str, Any]:
    return bootstrap(
        [http_listener(listen_port, [route_to("echo")], [ext_authz_filter(**filter_extra)])],
        [cluster("echo", upstream_port), cluster("authz", authz_port, http2=True)],
    )

"""Readiness probes: one quick, non-blocking-for-long check per call (a timeout of about a second)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

from envoykit.mesh.plan import Probe

_HOST = "127.0.0.1"


def _tcp(port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _http(port: int, path: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(f"http://{_HOST}:{port}{path}", timeout=timeout) as r:
            return bool(200 <= r.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _grpc(port: int, timeout: float) -> bool:
    # imported here: grpc is heavy and only needed when a gRPC component is probed
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{_HOST}:{port}") as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def probe_ready(probe: Probe, timeout: float = 1.0) -> bool:
    """Run one readiness check and return whether it passed.

    Args:
        probe: what to check (see :class:`~envoykit.mesh.plan.Probe`).
        timeout: seconds for this one attempt.
    """
    if probe.kind == "none":
        return True
    if probe.kind == "tcp":
        return _tcp(probe.port, timeout)
    if probe.kind == "http":
        return _http(probe.port, probe.path, timeout)
    if probe.kind == "envoy":
        return _http(probe.port, "/ready", timeout)
    if probe.kind == "grpc":
        return _grpc(probe.port, timeout)
    raise ValueError(f"unknown probe kind {probe.kind!r}")

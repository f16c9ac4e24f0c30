"""One envoykit server as a real process: ``envoykit <room> serve`` on free ports, as the mesh runner
starts it. The ``server_process`` fixture (tests/conftest.py) starts them and stops them at teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from envoykit.core import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]


class ServerProcess:
    """``python -m envoykit.cli <room> serve --address 127.0.0.1:<port> --metrics-port <port> <args>``.

    Its stderr (the JSON log lines) goes to ``log_path``; ``{log}`` in an argument stands for that path
    without its suffix (``"{log}.decisions"``: a file beside the log). :meth:`start` waits for the port,
    the metrics port and, with ``health``, for ``grpc.health.v1.Health`` to answer SERVING.
    """

    def __init__(
        self,
        room: str,
        args: list[str],
        workdir: Path,
        *,
        port: int = 0,
        metrics_port: int = 0,
        health: bool = False,
    ) -> None:
        self.room = room
        self.port = port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.log_path = workdir / f"{room}-{self.port}.log"
        self.health = health
        self.command = [
            sys.executable, "-m", "envoykit.cli", room, "serve",
            "--address", f"127.0.0.1:{self.port}", "--metrics-port", str(self.metrics_port),
            *(a.replace("{log}", str(self.log_path.with_suffix(""))) for a in args),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, where the gRPC service answers."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ServerProcess:
        """Start the process and wait until it serves.

        Raises:
            RuntimeError: it exited or did not get ready within ``timeout`` seconds (its log attached).
        """
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                self.command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, env=env
            )
        deadline = time.monotonic() + timeout
        try:
            wait_for_port(self.port, timeout=timeout)
            wait_for_port(self.metrics_port, timeout=max(deadline - time.monotonic(), 1))
            if self.health:
                self._wait_serving(deadline)
        except (TimeoutError, RuntimeError):
            self.kill()
            raise RuntimeError(f"{self.room} server did not start:\n{self.log()[-3000:]}") from None
        return self

    def _wait_serving(self, deadline: float) -> None:
        with grpc.insecure_channel(self.address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError("exited")
                try:
                    r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    time.sleep(0.1)
        raise TimeoutError

    def log(self) -> str:
        """Everything the server logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        """The Prometheus ``/metrics`` text."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return str(r.read().decode())

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM (the server drains), then SIGKILL after ``timeout`` s; the exit code (None if never
        started or already stopped)."""
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        self.proc = None
        return code

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kill(self) -> None:
        """SIGKILL: the server dies mid-stream without a goodbye."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()


#: the ``server_process`` fixture: ``start(room, *args, health=False, port=0, metrics_port=0)``
StartServer = Callable[..., ServerProcess]

"""Run ``envoykit extproc serve`` as a real process for tests (as the mesh runner does)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from envoykit.core import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    """``python -m envoykit.cli extproc serve`` on free ports; ``metrics()`` scrapes /metrics."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        cmd = [
            sys.executable, "-m", "envoykit.cli", "extproc", "serve",
            "--address", f"127.0.0.1:{self.port}", "--metrics-port", str(self.metrics_port),
            "--log-level", "warning", *self.args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.port, timeout=20)
            wait_for_port(self.metrics_port, timeout=5)
        except TimeoutError:
            self.proc.kill()
            raise RuntimeError(self.proc.communicate()[1].decode()) from None
        return self

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def kill(self) -> None:
        """SIGKILL: the server dies mid-stream without a goodbye."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def terminate(self, timeout: float = 15) -> tuple[int, str]:
        """SIGTERM; return the exit code and everything logged on stderr."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err.decode()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

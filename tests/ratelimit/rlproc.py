"""Start ``envoykit ratelimit serve`` as a real process and build Envoy configs that call it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from envoykit.core import free_port, wait_for_port
from tests.envoycfg import bootstrap, cluster, http_listener

ENVOYKIT = str(Path(sys.executable).parent / "envoykit")


class RateLimitProcess:
    """One ``envoykit ratelimit serve`` process on free ports; its stderr (JSON logs) goes to a file."""

    def __init__(self, config_dir: Path, workdir: Path, *args: str) -> None:
        self.config_dir = config_dir
        self.port = free_port()
        self.metrics_port = free_port()
        self.log_path = workdir / f"ratelimit-{self.port}.log"
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> RateLimitProcess:
        cmd = [
            ENVOYKIT, "ratelimit", "serve", "--config-dir", str(self.config_dir),
            "--address", f"127.0.0.1:{self.port}", "--metrics-port", str(self.metrics_port), *self.args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        try:
            wait_for_port(self.port, timeout=timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"ratelimit did not start:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM (drain), then SIGKILL; returns the exit code."""
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


def ratelimit_filter(
    domain: str, *, failure_mode_deny: bool = False, timeout_ms: int = 2000
) -> dict[str, Any]:
    """The HTTP ``envoy.filters.http.ratelimit`` filter calling the ``ratelimit`` cluster over gRPC."""
    return {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": domain,
            "failure_mode_deny": failure_mode_deny,
            "timeout": f"{timeout_ms / 1000}s",
            "rate_limit_service": {
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": "ratelimit"}},
            },
        },
    }


# Route rate_limits: descriptor (client = x-client header) and (path = :path).
RATE_LIMITS = [
    {"actions": [{"request_headers": {"header_name": "x-client", "descriptor_key": "client"}}]},
]


def rate_limited_route(upstream: str = "echo") -> dict[str, Any]:
    return {"match": {"prefix": "/"}, "route": {"cluster": upstream, "rate_limits": RATE_LIMITS}}


def envoy_config(
    listeners: list[tuple[int, bool]], rl_ports: list[int], upstream_port: int, domain: str = "web"
) -> dict[str, Any]:
    """One listener per ``(port, failure_mode_deny)``, all rate limited in ``domain``, proxying to echo."""
    ls = [
        http_listener(
            port,
            [rate_limited_route()],
            [ratelimit_filter(domain, failure_mode_deny=deny)],
            name=f"l{port}",
        )
        for port, deny in listeners
    ]
    rl = cluster("ratelimit", rl_ports[0], http2=True)
    rl["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in rl_ports
    ]
    return bootstrap(ls, [cluster("echo", upstream_port), rl])

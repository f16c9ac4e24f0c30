"""The TCP half of the differential check: a network filter in front of ``tcp_proxy`` to an echo
upstream, in Envoy and in the host (:func:`envoykit.wasmhost.tcp.run_tcp_exchange`)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

from envoykit.wasmdiff.cases import CaseFile
from envoykit.wasmdiff.envoy_side import EnvoyRunner, marker_listener, socket_address, static_cluster
from envoykit.wasmdiff.host_side import between_cases
from envoykit.wasmdiff.observe import LEVEL_NAMES, Observation
from envoykit.wasmhost.plugin import Plugin
from envoykit.wasmhost.tcp import run_tcp_exchange


class EchoUpstream:
    """A TCP echo server on a free loopback port; records what each connection received."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.received: list[bytearray] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.sock.getsockname()[1])

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            record = bytearray()
            self.received.append(record)
            threading.Thread(target=self._echo, args=(conn, record), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket, record: bytearray) -> None:
        with conn:
            while data := conn.recv(65536):
                record += data
                conn.settimeout(0.02)
                try:
                    closing = conn.recv(1, socket.MSG_PEEK) == b""
                except TimeoutError:
                    closing = False
                conn.settimeout(None)
                if closing:
                    # The last bytes and the FIN leave in one segment (corked), so Envoy reads them
                    # in one go: one on_upstream_data with end_of_stream, as the host models it.
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                    conn.sendall(data)
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(data)

    def __enter__(self) -> EchoUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def tcp_bootstrap(
    wasm: Path, cases: CaseFile, listen_port: int, upstream_port: int, marker_port: int
) -> dict[str, Any]:
    """Envoy bootstrap: wasm network filter, then ``tcp_proxy`` to the echo upstream."""
    config: dict[str, Any] = {
        "name": cases.name,
        "root_id": cases.root_id,
        "vm_config": {
            "vm_id": cases.vm_id,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(wasm)}},
        },
        "failure_policy": cases.failure_policy,
    }
    if cases.failure_policy == "FAIL_RELOAD":
        config["reload_config"] = {"backoff": {"base_interval": f"{cases.reload_backoff_ms / 1000}s"}}
    if cases.configuration:
        config["configuration"] = {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": cases.configuration,
        }
    filters = [
        {
            "name": "envoy.filters.network.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
                "config": config,
            },
        },
        {
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "wasmdiff_tcp",
                "cluster": "upstream",
            },
        },
    ]
    listener = {
        "name": "wasmdiff_tcp",
        "address": socket_address(listen_port),
        "filter_chains": [{"filters": filters}],
    }
    return {
        "admin": {"address": socket_address(0)},
        "static_resources": {
            "listeners": [listener, marker_listener(marker_port)],
            "clusters": [static_cluster("upstream", upstream_port)],
        },
    }


class TcpEnvoyRunner(EnvoyRunner):
    """An :class:`EnvoyRunner` whose listener is the network filter in front of an echo upstream."""

    def __init__(
        self, wasm: Path, cases: CaseFile, *, workdir: Path | None = None, timeout: float = 10.0
    ) -> None:
        super().__init__(wasm, cases, workdir=workdir, timeout=timeout)
        self.echo = self._stack.enter_context(EchoUpstream())
        self.envoy.config = tcp_bootstrap(
            Path(wasm).resolve(), cases, self.port, self.echo.port, self.marker_port
        )

    def run_tcp(self, messages: list[bytes]) -> Observation:
        """One connection: send each message, wait for its echo, close; observe it."""
        seen = len(self.echo.received)
        got = bytearray()
        with contextlib.suppress(OSError):  # Envoy closed or reset it (a failed VM): got is the answer
            self._talk(messages, seen, got)
        self._wait_closed()
        upstream = bytes(self.echo.received[seen]) if len(self.echo.received) > seen else b""
        obs = Observation(body=bytes(got), upstream=("", "", [], upstream))
        obs.logs = self._wait_stream_end()
        return obs

    def _talk(self, messages: list[bytes], seen: int, got: bytearray) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as conn:
            for message in messages:
                before = len(self.echo.received[seen]) if len(self.echo.received) > seen else 0
                conn.sendall(message)
                deadline = time.monotonic() + self.timeout
                while time.monotonic() < deadline:
                    upstream = self.echo.received[seen] if len(self.echo.received) > seen else b""
                    if len(upstream) > before and len(got) >= len(upstream):
                        break  # this message went through and its echo came back
                    conn.settimeout(0.05)
                    try:
                        data = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not data:
                        break
                    got += data

    def _wait_closed(self) -> None:
        # The close travels client -> Envoy -> upstream -> Envoy -> client; the filter's last
        # callbacks run when Envoy closes the client connection, i.e. when the listener has no
        # active connection left.
        stat = f"listener.127.0.0.1_{self.port}.downstream_cx_active"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.envoy.stats(f"listener.127.0.0.1_{self.port}.").get(stat, 1) == 0:
                return
            time.sleep(0.005)


def run_tcp_case(
    plugin: Plugin, messages: list[bytes], cases: CaseFile | None = None, wait_ms: int = 0
) -> Observation:
    """The same connection through the filter in the host (after :func:`between_cases`)."""
    if cases is not None:
        between_cases(plugin, cases, wait_ms)
    out = run_tcp_exchange(plugin, messages)
    return Observation(
        body=out.client_received,
        upstream=("", "", [], out.upstream_received),
        logs=[(LEVEL_NAMES[int(r.level)], r.message) for r in out.logs],
    )

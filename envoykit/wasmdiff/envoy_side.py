"""Run the cases through a real Envoy (V8 runtime) with the filter, and observe each one.

Envoy gets one listener: the Wasm HTTP filter then the router to a scripted upstream, with
request-id generation and the router's ``x-envoy-*`` headers turned off (they are Envoy's, not the
filter's). Callout clusters from the cases file point at scripted upstreams too. Each case opens a
new connection; the filter's log lines are Envoy's ``wasm`` logger lines (``wasm log <plugin>:
<message>``), read from Envoy's log. To know where a case's lines end (``on_log``, ``on_done`` and
``on_delete`` run after the client already has the response), a marker request goes to a second
listener without the filter on the same single worker thread: its request line in Envoy's
``http`` debug log comes after everything the case's stream did.
"""

from __future__ import annotations

import http.client
import re
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from envoykit.core.envoy import EnvoyProcess
from envoykit.wasmdiff.cases import CaseFile
from envoykit.wasmdiff.observe import CLIENT_IGNORED, LEVEL_NAMES, UPSTREAM_IGNORED, Observation
from envoykit.wasmdiff.upstream import ScriptedUpstream
from envoykit.wasmhost.exchange import HttpRequest

_LOG_LINE = re.compile(r"^(trace|debug|info|warning|error|critical)\|wasm\|wasm log[^:]*: (.*)$")
_ANY_LINE = re.compile(r"^(trace|debug|info|warning|error|critical)\|[\w.-]*\|")  # --log-format %l|%n|%v
MARKER_PATH = "/__envoykit_wasmdiff_marker_"
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
_STRING = "type.googleapis.com/google.protobuf.StringValue"


def socket_address(port: int) -> dict[str, Any]:
    """A loopback ``Address`` for ``port``."""
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def static_cluster(name: str, port: int) -> dict[str, Any]:
    """A STATIC cluster ``name`` with one loopback endpoint on ``port``."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(port)}}]}],
        },
    }


def plugin_config(wasm: Path, cases: CaseFile, name: str, root_id: str, configuration: str) -> dict[str, Any]:
    """A ``PluginConfig`` (JSON form) for ``wasm`` on V8 with the cases' VM settings."""
    vm_config: dict[str, Any] = {
        "vm_id": cases.vm_id,
        "runtime": "envoy.wasm.runtime.v8",
        "code": {"local": {"filename": str(wasm)}},
    }
    if cases.vm_configuration:
        vm_config["configuration"] = {"@type": _STRING, "value": cases.vm_configuration}
    config: dict[str, Any] = {
        "name": name,
        "root_id": root_id,
        "vm_config": vm_config,
        "failure_policy": cases.failure_policy,
    }
    if cases.failure_policy == "FAIL_RELOAD":
        config["reload_config"] = {"backoff": {"base_interval": f"{cases.reload_backoff_ms / 1000}s"}}
    if configuration:
        config["configuration"] = {"@type": _STRING, "value": configuration}
    return config


def singleton_extension(wasm: Path, cases: CaseFile) -> dict[str, Any]:
    """The ``bootstrap_extensions`` entry of the cases' singleton (``WasmService``)."""
    assert cases.singleton is not None
    single = cases.singleton
    config = plugin_config(single.file or wasm, cases, f"{cases.name}_singleton", single.root_id,
                           single.configuration)  # fmt: skip
    return {
        "name": "envoy.bootstrap.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.wasm.v3.WasmService",
            "singleton": True,
            "config": config,
        },
    }


def header_mutation(headers: list[tuple[str, str]]) -> dict[str, Any]:
    """An ``envoy.filters.http.header_mutation`` filter appending ``headers`` to every request."""
    mutations = [
        {"append": {"header": {"key": k, "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}}
        for k, v in headers
    ]
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": mutations},
        },
    }


def buffer_filter() -> dict[str, Any]:
    """An ``envoy.filters.http.buffer`` filter: the request body is held until complete (1 MiB)."""
    return {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": 1 << 20,
        },
    }


def wasm_filter(wasm: Path, cases: CaseFile) -> dict[str, Any]:
    """The ``envoy.filters.http.wasm`` filter entry for ``wasm`` with the cases' configuration."""
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": plugin_config(wasm, cases, cases.name, cases.root_id, cases.configuration),
        },
    }


def marker_listener(port: int) -> dict[str, Any]:
    """An HTTP listener without the filter that answers 204: end-of-case markers go there."""
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "marker",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 204}}],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    chain = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
    return {"name": "marker", "address": socket_address(port), "filter_chains": [chain]}


def bootstrap(
    wasm: Path,
    cases: CaseFile,
    listen_port: int,
    upstream_port: int,
    callouts: dict[str, int],
    marker_port: int,
) -> dict[str, Any]:
    """The Envoy bootstrap for a diff run (JSON form of ``Bootstrap``)."""
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "wasmdiff",
        "generate_request_id": False,
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}],
                }
            ]
        },
        "http_filters": [
            *([header_mutation(cases.before_headers)] if cases.before_headers else []),
            *([buffer_filter()] if cases.before_buffer else []),
            wasm_filter(wasm, cases),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                    "suppress_envoy_headers": True,
                },
            },
        ],
    }
    listener = {
        "name": "wasmdiff",
        "address": socket_address(listen_port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
    clusters = [static_cluster("upstream", upstream_port)] + [
        static_cluster(n, p) for n, p in callouts.items()
    ]
    out: dict[str, Any] = {
        "admin": {"address": socket_address(0)},
        "static_resources": {"listeners": [listener, marker_listener(marker_port)], "clusters": clusters},
    }
    if cases.node:
        out["node"] = {"id": cases.node["id"], "metadata": cases.node["metadata"]}
    if cases.singleton is not None:
        out["bootstrap_extensions"] = [singleton_extension(wasm, cases)]
    return out


def send_request(port: int, req: HttpRequest, timeout: float) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send ``req`` over a new HTTP/1.1 connection; (status, headers, body), status 0 on failure."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(req.method, req.path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("host", req.authority)
        for k, v in req.headers:
            conn.putheader(k, v)
        if req.body:
            conn.putheader("content-length", str(len(req.body)))
        conn.endheaders(req.body or None)
        resp = conn.getresponse()
        if conn.sock is not None:
            # A body shorter than its content-length never completes: 2 s of silence ends it.
            conn.sock.settimeout(min(timeout, 2.0))
        body = resp.read()
        headers = [(k.lower(), v) for k, v in resp.getheaders() if k.lower() not in CLIENT_IGNORED]
        return resp.status, headers, body
    except (OSError, http.client.HTTPException):
        return 0, [], b""
    finally:
        conn.close()


class EnvoyRunner:
    """A running Envoy with the filter, its scripted upstreams, and a reader of its log.

    Use as a context manager; :meth:`run` observes one case. With ``collect_logs=False`` Envoy
    logs only the filter's lines (no ``http:debug`` end-of-case markers) and :meth:`run` leaves
    ``logs`` empty: a plain run of the requests, for timing.

    Raises:
        EnvoyError: Envoy refused the configuration or did not start (e.g. the module failed).
    """

    def __init__(
        self,
        wasm: Path,
        cases: CaseFile,
        *,
        workdir: Path | None = None,
        timeout: float = 10.0,
        collect_logs: bool = True,
    ) -> None:
        from envoykit.core.net import free_port

        self.cases = cases
        self.timeout = timeout
        self._stack = ExitStack()
        self.upstream = self._stack.enter_context(ScriptedUpstream())
        self.callouts = {n: self._stack.enter_context(ScriptedUpstream(a)) for n, a in cases.clusters.items()}
        self.port = free_port()
        self.marker_port = free_port()
        config = bootstrap(Path(wasm).resolve(), cases, self.port, self.upstream.port,
                           {n: s.port for n, s in self.callouts.items()}, self.marker_port)  # fmt: skip
        level = LEVEL_NAMES[int(cases.log_level)]
        self.envoy = EnvoyProcess(
            config,
            workdir=workdir,
            name="wasmdiff",
            log_level="error",
            # http:debug logs the end-of-case markers; without log collection Envoy logs only
            # the filter's lines, as in a plain test run (the benchmark's request time).
            component_log_level=f"wasm:{level},http:debug" if collect_logs else f"wasm:{level}",
            extra_args=["--log-format", "%l|%n|%v", "--file-flush-interval-msec", "5"],
        )
        self._offset = 0
        self._markers = 0
        self.collect_logs = collect_logs
        self.startup_logs: list[tuple[str, str]] = []

    def __enter__(self) -> EnvoyRunner:
        try:
            self.envoy.start()
        except BaseException:
            self._stack.close()
            raise
        self._offset = 0
        # Envoy starts the VM several times (base VM, then one per thread): those start-up lines
        # are drained up to a first marker so they never land in the first case.
        if self.collect_logs:
            self.startup_logs = self._wait_stream_end()
        return self

    def __exit__(self, *exc: object) -> None:
        self.envoy.cleanup()
        self._stack.close()

    def _read_new(self) -> str:
        with open(self.envoy.log_path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        return data[:end].decode(errors="replace")

    def run(self, request: HttpRequest, answer: Any) -> Observation:
        """Send one request (the upstream answers ``answer``) and observe it."""
        self.upstream.answer = answer
        seen = len(self.upstream.requests)
        status, headers, body = send_request(self.port, request, self.timeout)
        obs = Observation(status=status, headers=headers, body=body)
        if len(self.upstream.requests) > seen:
            r = self.upstream.requests[-1]
            hdrs = [(k, v) for k, v in r["headers"] if k not in UPSTREAM_IGNORED]
            obs.upstream = (r["method"], r["path"], hdrs, r["body"])
        if self.collect_logs:
            obs.logs = self._wait_stream_end()
        return obs

    def _wait_stream_end(self) -> list[tuple[str, str]]:
        self._markers += 1
        marker = f"{MARKER_PATH}{self._markers}"
        send_request(self.marker_port, HttpRequest(path=marker), self.timeout)
        logs: list[tuple[str, str]] = []
        deadline = time.monotonic() + self.timeout
        in_message = False  # the last line began a filter's message: unprefixed lines continue it
        while True:
            for line in self._read_new().split("\n")[:-1]:
                m = _LOG_LINE.match(line)
                if m:
                    logs.append((m.group(1), m.group(2)))
                    in_message = True
                elif in_message and not _ANY_LINE.match(line):
                    # A multi-line message (a Rust panic, a dump) spans several lines of the log.
                    logs[-1] = (logs[-1][0], logs[-1][1] + "\n" + line)
                elif marker in line:
                    return logs
                else:
                    in_message = False
            if time.monotonic() > deadline:
                logs.append(
                    ("error", f"envoykit: no end-of-case marker in Envoy's log after {self.timeout}s")
                )
                return logs
            time.sleep(0.002)

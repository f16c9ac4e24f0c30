"""Benchmark: telemetry over Envoy's gRPC access-log stream vs. no telemetry, through one Envoy.

One Envoy (``--concurrency 1``) serves a direct-response route on two listeners in the same run:
(a) without telemetry; (b) with the ``envoy.access_loggers.http_grpc`` logger exactly as the control
plane wires it (``envoykit.control.translate.accesslog``, reporter=destination, the model's flush
interval and buffer size; ``--buffer-size-bytes`` tries others), streaming to a real ``envoykit
telemetry serve`` process that computes Istio's metrics and writes the JSON access log to a file. wrk drives each at maximum throughput (closed loop), alternating a and b
for ``--rounds`` rounds; the ratio is b's mean requests/s over a's.

``lost`` is the requests Envoy received on (b) (its ``downstream_rq_total``) minus the requests the
telemetry server counted (``istio_requests_total``), read once the count stopped moving after the
flush interval.

Prints, among the figures, exactly ``ratio = X`` (target ≥ 0.85) and ``lost = N of M`` (target 0),
and the CPU per request of Envoy in (a) and (b) and of the telemetry server in (b), from /proc.
``--untagged`` adds (c): the same logger without the control plane's tag (headers logged instead),
which the server reads from the proto fields, as for an Envoy another control plane configured.

Run: ``.venv/bin/python bench/telemetry.py [--seconds 6] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import LoadResult, cpu_seconds, table, wrk
from google.protobuf import json_format

from envoykit.control.model.mesh import AccessLogServer
from envoykit.control.model.types import Address
from envoykit.control.translate.accesslog import http_access_logs
from envoykit.core import EnvoyProcess, free_port
from envoykit.core.accesslog import REQUEST_HEADERS, RESPONSE_HEADERS, RESPONSE_TRAILERS
from envoykit.telemetry.gap import envoy_log_stats
from tests.envoycfg import bootstrap, cluster, direct_response, http_listener
from tests.serverproc import ServerProcess
from tests.telemetry.helpers import BACKEND, total

LISTENER = "telemetry"


def downstream_requests(admin: str, listener: str = LISTENER) -> int:
    """``http.<listener>.downstream_rq_total`` of the Envoy at ``admin``."""
    url = f"{admin}/stats?format=json&filter=^http\\.{listener}\\.downstream_rq_total$"
    with urllib.request.urlopen(url, timeout=5) as r:
        stats = json.loads(r.read())["stats"]
    return int(stats[0]["value"]) if stats else 0


def settled_count(srv: ServerProcess, timeout: float = 30.0) -> float:
    """``istio_requests_total`` once it stopped moving (Envoy flushes every second)."""
    last = -1.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1.5)
        now = total(srv.metrics(), "istio_requests_total")
        if now == last:
            break
        last = now
    return last


def _mean(rs: list[LoadResult]) -> LoadResult:
    return LoadResult(
        rs[0].name, sum(r.rps for r in rs) / len(rs), max(r.p50_ms for r in rs), max(r.p99_ms for r in rs)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--nice", type=int, default=0, help="the telemetry server's --nice")
    ap.add_argument("--no-access-log", action="store_true", help="metrics only, no JSON access log")
    defaults = AccessLogServer()
    ap.add_argument(
        "--buffer-size-bytes", type=int, default=defaults.buffer_size_bytes, help="the logger's buffer"
    )
    ap.add_argument("--flush-interval", type=float, default=defaults.buffer_flush_interval, help="seconds")
    ap.add_argument(
        "--untagged",
        action="store_true",
        help="also (c): the logger without the control plane's tag, headers logged instead (the server "
        "then reads proto fields, as for an Envoy another control plane configured)",
    )
    args = ap.parse_args()
    keys = "abc" if args.untagged else "ab"
    names = {"a": "(a) no telemetry", "b": "(b) access-log telemetry", "c": "(c) same, untagged entries"}
    extra = ["--nice", str(args.nice)] if args.nice else []
    tmp = tempfile.mkdtemp(prefix="envoykit-bench-")
    log_args = [] if args.no_access_log else ["--access-log", str(Path(tmp) / "access.json")]
    server_args = ["--log-level", "warning", *log_args, *extra]
    with ServerProcess("telemetry", server_args, Path(tmp)).start() as srv:
        als = AccessLogServer(
            address=Address(port=srv.port),
            buffer_size_bytes=args.buffer_size_bytes,
            buffer_flush_interval=args.flush_interval,
        )
        ports = {k: free_port() for k in keys}
        ok = [direct_response(200, "ok")]
        # the access logger exactly as the control plane builds it for a sidecar's inbound side
        loggers = [
            json_format.MessageToDict(a, preserving_proto_field_name=True)
            for a in http_access_logs(als, "destination")
        ]
        listeners = [
            http_listener(ports["a"], ok, name="plain"),
            http_listener(ports["b"], ok, name=LISTENER, hcm_extra={"access_log": loggers}),
        ]
        if args.untagged:
            untagged = copy.deepcopy(loggers)
            conf = untagged[0]["typed_config"]
            del conf["common_config"]["custom_tags"]
            conf["additional_request_headers_to_log"] = list(REQUEST_HEADERS)
            conf["additional_response_headers_to_log"] = list(RESPONSE_HEADERS)
            conf["additional_response_trailers_to_log"] = list(RESPONSE_TRAILERS)
            listeners.append(
                http_listener(ports["c"], ok, name="untagged", hcm_extra={"access_log": untagged})
            )
        cfg = bootstrap(listeners, [cluster("envoykit_telemetry", srv.port, http2=True)])
        cfg["node"] = {"id": "sidecar~backend-v2", "cluster": "backend", "metadata": BACKEND}
        with EnvoyProcess(cfg, concurrency=1, log_level="error", name="bench") as env:
            assert env.proc is not None and srv.proc is not None
            pids = {"envoy": env.proc.pid, "server": srv.proc.pid}
            url = {k: f"http://127.0.0.1:{p}/x" for k, p in ports.items()}
            for k in keys:
                wrk("warm-up", url[k], seconds=1, connections=args.connections)
            settled_count(srv)
            runs: dict[str, list[LoadResult]] = {k: [] for k in keys}
            # CPU seconds per scenario, summed over rounds; a logged scenario's server CPU includes its
            # catching up after each round (the next round starts only once the count settled)
            cpu = {k: {"envoy": 0.0, "server": 0.0} for k in keys}
            for _ in range(args.rounds):
                for k in keys:
                    before = {n: cpu_seconds(p) for n, p in pids.items()}
                    runs[k].append(wrk(names[k], url[k], seconds=args.seconds, connections=args.connections))
                    if k != "a":
                        settled_count(srv)
                    for n, p in pids.items():
                        cpu[k][n] += cpu_seconds(p) - before[n]
            counted = settled_count(srv)
            received = downstream_requests(env.admin_url)
            if args.untagged:
                received += downstream_requests(env.admin_url, "untagged")
            _, envoy_stats = envoy_log_stats(env.admin_url)
            lines = sum(len(f.read_bytes().splitlines()) for f in Path(tmp).glob("access.json*"))
    shutil.rmtree(tmp, ignore_errors=True)
    mean = {k: _mean(rs) for k, rs in runs.items()}
    sent = {k: sum(r.requests for r in rs) for k, rs in runs.items()}
    us = {k: {n: v * 1e6 / max(sent[k], 1) for n, v in c.items()} for k, c in cpu.items()}
    print(f"maximum throughput (wrk, closed loop, {args.connections} connections, {args.seconds} s):")
    print(table([r for k in keys for r in runs[k]], mean["a"]))
    print(f"\nmeans over {args.rounds} rounds (p50/p99: worst round):")
    print(table([mean[k] for k in keys], mean["a"]))
    print(
        f"\ntelemetry server: nice {args.nice}, JSON access log {'off' if args.no_access_log else 'on'}; "
        f"Envoy's logger: buffer_size_bytes {als.buffer_size_bytes}, "
        f"buffer_flush_interval {als.buffer_flush_interval:g} s"
    )
    print(f"telemetry: {counted:.0f} counted, {lines} JSON lines, {received} requests received by Envoy")
    print(
        f"Envoy's access logger: {envoy_stats['logs_written']} written, {envoy_stats['logs_dropped']} dropped"
    )
    print("CPU µs per request (from /proc, summed over the rounds):")
    print(f"  {names['a']}: Envoy {us['a']['envoy']:.1f}")
    for k in keys[1:]:
        print(f"  {names[k]}: Envoy {us[k]['envoy']:.1f}, telemetry server {us[k]['server']:.1f}")
    print(f"telemetry server CPU: {us['b']['server']:.1f} µs per entry")
    print(f"ratio = {mean['b'].rps / mean['a'].rps:.2f}")
    print(f"lost = {received - int(counted)} of {received}")


if __name__ == "__main__":
    main()

"""Benchmark: telemetry vs. no telemetry, through one Envoy, per transport.

One Envoy (``--concurrency 1``) serves a direct-response route on several listeners in the same run:
(a) without telemetry; (b) the mesh's default, the ``stats`` transport: Envoy counts Istio's metrics
itself (``envoy.access_loggers.stats``, exactly as the control plane wires it for a sidecar's inbound
side) and a real ``envoykit telemetry serve --envoy-admin`` reads them from the admin; (c) the same plus
Envoy's JSON file access logger (one line per request, ``json_log``); with ``--grpc`` also (g): the
``http_grpc`` stream to the server, which computes the metrics and writes the JSON line per entry.
wrk drives each at maximum throughput (closed loop), alternating them for ``--rounds`` rounds.

``ratio`` is (b)'s mean requests/s over (a)'s; ``ratio_json`` is (c)'s. ``lost`` is the requests Envoy
received on the telemetry listeners (``downstream_rq_total``) minus the requests the server counted
(``istio_requests_total``), read once the count stopped moving.

Prints, among the figures, exactly ``ratio = X`` (target ≥ 0.85) and ``lost = N of M`` (target 0),
and the CPU per request of Envoy in each scenario and of the telemetry server, from /proc.

Run: ``.venv/bin/python bench/telemetry.py [--seconds 6] [--rounds 3] [--grpc]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import LoadResult, cpu_seconds, table, wrk
from google.protobuf.json_format import MessageToDict

from envoykit.control.model.mesh import AccessLogServer
from envoykit.control.model.types import Address
from envoykit.control.translate.accesslog import http_access_logs, logger_dict
from envoykit.control.translate.bootstrap import inline_headers
from envoykit.core import EnvoyProcess, free_port
from envoykit.telemetry.gap import envoy_log_stats
from tests.envoycfg import bootstrap, cluster, direct_response, http_listener, socket_address
from tests.serverproc import ServerProcess
from tests.telemetry.helpers import BACKEND, total

LISTENER = "telemetry"
LISTENERS = {"a": "plain", "b": LISTENER, "c": "json_log", "g": "grpc_stream"}
NODE_ID = "sidecar~backend-v2"


def downstream_requests(admin: str, listener: str = LISTENER) -> int:
    """``http.<listener>.downstream_rq_total`` of the Envoy at ``admin``."""
    url = f"{admin}/stats?format=json&filter=^http\\.{listener}\\.downstream_rq_total$"
    with urllib.request.urlopen(url, timeout=5) as r:
        stats = json.loads(r.read())["stats"]
    return int(stats[0]["value"]) if stats else 0


def settled_count(srv: ServerProcess, timeout: float = 30.0, pause: float = 6.0) -> float:
    """``istio_requests_total`` once it stopped moving: two readings ``pause`` seconds apart agree (the
    gRPC stream flushes every second, Envoy's stats every 5 s)."""
    last = -1.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = total(srv.metrics(), "istio_requests_total")
        if now == last:
            break
        last = now
        time.sleep(pause)
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
    ap.add_argument("--grpc", action="store_true", help="also (g): the http_grpc stream to the server")
    defaults = AccessLogServer()
    ap.add_argument(
        "--buffer-size-bytes", type=int, default=defaults.buffer_size_bytes, help="(g): the logger's buffer"
    )
    ap.add_argument(
        "--flush-interval", type=float, default=defaults.buffer_flush_interval, help="(g): seconds"
    )
    args = ap.parse_args()
    keys = "abcg" if args.grpc else "abc"
    names = {
        "a": "(a) no telemetry",
        "b": "(b) stats transport (metrics)",
        "c": "(c) stats + JSON file log",
        "g": "(g) http_grpc stream",
    }
    extra = ["--nice", str(args.nice)] if args.nice else []
    tmp = tempfile.mkdtemp(prefix="envoykit-bench-")
    admin_port = free_port()
    server_args = [
        "--log-level", "warning", "--access-log", str(Path(tmp) / "access.json"),
        "--envoy-admin", f"http://127.0.0.1:{admin_port}", *extra,
    ]  # fmt: skip
    with ServerProcess("telemetry", server_args, Path(tmp)).start() as srv:
        als = AccessLogServer(
            address=Address(port=srv.port),
            buffer_size_bytes=args.buffer_size_bytes,
            buffer_flush_interval=args.flush_interval,
        )
        node = {**BACKEND, "id": NODE_ID}
        json_log = str(Path(tmp) / "envoy-{node}.json")

        def loggers(transport: str, json: str | None = None) -> list[dict]:
            conf = als.model_copy(update={"transport": transport, "json_log": json})
            return [logger_dict(a) for a in http_access_logs(conf, "destination", node=node)]

        # each logger exactly as the control plane builds it for a sidecar's inbound side
        hcm = {
            "a": None,
            "b": loggers("stats"),
            "c": loggers("stats", json_log),
            "g": loggers("grpc"),
        }
        ports = {k: free_port() for k in keys}
        ok = [direct_response(200, "ok")]
        listeners = [
            http_listener(
                ports[k], ok, name=LISTENERS[k], hcm_extra={"access_log": hcm[k]} if hcm[k] else None
            )
            for k in keys
        ]
        cfg = bootstrap(listeners, [cluster("envoykit_telemetry", srv.port, http2=True)])
        cfg["admin"] = {"address": socket_address(admin_port)}
        cfg["node"] = {"id": NODE_ID, "cluster": "backend", "metadata": BACKEND}
        cfg["inline_headers"] = [MessageToDict(h) for h in inline_headers()]  # as a sidecar's bootstrap
        flush = ["--file-flush-interval-msec", "1000"]  # as envoykit up runs its Envoys
        with EnvoyProcess(cfg, concurrency=1, log_level="error", name="bench", extra_args=flush) as env:
            assert env.proc is not None and srv.proc is not None
            pids = {"envoy": env.proc.pid, "server": srv.proc.pid}
            url = {k: f"http://127.0.0.1:{p}/x" for k, p in ports.items()}
            for k in keys:
                wrk("warm-up", url[k], seconds=1, connections=args.connections)
            settled_count(srv, pause=1.5)
            runs: dict[str, list[LoadResult]] = {k: [] for k in keys}
            # CPU seconds per scenario, summed over rounds; the gRPC scenario's server CPU includes its
            # catching up after each round (the next round starts only once the count settled)
            cpu = {k: {"envoy": 0.0, "server": 0.0} for k in keys}
            # Envoy's CPU per request in each round: the lowest is the least disturbed by neighbours
            per_round: dict[str, list[float]] = {k: [] for k in keys}
            for _ in range(args.rounds):
                for k in keys:
                    before = {n: cpu_seconds(p) for n, p in pids.items()}
                    run = wrk(names[k], url[k], seconds=args.seconds, connections=args.connections)
                    runs[k].append(run)
                    per_round[k].append(
                        (cpu_seconds(pids["envoy"]) - before["envoy"]) * 1e6 / max(run.requests, 1)
                    )
                    if k == "g":
                        settled_count(srv, pause=1.5)
                    for n, p in pids.items():
                        cpu[k][n] += cpu_seconds(p) - before[n]
            counted = settled_count(srv)
            received = sum(downstream_requests(env.admin_url, LISTENERS[k]) for k in keys if k != "a")
            _, envoy_stats = envoy_log_stats(env.admin_url)
            time.sleep(2.0)  # Envoy's file logger flushes every second
            json_lines = sum(len(f.read_bytes().splitlines()) for f in Path(tmp).glob("envoy-*.json"))
            json_sent = downstream_requests(env.admin_url, LISTENERS["c"])
    shutil.rmtree(tmp, ignore_errors=True)
    mean = {k: _mean(rs) for k, rs in runs.items()}
    sent = {k: sum(r.requests for r in rs) for k, rs in runs.items()}
    us = {k: {n: v * 1e6 / max(sent[k], 1) for n, v in c.items()} for k, c in cpu.items()}
    print(f"maximum throughput (wrk, closed loop, {args.connections} connections, {args.seconds} s):")
    print(table([r for k in keys for r in runs[k]], mean["a"]))
    print(f"\nmeans over {args.rounds} rounds (p50/p99: worst round):")
    print(table([mean[k] for k in keys], mean["a"]))
    print(
        f"\ntelemetry: {counted:.0f} counted, {received} requests received by Envoy on (b), (c)"
        + (", (g)" if args.grpc else "")
    )
    print(f"Envoy's JSON file log (c): {json_lines} lines for {json_sent} requests")
    if args.grpc:
        print(
            f"(g) Envoy's gRPC logger: buffer_size_bytes {als.buffer_size_bytes}, "
            f"{envoy_stats['logs_written']} written, {envoy_stats['logs_dropped']} dropped"
        )
    print("CPU µs per request (from /proc, summed over the rounds):")
    print(f"  {names['a']}: Envoy {us['a']['envoy']:.1f}")
    for k in keys[1:]:
        ratio = us["a"]["envoy"] / us[k]["envoy"]
        print(
            f"  {names[k]}: Envoy {us[k]['envoy']:.1f} (bare/this {ratio:.2f}), "
            f"telemetry server {us[k]['server']:.1f}"
        )
    low = {k: min(v) for k, v in per_round.items()}
    print(
        "Envoy CPU µs per request, lowest round (bare/this): "
        + ", ".join(f"{k} {low[k]:.1f}" + ("" if k == "a" else f" ({low['a'] / low[k]:.2f})") for k in keys)
    )
    print(f"ratio_json = {mean['c'].rps / mean['a'].rps:.2f}")
    if args.grpc:
        print(f"ratio_grpc = {mean['g'].rps / mean['a'].rps:.2f}")
    print(f"ratio = {mean['b'].rps / mean['a'].rps:.2f}")
    print(f"lost = {received - int(counted)} of {received}")


if __name__ == "__main__":
    main()

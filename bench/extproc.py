"""Benchmark: ext_proc telemetry (observability mode) and a blocking header processor vs. no ext_proc.

Through one Envoy (``--concurrency 1``) to a direct-response route, in one run:
(a) no ext_proc; (b) the telemetry processor in ``observability_mode`` (Envoy does not wait);
(c) a blocking request-header processor (``envoykit.extproc.examples:stamp``: one round trip).
Each server is a real ``envoykit extproc serve`` process. Prints requests/s and p50/p99 at maximum
throughput (wrk, closed loop), latency at a fixed moderate rate (hey), the ratios b/a and c/a, and
how many requests telemetry counted.

Run: ``.venv/bin/python bench/extproc.py [--seconds 6] [--rate 500]``.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import LoadResult, cpu_seconds, hey_rate, table, wrk

from envoykit.core import EnvoyProcess, free_port
from tests.envoycfg import bootstrap, cluster, direct_response, http_listener
from tests.extproc.helpers import ext_proc_filter, telemetry_filter
from tests.extproc.test_telemetry_envoy import total
from tests.serverproc import ServerProcess

KEYS = "abnc"


def sequential(url: str, n: int) -> tuple[float, float]:
    """p50 and p99 in ms of ``n`` requests sent one after another on one connection (no queueing)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        conn.request("GET", parts.path)
        conn.getresponse().read()
        lat.append((time.perf_counter() - t0) * 1000)
        if i % 4 == 0:
            time.sleep(0.001)  # a little idle time, as real traffic has
    conn.close()
    lat.sort()
    return lat[n // 2], lat[int(n * 0.99)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rate", type=float, default=200, help="fixed rate for the latency runs, req/s")
    ap.add_argument("--sequential", type=int, default=1000, help="requests per one-client latency round")
    args = ap.parse_args()
    telemetry = telemetry_filter(failure_mode_allow=True)

    niced = copy.deepcopy(telemetry)
    niced["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] = "extproc_nice"
    blocking = ext_proc_filter(
        processing_mode={"request_header_mode": "SEND", "response_header_mode": "SKIP"}
    )
    blocking["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] = "extproc_blocking"
    work = Path(tempfile.mkdtemp(prefix="envoykit-bench-extproc-"))

    def extproc(*args: str) -> ServerProcess:
        return ServerProcess("extproc", ["--log-level", "warning", *args], work).start()

    with (
        extproc() as tele_srv,
        extproc("--nice", "19") as nice_srv,
        extproc("--no-telemetry", "--processor", "envoykit.extproc.examples:stamp") as block_srv,
    ):
        ports = {k: free_port() for k in KEYS}
        ok = [direct_response(200, "ok")]
        cfg = bootstrap(
            [
                http_listener(ports["a"], ok, name="plain"),
                http_listener(ports["b"], ok, [telemetry], name="telemetry"),
                http_listener(ports["n"], ok, [niced], name="telemetry_nice"),
                http_listener(ports["c"], ok, [blocking], name="blocking"),
            ],
            [
                cluster("extproc", tele_srv.port, http2=True),
                cluster("extproc_nice", nice_srv.port, http2=True),
                cluster("extproc_blocking", block_srv.port, http2=True),
            ],
        )
        names = {
            "a": "(a) no ext_proc",
            "b": "(b) telemetry, observability_mode",
            "n": "(b') same, server at --nice 19",
            "c": "(c) blocking header processor",
        }
        with EnvoyProcess(cfg, concurrency=1, log_level="error", name="bench") as env:
            assert env.proc and tele_srv.proc and nice_srv.proc and block_srv.proc
            pids = {
                "envoy": env.proc.pid,
                "b": tele_srv.proc.pid,
                "n": nice_srv.proc.pid,
                "c": block_srv.proc.pid,
            }
            cpu_us: dict[str, tuple[float, float]] = {}
            url = {k: f"http://127.0.0.1:{p}/x" for k, p in ports.items()}
            for k in KEYS:
                wrk("warm-up", url[k], seconds=1, connections=args.connections)
            time.sleep(2)  # servers idle again before the latency runs
            # latency first, on idle servers: one client in sequence, then a fixed rate
            seq: dict[str, list[tuple[float, float]]] = {k: [] for k in KEYS}
            for _ in range(2):
                for k in KEYS:
                    seq[k].append(sequential(url[k], args.sequential))
            fixed: dict[str, LoadResult] = {}
            for k in KEYS:
                fixed[k] = hey_rate(
                    f"{names[k]} @ {args.rate:.0f}/s", url[k], args.rate, seconds=args.seconds
                )
            counted_before = total(tele_srv.metrics(), "istio_requests_total")
            counted_before_n = total(nice_srv.metrics(), "istio_requests_total")
            top: dict[str, LoadResult] = {}
            for k in KEYS:
                before = {n: cpu_seconds(p) for n, p in pids.items()}
                top[k] = wrk(names[k], url[k], seconds=args.seconds, connections=args.connections)
                time.sleep(1.2)  # let the telemetry server finish its backlog before reading CPU
                used = {n: cpu_seconds(p) - before[n] for n, p in pids.items()}
                per = 1e6 / max(top[k].requests, 1)
                cpu_us[k] = (used["envoy"] * per, used[k] * per if k in used else 0.0)
            time.sleep(1.5)
            counted = total(tele_srv.metrics(), "istio_requests_total") - counted_before
            counted_n = total(nice_srv.metrics(), "istio_requests_total") - counted_before_n
        a, b, n, c = top["a"], top["b"], top["n"], top["c"]
        print(f"maximum throughput (wrk, closed loop, {args.connections} connections):")
        print(table([a, b, n, c], a))
        print(f"\nfixed rate (hey, {args.rate:.0f} req/s):")
        print(table([fixed[k] for k in KEYS], fixed["a"]))
        print(f"\none client, requests in sequence ({args.sequential} per round, 2 rounds):")
        for k in KEYS:
            rounds = ", ".join(f"p50 {p50:.3f} / p99 {p99:.3f} ms" for p50, p99 in seq[k])
            print(f"  {names[k]:<40} {rounds}")
        seq_a = min(p50 for p50, _ in seq["a"])
        seq_b = min(p50 for p50, _ in seq["b"])
        seq_n = min(p50 for p50, _ in seq["n"])
        seq_c = min(p50 for p50, _ in seq["c"])
        print(
            f"\nb/a = {b.rps / a.rps:.3f}, b'/a = {n.rps / a.rps:.3f} (target >= 0.7); c/a = {c.rps / a.rps:.3f}"
        )
        print(
            f"p50 b-a: one client {seq_b - seq_a:+.3f} ms; at {args.rate:.0f}/s "
            f"{fixed['b'].p50_ms - fixed['a'].p50_ms:+.3f} ms; at max {b.p50_ms - a.p50_ms:+.3f} ms "
            f"(target within 0.3 ms); c-a one client {seq_c - seq_a:+.3f} ms"
        )
        print(
            f"p50 b'-a: one client {seq_n - seq_a:+.3f} ms; at {args.rate:.0f}/s "
            f"{fixed['n'].p50_ms - fixed['a'].p50_ms:+.3f} ms; at max {n.p50_ms - a.p50_ms:+.3f} ms"
        )
        print(
            f"telemetry counted {counted:.0f} of {b.requests} requests of run (b), {counted_n:.0f} of {n.requests} of (b')"
        )
        print("\nCPU per request at max throughput (µs): envoy / ext_proc server")
        for k in KEYS:
            print(f"  {names[k]:<40} {cpu_us[k][0]:8.1f} / {cpu_us[k][1]:8.1f}")


if __name__ == "__main__":
    main()

"""Benchmark: Envoy's own instructions per request with the global rate-limit filter (callgrind).

Throughput ratios on a shared 2-core machine move by tens of percent between runs; the instructions
Envoy executes per request do not. One Envoy (``--concurrency 1``) runs under callgrind with the
routes of ``bench/ratelimit.py``: every listener proxies to a direct-response listener of the same
Envoy (rate-limit actions need a routed request). (a) routed, no rate limit; (b) the rate-limit filter
as envoykit builds it (``control.translate.filters.ratelimit_filter``, the cluster of
``clusters.static_cluster``: what the control plane, ``envoy inject`` and the mesh give a user) calling
``envoykit ratelimit serve`` with the memory store; then variants of one thing each, Envoy side (filter
fields, gRPC client, cluster) and server side (what the response carries, from a server answering a
constant). Each figure: hey sends a fixed number of requests after a warm-up, callgrind's counters are
zeroed before and dumped after, and the total is divided by the requests sent.

Prints kIr (thousands of instructions) per request, each row against (b), and the ratio each could reach
against (a) if Envoy's instructions alone set the pace (a ceiling: the server and the load generator
share the machine too, and the call path runs at fewer instructions per µs than bare Envoy).

Run: ``.venv/bin/python bench/ratelimit_instructions.py [--requests 800] [--only b,t_min]`` (needs
valgrind and hey; about five minutes: Envoy runs some 50 times slower under callgrind).
"""

from __future__ import annotations

import argparse
import atexit
import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callgrind import envoy_under_callgrind, kir_per_request, require_tools, send
from google.protobuf.json_format import MessageToDict
from ratelimit import LIMITS as BENCH_LIMITS

from envoykit.control.model.types import Address
from envoykit.control.translate.clusters import static_cluster
from envoykit.control.translate.filters import ratelimit_filter
from envoykit.core import EnvoyProcess, free_port
from tests.envoycfg import bootstrap, direct_response, http_listener
from tests.serverproc import ServerProcess

LIMITS = BENCH_LIMITS % {"tight": 1}  # the limits bench/ratelimit.py serves

# A server answering a constant per domain (the request's domain picks the answer), to see what each part
# of the response costs Envoy. "full" is what the memory store answers for the bench's descriptor.
CONST_SERVER = """
import sys
from envoy.service.ratelimit.v3 import rls_pb2
from envoykit.core.logs import configure_logging
from envoykit.core.unary import UnaryMethod, UnaryServer, serve_unary_forever
configure_logging("warning")
R = rls_pb2.RateLimitResponse
full = R(overall_code=R.OK)
s = full.statuses.add(code=R.OK, limit_remaining=999999999)
s.current_limit.requests_per_unit = 1000000000
s.current_limit.unit = rls_pb2.RateLimitResponse.RateLimit.SECOND
s.duration_until_reset.seconds = 1
ANSWERS = {
    "full": full.SerializeToString(),
    "code": R(overall_code=R.OK, statuses=[R.DescriptorStatus(code=R.OK)]).SerializeToString(),
    "min": R(overall_code=R.OK).SerializeToString(),
    "over": R(overall_code=R.OVER_LIMIT, statuses=[R.DescriptorStatus(code=R.OVER_LIMIT)]).SerializeToString(),
}
if sys.argv[2:] == ["two-headers"]:  # :status and content-type only (no grpc-accept-encoding)
    import envoykit.core.unary.protocol as p
    p.RESPONSE_HEADERS = p.RESPONSE_HEADERS[:2]
def build():
    server = UnaryServer("const", "127.0.0.1:" + sys.argv[1])
    server.add_service("envoy.service.ratelimit.v3.RateLimitService", [UnaryMethod(
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit", rls_pb2.RateLimitRequest,
        lambda r: ANSWERS[r.domain])])
    return server
serve_unary_forever(build, on_ready=lambda s: print(s.port, flush=True))
"""

ROUTED = [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]
LIMITED = [
    {"match": {"prefix": "/"}, "route": {"cluster": "backend", "rate_limits": [{"actions": [
        {"request_headers": {"header_name": "x-user", "descriptor_key": "client"}}]}]}},
]  # fmt: skip


def envoykit_filter(domain: str) -> dict[str, Any]:
    """The filter as the control plane builds it (mesh default timeout, fail open), as a dict."""
    mesh: Any = SimpleNamespace(extensions=SimpleNamespace(ratelimit=SimpleNamespace(timeout=0.5)))
    return MessageToDict(ratelimit_filter(mesh, domain, False), preserving_proto_field_name=True)


def envoykit_cluster(name: str, port: int) -> dict[str, Any]:
    """The rate-limit service's cluster as the control plane builds it."""
    c = static_cluster(name, [Address(host="127.0.0.1", port=port)], http2=True)
    return MessageToDict(c, preserving_proto_field_name=True)


def variant(domain: str, cluster: str = "rate_limit_service", **fields: Any) -> dict[str, Any]:
    """The envoykit filter for ``domain`` calling ``cluster``, with ``fields`` set in its typed config
    (``grpc_service`` replaces the service's ``grpc_service``; ``grpc`` merges into its ``envoy_grpc``)."""
    f = envoykit_filter(domain)
    conf = f["typed_config"]
    svc = conf["rate_limit_service"]["grpc_service"]
    svc["envoy_grpc"]["cluster_name"] = cluster
    if "grpc_service" in fields:
        conf["rate_limit_service"]["grpc_service"] = fields.pop("grpc_service")
    svc["envoy_grpc"].update(fields.pop("grpc", {}))
    conf.update(fields)
    return f


# (name, label, filters, routes); "b" is the reference every row is compared with
def scenarios(google_port: int) -> list[tuple[str, str, list[dict[str, Any]], list[dict[str, Any]]]]:
    draft = {"enable_x_ratelimit_headers": "DRAFT_VERSION_03"}
    return [
        ("a", "(a) routed, no rate limit", [], ROUTED),
        ("r0", "filter, route without rate_limits (no call)", [variant("bench")], ROUTED),
        ("b", "(b) envoykit filter, memory store", [variant("bench")], LIMITED),
        ("t_full", "const server, full answer (as b)", [variant("full", "const")], LIMITED),
        ("t_code", "const, statuses[].code only", [variant("code", "const")], LIMITED),
        ("t_min", "const, overall_code only", [variant("min", "const")], LIMITED),
        ("t_2h", "const full, no grpc-accept-encoding header", [variant("full", "const2h")], LIMITED),
        ("over", "const OVER_LIMIT (every request a 429)", [variant("over", "const")], LIMITED),
        ("hdrs", "x-ratelimit headers (DRAFT_VERSION_03)", [variant("bench", **draft)], LIMITED),
        ("noxe", "disable_x_envoy_ratelimited_header", [variant("bench", disable_x_envoy_ratelimited_header=True)], LIMITED),
        ("skiph", "envoy_grpc skip_envoy_headers", [variant("bench", grpc={"skip_envoy_headers": True})], LIMITED),
        ("ext", "request_type: external", [variant("bench", request_type="external")], LIMITED),
        ("win", "cluster HTTP/2 windows 64 KiB / 1 MiB", [variant("bench", "rl_windows")], LIMITED),
        ("ggrpc", "google_grpc client", [variant("bench", grpc_service={"google_grpc": {"target_uri": f"127.0.0.1:{google_port}", "stat_prefix": "rl"}})], LIMITED),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=800, help="requests per scenario")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--only", default="", help="comma-separated scenario names (a and b always run)")
    ap.add_argument(
        "--reject-stats",
        default="",
        help="one-off: Envoy keeps no stats named with this prefix (bootstrap stats_matcher), or none: 'all'",
    )
    args = ap.parse_args()
    require_tools()
    with tempfile.TemporaryDirectory(prefix="bench-rl-ir-") as tmpname:
        tmp = Path(tmpname)
        (tmp / "limits").mkdir()
        (tmp / "limits" / "bench.yaml").write_text(LIMITS)
        memory = ServerProcess("ratelimit", ["--config-dir", str(tmp / "limits")], tmp, health=True).start()
        atexit.register(memory.stop)
        consts = [
            subprocess.Popen(
                [sys.executable, "-c", CONST_SERVER, str(free_port()), *extra],
                stdout=subprocess.PIPE,
                text=True,
            )
            for extra in ([], ["two-headers"])
        ]
        const_ports = []
        for const in consts:
            atexit.register(const.kill)
            assert const.stdout is not None
            const_ports.append(int(const.stdout.readline()))

        chosen = scenarios(memory.port)
        if args.only:
            keep = {"a", "b", *args.only.split(",")}
            chosen = [s for s in chosen if s[0] in keep]
        backend = free_port()
        ports = {name: free_port() for name, *_ in chosen}
        listeners = [http_listener(backend, [direct_response(200, "ok")], name="backend")]
        listeners += [http_listener(ports[n], routes, filters, name=n) for n, _, filters, routes in chosen]
        windows = envoykit_cluster("rl_windows", memory.port)
        h2 = windows["typed_extension_protocol_options"]
        opts = next(iter(h2.values()))["explicit_http_config"]["http2_protocol_options"]
        opts.update(initial_stream_window_size=65536, initial_connection_window_size=1048576)
        clusters = [
            MessageToDict(
                static_cluster("backend", [Address(host="127.0.0.1", port=backend)]),
                preserving_proto_field_name=True,
            ),
            envoykit_cluster("rate_limit_service", memory.port),
            envoykit_cluster("const", const_ports[0]),
            envoykit_cluster("const2h", const_ports[1]),
            copy.deepcopy(windows),
        ]
        cfg = bootstrap(listeners, clusters)
        if args.reject_stats == "all":
            cfg["stats_config"] = {"stats_matcher": {"reject_all": True}}
        elif args.reject_stats:
            exclude = {"patterns": [{"prefix": args.reject_stats}]}
            cfg["stats_config"] = {"stats_matcher": {"exclusion_list": exclude}}
        os.environ["ENVOY_BIN"] = envoy_under_callgrind(tmp)
        env = EnvoyProcess(cfg, concurrency=1, log_level="error", name="bench-rl-ir")
        try:
            env.start(timeout=300)
            assert env.proc is not None
            pid = env.proc.pid
            kir: dict[str, float] = {}
            labels = {n: label for n, label, *_ in chosen}
            print(f"{'scenario':<46} {'kIr/req':>8} {'vs b':>7} {'calls':>6}")
            for name, label, *_ in chosen:
                urls = [f"http://127.0.0.1:{ports[name]}/"]
                send(urls, min(200, args.requests), args.connections)  # warm-up
                before = env.stats("cluster.backend.ratelimit.")
                kir[name] = kir_per_request(tmp, pid, urls, args.requests, args.connections)
                after = env.stats("cluster.backend.ratelimit.")
                calls = sum(
                    v - before.get(k, 0) for k, v in after.items() if k.endswith((".ok", ".over_limit"))
                )
                vs_b = f"{kir[name] - kir['b']:+7.1f}" if "b" in kir and name != "b" else ""
                print(f"{label:<46} {kir[name]:8.1f} {vs_b:>7} {calls / args.requests:6.0%}", flush=True)
            bare, b = kir["a"], kir["b"]
            print(f"\nthe rate-limit call adds {b - bare:.0f} kIr to a routed request ({(b - bare) / bare:.2f}x);"
                  f" the filter without a call {kir.get('r0', bare) - bare:.0f}")  # fmt: skip
            print("ceiling if Envoy's instructions alone set the pace (a / scenario):")
            for name, v in kir.items():
                if name != "a":
                    print(f"  {labels[name]:<46} {bare / v:.2f}")
        finally:
            env.cleanup()
            memory.stop()
            for const in consts:
                const.kill()


if __name__ == "__main__":
    main()

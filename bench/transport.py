"""Benchmark: Envoy's gRPC calls to the lean unary server over TCP loopback vs a Unix-domain socket.

The question of issue 13's transport step: does a Unix socket (Envoy cluster with a ``pipe`` address)
make each ext_authz or rate-limit call cheaper than TCP over loopback, which runs the TCP stack of the
receiver inside the sender's ``write`` on both sides? One Envoy (``--concurrency 1``), in one run:

  (a)  no filter, direct response                    (r-a) no filter, routed to a direct-response listener
  (t)  ext_authz → constant-answer server, TCP        (r)   ratelimit → constant-answer server, TCP
  (t-uds) the same server code on a Unix socket       (r-uds) the same on a Unix socket

The servers are the lean unary server's own connection code (``envoykit.core.unary.protocol``) on a
uvloop listener, answering a pre-serialised OK, so the transport is the only difference between a
pair. Rounds alternate the order inside each pair. Printed per run: requests/s, the ratio to its bare
baseline, Envoy's CPU µs per request and the server's per call, each split into user and system time
(``/proc/<pid>/stat``; system time includes softirq work done in the process's syscalls), and the
Unix-socket/TCP ratios of the Envoy and server CPU per request over all rounds.

    PATH=.venv/bin:$PATH .venv/bin/python bench/transport.py [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import wrk  # noqa: E402

from envoykit.core import EnvoyProcess, free_port, wait_for_port  # noqa: E402
from tests.authz.conftest import ext_authz_filter  # noqa: E402
from tests.envoycfg import bootstrap, cluster, direct_response, http_listener  # noqa: E402

# argv: "tcp" PORT | "unix" PATH, then "authz" | "ratelimit"
SERVER = """
import asyncio, socket, sys
from envoy.service.auth.v3 import external_auth_pb2 as ea
from envoy.service.ratelimit.v3 import rls_pb2
from google.rpc import status_pb2
from envoykit.core.unary import Limits, UnaryMethod, new_event_loop
from envoykit.core.unary.protocol import Dispatch, UnaryConnection
kind, where, api = sys.argv[1:4]
if api == "authz":
    ok = ea.CheckResponse(status=status_pb2.Status(code=0), ok_response=ea.OkHttpResponse())
    method = UnaryMethod("/envoy.service.auth.v3.Authorization/Check", ea.CheckRequest, lambda r: OK)
else:
    ok = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)
    method = UnaryMethod(
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit", rls_pb2.RateLimitRequest, lambda r: OK
    )
OK = ok.SerializeToString()
async def main():
    loop = asyncio.get_running_loop()
    dispatch, conns = Dispatch({method.path: method}, Limits()), set()
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(where)
        sock.listen(1024)
        await loop.create_unix_server(lambda: UnaryConnection(dispatch, conns), sock=sock)
    else:
        await loop.create_server(lambda: UnaryConnection(dispatch, conns), "127.0.0.1", int(where))
    await asyncio.Event().wait()
with asyncio.Runner(loop_factory=new_event_loop) as runner:
    runner.run(main())
"""


def cpu_split(pid: int) -> tuple[float, float]:
    """``(user, system)`` CPU seconds of process ``pid`` so far (``/proc/<pid>/stat`` utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def wait_for_unix(path: str, timeout: float = 30) -> None:
    """Until a listener accepts on Unix socket ``path``; raises TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(path)
                return
            except OSError:
                time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {path}")


def pipe_cluster(name: str, path: str) -> dict[str, Any]:
    """A STATIC HTTP/2 cluster whose one endpoint is Unix socket ``path`` (Envoy's ``pipe`` address)."""
    c = cluster(name, 1, http2=True)
    c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] = {"pipe": {"path": path}}
    return c


def rl_filter(cluster_name: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": "bench",
            "timeout": "1s",
            "failure_mode_deny": True,
            "rate_limit_service": {
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": cluster_name}},
            },
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="envoykit-bench-transport-"))
    servers: dict[str, subprocess.Popen[bytes]] = {}
    tcp = {api: free_port() for api in ("authz", "ratelimit")}
    unix = {api: str(tmp / f"{api}.sock") for api in ("authz", "ratelimit")}
    try:
        for api in ("authz", "ratelimit"):
            for kind, where in (("tcp", str(tcp[api])), ("unix", unix[api])):
                servers[f"{api}_{kind}"] = subprocess.Popen(
                    [sys.executable, "-c", SERVER, kind, where, api],
                    stdout=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                )
            wait_for_port(tcp[api], timeout=30)
            wait_for_unix(unix[api])
        ports = {n: free_port() for n in ("a", "t", "t-uds", "backend", "r-a", "r", "r-uds")}
        ok = [direct_response(200, "ok")]
        limited = [{"match": {"prefix": "/"}, "route": {"cluster": "backend", "rate_limits": [{"actions": [{"request_headers": {"header_name": "x-client", "descriptor_key": "client"}}]}]}}]  # fmt: skip
        routed = [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]
        cfg = bootstrap(
            [
                http_listener(ports["a"], ok, name="a"),
                http_listener(ports["t"], ok, [ext_authz_filter("authz_tcp")], name="t"),
                http_listener(ports["t-uds"], ok, [ext_authz_filter("authz_unix")], name="t_uds"),
                http_listener(ports["backend"], ok, name="backend"),
                http_listener(ports["r-a"], routed, name="r_a"),
                http_listener(ports["r"], limited, [rl_filter("ratelimit_tcp")], name="r"),
                http_listener(ports["r-uds"], limited, [rl_filter("ratelimit_unix")], name="r_uds"),
            ],
            [
                cluster("backend", ports["backend"]),
                cluster("authz_tcp", tcp["authz"], http2=True),
                pipe_cluster("authz_unix", unix["authz"]),
                cluster("ratelimit_tcp", tcp["ratelimit"], http2=True),
                pipe_cluster("ratelimit_unix", unix["ratelimit"]),
            ],
        )
        server_of = {"t": "authz_tcp", "t-uds": "authz_unix", "r": "ratelimit_tcp", "r-uds": "ratelimit_unix"}
        pairs = [("a", "t", "t-uds"), ("r-a", "r", "r-uds")]
        hdrs = {"x-client": "bench"}
        per_call: dict[str, list[tuple[float, float]]] = {n: [] for n in server_of}
        with EnvoyProcess(
            cfg, workdir=tmp / "envoy", concurrency=1, log_level="error", name="transport"
        ) as env:
            assert env.proc is not None
            envoy_pid = env.proc.pid
            for name in ports:
                if name != "backend":
                    wrk("warm-up", f"http://127.0.0.1:{ports[name]}/", seconds=1, headers=hdrs)
            print(
                f"Envoy --concurrency 1, wrk -t1 -c{args.connections}, {args.seconds}s per run; CPU per request "
                "from /proc (user/system), Envoy per request, server per call"
            )
            for rnd in range(args.rounds):
                print(f"\nround {rnd + 1} of {args.rounds} ({time.strftime('%H:%M:%S')})")
                for bare, *pair in pairs:
                    order = [bare, *(pair if rnd % 2 == 0 else reversed(pair))]
                    base = 0.0
                    for name in order:
                        spid = servers[server_of[name]].pid if name in server_of else None
                        e0, s0 = cpu_split(envoy_pid), cpu_split(spid) if spid else (0.0, 0.0)
                        r = wrk(
                            name,
                            f"http://127.0.0.1:{ports[name]}/",
                            seconds=args.seconds,
                            connections=args.connections,
                            headers=hdrs,
                        )
                        e1, s1 = cpu_split(envoy_pid), cpu_split(spid) if spid else (0.0, 0.0)
                        n = max(r.requests, 1)
                        eu, es = ((e1[i] - e0[i]) * 1e6 / n for i in (0, 1))
                        su, ss = ((s1[i] - s0[i]) * 1e6 / n for i in (0, 1))
                        base = base or r.rps
                        line = f"  ({name:<5}) {r.rps:8.0f} req/s  ratio {r.rps / base:5.3f}  Envoy {eu + es:6.1f} µs (user {eu:5.1f}, system {es:4.1f})"
                        if spid:
                            per_call[name].append((eu + es, su + ss))
                            line += f"  server {su + ss:5.1f} µs (user {su:5.1f}, system {ss:4.1f})"
                        if r.errors:
                            line += f"  non-2xx {r.errors}"
                        print(line, flush=True)
                        time.sleep(0.5)
        print(
            "\nUnix socket / TCP, CPU per request over all rounds (1.00: no difference; < 1: the socket is cheaper)"
        )
        for uds, tcp_name in (("t-uds", "t"), ("r-uds", "r")):
            envoy = sum(e for e, _ in per_call[uds]) / sum(e for e, _ in per_call[tcp_name])
            server = sum(s for _, s in per_call[uds]) / sum(s for _, s in per_call[tcp_name])
            print(f"  ({uds})/({tcp_name}): Envoy {envoy:.2f}, server {server:.2f}")
    finally:
        for p in servers.values():
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

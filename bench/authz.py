"""Benchmark: ext_authz with a 10-rule Python policy vs. the same Envoy without it.

Through one Envoy (``--concurrency 1``) to a direct-response route: (a) no ext_authz; (b) ext_authz
calling ``envoykit authz serve`` with ten Python rules; (b2) the same server deciding ten declarative
AuthorizationPolicies; (c) those ten policies compiled to Envoy's native RBAC filter (no call out);
(t) the same gRPC server answering a constant OK with no policy at all: the floor of Python gRPC here;
(t0) that floor on the grpcio thread-pool server (``--server grpcio``, the runner before issue 13).
Prints requests/s and p50/p99 of each (wrk, closed loop), the ratios, p50/p99 of (b) with 8 requests
in flight (wrk -c 8) beside (a)'s (the machine's own tail), and p50/p99 of (b) at half its maximum rate
(hey, fixed rate).
(g) the native gate (envoykit.authz.gate) before ext_authz: the ten YAML policies plus two Python rules
on ``/orders/*``, traffic mixed by a wrk script so 4 in 5 requests need no Python (printed: (g)/a), and
(g100) the same gate with no request needing Python (the gate's own cost in Envoy).

Run: ``make bench`` or ``.venv/bin/python bench/authz.py [--seconds 8]``.
"""

from __future__ import annotations

import argparse
import atexit
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import LoadResult, cpu_seconds, hey_rate, table, wrk
from google.protobuf.json_format import MessageToDict

from envoykit.authz import load_policy
from envoykit.authz.gate import compile_gate
from envoykit.authz.rbac import compile_policy_dir
from envoykit.core import EnvoyProcess, free_port
from tests.authz.conftest import ext_authz_filter
from tests.envoycfg import bootstrap, cluster, direct_response, http_listener
from tests.serverproc import ServerProcess

POLICY = """
from envoykit.authz import allow, allow_rule, deny, deny_rule

@deny_rule(paths=["/admin/*"])
def admin(req):
    return req.identity.claims is None

@deny_rule(methods=["DELETE"])
def no_delete(req):
    return True

@deny_rule(hosts=["evil.example"])
def evil_host(req):
    return True

@deny_rule(paths=["/internal/*"])
def internal(req):
    return not req.mtls

@deny_rule()
def blocked_agents(req):
    return req.headers.get("user-agent", "").startswith("BadBot")

@deny_rule()
def blocked_ips(req):
    return req.source_address in ("192.0.2.1", "192.0.2.2")

@allow_rule(paths=["/api/*"], methods=["GET", "POST"])
def api_users(req):
    if req.headers.get("x-user") in ("alice", "bob"):
        return allow(headers={"x-authz-user": req.headers["x-user"]})

@allow_rule(paths=["/api/*"])
def api_service(req):
    return req.identity.principal.endswith("/sa/frontend")

@allow_rule(paths=["/public/*"])
def public(req):
    return True

@allow_rule(paths=["/api/*"])
def api_query(req):
    return req.query.get("token") == ["letmein"]
"""


YAML_POLICY = """
kind: AuthorizationPolicy
metadata: {name: api-users}
spec:
  rules:
    - to: [{operation: {paths: ["/api/*"], methods: [GET, POST]}}]
      when: [{key: "request.headers[x-user]", values: [alice, bob]}]
---
kind: AuthorizationPolicy
metadata: {name: api-service}
spec:
  rules: [{from: [{source: {principals: ["*/sa/frontend"]}}], to: [{operation: {paths: ["/api/*"]}}]}]
---
kind: AuthorizationPolicy
metadata: {name: public}
spec:
  rules: [{to: [{operation: {paths: ["/public/*"]}}]}]
---
kind: AuthorizationPolicy
metadata: {name: ops}
spec:
  rules: [{from: [{source: {namespaces: [ops]}}], to: [{operation: {paths: [/metrics]}}]}]
""" + "".join(
    f"""---
kind: AuthorizationPolicy
metadata: {{name: deny-{i}}}
spec:
  action: DENY
  rules: [{{to: [{{operation: {{paths: ["{p}"], methods: [{m}]}}}}]}}]
"""
    for i, (p, m) in enumerate(
        [
            ("/admin/*", "GET"),
            ("/internal/*", "GET"),
            ("*", "DELETE"),
            ("/debug*", "GET"),
            ("/x/*", "PUT"),
            ("/y", "GET"),
        ]
    )
)


# (g): Python rules with pre-matches beside the YAML policies; only /orders/* needs the server.
GATE_RULES = """
from envoykit.authz import allow_rule, deny_rule

@allow_rule(paths=["/orders/*"])
def orders(req):
    return req.headers.get("x-user") in ("alice", "bob")

@deny_rule(paths=["/orders/*"], methods=["DELETE", "PUT"])
def orders_read_only(req):
    return True
"""
# 4 of 5 requests natively decidable (the YAML ALLOW policies), 1 of 5 decided by the Python rules
GATE_MIX = """
local paths = {"/api/a", "/public/b", "/api/c", "/public/d", "/orders/1"}
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, paths[(i % #paths) + 1])
end
"""
# (g100): the same paths without /orders/*: every request decided natively, so Envoy's CPU per request
# against (a) is the gate's own cost (its RBAC filters, the skipped ext_authz filter)
GATE_NATIVE_ONLY = GATE_MIX.replace(', "/orders/1"}', "}")


# The floor: the lean unary server answering every Check with a constant OK, no policy.
FLOOR_SERVER = """
import sys
from envoy.service.auth.v3 import external_auth_pb2 as ea
from google.rpc import status_pb2
from envoykit.core.logs import configure_logging
from envoykit.core.unary import UnaryMethod, UnaryServer, serve_unary_forever
configure_logging("warning")
OK = ea.CheckResponse(status=status_pb2.Status(code=0), ok_response=ea.OkHttpResponse()).SerializeToString()
def build():
    server = UnaryServer("floor", "127.0.0.1:" + sys.argv[1])
    server.add_service("envoy.service.auth.v3.Authorization",
                       [UnaryMethod("/envoy.service.auth.v3.Authorization/Check", ea.CheckRequest, lambda r: OK)])
    return server
serve_unary_forever(build, on_ready=lambda s: print(s.port, flush=True))
"""

# The floor on the grpcio thread-pool server (the runner before the lean one).
GRPCIO_FLOOR_SERVER = """
import sys
from envoy.service.auth.v3 import external_auth_pb2 as ea, external_auth_pb2_grpc as eg
from google.rpc import status_pb2
from envoykit.core.logs import configure_logging
from envoykit.core.server import SyncGrpcServer, wait_for_termination_signal
configure_logging("warning")
OK = ea.CheckResponse(status=status_pb2.Status(code=0), ok_response=ea.OkHttpResponse())
class Floor(eg.AuthorizationServicer):
    def Check(self, request, context):
        return OK
server = SyncGrpcServer("floor", "127.0.0.1:" + sys.argv[1])
server.add_service(eg.add_AuthorizationServicer_to_server, Floor(), "envoy.service.auth.v3.Authorization")
print(server.start(), flush=True)
wait_for_termination_signal()
"""


def cpu_line(r: LoadResult, envoy_pid: int, server_pid: int | None, before: tuple[float, float]) -> str:
    """Envoy's CPU µs per request and the server's per call over one closed-loop run (from /proc)."""
    n = max(r.requests, 1)
    line = f"  {r.name:<44} Envoy {(cpu_seconds(envoy_pid) - before[0]) * 1e6 / n:6.1f} µs"
    if server_pid is not None:
        line += f"   server {(cpu_seconds(server_pid) - before[1]) * 1e6 / n:6.1f} µs"
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1, help="authz server processes")
    ap.add_argument("--threads", type=int, default=2, help="handler threads per process")
    ap.add_argument("--server", choices=["lean", "grpcio"], default="lean", help="authz server of (b), (b2)")
    ap.add_argument("--streams", type=int, default=8, help="max concurrent streams per connection to authz")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-authz-") as tmp:
        policy = Path(tmp) / "policy"
        policy.mkdir()
        (policy / "rules.py").write_text(POLICY)
        yaml_dir = Path(tmp) / "yaml-policy"
        yaml_dir.mkdir()
        (yaml_dir / "policy.yaml").write_text(YAML_POLICY)
        rbac = [
            MessageToDict(f, preserving_proto_field_name=True)
            for f in compile_policy_dir(load_policy(yaml_dir))
        ]
        tuning = ["--workers", str(args.workers), "--threads", str(args.threads), "--server", args.server]
        srv = ServerProcess("authz", ["--policy-dir", str(policy), *tuning], Path(tmp), health=True)
        srv.start()
        atexit.register(srv.stop)  # also when a later step fails before the try below
        srv2 = ServerProcess("authz", ["--policy-dir", str(yaml_dir), *tuning], Path(tmp), health=True)
        srv2.start()
        atexit.register(srv2.stop)
        authz_cluster = cluster("authz", srv.port, http2=True)
        if args.workers > 1:
            # Envoy spreads calls over processes only across connections: cap streams per connection.
            opts = authz_cluster["typed_extension_protocol_options"]
            opts["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"] = {
                "http2_protocol_options": {"max_concurrent_streams": args.streams}
            }
        floors = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(free_port())], stdout=subprocess.PIPE, text=True
            )
            for code in (FLOOR_SERVER, GRPCIO_FLOOR_SERVER)
        ]
        for f in floors:
            atexit.register(f.kill)
        floor_port, grpcio_floor_port = (int(f.stdout.readline()) for f in floors if f.stdout)

        def to(name: str, port: int) -> dict:
            return {**authz_cluster, "name": name, "load_assignment": cluster(name, port)["load_assignment"]}

        ports = {name: free_port() for name in ("plain", "authz", "authz_yaml", "native", "floor", "floor0")}
        ok = [direct_response(200, "ok")]
        cfg = bootstrap(
            [
                http_listener(ports["plain"], ok, name="plain"),
                http_listener(ports["authz"], ok, [ext_authz_filter()], name="authz"),
                http_listener(ports["authz_yaml"], ok, [ext_authz_filter("authz_yaml")], name="authz_yaml"),
                http_listener(ports["native"], ok, rbac, name="native"),
                http_listener(ports["floor"], ok, [ext_authz_filter("floor")], name="floor"),
                http_listener(ports["floor0"], ok, [ext_authz_filter("floor0")], name="floor0"),
            ],
            [
                authz_cluster,
                to("authz_yaml", srv2.port),
                to("floor", floor_port),
                to("floor0", grpcio_floor_port),
            ],
        )
        # (g): the gate's RBAC filters before ext_authz, on the HCM normalisation the gate assumes
        gate_dir = Path(tmp) / "gate-policy"
        gate_dir.mkdir()
        (gate_dir / "policy.yaml").write_text(YAML_POLICY)
        (gate_dir / "rules.py").write_text(GATE_RULES)
        (Path(tmp) / "mix.lua").write_text(GATE_MIX)
        (Path(tmp) / "native.lua").write_text(GATE_NATIVE_ONLY)
        gate = compile_gate(load_policy(gate_dir))
        srv3 = ServerProcess(
            "authz", ["--policy-dir", str(gate_dir), "--server", args.server], Path(tmp), health=True
        )
        srv3.start()
        atexit.register(srv3.stop)
        ports["gate"] = free_port()
        gate_filters = [MessageToDict(f, preserving_proto_field_name=True) for f in gate.filters]
        enabled = MessageToDict(gate.ext_authz_enabled, preserving_proto_field_name=True)
        gate_filters.append(ext_authz_filter("authz_gate", filter_enabled_metadata=enabled))
        normalise: dict[str, Any] = {"normalize_path": True, "merge_slashes": True}
        normalise["path_with_escaped_slashes_action"] = "UNESCAPE_AND_FORWARD"
        cfg["static_resources"]["listeners"].append(
            http_listener(ports["gate"], ok, gate_filters, name="gate", hcm_extra=normalise)
        )
        cfg["static_resources"]["clusters"].append(to("authz_gate", srv3.port))
        env = EnvoyProcess(cfg, concurrency=1, log_level="error", name="bench")
        scenarios = [
            ("(a) no ext_authz", "plain"),
            ("(b) ext_authz, 10 Python rules", "authz"),
            ("(b2) ext_authz, 10 YAML policies", "authz_yaml"),
            ("(c) native RBAC compiled from (b2)", "native"),
            ("(t) ext_authz, server answering a constant", "floor"),
            ("(t0) the same on the grpcio server", "floor0"),
        ]
        try:
            env.start()
            hdrs = {"x-user": "alice"}

            def url(name: str) -> str:
                return f"http://127.0.0.1:{ports[name]}/api/x"

            assert env.proc is not None and srv.proc is not None and srv2.proc is not None
            envoy_pid = env.proc.pid
            server_pids = {"authz": srv.proc.pid, "authz_yaml": srv2.proc.pid, "floor": floors[0].pid}
            server_pids["floor0"] = floors[1].pid
            for _, name in scenarios:
                wrk("warm-up", url(name), seconds=2, connections=args.connections, headers=hdrs)
            results = []
            cpu: list[str] = []
            for label, name in scenarios:
                pid = server_pids.get(name)
                before = (cpu_seconds(envoy_pid), cpu_seconds(pid) if pid else 0.0)
                r = wrk(label, url(name), seconds=args.seconds, connections=args.connections, headers=hdrs)
                results.append(r)
                cpu.append(cpu_line(r, envoy_pid, pid, before))
                time.sleep(1)
            a, b = results[0], results[1]
            # the machine's own tail at 8 in flight (bare Envoy), next to (b)'s: the target is absolute
            eight_a = wrk(
                "(a) with 8 in flight", url("plain"), seconds=args.seconds, connections=8, headers=hdrs
            )
            eight = wrk(
                "(b) with 8 in flight", url("authz"), seconds=args.seconds, connections=8, headers=hdrs
            )
            half = hey_rate(
                "(b) at half of its max rate", url("authz"), b.rps / 2, seconds=args.seconds, headers=hdrs
            )
            print(table([*results, eight_a, eight, half], a))
            print("\nCPU per request (/proc, user+system, over each closed-loop run above):")
            print("\n".join(cpu))
            print(
                f"\nb/a = {b.rps / a.rps:.3f} (target >= 0.33); p99 at 8 in flight = {eight.p99_ms:.2f} ms, "
                f"at half load = {half.p99_ms:.2f} ms (target < 2 ms; bare Envoy's p99 at 8 in flight "
                f"{eight_a.p99_ms:.2f} ms)"
            )
            print(
                f"(t)/a = {results[4].rps / a.rps:.3f} (target >= 0.40): the ceiling of a Python gRPC server "
                f"on this machine; (t0)/a = {results[5].rps / a.rps:.3f} on grpcio"
            )
            if b.errors or half.errors or eight.errors:
                print(f"WARNING: non-2xx answers under load: {b.errors} + {eight.errors} + {half.errors}")
            # (g) next to a fresh (a): on a shared machine the minutes between them matter more than (g)
            mix, gate_url = str(Path(tmp) / "mix.lua"), f"http://127.0.0.1:{ports['gate']}/"
            wrk("warm-up", gate_url, seconds=2, connections=args.connections, headers=hdrs, script=mix)
            pids = [p.pid for p in (env.proc, srv3.proc) if p is not None]

            def measured(target: str, script: str | None) -> tuple[Any, list[float], dict[str, int]]:
                stats0, cpu0 = env.stats("http.gate.ext_authz."), [cpu_seconds(p) for p in pids]
                r = wrk(
                    "",
                    target,
                    seconds=args.seconds,
                    connections=args.connections,
                    headers=hdrs,
                    script=script,
                )
                cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0, strict=True)]
                stats = env.stats("http.gate.ext_authz.")
                return r, cpu, {k.rsplit(".", 1)[1]: v - stats0.get(k, 0) for k, v in stats.items()}

            a2, a2_cpu, _ = measured(url("plain"), None)
            g, g_cpu, g_stats = measured(gate_url, mix)
            g100, g100_cpu, g100_stats = measured(gate_url, str(Path(tmp) / "native.lua"))
            native, called = g_stats.get("disabled", 0), g_stats.get("ok", 0) + g_stats.get("denied", 0)
            print(
                f"(g)/a = {g.rps / a2.rps:.3f} (target >= 0.70): native gate + ext_authz, {g.rps:.0f} vs "
                f"{a2.rps:.0f} req/s bare just before, {native / max(1, native + called):.0%} decided natively "
                f"({called} of {g.requests} requests reached the server); "
                f"Envoy CPU {g_cpu[0] * 1e6 / max(1, g.requests):.0f} vs {a2_cpu[0] * 1e6 / max(1, a2.requests):.0f}"
                f" us/req bare, server {g_cpu[1] * 1e6 / max(1, called):.0f} us per check; "
                f"p99 {g.p99_ms:.2f} ms, non-2xx {g.errors}"
            )
            reached = g100_stats.get("ok", 0) + g100_stats.get("denied", 0)
            print(
                f"(g100)/a = {g100.rps / a2.rps:.3f}: the gate alone (every request decided natively, "
                f"{reached} reached the server), Envoy CPU {g100_cpu[0] * 1e6 / max(1, g100.requests):.0f} us/req"
            )
        finally:
            env.cleanup()
            srv.stop()
            srv2.stop()
            srv3.stop()
            for f in floors:
                f.kill()


if __name__ == "__main__":
    main()

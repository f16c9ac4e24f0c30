"""Benchmark: ext_authz with a 10-rule Python policy vs. the same Envoy without it.

Through one Envoy (``--concurrency 1``) to a direct-response route: (a) no ext_authz; (b) ext_authz
calling ``envoykit authz serve`` with ten rules. Prints requests/s and p50/p99 of each (wrk, closed
loop), the ratio b/a, and p50/p99 of (b) at half its maximum rate (hey, fixed rate).

Run: ``make bench`` or ``.venv/bin/python bench/authz.py [--seconds 8]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import hey_rate, table, wrk

from envoykit.core import EnvoyProcess, free_port
from tests.authz.conftest import AuthzProcess, ext_authz_filter
from tests.envoycfg import bootstrap, cluster, direct_response, http_listener

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="authz server processes")
    ap.add_argument("--threads", type=int, default=1, help="handler threads per process")
    ap.add_argument("--streams", type=int, default=8, help="max concurrent streams per connection to authz")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-authz-") as tmp:
        policy = Path(tmp) / "policy"
        policy.mkdir()
        (policy / "rules.py").write_text(POLICY)
        srv = AuthzProcess(
            policy, Path(tmp) / "authz.log", "--workers", str(args.workers), "--threads", str(args.threads)
        )
        srv.args.remove("--decision-log")
        srv.args.remove(str(srv.decision_log))
        srv.start()
        authz_cluster = cluster("authz", srv.port, http2=True)
        if args.workers > 1:
            # Envoy spreads calls over processes only across connections: cap streams per connection.
            opts = authz_cluster["typed_extension_protocol_options"]
            opts["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"] = {
                "http2_protocol_options": {"max_concurrent_streams": args.streams}
            }
        plain, authz = free_port(), free_port()
        cfg = bootstrap(
            [
                http_listener(plain, [direct_response(200, "ok")], name="plain"),
                http_listener(authz, [direct_response(200, "ok")], [ext_authz_filter()], name="authz"),
            ],
            [authz_cluster],
        )
        env = EnvoyProcess(cfg, concurrency=1, log_level="error", name="bench")
        try:
            env.start()
            hdrs = {"x-user": "alice"}
            for url in (f"http://127.0.0.1:{plain}/api/x", f"http://127.0.0.1:{authz}/api/x"):
                wrk("warm-up", url, seconds=2, connections=args.connections, headers=hdrs)
            a = wrk(
                "(a) no ext_authz",
                f"http://127.0.0.1:{plain}/api/x",
                seconds=args.seconds,
                connections=args.connections,
                headers=hdrs,
            )
            time.sleep(1)
            b = wrk(
                "(b) ext_authz, 10 Python rules",
                f"http://127.0.0.1:{authz}/api/x",
                seconds=args.seconds,
                connections=args.connections,
                headers=hdrs,
            )
            time.sleep(1)
            half = hey_rate(
                "(b) at half of its max rate",
                f"http://127.0.0.1:{authz}/api/x",
                b.rps / 2,
                seconds=args.seconds,
                headers=hdrs,
            )
            print(table([a, b, half], a))
            print(
                f"\nb/a = {b.rps / a.rps:.3f} (target >= 0.25); p99 at half load = {half.p99_ms:.2f} ms (target < 2 ms)"
            )
            if b.errors or half.errors:
                print(f"WARNING: non-2xx answers under load: {b.errors} + {half.errors}")
        finally:
            env.cleanup()
            srv.stop()


if __name__ == "__main__":
    main()
